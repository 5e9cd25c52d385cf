//! Loading pretrained weights under HF tensor names: an HF directory (config.json, one or several
//! `*.safetensors`) or a GGUF file (dequantised on load; llama.cpp's tensor names and Q/K row order mapped back
//! to HF's).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use crate::config::{Activation, Family, ModelConfig};
use crate::error::{ModelError, Result};

/// Tensors by HF name, and where they came from (for error messages).
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    source: String,
}

impl Weights {
    pub fn new(tensors: HashMap<String, Tensor>, source: impl Into<String>) -> Self {
        Weights {
            tensors,
            source: source.into(),
        }
    }

    /// The tensor `name`, converted to `dtype`.
    pub fn get(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                source_desc: self.source.clone(),
            })?;
        Ok(t.to_dtype(dtype)?)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The safetensors files of an HF directory: the index's shards if there is an index, else every
/// `*.safetensors` file, sorted.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v = crate::error::read_json_file(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::file(&index, "no weight_map"))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|err| ModelError::Io {
            path: dir.to_path_buf(),
            err,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("adapter_"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::file(
            dir,
            "no *.safetensors weights in this directory",
        ));
    }
    Ok(files)
}

/// Reads an HF directory's config and weights (kept in their stored dtype on `device`).
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let v = crate::error::read_json_file(&cfg_path)?;
    let cfg =
        ModelConfig::from_hf_json(&v).map_err(|e| ModelError::file(&cfg_path, e.to_string()))?;
    let mut tensors = HashMap::new();
    for f in safetensors_files(dir)? {
        let part = candle_core::safetensors::load(&f, device)
            .map_err(|e| ModelError::file(&f, e.to_string()))?;
        tensors.extend(part);
    }
    Ok((cfg, Weights::new(tensors, dir.display().to_string())))
}

fn meta<'a>(c: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    c.metadata.get(key)
}

fn meta_usize(c: &gguf_file::Content, key: &str) -> Option<usize> {
    meta(c, key)
        .and_then(|v| {
            v.to_u64()
                .ok()
                .or_else(|| v.to_u32().ok().map(u64::from))
                .or_else(|| v.to_i32().ok().map(|x| x as u64))
        })
        .map(|x| x as usize)
}

fn meta_f64(c: &gguf_file::Content, key: &str) -> Option<f64> {
    meta(c, key).and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
}

/// The model configuration in a GGUF file's metadata.
pub fn gguf_config(c: &gguf_file::Content, path: &Path) -> Result<ModelConfig> {
    let arch = meta(c, "general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    let family = match arch.as_str() {
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "gemma2" => Family::Gemma2,
        other => return Err(ModelError::UnsupportedArch(other.to_string())),
    };
    let need = |key: &str| {
        meta_usize(c, &format!("{arch}.{key}"))
            .ok_or_else(|| ModelError::file(path, format!("GGUF metadata has no {arch}.{key}")))
    };
    let hidden_size = need("embedding_length")?;
    let num_heads = need("attention.head_count")?;
    let num_layers = need("block_count")?;
    let vocab_size = match meta_usize(c, &format!("{arch}.vocab_size")) {
        Some(v) => v,
        None => meta(c, "tokenizer.ggml.tokens")
            .and_then(|t| t.to_vec().ok())
            .map(|t| t.len())
            .ok_or_else(|| ModelError::file(path, "GGUF metadata has no vocabulary size"))?,
    };
    let head_dim = meta_usize(c, &format!("{arch}.attention.key_length"))
        .or_else(|| meta_usize(c, &format!("{arch}.rope.dimension_count")))
        .unwrap_or(hidden_size / num_heads);
    let sliding_window = meta_usize(c, &format!("{arch}.attention.sliding_window"));
    let gemma = family == Family::Gemma2;
    let cfg = ModelConfig {
        family,
        vocab_size,
        hidden_size,
        intermediate_size: need("feed_forward_length")?,
        num_layers,
        num_heads,
        num_kv_heads: meta_usize(c, &format!("{arch}.attention.head_count_kv"))
            .unwrap_or(num_heads),
        head_dim,
        rms_norm_eps: meta_f64(c, &format!("{arch}.attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-6),
        rope_theta: meta_f64(c, &format!("{arch}.rope.freq_base")).unwrap_or(10_000.0),
        max_position_embeddings: meta_usize(c, &format!("{arch}.context_length")).unwrap_or(8192),
        tie_word_embeddings: !c.tensor_infos.contains_key("output.weight"),
        attention_bias: c.tensor_infos.contains_key("blk.0.attn_q.bias"),
        activation: if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        query_pre_attn_scalar: gemma.then_some(head_dim as f64),
        attn_logit_softcapping: meta_f64(c, &format!("{arch}.attn_logit_softcapping")),
        final_logit_softcapping: meta_f64(c, &format!("{arch}.final_logit_softcapping")),
        sliding_window: if gemma { sliding_window } else { None },
        sliding_layers: (0..num_layers)
            .map(|i| gemma && sliding_window.is_some() && i % 2 == 0)
            .collect(),
        bos_token_id: meta_usize(c, "tokenizer.ggml.bos_token_id").map(|x| x as u32),
        eos_token_id: meta_usize(c, "tokenizer.ggml.eos_token_id").map(|x| x as u32),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// llama.cpp's tensor name for an HF name's GGUF counterpart.
fn hf_name(gguf: &str, family: Family) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match (module, family) {
        ("attn_q", _) => "self_attn.q_proj",
        ("attn_k", _) => "self_attn.k_proj",
        ("attn_v", _) => "self_attn.v_proj",
        ("attn_output", _) => "self_attn.o_proj",
        ("attn_norm", _) => "input_layernorm",
        ("ffn_gate", _) => "mlp.gate_proj",
        ("ffn_up", _) => "mlp.up_proj",
        ("ffn_down", _) => "mlp.down_proj",
        ("ffn_norm", Family::Gemma2) => "pre_feedforward_layernorm",
        ("ffn_norm", _) => "post_attention_layernorm",
        ("post_attention_norm", _) => "post_attention_layernorm",
        ("post_ffw_norm", _) => "post_feedforward_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's interleaving of Q/K rows (its converter permutes them for its rotary layout).
fn unpermute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    Ok(w.reshape((heads, out / heads / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

/// Reads a GGUF file's configuration, dequantised weights (f32) and raw content (for the tokenizer).
pub fn load_gguf(
    path: &Path,
    device: &Device,
) -> Result<(ModelConfig, Weights, gguf_file::Content)> {
    let mut file = File::open(path).map_err(|err| ModelError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| ModelError::file(path, format!("not a readable GGUF file: {e}")))?;
    let cfg = gguf_config(&content, path)?;
    let mut tensors = HashMap::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in names {
        let Some(hf) = hf_name(&name, cfg.family) else {
            tracing::debug!("ignoring GGUF tensor {name}");
            continue;
        };
        let q = content
            .tensor(&mut file, &name, device)
            .map_err(|e| ModelError::file(path, format!("tensor {name}: {e}")))?;
        let mut t = q.dequantize(device)?;
        if cfg.family == Family::Llama {
            if name.ends_with("attn_q.weight") {
                t = unpermute_qk(&t, cfg.num_heads)?;
            } else if name.ends_with("attn_k.weight") {
                t = unpermute_qk(&t, cfg.num_kv_heads)?;
            }
        }
        // llama.cpp stores Gemma's norm weights with the +1 already added.
        if cfg.family == Family::Gemma2 && (hf.contains("layernorm") || hf == "model.norm.weight") {
            t = (t - 1.0)?;
        }
        tensors.insert(hf, t);
    }
    Ok((
        cfg,
        Weights::new(tensors, path.display().to_string()),
        content,
    ))
}
