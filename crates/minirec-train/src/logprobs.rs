//! Log-probabilities of response tokens given their prompts — the quantity SFT, GRPO, SimPO, the reference
//! model's KL term and MiniRec's scores are all built from.
//!
//! When several responses in a batch continue the same prompt (a rollout group, SimPO's chosen/rejected
//! pair), the prompt is run once and every response attends to its keys and values: a GRPO group of m
//! responses of ~32 tokens after a ~190-token prompt costs 190 + 32·m tokens instead of (190 + 32)·m.
//! Sequences that occur more than once (the same title sampled twice, SimPO's chosen title paired with each
//! of a group's rejected ones) are run once and their values repeated, so their gradients add up.

use std::collections::HashMap;

use candle_core::Tensor;
use minirec_model::Decoder;

use crate::error::{Result, TrainError};

/// Log-probability of every response token of a batch under the model, concatenated example by example
/// ([Σ |response|], differentiable unless `no_grad`). Repeated prompts are run once (see the module doc); the
/// values equal `token_logprobs_per_sequence`'s up to float rounding.
pub fn token_logprobs(
    model: &Decoder,
    batch: &[(&[u32], &[u32])],
    no_grad: bool,
) -> Result<Tensor> {
    check(batch)?;
    let (unique, of) = first_appearance(batch.iter().copied());
    if unique.len() == batch.len() {
        return distinct_logprobs(model, batch, no_grad);
    }
    let lp = distinct_logprobs(model, &unique, no_grad)?;
    let mut start = Vec::with_capacity(unique.len());
    let mut at = 0u32;
    for (_, r) in &unique {
        start.push(at);
        at += r.len() as u32;
    }
    let idx: Vec<u32> = batch
        .iter()
        .zip(&of)
        .flat_map(|((_, r), &u)| start[u]..start[u] + r.len() as u32)
        .collect();
    let n = idx.len();
    Ok(lp.index_select(&Tensor::from_vec(idx, n, model.device())?, 0)?)
}

/// `token_logprobs` for a batch without repeated sequences.
fn distinct_logprobs(model: &Decoder, batch: &[(&[u32], &[u32])], no_grad: bool) -> Result<Tensor> {
    let (prompts, row_prompt) = first_appearance(batch.iter().map(|(p, _)| *p));
    if prompts.len() == batch.len() {
        return token_logprobs_per_sequence(model, batch, no_grad);
    }
    let tr = batch.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
    let ids: Vec<Vec<u32>> = batch.iter().map(|(_, r)| right_pad(r, tr)).collect();
    let mask: Vec<Vec<u8>> = batch.iter().map(|(_, r)| real_mask(r.len(), tr)).collect();
    let (last, h) = model.forward_shared(&prompts, &row_prompt, &ids, &mask, no_grad)?;
    // Rows of [prompt last states; continuation states]: response token 0 is predicted from its prompt's
    // last state, token k ≥ 1 from the continuation's state k − 1.
    let hid = model.cfg.hidden_size;
    let states = Tensor::cat(&[&last, &h.reshape(((), hid))?], 0)?;
    let p = prompts.len();
    let mut at = Vec::new();
    let mut targets = Vec::new();
    for (n, (_, response)) in batch.iter().enumerate() {
        for (k, &t) in response.iter().enumerate() {
            at.push(if k == 0 {
                row_prompt[n] as u32
            } else {
                (p + n * tr + k - 1) as u32
            });
            targets.push(t);
        }
    }
    gather_logprobs(model, &states, at, targets)
}

/// The same values with every sequence run whole (prompt + response), no sharing.
pub fn token_logprobs_per_sequence(
    model: &Decoder,
    batch: &[(&[u32], &[u32])],
    no_grad: bool,
) -> Result<Tensor> {
    check(batch)?;
    let len = batch
        .iter()
        .map(|(p, r)| p.len() + r.len())
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len());
    let mut mask = Vec::with_capacity(batch.len());
    let mut at = Vec::new();
    let mut targets = Vec::new();
    for (r, (prompt, response)) in batch.iter().enumerate() {
        let seq: Vec<u32> = prompt.iter().chain(response.iter()).copied().collect();
        for (k, &t) in response.iter().enumerate() {
            at.push((r * len + prompt.len() + k - 1) as u32);
            targets.push(t);
        }
        mask.push(real_mask(seq.len(), len));
        ids.push(right_pad(&seq, len));
    }
    let (h, _) = model.forward(&ids, &mask, no_grad, false)?;
    let h = h.reshape(((), model.cfg.hidden_size))?;
    gather_logprobs(model, &h, at, targets)
}

/// Tokens a `token_logprobs` call runs through the model: each distinct prompt once, plus each distinct
/// sequence's response.
pub fn tokens_processed(batch: &[(&[u32], &[u32])]) -> usize {
    let (unique, _) = first_appearance(batch.iter().copied());
    let (prompts, _) = first_appearance(unique.iter().map(|(p, _)| *p));
    if prompts.len() == unique.len() {
        return unique.iter().map(|(p, r)| p.len() + r.len()).sum();
    }
    prompts.iter().map(|p| p.len()).sum::<usize>()
        + unique.iter().map(|(_, r)| r.len()).sum::<usize>()
}

fn check(batch: &[(&[u32], &[u32])]) -> Result<()> {
    if batch.is_empty() || batch.iter().any(|(p, r)| p.is_empty() || r.is_empty()) {
        return Err(TrainError::Invalid(
            "an example has an empty prompt or response".into(),
        ));
    }
    Ok(())
}

/// The distinct items in order of first appearance, and each item's index among them.
fn first_appearance<K: std::hash::Hash + Eq + Copy>(
    items: impl Iterator<Item = K>,
) -> (Vec<K>, Vec<usize>) {
    let mut seen: HashMap<K, usize> = HashMap::new();
    let mut distinct = Vec::new();
    let of = items
        .map(|k| {
            *seen.entry(k).or_insert_with(|| {
                distinct.push(k);
                distinct.len() - 1
            })
        })
        .collect();
    (distinct, of)
}

fn right_pad(x: &[u32], len: usize) -> Vec<u32> {
    x.iter()
        .copied()
        .chain(std::iter::repeat_n(0, len - x.len()))
        .collect()
}

fn real_mask(n: usize, len: usize) -> Vec<u8> {
    std::iter::repeat_n(1u8, n)
        .chain(std::iter::repeat_n(0, len - n))
        .collect()
}

/// log p(target) at the rows `at` of `states` [rows, H]: logits only where a token is predicted.
fn gather_logprobs(
    model: &Decoder,
    states: &Tensor,
    at: Vec<u32>,
    targets: Vec<u32>,
) -> Result<Tensor> {
    let dev = model.device();
    let sel = states.index_select(&Tensor::from_vec(at, targets.len(), dev)?, 0)?;
    let logits = model.logits(&sel)?;
    Ok(minirec_model::kernels::target_logprob::target_logprobs(
        &logits, &targets,
    )?)
}
