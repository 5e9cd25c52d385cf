//! One decoding step's attention in one multithreaded pass (CPU, f32, inference only): each prompt's W rows
//! (beams or rollouts) attend to the prompt's cached keys, shared by all of them, and to their own generated
//! keys. A task is one (prompt, key/value head): it reads that head's prompt keys and values once for all
//! W·G query rows (G query heads share a key/value head), so the prompt cache is never repeated per row, and
//! no scores tensor is written.
//!
//! The generated keys and values stay where each step wrote them (`GenSteps`): beam search reorders its rows
//! every step, and a row's history is found through its ancestors' places instead of being copied. A task
//! gathers a row's visible history into a small buffer and multiplies it there, with the same products as
//! a contiguous cache would get, so the values are those of a copied cache bit for bit.
//!
//! Semantics are those of the composed path in `model.rs` it replaces: q arrives scaled; score =
//! softcap(q·k); padding keys and keys outside the sliding window are excluded; one softmax over the prompt
//! and generated keys together, then the weighted sum of their values. Decoding never back-propagates, so
//! there is no backward pass: the output is a fresh tensor outside any graph.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::exp::exp_in_place;
use super::gemm::{matmul, Mat};
use super::with_host;

/// What the step's attention needs besides the tensors.
#[derive(Debug, Clone)]
pub struct DecodeSpec {
    /// Real (unpadded) length of each prompt; prompts are left-padded to the cache's length.
    pub prompt_lens: Vec<usize>,
    /// The rows (beams, samples) of each prompt: the step's rows are prompt-major, these many each.
    pub rows: Vec<usize>,
    /// Keys more than this many positions back are excluded (Gemma-2's sliding layers).
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

/// The generated part of the cache, step by step: `keys[s]` and `values[s]` are [N_s, KVH, D] for the rows
/// decoded at step s (the last step is the current token's), and `from[s][r]` is the place among them of
/// current row r's ancestor (r itself at the last step).
#[derive(Clone, Copy)]
pub struct GenSteps<'a> {
    pub keys: &'a [Vec<f32>],
    pub values: &'a [Vec<f32>],
    pub from: &'a [Vec<u32>],
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Prompts, rows, query heads, key/value heads, head size.
    b: usize,
    n: usize,
    h: usize,
    kvh: usize,
    d: usize,
    /// Padded prompt length and generated keys per row (the current token's included).
    tp: usize,
    tg: usize,
}

/// Attention of `q` [N, H, 1, D] (scaled, N rows, prompt-major: `spec.rows[b]` for prompt b) over the prompt cache `kp`, `vp`
/// [B, KVH, Tp, D] and each row's generated keys and values in `gen` (Tg steps, the last the current
/// token's). Returns [N, 1, H·D].
pub fn decode_attention(
    q: &Tensor,
    (kp, vp): (&Tensor, &Tensor),
    gen: GenSteps,
    spec: &DecodeSpec,
) -> candle_core::Result<Tensor> {
    let dm = dims(q, kp, gen, spec)?;
    if vp.dims() != kp.dims() {
        candle_core::bail!(
            "decode attention: values {:?} do not match keys {:?}",
            vp.dims(),
            kp.dims()
        );
    }
    let out = with_host("decode attention", &[q, kp, vp], |x| {
        forward(x[0], (x[1], x[2]), gen, spec, dm)
    })?;
    let n = dm.n;
    Tensor::from_vec(out, (n, 1, dm.h * dm.d), &Device::Cpu)
}

fn dims(q: &Tensor, kp: &Tensor, gen: GenSteps, spec: &DecodeSpec) -> candle_core::Result<Dims> {
    let (n, h, one, d) = q.dims4()?;
    let (b, kvh, tp, kd) = kp.dims4()?;
    let ok = one == 1
        && b > 0
        && spec.rows.len() == b
        && spec.rows.iter().sum::<usize>() == n
        && kd == d
        && kvh > 0
        && h % kvh == 0
        && spec.prompt_lens.len() == b
        && spec.prompt_lens.iter().all(|&l| l <= tp);
    if !ok {
        candle_core::bail!(
            "decode attention: q {:?}, prompt keys {:?}, {} prompt lengths and rows {:?} do not fit",
            q.dims(),
            kp.dims(),
            spec.prompt_lens.len(),
            spec.rows
        );
    }
    check_steps(gen, n, kvh * d)?;
    Ok(Dims {
        b,
        n,
        h,
        kvh,
        d,
        tp,
        tg: gen.from.len(),
    })
}

/// Every step's keys and values hold whole rows of `width` values, and every current row's ancestor is one
/// of them; the last step holds the current rows themselves.
fn check_steps(gen: GenSteps, n: usize, width: usize) -> candle_core::Result<()> {
    let tg = gen.from.len();
    if tg == 0 || gen.keys.len() != tg || gen.values.len() != tg {
        candle_core::bail!(
            "decode attention: {} steps of keys, {} of values, {} of row places",
            gen.keys.len(),
            gen.values.len(),
            tg
        );
    }
    for (s, ((k, v), from)) in gen.keys.iter().zip(gen.values).zip(gen.from).enumerate() {
        let rows = k.len() / width;
        let bad_place = from.iter().any(|&p| p as usize >= rows);
        let current = s + 1 < tg || rows == n;
        if k.len() % width != 0 || v.len() != k.len() || from.len() != n || bad_place || !current {
            candle_core::bail!(
                "decode attention: step {s} holds {} keys and {} values of width {width} for {} places of {n} rows",
                k.len(),
                v.len(),
                from.len()
            );
        }
    }
    Ok(())
}

/// The output [N, H, D] row-major, from one task per (prompt, key/value head).
fn forward(
    q: &[f32],
    (kp, vp): (&[f32], &[f32]),
    gen: GenSteps,
    spec: &DecodeSpec,
    dm: Dims,
) -> Vec<f32> {
    // Each prompt's first row.
    let first: Vec<usize> = spec
        .rows
        .iter()
        .scan(0, |at, &r| {
            *at += r;
            Some(*at - r)
        })
        .collect();
    let parts: Vec<Vec<f32>> = (0..dm.b * dm.kvh)
        .into_par_iter()
        .map(|task| {
            let (b, kh) = (task / dm.kvh, task % dm.kvh);
            let rows = first[b]..first[b] + spec.rows[b];
            head_task(b, rows, kh, q, (kp, vp), gen, spec, dm)
        })
        .collect();
    let (g, d) = (dm.h / dm.kvh, dm.d);
    let mut out = vec![0f32; dm.n * dm.h * d];
    for (task, part) in parts.iter().enumerate() {
        let (b, kh) = (task / dm.kvh, task % dm.kvh);
        for wi in 0..spec.rows[b] {
            let at = heads_of(first[b] + wi, kh, dm);
            out[at..at + g * d].copy_from_slice(&part[wi * g * d..(wi + 1) * g * d]);
        }
    }
    out
}

/// Where the G query heads of key/value head `kh` start, for row `r`, in an [N, H, D] buffer (they are
/// adjacent: G·D values).
fn heads_of(r: usize, kh: usize, dm: Dims) -> usize {
    (r * dm.h + kh * (dm.h / dm.kvh)) * dm.d
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

/// Prompt `b` (its W rows `rows`), key/value head `kh`: the W·G query rows' outputs [W, G, D].
#[allow(clippy::too_many_arguments)]
fn head_task(
    b: usize,
    rows: std::ops::Range<usize>,
    kh: usize,
    q: &[f32],
    (kp, vp): (&[f32], &[f32]),
    gen: GenSteps,
    spec: &DecodeSpec,
    dm: Dims,
) -> Vec<f32> {
    let (g, d, tp, tg) = (dm.h / dm.kvh, dm.d, dm.tp, dm.tg);
    let w = rows.len();
    let r0 = rows.start;
    let rows = w * g;
    // The task's query rows, gathered: beam wi, group gi at row wi·G + gi (its heads are adjacent in q).
    let mut qb = vec![0f32; rows * d];
    for wi in 0..w {
        let at = heads_of(r0 + wi, kh, dm);
        qb[wi * g * d..(wi + 1) * g * d].copy_from_slice(&q[at..at + g * d]);
    }
    let (p0, g0) = visible(b, spec, dm);
    let (np, ng) = (tp - p0, tg - g0);
    let cols = np + ng;
    let mut s = vec![0f32; rows * cols];
    let (kph, vph) = (head(kp, b, kh, tp, dm), head(vp, b, kh, tp, dm));
    // One row's visible generated keys or values, gathered from the steps that wrote them.
    let mut history = vec![0f32; ng * d];
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
    for wi in 0..w {
        gather(&mut history, gen.keys, gen.from, r0 + wi, kh, g0, dm);
        let at = wi * g * cols + np;
        matmul(
            g,
            ng,
            d,
            &mut s[at..],
            cols,
            Mat::n(&qb[wi * g * d..], d),
            Mat::t(&history, d),
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
    for wi in 0..w {
        gather(&mut history, gen.values, gen.from, r0 + wi, kh, g0, dm);
        let at = wi * g;
        matmul(
            g,
            d,
            ng,
            &mut out[at * d..],
            d,
            Mat::n(&s[at * cols + np..], cols),
            Mat::n(&history, d),
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

/// Row `r`'s key/value head `kh` at steps `from_step..` into `out` ([steps × D], oldest first).
fn gather(
    out: &mut [f32],
    steps: &[Vec<f32>],
    from: &[Vec<u32>],
    r: usize,
    kh: usize,
    from_step: usize,
    dm: Dims,
) {
    let d = dm.d;
    for (dst, s) in out.chunks_exact_mut(d).zip(from_step..dm.tg) {
        let at = (from[s][r] as usize * dm.kvh + kh) * d;
        dst.copy_from_slice(&steps[s][at..at + d]);
    }
}

/// Soft-caps (cap·tanh(x/cap)) and softmaxes each row of `s` ([rows × cols]) in place.
fn softmax_rows(s: &mut [f32], cols: usize, softcap: Option<f32>) {
    for row in s.chunks_exact_mut(cols) {
        if let Some(cap) = softcap {
            row.iter_mut().for_each(|x| *x = (*x / cap).tanh() * cap);
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|x| *x -= max);
        exp_in_place(row);
        let sum = row.iter().fold(0f32, |s, &x| s + x);
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}
