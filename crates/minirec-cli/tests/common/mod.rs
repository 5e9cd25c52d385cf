//! Helpers shared by the CLI tests: a tiny random model whose word-level tokenizer covers a prepared dataset.

// Each test binary uses its own share of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device};
use minirec_model::load::{preset_config, random_model};
use minirec_model::lora::save_hf_dir;
use minirec_model::TextTokenizer;

/// A word-level tokenizer covering every word of the demo's prompts and titles.
fn word_tokenizer(words: &BTreeSet<String>) -> TextTokenizer {
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), (i + 1).into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    TextTokenizer::from_json(&json.to_string()).unwrap()
}

pub fn tiny_model_dir(dir: &Path, data: &Path) {
    let catalog = std::fs::read_to_string(data.join("catalog.jsonl")).unwrap();
    let mut words = BTreeSet::new();
    let prompt = std::fs::read_to_string(data.join("prompt.json")).unwrap();
    let text = catalog + &prompt;
    // Whitespace pre-tokenisation splits words from punctuation: collect the pieces it produces.
    for piece in text.split(|c: char| c.is_whitespace()) {
        let mut cur = String::new();
        for c in piece.chars() {
            if c.is_alphanumeric() || c == '_' {
                cur.push(c);
            } else {
                if !cur.is_empty() {
                    words.insert(std::mem::take(&mut cur));
                }
                words.insert(c.to_string());
            }
        }
        if !cur.is_empty() {
            words.insert(cur);
        }
    }
    let tok = word_tokenizer(&words);
    let cfg = preset_config("tiny", tok.vocab_size()).unwrap();
    let m = random_model(cfg, DType::F32, &Device::Cpu, 1).unwrap();
    save_hf_dir(&m, Some(&tok), dir).unwrap();
}

/// The demo shop of `users` users, prepared under `dir/demo/data` (`minirec demo --prepare-only`).
pub fn demo_data(dir: &Path, users: usize) -> std::path::PathBuf {
    let demo = dir.join("demo");
    ok(&[
        "demo",
        "--out",
        s(&demo),
        "--users",
        &users.to_string(),
        "--prepare-only",
    ]);
    demo.join("data")
}

/// Runs the built `minirec` with `args` and `--quiet`.
pub fn minirec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minirec"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("run minirec")
}

/// Runs `minirec` and returns its stdout, failing the test with its stderr if it did not succeed.
pub fn ok(args: &[&str]) -> String {
    let o = minirec(args);
    assert!(
        o.status.success(),
        "minirec {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
