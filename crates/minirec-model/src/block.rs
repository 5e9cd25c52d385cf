//! The decoder's building blocks, one type each as candle's `qwen2.rs` shapes them: `Attention`, `Mlp` and
//! the decoder layer `Block`, each built by `new` from the checkpoint's weights and with its own forward.
//! The same forwards serve training, scoring, prompt prefill and (through `Attention::project` and
//! `Block::tail`) the decode step.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::config::{Activation, Family, ModelConfig};
use crate::error::Result;
use crate::kernels::attention::{self, AttentionSpec};
use crate::kernels::silu_mul;
use crate::layers::{activation, softcap, softmax_last, Linear, RmsNorm, Rope};
use crate::weights::Weights;

/// Reads one layer's tensors from a checkpoint in the model's dtype and device.
pub(crate) struct Loader<'a> {
    pub w: &'a Weights,
    pub cfg: &'a ModelConfig,
    pub dtype: DType,
    pub device: &'a Device,
}

impl Loader<'_> {
    pub fn get(&self, name: &str) -> Result<Tensor> {
        Ok(self.w.get(name, self.dtype)?.to_device(self.device)?)
    }

    pub fn norm(&self, name: &str) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.get(name)?,
            eps: self.cfg.rms_norm_eps,
            plus_one: self.cfg.family == Family::Gemma2,
        })
    }

    /// `{prefix}.weight`, and `{prefix}.bias` if `bias` or if the checkpoint has one.
    pub fn linear(&self, prefix: &str, bias: bool) -> Result<Linear> {
        let b = format!("{prefix}.bias");
        let b = if bias || self.w.contains(&b) {
            Some(self.get(&b)?)
        } else {
            None
        };
        Ok(Linear::new(self.get(&format!("{prefix}.weight"))?, b))
    }
}

/// What every layer of one whole-sequence pass shares: rotary tables for the rows' positions, the causal
/// (and sliding-window) and padding biases of the composed path, the attention kernel's specs.
#[derive(Clone)]
pub(crate) struct LayerInputs {
    pub cos: Tensor,
    pub sin: Tensor,
    pub causal: Tensor,
    pub sliding: Option<Tensor>,
    pub pad: Tensor,
    pub full_spec: Arc<AttentionSpec>,
    pub window_spec: Arc<AttentionSpec>,
}

/// Keys and values a layer's rows attend to before their own: a shared prompt's (see `Decoder::forward_shared`).
pub(crate) type KeysBefore<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>;

#[derive(Debug, Clone)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
}

impl Attention {
    pub(crate) fn new(l: &Loader, prefix: &str) -> Result<Self> {
        let bias = l.cfg.attention_bias;
        Ok(Attention {
            q: l.linear(&format!("{prefix}.q_proj"), bias)?,
            k: l.linear(&format!("{prefix}.k_proj"), bias)?,
            v: l.linear(&format!("{prefix}.v_proj"), bias)?,
            o: l.linear(&format!("{prefix}.o_proj"), false)?,
        })
    }

    /// q [B, Hq, T, D], k and v [B, KVH, T, D] of x [B, T, H], before RoPE.
    pub(crate) fn project(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let heads = |l: &Linear, h: usize| -> Result<Tensor> {
            Ok(l.forward(x)?
                .reshape((b, t, h, cfg.head_dim))?
                .transpose(1, 2)?)
        };
        Ok((
            heads(&self.q, cfg.num_heads)?,
            heads(&self.k, cfg.num_kv_heads)?,
            heads(&self.v, cfg.num_kv_heads)?,
        ))
    }

    /// Causal self-attention of normed x [B, T, H] (after `before`'s keys, if any). Returns the output
    /// projection [B, T, H] and the rows' own keys (after RoPE) and values.
    pub(crate) fn forward(
        &self,
        cfg: &ModelConfig,
        x: &Tensor,
        inputs: &LayerInputs,
        sliding: bool,
        before: Option<KeysBefore>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (q, k, v) = self.project(x, cfg)?;
        let q = Rope::apply(&q, &inputs.cos, &inputs.sin)?;
        let k = Rope::apply(&k, &inputs.cos, &inputs.sin)?;
        let (ka, va) = match before {
            None => (k.clone(), v.clone()),
            Some(f) => f(&k, &v)?,
        };
        let (causal, spec) = match (&inputs.sliding, sliding) {
            (Some(s), true) => (s, &inputs.window_spec),
            _ => (&inputs.causal, &inputs.full_spec),
        };
        let out = if crate::kernels::supported(&q) {
            attention::causal_attention(&q, &ka, &va, spec.clone())?
        } else {
            let kr = repeat_kv(&ka, cfg.kv_groups())?;
            let vr = repeat_kv(&va, cfg.kv_groups())?;
            let scores = (q.contiguous()?.matmul(&kr.contiguous()?.t()?)? * cfg.attn_scale())?
                .to_dtype(DType::F32)?;
            let scores = softcap(&scores, cfg.attn_logit_softcapping)?
                .broadcast_add(causal)?
                .broadcast_add(&inputs.pad)?;
            let probs = softmax_last(&scores)?.to_dtype(x.dtype())?;
            probs.matmul(&vr.contiguous()?)?
        };
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, cfg.num_heads * cfg.head_dim))?;
        Ok((self.o.forward(&out)?, k, v))
    }
}

pub(crate) fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, h, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, h, groups, t, d))?
        .reshape((b, h * groups, t, d))?)
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Mlp {
    pub(crate) fn new(l: &Loader, prefix: &str) -> Result<Self> {
        Ok(Mlp {
            gate: l.linear(&format!("{prefix}.gate_proj"), false)?,
            up: l.linear(&format!("{prefix}.up_proj"), false)?,
            down: l.linear(&format!("{prefix}.down_proj"), false)?,
        })
    }

    pub(crate) fn forward(&self, cfg: &ModelConfig, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        let h = if cfg.activation == Activation::Silu && crate::kernels::supported(&g) {
            silu_mul::silu_mul(&g, &u)?
        } else {
            (activation(&g, cfg.activation)? * u)?
        };
        self.down.forward(&h)
    }
}

/// One decoder layer: pre-norm attention and MLP with residuals (Gemma-2 adds post-norms).
#[derive(Debug, Clone)]
pub struct Block {
    pub attn: Attention,
    pub mlp: Mlp,
    pub input_norm: RmsNorm,
    pub post_attn_norm: RmsNorm,
    /// Gemma-2 only.
    pub pre_ff_norm: Option<RmsNorm>,
    pub post_ff_norm: Option<RmsNorm>,
    pub sliding: bool,
}

impl Block {
    pub(crate) fn new(l: &Loader, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let gemma = l.cfg.family == Family::Gemma2;
        let gemma_norm = |n: &str| -> Result<Option<RmsNorm>> {
            gemma
                .then(|| l.norm(&format!("{p}.{n}.weight")))
                .transpose()
        };
        Ok(Block {
            attn: Attention::new(l, &format!("{p}.self_attn"))?,
            mlp: Mlp::new(l, &format!("{p}.mlp"))?,
            input_norm: l.norm(&format!("{p}.input_layernorm.weight"))?,
            post_attn_norm: l.norm(&format!("{p}.post_attention_layernorm.weight"))?,
            pre_ff_norm: gemma_norm("pre_feedforward_layernorm")?,
            post_ff_norm: gemma_norm("post_feedforward_layernorm")?,
            sliding: l.cfg.sliding_layers[layer],
        })
    }

    /// The layer over x [B, T, H]: its output and the rows' keys and values.
    pub(crate) fn forward(
        &self,
        cfg: &ModelConfig,
        x: &Tensor,
        inputs: &LayerInputs,
        before: Option<KeysBefore>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let normed = self.input_norm.forward(x)?;
        let (a, k, v) = self
            .attn
            .forward(cfg, &normed, inputs, self.sliding, before)?;
        Ok((self.tail(cfg, x, a)?, k, v))
    }

    /// Residual update of the layer around `attn_out = attention(normed x)`: the MLP half.
    pub(crate) fn tail(&self, cfg: &ModelConfig, x: &Tensor, attn_out: Tensor) -> Result<Tensor> {
        let h = match &self.pre_ff_norm {
            None => (x + attn_out)?,
            Some(_) => (x + self.post_attn_norm.forward(&attn_out)?)?,
        };
        match (&self.pre_ff_norm, &self.post_ff_norm) {
            (Some(pre), Some(post)) => {
                let m = self.mlp.forward(cfg, &pre.forward(&h)?)?;
                Ok((&h + post.forward(&m)?)?)
            }
            _ => {
                let m = self.mlp.forward(cfg, &self.post_attn_norm.forward(&h)?)?;
                Ok((&h + m)?)
            }
        }
    }

    /// Every tensor of the layer (weights, biases, norms, adapters): where its gradients may go.
    pub(crate) fn tensors(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        for l in [
            &self.attn.q,
            &self.attn.k,
            &self.attn.v,
            &self.attn.o,
            &self.mlp.gate,
            &self.mlp.up,
            &self.mlp.down,
        ] {
            out.push(l.weight.clone());
            out.extend(l.bias.clone());
            if let Some(a) = &l.lora {
                out.push(a.a.as_tensor().clone());
                out.push(a.b.as_tensor().clone());
            }
        }
        let norms = [&self.input_norm, &self.post_attn_norm];
        out.extend(norms.iter().map(|n| n.weight.clone()));
        for n in [&self.pre_ff_norm, &self.post_ff_norm]
            .into_iter()
            .flatten()
        {
            out.push(n.weight.clone());
        }
        out
    }
}
