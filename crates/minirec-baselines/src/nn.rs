//! Differentiable building blocks (candle's fused layer-norm and softmax kernels have no backward pass) and
//! seeded parameter initialisation on the host.

use candle_core::{Device, Tensor, Var, D};
use rand::Rng;

use crate::error::Result;

/// Named trainable tensors, in a fixed order (checkpoints and optimiser moments are keyed by name).
#[derive(Default)]
pub struct Params {
    pub vars: Vec<(String, Var)>,
}

impl Params {
    pub fn add(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let v = Var::from_tensor(&t)?;
        let out = v.as_tensor().clone();
        self.vars.push((name.to_string(), v));
        Ok(out)
    }

    /// N(0, std²) drawn from `rng` on the host, so the same seed gives the same model on any device.
    pub fn normal(
        &mut self,
        name: &str,
        shape: &[usize],
        std: f32,
        rng: &mut impl Rng,
        dev: &Device,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| gaussian(rng) * std).collect();
        self.add(name, Tensor::from_vec(data, shape, dev)?)
    }

    pub fn constant(
        &mut self,
        name: &str,
        shape: &[usize],
        value: f32,
        dev: &Device,
    ) -> Result<Tensor> {
        self.add(
            name,
            (Tensor::ones(shape, candle_core::DType::F32, dev)? * value as f64)?,
        )
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

pub fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Layer normalisation over the last dimension with weight and bias.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(xn.broadcast_mul(w)?.broadcast_add(b)?)
}

/// x Wᵀ + b for x [..., in], W [out, in].
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inp = *dims.last().expect("rank ≥ 1");
    let rows = x.elem_count() / inp;
    let mut y = x.reshape((rows, inp))?.matmul(&w.t()?)?;
    if let Some(b) = b {
        y = y.broadcast_add(b)?;
    }
    let mut out = dims;
    *out.last_mut().expect("rank ≥ 1") = w.dim(0)?;
    Ok(y.reshape(out)?)
}

/// log(1 + eˣ), stable for large |x|.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

/// Inverted dropout with masks drawn on the host from a seeded ChaCha8 stream: the same seed gives the same
/// masks on any device (candle's own random source cannot be seeded on the CPU).
pub struct Dropout {
    p: f32,
    rng: rand_chacha::ChaCha8Rng,
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Self {
        use rand::SeedableRng;
        Dropout {
            p,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// x with each element zeroed with probability p and the rest scaled by 1/(1 − p).
    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?;
        Ok((x * mask)?)
    }
}

/// Applies `d` to `x` in training (when there is one), passes `x` through otherwise.
pub fn maybe_drop(d: &mut Option<&mut Dropout>, x: Tensor) -> Result<Tensor> {
    match d {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}
