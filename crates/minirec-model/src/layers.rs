//! Building blocks. On the CPU in f32 our kernels serve training and inference alike. Elsewhere (CUDA, bf16)
//! a tensor that is part of an autograd graph takes candle's composed, differentiable ops and any other takes
//! its fused kernels, which have no backward pass: the choice follows the data, so no caller can put a
//! no-backward op on a training path.

use candle_core::{DType, Device, Module, Tensor, Var, D};

use crate::error::{ModelError, Result};

/// A low-rank adapter on a linear layer: y += scale · (x Aᵀ) Bᵀ.
#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
    /// A bf16 copy of the frozen weight (or LoRA's frozen base) for the bf16 kernel
    /// (`Decoder::pack_frozen_bf16`).
    pub bf16: Option<crate::kernels::frozen::Bf16Weight>,
    /// A trainable weight is multiplied in mixed precision on the bf16 kernel (`Decoder::set_mixed_bf16`).
    pub mixed_bf16: bool,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            lora: None,
            bf16: None,
            mixed_bf16: false,
        }
    }

    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("rank ≥ 1");
        let rows = x.elem_count() / in_dim;
        let x2 = x.reshape((rows, in_dim))?;
        // Over many rows (SFT batches) the adapter is folded into the weight for the pass: candle keeps every
        // op's output alive for backward, and the low-rank path keeps three row-sized outputs (rows × out)
        // per layer, the fold three weight-sized ones (out × in) — so fold past `in` rows. The low-rank path
        // is cheaper in FLOPs at any size: the fold's backward adds the weight-sized gradient gᵀx. A bf16 copy
        // of the base serves only the base itself, so with one the adapter stays on its low-rank path.
        let bf16_base = self
            .bf16
            .as_ref()
            .is_some_and(|b| b.serves(&x2, &self.weight));
        let fold = self.lora.is_some() && rows > in_dim && !bf16_base;
        let w = if fold {
            self.merged_weight()?
        } else {
            self.weight.clone()
        };
        let mut y = crate::kernels::frozen::linear(&x2, &w, self.bf16.as_ref(), self.mixed_bf16)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let (Some(l), false) = (&self.lora, fold) {
            // Adapters are f32 whatever the base dtype (bf16 on CUDA): the low-rank path runs in theirs.
            let low = x2
                .to_dtype(l.a.dtype())?
                .matmul(&l.a.as_tensor().t()?)?
                .matmul(&l.b.as_tensor().t()?)?;
            let low = (low * l.scale)?.to_dtype(y.dtype())?;
            y = (y + low)?;
        }
        let mut out = dims;
        *out.last_mut().expect("rank ≥ 1") = self.out_dim();
        Ok(y.reshape(out)?)
    }

    /// The weight with the adapter folded in.
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.lora {
            None => Ok(self.weight.clone()),
            Some(l) => {
                let delta = (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?;
                let delta = delta.to_dtype(self.weight.dtype())?;
                Ok(crate::kernels::frozen::add_to_frozen(&self.weight, &delta)?)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
    /// Gemma scales by (1 + w).
    pub plus_one: bool,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if crate::kernels::supported(x) && self.weight.dtype() == DType::F32 {
            return Ok(crate::kernels::rms_norm::rms_norm(
                x,
                &self.weight,
                self.eps as f32,
                self.plus_one,
            )?);
        }
        if inference_only(x) && !self.weight.track_op() {
            let w = if self.plus_one {
                (&self.weight + 1.0)?
            } else {
                self.weight.clone()
            };
            let x = x.contiguous()?;
            return Ok(candle_nn::ops::rms_norm(
                &x,
                &w.to_dtype(x.dtype())?,
                self.eps as f32,
            )?);
        }
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        if self.plus_one {
            let w = (self.weight.to_dtype(DType::F32)? + 1.0)?;
            Ok(normed.broadcast_mul(&w)?.to_dtype(dtype)?)
        } else {
            Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
        }
    }
}

/// Rotary embeddings in HF's rotate-half layout, with cos/sin tables looked up per row's positions.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    max_pos: usize,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, max_pos: usize, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Rope {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            max_pos,
        })
    }

    /// cos and sin for `positions` (row-major, `shape` = (B, T)): [B, T, head_dim / 2] in `dtype`.
    pub fn lookup(
        &self,
        positions: &[u32],
        shape: (usize, usize),
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let (b, t) = shape;
        if let Some(&max) = positions
            .iter()
            .max()
            .filter(|&&m| m as usize >= self.max_pos)
        {
            return Err(ModelError::Invalid(format!(
                "position {max} is beyond the model's {} positions",
                self.max_pos
            )));
        }
        let flat = Tensor::from_slice(positions, positions.len(), self.cos.device())?;
        let c = self
            .cos
            .index_select(&flat, 0)?
            .reshape((b, t, ()))?
            .to_dtype(dtype)?;
        let s = self
            .sin
            .index_select(&flat, 0)?
            .reshape((b, t, ()))?
            .to_dtype(dtype)?;
        Ok((c, s))
    }

    /// Applies to x: [B, H, T, D].
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if crate::kernels::supported(x) && cos.dtype() == DType::F32 {
            return Ok(crate::kernels::rope::rope(x, cos, sin)?);
        }
        if inference_only(x) {
            return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?);
        }
        let d = x.dim(D::Minus1)?;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}

/// Whether `x` can take candle's fused kernels: it is in no autograd graph, in a dtype they serve.
fn inference_only(x: &Tensor) -> bool {
    !x.track_op() && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// Softmax over the last dimension; candle's fused kernel when `x` needs no gradient.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if inference_only(x) {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    } else {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    }
}

/// tanh(x / cap) · cap.
pub fn softcap(x: &Tensor, cap: Option<f64>) -> Result<Tensor> {
    match cap {
        Some(c) => Ok(((x / c)?.tanh()? * c)?),
        None => Ok(x.clone()),
    }
}

pub fn activation(x: &Tensor, act: crate::config::Activation) -> Result<Tensor> {
    Ok(match act {
        crate::config::Activation::Silu => candle_nn::Activation::Silu.forward(x)?,
        crate::config::Activation::GeluTanh => x.gelu()?,
    })
}
