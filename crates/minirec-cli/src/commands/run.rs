//! `minirec run experiment.toml`: the whole experiment in one run directory (minirec_pipeline::runner).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use minirec_pipeline::{plan, report_so_far, run_experiment, Experiment};

#[derive(Args)]
pub struct RunArgs {
    /// The experiment file (TOML); see examples/industrial.toml and examples/industrial-cpu.toml.
    pub experiment: PathBuf,
    /// Write the run here instead of the file's `out` (e.g. outside a work tree that is laid anew).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run with this seed instead of the file's `seed` (SFT, selections, RL sampling, the report's bootstrap;
    /// not the evaluation's `sample_seed`), e.g. to repeat an arm with another draw; a run directory holds one seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Only write report.md from the rows finished so far (e.g. while the run goes on, or after it was cut
    /// off); trains and evaluates nothing.
    #[arg(long, conflicts_with = "plan")]
    pub report_only: bool,
    /// List every stage in the order the run takes them: finished (with its wall time), part done, or to do,
    /// with the time left estimated from this run's own finished stages of the same kind, and the disk the RL
    /// runs left need against what is free; trains nothing.
    #[arg(long)]
    pub plan: bool,
}

pub fn run(a: RunArgs, progress: bool) -> Result<()> {
    let mut e = Experiment::load(&a.experiment)?;
    if let Some(out) = a.out {
        e.out = out;
    }
    if let Some(seed) = a.seed {
        e.seed = seed;
    }
    let report = if a.plan {
        plan(&e)?
    } else if a.report_only {
        report_so_far(&e)?
    } else {
        run_experiment(&e, progress)?
    };
    println!("{report}");
    Ok(())
}
