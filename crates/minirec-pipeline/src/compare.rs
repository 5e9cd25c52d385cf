//! Two systems' predictions on the same samples: each metric's difference with a paired-bootstrap interval.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use minirec_eval::{paired_bootstrap, read_predictions, target_shares, Comparison, TargetShares};

/// Pairs two predictions files and bootstraps each metric's difference (B − A).
pub fn compare_files(
    a: &Path,
    b: &Path,
    ks: &[usize],
    resamples: usize,
    seed: u64,
) -> Result<Comparison> {
    let (va, vb) = (read_predictions(a)?, read_predictions(b)?);
    paired_bootstrap(&va, &vb, ks, resamples, seed)
        .map_err(|m| anyhow::anyhow!("{} vs {}: {m}", a.display(), b.display()))
}

/// The `top` targets of two predictions files that carry B − A at NDCG@`k` the most.
pub fn target_shares_of_files(a: &Path, b: &Path, k: usize, top: usize) -> Result<TargetShares> {
    let (va, vb) = (read_predictions(a)?, read_predictions(b)?);
    target_shares(&va, &vb, k, top)
        .map_err(|m| anyhow::anyhow!("{} vs {}: {m}", a.display(), b.display()))
}

/// A predictions file, or the one `*predictions.jsonl` in a folder.
pub fn predictions_path(p: &Path) -> Result<PathBuf> {
    if !p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let found: Vec<PathBuf> = std::fs::read_dir(p)
        .with_context(|| format!("reading {}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("predictions.jsonl"))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{}: no *predictions.jsonl in this folder", p.display()),
        many => bail!(
            "{}: {} predictions files in this folder; name one: {}",
            p.display(),
            many.len(),
            many.iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A predictions file's name without `.predictions.jsonl`, for tables.
pub fn label(p: &Path) -> String {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_end_matches(".jsonl")
        .trim_end_matches(".predictions")
        .to_string()
}
