//! Rotary embeddings in HF's rotate-half layout as one candle op with a CPU forward and backward: y₁ = x₁c − x₂s,
//! y₂ = x₂c + x₁s over the two halves of each head. The composed form keeps six head-sized intermediates per
//! call for backward, and runs single-threaded.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_f32, with_host};

struct RopeOp;

/// x [B, H, T, D] rotated by cos, sin [B, T, D/2] (f32, CPU); differentiable in x.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, RopeOp)
}

/// Rotates every head of x by the angles whose cos/sin are given; `sign` −1 applies the inverse rotation
/// (the backward pass).
fn rotate(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    (h, t, d): (usize, usize, usize),
    sign: f32,
) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(t * d)
        .zip(x.par_chunks(t * d))
        .enumerate()
        .for_each(|(bh, (o, x))| {
            let b = bh / h;
            for p in 0..t {
                let at = (b * t + p) * half;
                let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
                let (xr, or) = (&x[p * d..(p + 1) * d], &mut o[p * d..(p + 1) * d]);
                for i in 0..half {
                    let (x1, x2, s) = (xr[i], xr[i + half], sign * s[i]);
                    or[i] = x1 * c[i] - x2 * s;
                    or[i + half] = x2 * c[i] + x1 * s;
                }
            }
        });
    out
}

fn dims(x: &Shape, cos: &Shape, sin: &Shape) -> candle_core::Result<(usize, usize, usize)> {
    let (b, h, t, d) = x.dims4()?;
    if d % 2 != 0 || cos.dims() != [b, t, d / 2] || sin != cos {
        candle_core::bail!("rope: x {x:?} and cos/sin {cos:?} {sin:?} do not fit");
    }
    Ok((h, t, d))
}

impl CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "minirec-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dm = dims(l1.shape(), l2.shape(), l3.shape())?;
        let out = rotate(
            cpu_f32("rope", s1, l1)?,
            cpu_f32("rope", s2, l2)?,
            cpu_f32("rope", s3, l3)?,
            dm,
            1.0,
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = dims(x.shape(), cos.shape(), sin.shape())?;
        // The rotation is orthogonal: its transpose is the rotation by the opposite angle.
        let dx = with_host("rope", &[grad, cos, sin], |h| {
            rotate(h[0], h[1], h[2], dm, -1.0)
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            None,
            None,
        ))
    }
}
