//! minirec-train: supervised fine-tuning (and, next, GRPO with the RISER stabilisers) with atomic checkpoints
//! and exact resume.

mod adamw_cpu;
pub mod checkpoint;
pub mod demos;
pub mod disk;
pub mod error;
pub mod logprobs;
pub mod memory;
pub mod optim;
pub mod plot;
pub mod proactive;
pub mod riser;
pub mod rl;
pub mod sft;

pub use error::{Result, TrainError};
pub use sft::{SftConfig, SftSummary};
