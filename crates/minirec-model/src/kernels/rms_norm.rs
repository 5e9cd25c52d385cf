//! RMSNorm, y = x / sqrt(mean(x²) + eps) · w (Gemma: · (1 + w)), as one candle op with a CPU forward and
//! backward over rows in parallel. The composed form runs six single-threaded ops and keeps four
//! intermediates per norm for backward; this keeps none beyond its inputs.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_f32, with_host};

/// Rows per parallel task.
const ROWS: usize = 64;

struct RmsNormOp {
    eps: f32,
    plus_one: bool,
}

/// RMSNorm of x [..., H] with weight w [H] (f32, CPU), differentiable in both.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, plus_one: bool) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNormOp { eps, plus_one })
}

impl RmsNormOp {
    fn scale(&self, w: f32) -> f32 {
        if self.plus_one {
            1.0 + w
        } else {
            w
        }
    }

    /// 1 / sqrt(mean(x²) + eps) of one row.
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "minirec-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (cpu_f32("rms_norm", s1, l1)?, cpu_f32("rms_norm", s2, l2)?);
        let h = w.len();
        if h == 0 || l1.shape().dims().last() != Some(&h) {
            candle_core::bail!(
                "rms_norm: weight {:?} does not fit input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ROWS * h)
            .zip(x.par_chunks(ROWS * h))
            .for_each(|(o, x)| {
                for (orow, xrow) in o.chunks_mut(h).zip(x.chunks(h)) {
                    let r = self.inv_rms(xrow);
                    for ((o, &x), &w) in orow.iter_mut().zip(xrow).zip(w) {
                        *o = x * r * self.scale(w);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = with_host("rms_norm", &[x, w, grad], |h| {
            let (xs, ws, gs) = (h[0], h[1], h[2]);
            let h = ws.len();
            let mut dx = vec![0f32; xs.len()];
            // dx = r · (g·w' − n · mean(g·w'·n)), dw = Σ g · n (· 1 for Gemma's 1 + w, the same).
            let dw = dx
                .par_chunks_mut(ROWS * h)
                .zip(xs.par_chunks(ROWS * h).zip(gs.par_chunks(ROWS * h)))
                .map(|(dx, (x, g))| {
                    let mut dw = vec![0f32; h];
                    for ((dxr, xr), gr) in dx.chunks_mut(h).zip(x.chunks(h)).zip(g.chunks(h)) {
                        let r = self.inv_rms(xr);
                        let mut dot = 0f32;
                        for c in 0..h {
                            let n = xr[c] * r;
                            dw[c] += gr[c] * n;
                            dot += gr[c] * self.scale(ws[c]) * n;
                        }
                        let mean = dot / h as f32;
                        for c in 0..h {
                            let n = xr[c] * r;
                            dxr[c] = r * (gr[c] * self.scale(ws[c]) - n * mean);
                        }
                    }
                    dw
                })
                .collect::<Vec<_>>()
                // Added up in a fixed order, so the same inputs give the same bits whatever the scheduling.
                .into_iter()
                .fold(vec![0f32; h], |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                });
            (dx, dw)
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?.to_dtype(w.dtype())?),
        ))
    }
}
