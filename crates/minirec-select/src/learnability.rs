//! Learnability (MiniRec §4.2): r̄(x) = mean reward of N proxy rollouts (Eq. 6), L = exp(−(r̄ − μ)² / 2σ²)
//! (Eq. 5), min-max normalised (Eq. 7). The reward is the RL reward: 1 when the sampled title is the target's.

use minirec_model::decode::{sample, ItemIndex};
use minirec_model::Decoder;
use minirec_train::rl::RlPrompt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;

/// r̄ for every prompt from `n` trie-constrained samples at `temperature`, `batch` prompts per call.
#[allow(clippy::too_many_arguments)]
pub fn mean_rewards(
    proxy: &Decoder,
    index: &ItemIndex,
    prompts: &[RlPrompt],
    n: usize,
    temperature: f32,
    batch: usize,
    seed: u64,
    progress: bool,
) -> Result<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pb = crate::bar(progress, prompts.len() as u64, "proxy rollouts");
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.prompt.clone()).collect();
        let rolls = sample(proxy, index, &ids, n, temperature, &mut rng)?;
        for (p, r) in chunk.iter().zip(rolls) {
            let hits = r.iter().filter(|s| s.title == p.target).count();
            out.push(hits as f32 / r.len().max(1) as f32);
        }
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
