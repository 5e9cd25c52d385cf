//! Text ⇄ token ids. From an HF `tokenizer.json`, or rebuilt from GGUF metadata (GPT-2-style byte-level BPE).
//!
//! Convention used everywhere: text is encoded without special tokens (GGUF's `add_bos_token` is false for
//! SmolLM2, and our prompts carry none); a prompt and its response are encoded separately and concatenated.
//! The prompt template ends in a newline, so no token can straddle the boundary.

use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::{json, Value};

use crate::error::{ModelError, Result};

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

fn tk_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::file(path, format!("tokenizer: {e}")))?;
        Ok(TextTokenizer { inner })
    }

    pub fn from_json(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json.parse().map_err(tk_err)?;
        Ok(TextTokenizer { inner })
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata as an HF tokenizer.json.
    pub fn from_gguf(c: &gguf_file::Content) -> Result<Self> {
        Self::from_json(&gguf_tokenizer_json(c)?.to_string())
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    pub fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(tk_err)?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| ModelError::file(path, e.to_string()))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// A word-level tokenizer (whitespace and punctuation split, as HF's `Whitespace` pre-tokenizer does) over
    /// every piece of `texts`, plus `[UNK]` (id 0). Small vocabularies for tests and tiny demo models.
    pub fn word_level<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut words = std::collections::BTreeSet::new();
        for text in texts {
            let mut cur = String::new();
            for c in text.chars() {
                if c.is_alphanumeric() || c == '_' {
                    cur.push(c);
                    continue;
                }
                if !cur.is_empty() {
                    words.insert(std::mem::take(&mut cur));
                }
                if !c.is_whitespace() {
                    words.insert(c.to_string());
                }
            }
            if !cur.is_empty() {
                words.insert(cur);
            }
        }
        let mut vocab = serde_json::Map::new();
        vocab.insert("[UNK]".into(), json!(0));
        for (i, w) in words.into_iter().enumerate() {
            vocab.insert(w, json!(i + 1));
        }
        Self::from_json(
            &json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
                "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
                "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
            })
            .to_string(),
        )
    }
}

fn strings(c: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    let v = c
        .metadata
        .get(key)
        .ok_or_else(|| ModelError::Tokenizer(format!("GGUF metadata has no {key}")))?;
    v.to_vec()
        .map_err(tk_err)?
        .iter()
        .map(|x| x.to_string().cloned().map_err(tk_err))
        .collect()
}

/// The tokenizer.json equivalent of a GGUF `gpt2`-model tokenizer.
pub fn gguf_tokenizer_json(c: &gguf_file::Content) -> Result<Value> {
    let model = c
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(ModelError::Tokenizer(format!(
            "GGUF tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\"); use an HF directory with tokenizer.json"
        )));
    }
    let tokens = strings(c, "tokenizer.ggml.tokens")?;
    let merges = strings(c, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match c.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(tk_err)?
            .iter()
            .map(|x| x.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let pre = c
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "default".into());
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre.as_str() {
        // SmolLM2 isolates every digit before the GPT-2 split.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]}),
        "gpt2" | "default" | "gpt-2" => byte_level,
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}),
        other => {
            return Err(ModelError::Tokenizer(format!(
                "GGUF pre-tokenizer {other:?} is not supported; use an HF directory with tokenizer.json"
            )))
        }
    };
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    // Control (3) and user-defined (4) tokens are matched before the model, as HF's added tokens are.
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": types[i] == 3})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}
