//! The experiment pipeline below the command-line program: each stage as a function (prepare, SFT, selection,
//! RL, evaluation, classic baselines) that reads and writes a run directory with a manifest, the experiment
//! file, the runner that chains the stages and skips or resumes what exists, and the report. Every `minirec`
//! command is its argument parsing plus one call into this crate.

pub mod baseline;
pub mod compare;
pub mod eval;
pub mod experiment;
pub mod lanes;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod prepare;
pub mod proactive;
pub mod probe;
pub mod report;
mod reproduce;
pub mod rl;
mod rl_settings;
pub mod rl_training;
pub mod runner;
pub mod select;
pub mod serve;
pub mod sft;
mod stage_times;
mod twin;
pub mod variant;

pub use experiment::Experiment;
pub use plan::plan;
pub use runner::{report_so_far, run_experiment};
