//! Per-sample quantities read off the LLM in one forward pass over prompt + target title:
//! - `hidden`: f(x), the final-layer hidden state of the prompt's last token (the state a recommendation is
//!   decoded from) — the diversity and k-means feature;
//! - `grad` and `hvp`: v_i = ∇_h ℓ_i and the Hessian-vector product d_i = ∇_h(∇_h ℓ_i · v_i) in that hidden-state
//!   space (DESIGN.md's reading of MiniRec Eq. 9–10), for representativeness;
//! - `el2n` (mean ‖p − e_y‖ over title tokens) and `grand` (‖∇ℓ_i‖ of the output layer).
//!
//! ℓ_i is the title's NLL, Σ_t −log p(y_t). Every title token is predicted from its own final hidden state, so
//! "∇_h" is taken for one shift δ added to all of the sample's predicting states: v_i = Σ_t ∇_{h_t}ℓ and
//! H_i = Σ_t ∇²_{h_t}ℓ. Both are exact closed forms of the softmax (with Gemma-2's soft-cap), no double
//! backward: with z = W h, s = c·tanh(z/c), p = softmax(s) and g = p − e_y,
//!   ∇_h ℓ = Wᵀ (g ⊙ a),  ∇²_h ℓ = Wᵀ [diag(a)(diag p − p pᵀ)diag(a) + diag(g ⊙ b)] W,
//! where a = ds/dz = 1 − tanh², b = d²s/dz² = −(2/c)·tanh·(1 − tanh²) (a = 1, b = 0 without a cap).

use candle_core::{DType, Tensor, D};
use minirec_model::Decoder;
use minirec_train::sft::Example;

use crate::error::{Result, SelectError};
use crate::matrix::Matrix;

#[derive(Debug, Clone)]
pub struct LlmScores {
    pub hidden: Matrix,
    pub grad: Matrix,
    pub hvp: Matrix,
    /// The parameter-space variant (output layer, randomly projected), when asked for.
    pub param_hvp: Option<Matrix>,
    pub nll: Vec<f32>,
    pub el2n: Vec<f32>,
    pub grand: Vec<f32>,
}

/// Scores every example, `batch` at a time (no gradients are kept: everything is closed form).
pub fn llm_scores(
    model: &Decoder,
    examples: &[Example],
    batch: usize,
    proj: Option<&Projection>,
    progress: bool,
) -> Result<LlmScores> {
    llm_scores_resumable(
        model,
        examples,
        batch,
        proj,
        None,
        &mut |_| Ok(()),
        progress,
    )
}

/// Batches between two calls of `on_part` in [`llm_scores_resumable`]: 16 batches of 16 are ≈ 2 minutes of a
/// SmolLM2-135M scoring pass on 2 cores, and each call rewrites everything scored so far.
pub const PART_BATCHES: usize = 16;

/// [`llm_scores`] continuing from `done` (what an earlier call's `on_part` received), handing what is scored
/// so far to `on_part` every [`PART_BATCHES`] batches. The pass runs the examples shortest first, so a part
/// holds the scores in that order — something to hand back as `done`, not to read. A run stopped and continued
/// this way scores the same batches as an uninterrupted one, so the scores are identical. The result is in
/// the examples' order.
pub fn llm_scores_resumable(
    model: &Decoder,
    examples: &[Example],
    batch: usize,
    proj: Option<&Projection>,
    done: Option<LlmScores>,
    on_part: &mut dyn FnMut(&LlmScores) -> Result<()>,
    progress: bool,
) -> Result<LlmScores> {
    if examples.is_empty() {
        return Err(SelectError::Invalid("no samples to score".into()));
    }
    let batch = batch.max(1);
    let hd = model.cfg.hidden_size;
    let empty = || LlmScores {
        hidden: Matrix::zeros(0, hd),
        grad: Matrix::zeros(0, hd),
        hvp: Matrix::zeros(0, hd),
        param_hvp: None,
        nll: Vec::new(),
        el2n: Vec::new(),
        grand: Vec::new(),
    };
    // A part that does not end on a batch boundary of these examples (another batch size, other data) would
    // not give the uninterrupted scores: start over.
    let mut out = done
        .filter(|d| {
            let k = d.nll.len();
            k <= examples.len()
                && (k % batch == 0 || k == examples.len())
                && d.hidden.dim == hd
                && d.hidden.rows == k
                && d.param_hvp.is_some() == proj.is_some()
        })
        .unwrap_or_else(empty);
    let w = model.output_weight()?.to_dtype(DType::F32)?;
    // A batch is padded to its longest sample: in data order that doubled the tokens of a pass over
    // Industrial (1.9× by characters); shortest first, samples of like length share a batch.
    let order = length_order(examples);
    let sorted: Vec<Example> = order.iter().map(|&i| examples[i].clone()).collect();
    let pb = crate::bar(progress, examples.len() as u64, "scoring samples");
    pb.set_position(out.nll.len() as u64);
    for (i, chunk) in sorted[out.nll.len()..].chunks(batch).enumerate() {
        append(&mut out, score_batch(model, &w, chunk, proj)?);
        pb.inc(chunk.len() as u64);
        if (i + 1) % PART_BATCHES == 0 && out.nll.len() < examples.len() {
            on_part(&out)?;
        }
    }
    pb.finish_and_clear();
    Ok(in_order(out, &order))
}

/// Example indices by total length (prompt + title), shortest first; ties keep the examples' order.
fn length_order(examples: &[Example]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].prompt.len() + examples[i].response.len());
    order
}

/// Scores computed in `order` (row j belongs to example `order[j]`) put back in the examples' order.
fn in_order(s: LlmScores, order: &[usize]) -> LlmScores {
    // pos[i]: where example i's row sits in the pass's order.
    let mut pos = vec![0; order.len()];
    order.iter().enumerate().for_each(|(j, &i)| pos[i] = j);
    let vals = |v: Vec<f32>| pos.iter().map(|&j| v[j]).collect();
    LlmScores {
        hidden: s.hidden.select_rows(&pos),
        grad: s.grad.select_rows(&pos),
        hvp: s.hvp.select_rows(&pos),
        param_hvp: s.param_hvp.map(|m| m.select_rows(&pos)),
        nll: vals(s.nll),
        el2n: vals(s.el2n),
        grand: vals(s.grand),
    }
}

fn append(out: &mut LlmScores, s: LlmScores) {
    if let Some(ph) = s.param_hvp {
        let acc = out
            .param_hvp
            .get_or_insert_with(|| Matrix::zeros(0, ph.dim));
        acc.rows += ph.rows;
        acc.data.extend(ph.data);
    }
    for (m, part) in [
        (&mut out.hidden, s.hidden),
        (&mut out.grad, s.grad),
        (&mut out.hvp, s.hvp),
    ] {
        m.rows += part.rows;
        m.data.extend(part.data);
    }
    out.nll.extend(s.nll);
    out.el2n.extend(s.el2n);
    out.grand.extend(s.grand);
}

/// Fixed random projections for the parameter-space HVP: R1 [k1, V] and R2 [k2, H], Gaussian / √k.
pub struct Projection {
    r1: Tensor,
    r2: Tensor,
}

impl Projection {
    pub fn new(model: &Decoder, k1: usize, k2: usize, seed: u64) -> Result<Self> {
        use rand::SeedableRng;
        use rand_distr_free::gaussian;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (v, h) = (model.cfg.vocab_size, model.cfg.hidden_size);
        let mut mk = |k: usize, n: usize| -> Result<Tensor> {
            let s = 1.0 / (k as f32).sqrt();
            let data: Vec<f32> = (0..k * n).map(|_| gaussian(&mut rng) * s).collect();
            Ok(Tensor::from_vec(data, (k, n), model.device())?)
        };
        Ok(Projection {
            r1: mk(k1, v)?,
            r2: mk(k2, h)?,
        })
    }

    /// (R1, R2).
    pub fn matrices(&self) -> (&Tensor, &Tensor) {
        (&self.r1, &self.r2)
    }
}

mod rand_distr_free {
    use rand::Rng;
    /// A standard normal draw (Box–Muller), to avoid another dependency.
    pub fn gaussian(rng: &mut impl Rng) -> f32 {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

fn score_batch(
    model: &Decoder,
    w: &Tensor,
    batch: &[Example],
    proj: Option<&Projection>,
) -> Result<LlmScores> {
    if batch
        .iter()
        .any(|e| e.prompt.is_empty() || e.response.is_empty())
    {
        return Err(SelectError::Invalid(
            "a sample has an empty prompt or target title".into(),
        ));
    }
    let dev = model.device();
    let len = batch
        .iter()
        .map(|e| e.prompt.len() + e.response.len())
        .max()
        .unwrap_or(0);
    let (mut ids, mut mask, mut last, mut at, mut targets, mut owner) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (r, e) in batch.iter().enumerate() {
        let seq: Vec<u32> = e.prompt.iter().chain(&e.response).copied().collect();
        last.push((r * len + e.prompt.len() - 1) as u32);
        for (k, &t) in e.response.iter().enumerate() {
            at.push((r * len + e.prompt.len() - 1 + k) as u32);
            targets.push(t);
            owner.push(r);
        }
        let pad = len - seq.len();
        mask.push(
            std::iter::repeat_n(1u8, seq.len())
                .chain(std::iter::repeat_n(0, pad))
                .collect::<Vec<_>>(),
        );
        ids.push(
            seq.into_iter()
                .chain(std::iter::repeat_n(0, pad))
                .collect::<Vec<_>>(),
        );
    }
    let forward = minirec_model::profile::phase("score.forward", dev);
    let (h, _) = model.forward(&ids, &mask, true, false)?;
    drop(forward);
    let _closed = minirec_model::profile::phase("score.closed_forms", dev);
    let h = h
        .reshape(((), model.cfg.hidden_size))?
        .to_dtype(DType::F32)?;
    let (b, m) = (batch.len(), targets.len());
    let hidden = h.index_select(&Tensor::from_vec(last, b, dev)?, 0)?;
    let hs = h.index_select(&Tensor::from_vec(at, m, dev)?, 0)?;
    let z = hs.matmul(&w.t()?)?;
    let (s, a, bterm) = match model.cfg.final_logit_softcapping {
        Some(c) => {
            let t = (&z / c)?.tanh()?;
            let a = (1.0 - t.sqr()?)?;
            let bb = ((&t * &a)? * (-2.0 / c))?;
            ((&t * c)?, Some(a), Some(bb))
        }
        None => (z, None, None),
    };
    let lsm = candle_nn::ops::log_softmax(&s, D::Minus1)?;
    let p = lsm.exp()?;
    let y = Tensor::from_vec(targets, (m, 1), dev)?;
    let logp_y = lsm.gather(&y, 1)?.squeeze(1)?;
    let onehot = p
        .zeros_like()?
        .scatter_add(&y, &Tensor::ones((m, 1), DType::F32, dev)?, 1)?;
    let g = (&p - &onehot)?;
    let gz = match &a {
        Some(a) => (&g * a)?,
        None => g.clone(),
    };
    // seg [B, M] sums token rows into their sample's row.
    let mut seg = vec![0f32; b * m];
    for (t, &r) in owner.iter().enumerate() {
        seg[r * m + t] = 1.0;
    }
    let seg = Tensor::from_vec(seg, (b, m), dev)?;
    let v = seg.matmul(&gz.matmul(w)?)?; // [B, H]
    let u = seg.t()?.matmul(&v)?.matmul(&w.t()?)?; // W v_i at every token row, [M, V]
                                                   // Hz·u for each token row: the logit-space Hessian applied to u.
    let hz = |u: &Tensor| -> Result<Tensor> {
        let wa = match &a {
            Some(a) => (u * a)?,
            None => u.clone(),
        };
        let pw = (&p * &wa)?;
        let q = (&pw - p.broadcast_mul(&pw.sum_keepdim(1)?)?)?;
        Ok(match (&a, &bterm) {
            (Some(a), Some(bb)) => ((&q * a)? + ((&g * bb)? * u)?)?,
            _ => q,
        })
    };
    let r = hz(&u)?;
    let hvp = seg.matmul(&r.matmul(w)?)?;
    let param_hvp = match proj {
        Some(pr) => {
            // Output-layer parameters W: v = ∇_W ℓ = Σ_s g_s h_sᵀ, so H_W v = Σ_t Hz_t(Σ_s (h_t·h_s) g_s) h_tᵀ,
            // projected as (R1 x_t) ⊗ (R2 h_t), a Kronecker random projection of each outer product.
            let mut same = vec![0f32; m * m];
            for (t, &rt) in owner.iter().enumerate() {
                for (s2, &rs) in owner.iter().enumerate() {
                    if rt == rs {
                        same[t * m + s2] = 1.0;
                    }
                }
            }
            let gram = (hs.matmul(&hs.t()?)? * Tensor::from_vec(same, (m, m), dev)?)?;
            let x = hz(&gram.matmul(&gz)?)?;
            let xa = x.matmul(&pr.r1.t()?)?; // [M, k1]
            let hb = hs.matmul(&pr.r2.t()?)?; // [M, k2]
            let (k1, k2) = (pr.r1.dim(0)?, pr.r2.dim(0)?);
            let outer = xa.unsqueeze(2)?.broadcast_mul(&hb.unsqueeze(1)?)?; // [M, k1, k2]
            Some(seg.matmul(&outer.reshape((m, k1 * k2))?)?)
        }
        None => None,
    };

    let nll_tok = logp_y.neg()?.to_vec1::<f32>()?;
    // ‖p − e_y‖² = Σp² − 2p_y + 1
    let sq = ((p.sqr()?.sum(1)? - (logp_y.exp()? * 2.0)?)? + 1.0)?
        .relu()?
        .sqrt()?
        .to_vec1::<f32>()?;
    let mut nll = vec![0f32; b];
    let mut el2n = vec![0f32; b];
    let mut count = vec![0usize; b];
    for (t, &r) in owner.iter().enumerate() {
        nll[r] += nll_tok[t];
        el2n[r] += sq[t];
        count[r] += 1;
    }
    el2n.iter_mut()
        .zip(&count)
        .for_each(|(e, &c)| *e /= c as f32);
    // ‖Σ_t g_t h_tᵀ‖_F² = Σ_{t,s} (g_t·g_s)(h_t·h_s), within each sample's rows.
    let mut grand = Vec::with_capacity(b);
    let mut start = 0;
    for &c in &count {
        let gi = gz.narrow(0, start, c)?;
        let hi = hs.narrow(0, start, c)?;
        let gg = gi.matmul(&gi.t()?)?;
        let hh = hi.matmul(&hi.t()?)?;
        let s2 = (gg * hh)?.sum_all()?.to_scalar::<f32>()?;
        grand.push(s2.max(0.0).sqrt());
        start += c;
    }
    Ok(LlmScores {
        hidden: Matrix::from_tensor(&hidden)?,
        grad: Matrix::from_tensor(&v)?,
        hvp: Matrix::from_tensor(&hvp)?,
        param_hvp: param_hvp.map(|t| Matrix::from_tensor(&t)).transpose()?,
        nll,
        el2n,
        grand,
    })
}

/// Representativeness (Eq. 8, 11, 12): cos(d_i, d_g) with d_g the mean d_i, min-max normalised.
pub fn representativeness(hvp: &Matrix) -> (Vec<f32>, Vec<f32>) {
    let dg = hvp.mean_row();
    let raw: Vec<f32> = (0..hvp.rows)
        .map(|i| crate::matrix::cosine(hvp.row(i), &dg))
        .collect();
    let norm = crate::matrix::min_max(&raw);
    (raw, norm)
}
