//! `minirec compare A B`: each metric's difference between two systems on the same samples, with a
//! paired-bootstrap 95% interval.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use minirec_eval::{paired_bootstrap, parse_ks, read_predictions, Comparison};

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
    /// Write the comparison as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let ks = parse_ks(&a.k).map_err(|e| anyhow::anyhow!("--k: {e}"))?;
    let (pa, pb) = (predictions_path(&a.a)?, predictions_path(&a.b)?);
    let c = compare_files(&pa, &pb, &ks, a.resamples, a.seed)?;
    print!("{}", c.table(&label(&pa), &label(&pb)));
    if let Some(out) = &a.json {
        minirec_data::fsutil::write_json_atomic(out, &c)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

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

fn predictions_path(p: &Path) -> Result<PathBuf> {
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

fn label(p: &Path) -> String {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_end_matches(".jsonl")
        .trim_end_matches(".predictions")
        .to_string()
}
