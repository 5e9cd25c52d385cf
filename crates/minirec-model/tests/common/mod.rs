//! What the model's integration tests share.

use std::path::Path;

use candle_core::{DType, Device};
use minirec_model::weights::load_hf_dir;
use minirec_model::Decoder;

/// One of the tiny HF reference models in `tests/fixtures` (llama, qwen2, gemma2), f32 on the CPU.
pub fn fixture_model(name: &str) -> Decoder {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let (cfg, w) = load_hf_dir(&dir, &Device::Cpu).unwrap();
    Decoder::from_weights(cfg, &w, DType::F32, &Device::Cpu).unwrap()
}
