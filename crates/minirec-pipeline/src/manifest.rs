//! A stage's run directory: its `manifest.json` (stage, configuration, summary), and whether it is finished.

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Writes `manifest.json` into a run directory: the stage, its configuration and its summary.
pub fn write_run_manifest(
    out: &Path,
    stage: &str,
    config: serde_json::Value,
    summary: serde_json::Value,
) -> Result<()> {
    let mut manifest = minirec_data::Manifest::new(stage, config, Vec::new());
    manifest.outputs.insert("summary".into(), summary);
    minirec_data::fsutil::write_json_atomic(&out.join("manifest.json"), &manifest)?;
    Ok(())
}

/// The exported model of a finished run (one with a manifest), if any.
pub fn exported(run: &Path) -> Option<PathBuf> {
    minirec_model::load::run_export(run).filter(|_| run.join("manifest.json").is_file())
}
