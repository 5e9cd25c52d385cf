//! One configuration for the three decoder families, read from an HF `config.json` or from GGUF metadata.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama, SmolLM2, Mistral-style decoders.
    Llama,
    /// Qwen2 / Qwen2.5: biases on q, k, v.
    Qwen2,
    /// Gemma-2: (1 + w) RMSNorm, pre/post norms, soft-capping, alternating sliding window, scaled embeddings.
    Gemma2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    GeluTanh,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub activation: Activation,
    /// Gemma-2: attention scores are scaled by this^-0.5 instead of head_dim^-0.5.
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window.
    pub sliding_layers: Vec<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

fn get_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn need_usize(v: &Value, key: &str) -> Result<usize> {
    get_usize(v, key)
        .ok_or_else(|| ModelError::Invalid(format!("config.json has no integer {key:?}")))
}

fn get_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads an HF `config.json` (transformers 4.x and 5.x layouts).
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let family = match model_type {
            "llama" | "mistral" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "gemma2" => Family::Gemma2,
            other => return Err(ModelError::UnsupportedArch(other.to_string())),
        };
        if let Some(scaling) = v.get("rope_scaling").filter(|s| !s.is_null()) {
            let kind = scaling
                .get("rope_type")
                .or(scaling.get("type"))
                .and_then(Value::as_str);
            if kind != Some("default") {
                return Err(ModelError::Invalid(format!(
                    "rope_scaling {scaling} is not supported"
                )));
            }
        }
        let hidden_size = need_usize(v, "hidden_size")?;
        let num_heads = need_usize(v, "num_attention_heads")?;
        let num_layers = need_usize(v, "num_hidden_layers")?;
        // transformers 5 moves rope_theta under rope_parameters (per layer type for some models).
        let rope_theta = get_f64(v, "rope_theta")
            .or_else(|| {
                v.get("rope_parameters")
                    .and_then(|r| get_f64(r, "rope_theta"))
            })
            .or_else(|| {
                v.get("rope_parameters")
                    .and_then(|r| r.get("full_attention"))
                    .and_then(|r| get_f64(r, "rope_theta"))
            })
            .unwrap_or(10_000.0);
        let act = v
            .get("hidden_activation")
            .or(v.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or("silu");
        let activation = match act {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" => Activation::GeluTanh,
            other => {
                return Err(ModelError::Invalid(format!(
                    "activation {other:?} is not supported"
                )))
            }
        };
        let sliding_window = match family {
            Family::Gemma2 => get_usize(v, "sliding_window"),
            _ if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) => {
                get_usize(v, "sliding_window")
            }
            _ => None,
        };
        let sliding_layers = match (family, v.get("layer_types").and_then(Value::as_array)) {
            (_, Some(types)) if sliding_window.is_some() => types
                .iter()
                .map(|t| t.as_str() == Some("sliding_attention"))
                .collect(),
            (Family::Gemma2, _) => (0..num_layers).map(|i| i % 2 == 0).collect(),
            (_, _) if sliding_window.is_some() => vec![true; num_layers],
            _ => vec![false; num_layers],
        };
        let tie_default = matches!(family, Family::Gemma2);
        let cfg = ModelConfig {
            family,
            vocab_size: need_usize(v, "vocab_size")?,
            hidden_size,
            intermediate_size: need_usize(v, "intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads: get_usize(v, "num_key_value_heads").unwrap_or(num_heads),
            head_dim: get_usize(v, "head_dim").unwrap_or(hidden_size / num_heads),
            rms_norm_eps: get_f64(v, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: get_usize(v, "max_position_embeddings").unwrap_or(8192),
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(tie_default),
            attention_bias: match family {
                Family::Qwen2 => true,
                _ => v
                    .get("attention_bias")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            activation,
            query_pre_attn_scalar: get_f64(v, "query_pre_attn_scalar"),
            attn_logit_softcapping: get_f64(v, "attn_logit_softcapping"),
            final_logit_softcapping: get_f64(v, "final_logit_softcapping"),
            sliding_window,
            sliding_layers,
            bos_token_id: first_id(v.get("bos_token_id")),
            eos_token_id: first_id(v.get("eos_token_id")),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if self.sliding_layers.len() != self.num_layers {
            return bad(format!(
                "{} layer types for {} layers",
                self.sliding_layers.len(),
                self.num_layers
            ));
        }
        Ok(())
    }

    /// Writes the HF `config.json` this configuration corresponds to.
    pub fn to_hf_json(&self) -> Value {
        let model_type = match self.family {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Gemma2 => "gemma2",
        };
        let arch = match self.family {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Gemma2 => "Gemma2ForCausalLM",
        };
        let mut v = serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        });
        let m = v.as_object_mut().expect("object");
        match self.activation {
            Activation::Silu => m.insert("hidden_act".into(), "silu".into()),
            Activation::GeluTanh => {
                m.insert("hidden_act".into(), "gelu_pytorch_tanh".into());
                m.insert("hidden_activation".into(), "gelu_pytorch_tanh".into())
            }
        };
        if self.family == Family::Llama {
            m.insert("attention_bias".into(), self.attention_bias.into());
        }
        for (k, val) in [
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
        ] {
            if let Some(x) = val {
                m.insert(k.into(), x.into());
            }
        }
        if let Some(w) = self.sliding_window {
            m.insert("sliding_window".into(), w.into());
        }
        for (k, val) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(x) = val {
                m.insert(k.into(), x.into());
            }
        }
        v
    }

    pub fn kv_groups(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Scale applied to q·k.
    pub fn attn_scale(&self) -> f64 {
        match self.query_pre_attn_scalar {
            Some(s) if self.family == Family::Gemma2 => 1.0 / s.sqrt(),
            _ => 1.0 / (self.head_dim as f64).sqrt(),
        }
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let norms = if self.family == Family::Gemma2 {
            4 * h
        } else {
            2 * h
        };
        let layer = h * q + 2 * h * kv + q * h + bias + 3 * h * self.intermediate_size + norms;
        let embed = self.vocab_size * h;
        embed + self.num_layers * layer + h + if self.tie_word_embeddings { 0 } else { embed }
    }
}
