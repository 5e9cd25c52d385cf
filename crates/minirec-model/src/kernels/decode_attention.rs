//! One decoding step's attention in one multithreaded pass (CPU, f32, inference only): each prompt's W rows
//! (beams or rollouts) attend to the prompt's cached keys, shared by all of them, and to their own generated
//! keys. A task is one (prompt, key/value head): it reads that head's prompt keys and values once for all
//! W·G query rows (G query heads share a key/value head), so the prompt cache is never repeated per row, and
//! no scores tensor is written.
//!
//! Semantics are those of the composed path in `model.rs` it replaces: q arrives scaled; score =
//! softcap(q·k); padding keys and keys outside the sliding window are excluded; one softmax over the prompt
//! and generated keys together, then the weighted sum of their values. Decoding never back-propagates, so
//! there is no backward pass: the output is a fresh tensor outside any graph.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, Mat};
use super::with_host;

/// What the step's attention needs besides the tensors.
#[derive(Debug, Clone)]
pub struct DecodeSpec {
    /// Real (unpadded) length of each prompt; prompts are left-padded to the cache's length.
    pub prompt_lens: Vec<usize>,
    /// Keys more than this many positions back are excluded (Gemma-2's sliding layers).
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Prompts, rows per prompt, query heads, key/value heads, head size.
    b: usize,
    w: usize,
    h: usize,
    kvh: usize,
    d: usize,
    /// Padded prompt length and generated keys per row (the current token's included).
    tp: usize,
    tg: usize,
}

/// Attention of `q` [N, H, 1, D] (scaled, N = B·W rows, prompt-major) over the prompt cache `kp`, `vp`
/// [B, KVH, Tp, D] and each row's generated keys and values `kg`, `vg` [N, KVH, Tg, D], whose last entry is
/// the current token. Returns [N, 1, H·D].
pub fn decode_attention(
    q: &Tensor,
    (kp, vp): (&Tensor, &Tensor),
    (kg, vg): (&Tensor, &Tensor),
    spec: &DecodeSpec,
) -> candle_core::Result<Tensor> {
    let dm = dims(q, kp, kg, spec)?;
    if vp.dims() != kp.dims() || vg.dims() != kg.dims() {
        candle_core::bail!(
            "decode attention: values {:?}/{:?} do not match keys",
            vp.dims(),
            vg.dims()
        );
    }
    let out = with_host("decode attention", &[q, kp, vp, kg, vg], |x| {
        forward(x[0], (x[1], x[2]), (x[3], x[4]), spec, dm)
    })?;
    let n = dm.b * dm.w;
    Tensor::from_vec(out, (n, 1, dm.h * dm.d), &Device::Cpu)
}

fn dims(q: &Tensor, kp: &Tensor, kg: &Tensor, spec: &DecodeSpec) -> candle_core::Result<Dims> {
    let (n, h, one, d) = q.dims4()?;
    let (b, kvh, tp, kd) = kp.dims4()?;
    let (gn, gkvh, tg, gd) = kg.dims4()?;
    let ok = one == 1
        && b > 0
        && n % b == 0
        && (kd, gd, gn, gkvh) == (d, d, n, kvh)
        && kvh > 0
        && h % kvh == 0
        && tg > 0
        && spec.prompt_lens.len() == b
        && spec.prompt_lens.iter().all(|&l| l <= tp);
    if !ok {
        candle_core::bail!(
            "decode attention: q {:?}, prompt keys {:?}, generated keys {:?}, {} prompt lengths do not fit",
            q.dims(),
            kp.dims(),
            kg.dims(),
            spec.prompt_lens.len()
        );
    }
    Ok(Dims {
        b,
        w: n / b,
        h,
        kvh,
        d,
        tp,
        tg,
    })
}

/// The output [N, H, D] row-major, from one task per (prompt, key/value head).
fn forward(
    q: &[f32],
    (kp, vp): (&[f32], &[f32]),
    (kg, vg): (&[f32], &[f32]),
    spec: &DecodeSpec,
    dm: Dims,
) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = (0..dm.b * dm.kvh)
        .into_par_iter()
        .map(|task| {
            head_task(
                task / dm.kvh,
                task % dm.kvh,
                q,
                (kp, vp),
                (kg, vg),
                spec,
                dm,
            )
        })
        .collect();
    let (g, d) = (dm.h / dm.kvh, dm.d);
    let mut out = vec![0f32; dm.b * dm.w * dm.h * d];
    for (task, part) in parts.iter().enumerate() {
        let (b, kh) = (task / dm.kvh, task % dm.kvh);
        for wi in 0..dm.w {
            let at = heads_of(b, wi, kh, dm);
            out[at..at + g * d].copy_from_slice(&part[wi * g * d..(wi + 1) * g * d]);
        }
    }
    out
}

/// Where the G query heads of key/value head `kh` start, for row `wi` of prompt `b`, in an [N, H, D]
/// buffer (they are adjacent: G·D values).
fn heads_of(b: usize, wi: usize, kh: usize, dm: Dims) -> usize {
    ((b * dm.w + wi) * dm.h + kh * (dm.h / dm.kvh)) * dm.d
}

/// The visible prompt keys of prompt `b` ([from, Tp) of its padded cache) and generated keys ([from, Tg)).
fn visible(b: usize, spec: &DecodeSpec, dm: Dims) -> (usize, usize) {
    let len = spec.prompt_lens[b];
    let pad = dm.tp - len;
    let Some(win) = spec.window else {
        return (pad, 0);
    };
    // The query is generated token Tg − 1, at position len + Tg − 1; a key at position p is visible when
    // that distance is below the window.
    let qpos = len + dm.tg - 1;
    let first = (qpos + 1).saturating_sub(win);
    ((pad + first).min(dm.tp), dm.tg.saturating_sub(win))
}

/// Prompt `b`, key/value head `kh`: the W·G query rows' outputs [W, G, D].
#[allow(clippy::too_many_arguments)]
fn head_task(
    b: usize,
    kh: usize,
    q: &[f32],
    (kp, vp): (&[f32], &[f32]),
    (kg, vg): (&[f32], &[f32]),
    spec: &DecodeSpec,
    dm: Dims,
) -> Vec<f32> {
    let (g, d, tp, tg) = (dm.h / dm.kvh, dm.d, dm.tp, dm.tg);
    let rows = dm.w * g;
    // The task's query rows, gathered: beam wi, group gi at row wi·G + gi (its heads are adjacent in q).
    let mut qb = vec![0f32; rows * d];
    for wi in 0..dm.w {
        let at = heads_of(b, wi, kh, dm);
        qb[wi * g * d..(wi + 1) * g * d].copy_from_slice(&q[at..at + g * d]);
    }
    let (p0, g0) = visible(b, spec, dm);
    let (np, ng) = (tp - p0, tg - g0);
    let cols = np + ng;
    let mut s = vec![0f32; rows * cols];
    let (kph, vph) = (head(kp, b, kh, tp, dm), head(vp, b, kh, tp, dm));
    matmul(
        rows,
        np,
        d,
        &mut s,
        cols,
        Mat::n(&qb, d),
        Mat::t(&kph[p0 * d..], d),
        1.0,
        false,
    );
    for wi in 0..dm.w {
        let r = b * dm.w + wi;
        let kgh = head(kg, r, kh, tg, dm);
        let at = wi * g * cols + np;
        matmul(
            g,
            ng,
            d,
            &mut s[at..],
            cols,
            Mat::n(&qb[wi * g * d..], d),
            Mat::t(&kgh[g0 * d..], d),
            1.0,
            false,
        );
    }
    softmax_rows(&mut s, cols, spec.softcap);
    let mut out = vec![0f32; rows * d];
    matmul(
        rows,
        d,
        np,
        &mut out,
        d,
        Mat::n(&s, cols),
        Mat::n(&vph[p0 * d..], d),
        1.0,
        false,
    );
    for wi in 0..dm.w {
        let vgh = head(vg, b * dm.w + wi, kh, tg, dm);
        let at = wi * g;
        matmul(
            g,
            d,
            ng,
            &mut out[at * d..],
            d,
            Mat::n(&s[at * cols + np..], cols),
            Mat::n(&vgh[g0 * d..], d),
            1.0,
            true,
        );
    }
    out
}

/// Key/value head `kh` of entry `i` of a [entries, KVH, T, D] buffer: [T × D].
fn head(x: &[f32], i: usize, kh: usize, t: usize, dm: Dims) -> &[f32] {
    let base = (i * dm.kvh + kh) * t * dm.d;
    &x[base..base + t * dm.d]
}

/// Soft-caps (cap·tanh(x/cap)) and softmaxes each row of `s` ([rows × cols]) in place.
fn softmax_rows(s: &mut [f32], cols: usize, softcap: Option<f32>) {
    for row in s.chunks_exact_mut(cols) {
        if let Some(cap) = softcap {
            row.iter_mut().for_each(|x| *x = (*x / cap).tanh() * cap);
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}
