//! AdamW's update in place, three passes over each parameter (CPU, f32, contiguous): the first moment, the
//! second, then the weight. candle's composed ops allocate a fresh parameter-sized tensor for each of their
//! ~15 steps — for SmolLM2-135M, 15 × 540 MB of new pages an update, each faulted in and zeroed by the kernel.
//!
//! The arithmetic is the composed ops', operation for operation, so weights and moments keep their bits
//! (tested against them): candle multiplies a tensor by a scalar as its affine op `v · s + 0` in f32 (the
//! `+ 0` turns −0 into +0), divides by a scalar as that affine op with the f64 reciprocal, and adds a scalar as
//! `v · 1 + s`; every scalar is rounded from f64 to f32 first. Rust never fuses `a · b + c` on its own.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise the task, small enough to share 2–64 cores.
const CHUNK: usize = 1 << 16;

/// f32 view of a contiguous CPU storage.
fn values<'a>(what: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adamw: {what} is not a contiguous f32 tensor"),
    }
}

fn values_mut<'a>(
    what: &str,
    s: &'a mut CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adamw: {what} is not a contiguous f32 tensor"),
    }
}

/// candle's `t * s` for a tensor t and an f64 scalar s (already rounded to f32).
#[inline(always)]
fn scale(v: f32, s: f32) -> f32 {
    v * s + 0.0
}

/// A moment's update from the step's gradient g: `m · β + (g · clip)ᵖ · (1 − β)` with p = 1 (first moment)
/// or 2 (second).
pub(crate) struct Moment {
    pub beta: f64,
    pub clip: f64,
    pub squared: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "minirec-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let m = values_mut("the moment", s1, l1)?;
        let g = values("the gradient", s2, l2)?;
        if m.len() != g.len() {
            candle_core::bail!("adamw: moment of {} for a gradient of {}", m.len(), g.len());
        }
        let (beta, rest, clip) = (self.beta as f32, (1.0 - self.beta) as f32, self.clip as f32);
        let squared = self.squared;
        m.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = scale(g, clip);
                    let x = if squared { g * g } else { g };
                    *m = scale(*m, beta) + scale(x, rest);
                }
            });
        Ok(())
    }
}

/// The weight's update from its moments: `w − lr · (m̂ / (√v̂ + ε) + wd · w)`, m̂ = m / (1 − β₁ᵗ),
/// v̂ = v / (1 − β₂ᵗ).
pub(crate) struct Update {
    pub bias1: f64,
    pub bias2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub lr: f64,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "minirec-adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let w = values_mut("the weight", s1, l1)?;
        let (m, v) = (values("m", s2, l2)?, values("v", s3, l3)?);
        if m.len() != w.len() || v.len() != w.len() {
            candle_core::bail!(
                "adamw: moments of {}, {} for a weight of {}",
                m.len(),
                v.len(),
                w.len()
            );
        }
        let (inv1, inv2) = ((1.0 / self.bias1) as f32, (1.0 / self.bias2) as f32);
        let (eps, lr) = (self.eps as f32, self.lr as f32);
        let decay = (self.weight_decay > 0.0).then_some(self.weight_decay as f32);
        w.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(w, (m, v))| {
                for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                    let mut update = scale(m, inv1) / (scale(v, inv2).sqrt() * 1.0 + eps);
                    if let Some(d) = decay {
                        update += scale(*w, d);
                    }
                    *w -= scale(update, lr);
                }
            });
        Ok(())
    }
}
