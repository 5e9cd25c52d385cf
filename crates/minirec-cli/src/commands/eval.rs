use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_eval::{parse_ks, score_predictions_file};

#[derive(Args)]
pub struct EvalArgs {
    /// Predictions to score: JSON Lines {"target": "...", "ranked": ["...", ...]}, best first.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// A model or run to evaluate on a prepared dataset (needs the LLM core).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Cut-offs K for HR@K and NDCG@K.
    #[arg(long, default_value = "5,10,20")]
    k: String,
    /// Write the metrics as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let ks = parse_ks(&a.k).map_err(|e| anyhow::anyhow!("--k: {e}"))?;
    let report = match (&a.predictions, &a.model) {
        (Some(p), None) => score_predictions_file(p, &ks)?,
        (None, Some(_)) => bail!(
            "evaluating a model with --model is not available in this version yet (it needs the LLM core); \
             score a predictions file with --predictions"
        ),
        (Some(_), Some(_)) => bail!("give either --predictions or --model, not both"),
        (None, None) => bail!("give --predictions FILE (or --model)"),
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
