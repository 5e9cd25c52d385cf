use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_data::Split;
use minirec_eval::{parse_ks, score_predictions_file};
use minirec_pipeline::eval::{evaluate_model, EvalJob};

#[derive(Args)]
pub struct EvalArgs {
    /// Predictions to score: JSON Lines {"target": "...", "ranked": ["...", ...]}, best first.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// A model or run to evaluate on --data: an LLM (trie-constrained beam search over every title) or a
    /// `minirec baseline` run (every item scored, ranked by title).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prepared dataset (with --model).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: Split,
    /// Beam width: the number of ranked titles per sample.
    #[arg(long, default_value_t = 20)]
    beam: usize,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Evaluate only the first N samples of the split.
    #[arg(long, conflicts_with = "sample")]
    limit: Option<usize>,
    /// Evaluate a seeded random subset of N samples of the split (the same N and seed give the same samples,
    /// so every system is scored on one fixed subset).
    #[arg(long)]
    sample: Option<usize>,
    #[arg(long, default_value_t = 42)]
    sample_seed: u64,
    /// Also write the ranked titles per sample (the predictions format) here, a batch at a time.
    #[arg(long)]
    predictions_out: Option<PathBuf>,
    /// Continue the --predictions-out file of an interrupted evaluation: its samples are kept, the rest ranked.
    #[arg(long, requires = "predictions_out")]
    resume: bool,
    #[arg(long)]
    cpu: bool,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, default_value = "5,10,20")]
    k: String,
    /// Write the metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: EvalArgs, progress: bool) -> Result<()> {
    let ks = parse_ks(&a.k).map_err(|e| anyhow::anyhow!("--k: {e}"))?;
    let report = match (&a.predictions, &a.model) {
        (Some(p), None) => score_predictions_file(p, &ks)?,
        (None, Some(m)) => {
            let data = a
                .data
                .as_ref()
                .context("--model needs --data (a prepared dataset)")?;
            let job = EvalJob {
                split: a.split,
                beam: a.beam,
                batch: a.batch,
                limit: a.limit,
                sample: a.sample,
                sample_seed: a.sample_seed,
                ks,
                predictions_out: a.predictions_out.clone(),
                resume: a.resume,
                cpu: a.cpu,
            };
            evaluate_model(m, data, &job, progress)?
        }
        (Some(_), Some(_)) => bail!("give either --predictions or --model, not both"),
        (None, None) => bail!("give --predictions FILE, or --model PATH with --data DIR"),
    };
    print!("{}", report.table());
    if report.lists_with_repeats > 0 {
        tracing::warn!(
            "{} ranked lists repeated a title; repeats were dropped before ranking",
            report.lists_with_repeats
        );
    }
    if let Some(out) = &a.json {
        minirec_data::fsutil::write_json_atomic(out, &report.to_json())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
