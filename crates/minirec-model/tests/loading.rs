//! Loading errors name what is wrong: the missing tensor, the unsupported architecture, the bad file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use minirec_model::load::load_model;
use minirec_model::weights::load_hf_dir;
use minirec_model::Decoder;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("llama").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let mut t: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("llama").join("model.safetensors"), &Device::Cpu)
            .unwrap();
    t.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&t, tmp.path().join("model.safetensors")).unwrap();
    let (cfg, w) = load_hf_dir(tmp.path(), &Device::Cpu).unwrap();
    let e = Decoder::from_weights(cfg, &w, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight"), "{e}");
}

#[test]
fn an_unsupported_architecture_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("llama").join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["model_type"] = "mamba".into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        fixture("llama").join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let e = load_hf_dir(tmp.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mamba") && e.contains("config.json"), "{e}");
}

#[test]
fn bad_paths_and_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_model(&tmp.path().join("absent"), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("absent"), "{e}");
    let f = tmp.path().join("weights.gguf");
    std::fs::write(&f, b"not a gguf file at all").unwrap();
    let e = load_model(&f, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("weights.gguf") && e.contains("GGUF"), "{e}");
    std::fs::write(&f, b"GGUF\x03\x00\x00\x00truncated").unwrap();
    let e = load_model(&f, &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("weights.gguf"), "{e}");
    // An HF directory without its tokenizer.
    let e = load_model(&fixture("llama"), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let e = load_model(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a model"), "{e}");
}
