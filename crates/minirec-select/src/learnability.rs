//! Learnability (MiniRec §4.2): r̄(x) = mean reward of N proxy rollouts (Eq. 6), L = exp(−(r̄ − μ)² / 2σ²)
//! (Eq. 5), min-max normalised (Eq. 7). The reward is the RL reward: 1 when the sampled title is the target's.

use minirec_model::decode::{sample, ItemIndex};
use minirec_model::Decoder;
use minirec_train::rl::RlPrompt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// r̄ for every prompt from `n` trie-constrained samples at `temperature`, `batch` prompts per call. Each
/// call draws from its own random stream (the seed's stream number = the call's index), so a call's rollouts
/// do not depend on the calls before it: `done` holds r̄ of the prompts finished earlier (whole calls, in
/// order), which are kept, and `on_batch` receives each new call's r̄ as it finishes — a stopped run resumes
/// where it was and ends with the values an uninterrupted one has.
#[allow(clippy::too_many_arguments)]
pub fn mean_rewards(
    proxy: &Decoder,
    index: &ItemIndex,
    prompts: &[RlPrompt],
    n: usize,
    temperature: f32,
    batch: usize,
    seed: u64,
    done: Vec<f32>,
    on_batch: &mut dyn FnMut(&[f32]) -> Result<()>,
    progress: bool,
) -> Result<Vec<f32>> {
    let batch = batch.max(1);
    let mut out = done;
    out.truncate(out.len() / batch * batch);
    let pb = crate::bar(progress, prompts.len() as u64, "proxy rollouts");
    pb.set_position(out.len().min(prompts.len()) as u64);
    for (k, chunk) in prompts.chunks(batch).enumerate().skip(out.len() / batch) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(k as u64);
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.prompt.clone()).collect();
        let rolls = sample(proxy, index, &ids, n, temperature, &mut rng)?;
        let rbar: Vec<f32> = chunk
            .iter()
            .zip(rolls)
            .map(|(p, r)| {
                r.iter().filter(|s| s.title == p.target).count() as f32 / r.len().max(1) as f32
            })
            .collect();
        on_batch(&rbar)?;
        out.extend(rbar);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Eq. 5 and Eq. 7: the raw Gaussian score and its min-max normalised value.
pub fn learnability(rbar: &[f32], mu: f32, sigma: f32) -> (Vec<f32>, Vec<f32>) {
    let raw: Vec<f32> = rbar
        .iter()
        .map(|&r| (-(r - mu).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm = crate::matrix::min_max(&raw);
    (raw, norm)
}
