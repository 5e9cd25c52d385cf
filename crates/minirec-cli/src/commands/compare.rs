//! `minirec compare A B`: each metric's difference between two systems on the same samples, with a
//! paired-bootstrap 95% interval.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use minirec_eval::parse_ks;
use minirec_pipeline::compare::{compare_files, label, predictions_path, target_shares_of_files};

#[derive(Args)]
pub struct CompareArgs {
    /// The reference: a predictions file (`eval --predictions-out`), or a folder holding exactly one
    /// `*.predictions.jsonl`.
    a: PathBuf,
    /// The system compared with it (B − A is reported).
    b: PathBuf,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, default_value = "5,10,20")]
    k: String,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also list the N target items whose samples move the difference the most at NDCG@10 (or the largest
    /// K when 10 is not asked for): RL on a few hundred prompts moves the titles it was rewarded for, and one
    /// popular item can carry most of a gain.
    #[arg(long, default_value_t = 0, value_name = "N")]
    by_target: usize,
    /// Write the comparison as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let ks = parse_ks(&a.k).map_err(|e| anyhow::anyhow!("--k: {e}"))?;
    let (pa, pb) = (predictions_path(&a.a)?, predictions_path(&a.b)?);
    let c = compare_files(&pa, &pb, &ks, a.resamples, a.seed)?;
    let (la, lb) = (label(&pa), label(&pb));
    print!("{}\n{}", c.table(&la, &lb), c.movement.table(&la, &lb));
    let mut record = serde_json::to_value(&c)?;
    if a.by_target > 0 {
        let k = if ks.contains(&10) {
            10
        } else {
            *ks.iter().max().expect("parse_ks gives one")
        };
        let shares = target_shares_of_files(&pa, &pb, k, a.by_target)?;
        print!("\n{}", shares.table(&la, &lb));
        record["by_target"] = serde_json::to_value(&shares)?;
    }
    if let Some(out) = &a.json {
        minirec_data::fsutil::write_json_atomic(out, &record)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
