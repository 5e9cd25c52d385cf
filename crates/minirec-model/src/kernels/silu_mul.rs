//! The gated MLP's silu(g) · u as one candle op with a CPU forward and backward, element-parallel. The composed
//! form keeps silu(g)'s own intermediates and runs on one core.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::exp::exp_in_place;
use super::{cpu_f32, with_host};

const CHUNK: usize = 4096;

struct SiluMul;

/// silu(g) · u for g, u of one shape (f32, CPU); differentiable in both.
pub fn silu_mul(g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SiluMul)
}

/// σ(g) for a chunk of g, into `s` (exp(−g) through the vector `exp`, the same bits as term by term).
fn sigmoids(g: &[f32], s: &mut [f32]) {
    let s = &mut s[..g.len()];
    s.iter_mut().zip(g).for_each(|(s, &g)| *s = -g);
    exp_in_place(s);
    s.iter_mut().for_each(|s| *s = 1.0 / (1.0 + *s));
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "minirec-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("silu_mul: {:?} vs {:?}", l1.shape(), l2.shape());
        }
        let (g, u) = (cpu_f32("silu_mul", s1, l1)?, cpu_f32("silu_mul", s2, l2)?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                let mut s = [0f32; CHUNK];
                sigmoids(g, &mut s);
                for (((o, &g), &u), &s) in o.iter_mut().zip(g).zip(u).zip(&s) {
                    *o = g * s * u;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_host("silu_mul", &[g, u, grad], |h| {
            let (gs, us, dy) = (h[0], h[1], h[2]);
            let mut dg = vec![0f32; gs.len()];
            let mut du = vec![0f32; gs.len()];
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(
                    gs.par_chunks(CHUNK)
                        .zip(us.par_chunks(CHUNK))
                        .zip(dy.par_chunks(CHUNK)),
                )
                .for_each(|((dg, du), ((g, u), dy))| {
                    let mut sig = [0f32; CHUNK];
                    sigmoids(g, &mut sig);
                    for i in 0..g.len() {
                        let s = sig[i];
                        du[i] = dy[i] * g[i] * s;
                        // d silu / dg = σ(g) · (1 + g · (1 − σ(g))).
                        dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    }
                });
            (dg, du)
        })?;
        let dev = g.device();
        Ok((
            Some(Tensor::from_vec(dg, g.shape(), dev)?),
            Some(Tensor::from_vec(du, u.shape(), dev)?),
        ))
    }
}
