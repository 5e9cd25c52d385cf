//! What the model's integration tests share.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use minirec_model::weights::load_hf_dir;
use minirec_model::Decoder;

/// One of the tiny HF reference models in `tests/fixtures` (llama, qwen2, gemma2), f32 on the CPU.
#[allow(dead_code)] // each test file uses what it needs of this module
pub fn fixture_model(name: &str) -> Decoder {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let (cfg, w) = load_hf_dir(&dir, &Device::Cpu).unwrap();
    Decoder::from_weights(cfg, &w, DType::F32, &Device::Cpu).unwrap()
}

/// The largest absolute value of a tensor.
#[allow(dead_code)]
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The largest absolute difference between two tensors of one shape.
#[allow(dead_code)]
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}
