pub mod baseline;
pub mod bench;
pub mod bench_select;
pub mod compare;
pub mod convert;
pub mod demo;
pub mod eval;
pub mod experiment;
pub mod model_arg;
pub mod prepare;
pub mod recommend;
pub mod rl;
pub mod run;
pub mod select;
pub mod sft;

/// Writes `manifest.json` into a run directory: the stage, its configuration and its summary.
pub fn write_run_manifest(
    out: &std::path::Path,
    stage: &str,
    config: serde_json::Value,
    summary: serde_json::Value,
) -> anyhow::Result<()> {
    let mut manifest = minirec_data::Manifest::new(stage, config, Vec::new());
    manifest.outputs.insert("summary".into(), summary);
    minirec_data::fsutil::write_json_atomic(&out.join("manifest.json"), &manifest)?;
    Ok(())
}
