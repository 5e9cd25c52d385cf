//! The one way every command opens the model a user names (`--model`, `--init`, `--proxy`): any model path or
//! any run directory a stage writes, with the same log line naming what was found.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use minirec_model::load::{load_model, LoadedModel};

/// Loads the LLM at `path` for `role` (a short name for logs and errors: "model", "initial policy", ...).
/// A `minirec baseline` run is refused with a message saying which command takes it.
pub fn load_llm(path: &Path, role: &str, device: &Device, dtype: DType) -> Result<LoadedModel> {
    if crate::baseline::is_run(path) {
        bail!(
            "{}: a `minirec baseline` run (a classic sequential recommender, not an LLM); only `minirec eval --model` takes it, the {role} must be an LLM",
            path.display()
        );
    }
    let loaded = load_model(path, device, dtype).with_context(|| format!("loading the {role}"))?;
    tracing::info!("{role}: {} on {device:?}", loaded.description);
    Ok(loaded)
}

/// `load_llm` for a model that only runs inference (evaluation, recommendation, RL's reference): when
/// `--bf16-weights` asked for it and the CPU runs a bf16 kernel (AMX or AVX512_BF16), its frozen weights get
/// a bf16 copy and their f32 copies are freed (`Decoder::drop_frozen_f32`).
pub fn load_llm_for_inference(
    path: &Path,
    role: &str,
    device: &Device,
    dtype: DType,
) -> Result<LoadedModel> {
    let mut loaded = load_llm(path, role, device, dtype)?;
    let bytes = loaded.model.pack_frozen_bf16()?;
    if bytes > 0 {
        let freed = loaded.model.drop_frozen_f32()?;
        tracing::info!(
            "{role}: frozen weights in bf16 for {} ({:.0} MB; {:.0} MB of f32 copies freed)",
            minirec_model::kernels::bf16::kernel().map_or("-", |k| k.name()),
            bytes as f64 / 1e6,
            freed as f64 / 1e6
        );
    }
    Ok(loaded)
}
