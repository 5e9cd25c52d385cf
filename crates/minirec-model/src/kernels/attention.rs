//! Causal self-attention over whole sequences as one candle op with a CPU forward and backward, so training
//! never keeps the [B, H, T, T] scores, their softmax or the bias additions alive: only the output is kept,
//! and the backward pass recomputes each block of probabilities (as flash attention does).
//!
//! Work is split into (row, key/value head) tasks run in parallel; each task walks its query blocks and only
//! the keys they can see (causal, and the sliding window where one applies), so the masked half of the score
//! matrix is never computed. Grouped-query heads read their shared key/value head directly (no repeat).
//!
//! Queries may be fewer than keys: then they are the last Tq of the Tk key positions (responses attending to a
//! shared prompt's keys placed before their own), and each sees the keys at or before its own position.
//!
//! Semantics are those of the composed path it replaces (`model.rs`): score = softcap(q·k·scale), keys at a
//! later index or outside the window are excluded, padding keys get `PAD_BIAS` added (finite, so a padding
//! query whose visible keys are all padding stays finite), then softmax and the weighted sum of values.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::exp::exp_in_place;
use super::gemm::{matmul, Mat};
use super::{cpu_f32, with_host};

/// Query rows per block: big enough for efficient products, small enough that a block's scores stay in cache.
const QB: usize = 64;
const PAD_BIAS: f32 = -1e30;

/// What the attention needs besides q, k and v.
#[derive(Debug, Clone)]
pub struct AttentionSpec {
    /// [B × Tk]: 1 where the key is a real token, 0 for padding.
    pub key_real: Vec<u8>,
    /// Keys more than this many positions back are excluded (Gemma-2's sliding layers).
    pub window: Option<usize>,
    pub softcap: Option<f32>,
    pub scale: f32,
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    kvh: usize,
    /// Queries per row: the last `tq` of the `tk` key positions.
    tq: usize,
    tk: usize,
    d: usize,
}

impl Dims {
    fn groups(&self) -> usize {
        self.h / self.kvh
    }

    /// Key position of query row 0.
    fn offset(&self) -> usize {
        self.tk - self.tq
    }
}

struct CausalAttention {
    spec: Arc<AttentionSpec>,
}

/// softmax(softcap(q kᵀ · scale) + masks) v for q [B, H, Tq, D] and k, v [B, KVH, Tk, D] with Tq ≤ Tk (f32,
/// CPU); query r sits at key position Tk − Tq + r. The result is [B, H, Tq, D] and differentiable in q, k, v.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: Arc<AttentionSpec>,
) -> candle_core::Result<Tensor> {
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, CausalAttention { spec })
}

fn dims(q: &Layout, k: &Layout, v: &Layout, spec: &AttentionSpec) -> candle_core::Result<Dims> {
    let (b, h, tq, d) = q.shape().dims4()?;
    let (kb, kvh, tk, kd) = k.shape().dims4()?;
    if (kb, kd) != (b, d) || tk < tq || v.shape() != k.shape() || kvh == 0 || h % kvh != 0 {
        candle_core::bail!(
            "attention: q {:?} and k/v {:?} {:?} do not fit",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    if spec.key_real.len() != b * tk {
        candle_core::bail!(
            "attention: key mask of {} for {b}×{tk}",
            spec.key_real.len()
        );
    }
    Ok(Dims {
        b,
        h,
        kvh,
        tq,
        tk,
        d,
    })
}

/// The keys query block [i0, i1) can see: [j0, i1).
fn key_range(i0: usize, window: Option<usize>) -> usize {
    window.map(|w| (i0 + 1).saturating_sub(w)).unwrap_or(0)
}

/// A block of query rows [r0, r0 + mq) at key positions [i0, i0 + mq), and the keys [j0, j0 + nk) they see.
#[derive(Clone, Copy)]
struct Block {
    r0: usize,
    i0: usize,
    mq: usize,
    j0: usize,
    nk: usize,
}

/// Query blocks of one head, each with its visible key range.
fn blocks(dm: Dims, window: Option<usize>) -> impl Iterator<Item = Block> {
    (0..dm.tq).step_by(QB).map(move |r0| {
        let mq = QB.min(dm.tq - r0);
        let i0 = dm.offset() + r0;
        let j0 = key_range(i0, window);
        Block {
            r0,
            i0,
            mq,
            j0,
            nk: i0 + mq - j0,
        }
    })
}

/// Fills `p` ([mq × nk], row-major) with the attention probabilities of block `bl`'s queries over its keys;
/// `tanh_out`, when soft-capping, receives tanh(raw / cap) for the backward pass.
#[allow(clippy::too_many_arguments)]
fn probabilities(
    q: &[f32],
    k: &[f32],
    bl: Block,
    d: usize,
    real: &[u8],
    spec: &AttentionSpec,
    p: &mut [f32],
    mut tanh_out: Option<&mut [f32]>,
) {
    let Block { r0, i0, mq, j0, nk } = bl;
    matmul(
        mq,
        nk,
        d,
        p,
        nk,
        Mat::n(&q[r0 * d..], d),
        Mat::t(&k[j0 * d..], d),
        spec.scale,
        false,
    );
    for r in 0..mq {
        let i = i0 + r;
        let row = &mut p[r * nk..(r + 1) * nk];
        let mut max = f32::NEG_INFINITY;
        for (c, x) in row.iter_mut().enumerate() {
            let j = j0 + c;
            let visible = j <= i && spec.window.is_none_or(|w| i - j < w);
            if !visible {
                *x = f32::NEG_INFINITY;
                continue;
            }
            if let Some(cap) = spec.softcap {
                let th = (*x / cap).tanh();
                if let Some(t) = tanh_out.as_deref_mut() {
                    t[r * nk + c] = th;
                }
                *x = th * cap;
            }
            if real[j] == 0 {
                *x += PAD_BIAS;
            }
            max = max.max(*x);
        }
        row.iter_mut().for_each(|x| *x -= max);
        exp_in_place(row);
        let sum = row.iter().fold(0f32, |s, &x| s + x);
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One (row, head) of the forward pass: `out` [Tq × D].
fn forward_head(
    (q, k, v): (&[f32], &[f32], &[f32]),
    real: &[u8],
    spec: &AttentionSpec,
    dm: Dims,
    out: &mut [f32],
) {
    let d = dm.d;
    let mut p = Vec::new();
    for bl in blocks(dm, spec.window) {
        p.resize(bl.mq * bl.nk, 0.0);
        probabilities(q, k, bl, d, real, spec, &mut p, None);
        matmul(
            bl.mq,
            d,
            bl.nk,
            &mut out[bl.r0 * d..],
            d,
            Mat::n(&p, bl.nk),
            Mat::n(&v[bl.j0 * d..], d),
            1.0,
            false,
        );
    }
}

/// Per-(row, head) slices of a [B, heads, T, D] buffer (`td` = T·D).
fn head(x: &[f32], bh: usize, td: usize) -> &[f32] {
    &x[bh * td..(bh + 1) * td]
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "minirec-causal-attention"
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
        let dm = dims(l1, l2, l3, &self.spec)?;
        let (q, k, v) = (
            cpu_f32("attention", s1, l1)?,
            cpu_f32("attention", s2, l2)?,
            cpu_f32("attention", s3, l3)?,
        );
        let (qd, kd) = (dm.tq * dm.d, dm.tk * dm.d);
        let mut out = vec![0f32; dm.b * dm.h * qd];
        let spec = &*self.spec;
        out.par_chunks_mut(qd).enumerate().for_each(|(bh, o)| {
            let (b, h) = (bh / dm.h, bh % dm.h);
            let kv = b * dm.kvh + h / dm.groups();
            let real = &spec.key_real[b * dm.tk..(b + 1) * dm.tk];
            let qkv = (head(q, bh, qd), head(k, kv, kd), head(v, kv, kd));
            forward_head(qkv, real, spec, dm, o);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = dims(q.layout(), k.layout(), v.layout(), &self.spec)?;
        let (dq, dk, dv) = with_host("attention", &[q, k, v, res, grad_res], |h| {
            backward(h[0], h[1], h[2], h[3], h[4], dm, &self.spec)
        })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// Gradients in q, k and v; one task per (row, key/value head), which owns that head's dk and dv and the dq
/// of every query head sharing it.
fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    g: &[f32],
    dm: Dims,
    spec: &AttentionSpec,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (qd, kd) = (dm.tq * dm.d, dm.tk * dm.d);
    let groups = dm.groups();
    let mut dq = vec![0f32; q.len()];
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; v.len()];
    dq.par_chunks_mut(groups * qd)
        .zip(dk.par_chunks_mut(kd))
        .zip(dv.par_chunks_mut(kd))
        .enumerate()
        .for_each(|(kv, ((dq, dk), dv))| {
            let b = kv / dm.kvh;
            let real = &spec.key_real[b * dm.tk..(b + 1) * dm.tk];
            let (kh, vh) = (head(k, kv, kd), head(v, kv, kd));
            for gi in 0..groups {
                let bh = b * dm.h + (kv % dm.kvh) * groups + gi;
                let heads = HeadGrad {
                    q: head(q, bh, qd),
                    o: head(o, bh, qd),
                    g: head(g, bh, qd),
                    k: kh,
                    v: vh,
                };
                heads.accumulate(real, spec, dm, &mut dq[gi * qd..(gi + 1) * qd], dk, dv);
            }
        });
    (dq, dk, dv)
}

/// One query head's share of the backward pass.
struct HeadGrad<'a> {
    q: &'a [f32],
    o: &'a [f32],
    g: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl HeadGrad<'_> {
    /// Writes this head's dq and adds its contributions to dk and dv.
    fn accumulate(
        &self,
        real: &[u8],
        spec: &AttentionSpec,
        dm: Dims,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        let d = dm.d;
        let (mut p, mut dp, mut th) = (Vec::new(), Vec::new(), Vec::new());
        for bl in blocks(dm, spec.window) {
            let Block { r0, mq, j0, nk, .. } = bl;
            p.resize(mq * nk, 0.0);
            dp.resize(mq * nk, 0.0);
            if spec.softcap.is_some() {
                th.resize(mq * nk, 0.0);
            }
            let tanh = spec.softcap.map(|_| th.as_mut_slice());
            probabilities(self.q, self.k, bl, d, real, spec, &mut p, tanh);
            let g_blk = Mat::n(&self.g[r0 * d..], d);
            // dv += pᵀ g, dp = g vᵀ.
            matmul(
                nk,
                d,
                mq,
                &mut dv[j0 * d..],
                d,
                Mat::t(&p, nk),
                g_blk,
                1.0,
                true,
            );
            matmul(
                mq,
                nk,
                d,
                &mut dp,
                nk,
                g_blk,
                Mat::t(&self.v[j0 * d..], d),
                1.0,
                false,
            );
            // ds = p ∘ (dp − rowsum(g ∘ o)), through the soft-cap's tanh when there is one.
            for r in 0..mq {
                let i = r0 + r;
                let delta: f32 = (0..d).map(|c| self.g[i * d + c] * self.o[i * d + c]).sum();
                for c in 0..nk {
                    let x = r * nk + c;
                    let mut ds = p[x] * (dp[x] - delta);
                    if spec.softcap.is_some() {
                        ds *= 1.0 - th[x] * th[x];
                    }
                    dp[x] = ds;
                }
            }
            matmul(
                mq,
                d,
                nk,
                &mut dq[r0 * d..],
                d,
                Mat::n(&dp, nk),
                Mat::n(&self.k[j0 * d..], d),
                spec.scale,
                false,
            );
            matmul(
                nk,
                d,
                mq,
                &mut dk[j0 * d..],
                d,
                Mat::t(&dp, nk),
                Mat::n(&self.q[r0 * d..], d),
                spec.scale,
                true,
            );
        }
    }
}
