//! The SFT stage: one model fine-tuned on the first `max_train` training samples (validated on the valid
//! split), into a run directory with its manifest.

use std::path::Path;

use anyhow::{Context, Result};
use minirec_data::PreparedDataset;
use minirec_model::{Decoder, TextTokenizer};
use minirec_train::sft::{encode_samples, train, trainable, SftConfig, SftSummary};

/// One SFT run.
pub struct SftJob<'a> {
    pub cfg: SftConfig,
    /// Only the first N training samples.
    pub max_train: Option<usize>,
    pub out: &'a Path,
    /// What the model started from, for the manifest and the exported model's provenance.
    pub base: String,
    pub data: &'a Path,
    /// Continue from the run's last checkpoint.
    pub resume: bool,
}

/// Fine-tunes `model` as `job` says and writes the run's manifest.
pub fn train_sft(
    model: &mut Decoder,
    tok: &TextTokenizer,
    ds: &PreparedDataset,
    job: &SftJob,
    progress: bool,
) -> Result<SftSummary> {
    let n = job.max_train.unwrap_or(ds.train.len()).min(ds.train.len());
    let tr = encode_samples(ds, &ds.train[..n], tok)?;
    let va = encode_samples(ds, &ds.valid, tok)?;
    let vars = trainable(model, &job.cfg)?;
    let summary = train(
        model, tok, vars, &tr, &va, &job.cfg, job.out, &job.base, job.resume, progress,
    )
    .with_context(|| format!("training into {}", job.out.display()))?;
    crate::manifest::write_run_manifest(
        job.out,
        "sft",
        serde_json::json!({"config": job.cfg, "data": job.data, "model": job.base, "train_samples": n}),
        serde_json::to_value(&summary)?,
    )?;
    Ok(summary)
}
