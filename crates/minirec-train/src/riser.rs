//! The pieces of GRPO with the RISER stabilisers (papers/riser.txt §3), as functions over one batch's numbers so
//! each can be checked on its own: oversampling and de-duplication (Eq. 5), group-normalised advantages, the
//! certainty-aware token mask (Eq. 6), KL-Cov outlier selection (Eq. 8), the token-level GRPO loss with
//! clipping and the KL-Cov penalty (Eq. 9), and the masked SimPO loss for all-fail groups (Eq. 3, 7).

use std::collections::HashSet;
use std::hash::Hash;

use candle_core::{Device, Tensor};
use minirec_data::trie::Trie;
use rand::seq::index::sample;
use rand::Rng;

use crate::error::{Result, TrainError};

/// Eq. 5: from m rollouts keep n, preferring distinct ones: n distinct ones at random if there are enough,
/// else every distinct one plus duplicates drawn at random without replacement. Returns indices into
/// `rollouts` (each rollout is used at most once).
pub fn oversample_dedup<T: Eq + Hash>(rollouts: &[T], n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut seen = HashSet::new();
    let (mut unique, mut dups) = (Vec::new(), Vec::new());
    for (i, r) in rollouts.iter().enumerate() {
        if seen.insert(r) {
            unique.push(i);
        } else {
            dups.push(i);
        }
    }
    if unique.len() >= n {
        return sample(rng, unique.len(), n)
            .into_iter()
            .map(|k| unique[k])
            .collect();
    }
    let extra = (n - unique.len()).min(dups.len());
    unique.extend(sample(rng, dups.len(), extra).into_iter().map(|k| dups[k]));
    unique
}

/// GRPO's group-relative advantages: (r − mean) / (std + 1e-4), std the unbiased sample deviation (as TRL).
/// A group whose rewards are all equal gets zeros.
pub fn group_advantages(rewards: &[f32]) -> Vec<f32> {
    let n = rewards.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mean = rewards.iter().sum::<f32>() / n as f32;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / (n - 1) as f32;
    rewards
        .iter()
        .map(|r| (r - mean) / (var.sqrt() + 1e-4))
        .collect()
}

/// Eq. 6: weight 1 for a token chosen at a branching prefix (more than one allowed child) and for the final
/// token; `decay` for a token on a deterministic path.
pub fn certainty_mask(trie: &Trie<u32>, tokens: &[u32], decay: f32) -> Result<Vec<f32>> {
    let mut node = Trie::<u32>::ROOT;
    let mut out = Vec::with_capacity(tokens.len());
    for (j, &t) in tokens.iter().enumerate() {
        let branching = trie.num_children(node) > 1;
        out.push(if branching || j + 1 == tokens.len() {
            1.0
        } else {
            decay
        });
        node = trie.child(node, t).ok_or_else(|| {
            TrainError::Invalid(format!("token {t} at position {j} leaves the item trie"))
        })?;
    }
    Ok(out)
}

/// Eq. 8: the tokens whose centred log-probability times centred advantage is largest, the top
/// `max(1, ⌊ratio · N⌋)` of the N tokens (KL-Cov's reference rule). Returns a flag per token.
pub fn kl_cov_outliers(logp: &[f32], adv: &[f32], ratio: f64) -> Vec<bool> {
    let n = logp.len();
    if n == 0 || ratio <= 0.0 {
        return vec![false; n];
    }
    let ml = logp.iter().sum::<f32>() / n as f32;
    let ma = adv.iter().sum::<f32>() / n as f32;
    let cov: Vec<f32> = logp
        .iter()
        .zip(adv)
        .map(|(l, a)| (l - ml) * (a - ma))
        .collect();
    let k = ((ratio * n as f64).floor() as usize).clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cov[b].total_cmp(&cov[a]).then(a.cmp(&b)));
    let mut flags = vec![false; n];
    for &i in &order[..k] {
        flags[i] = true;
    }
    flags
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct GrpoLossConfig {
    /// PPO clipping range ε of the token ratio.
    pub clip_eps: f64,
    /// β_KL of the KL-Cov penalty on outlier tokens.
    pub beta_kl: f64,
}

impl Default for GrpoLossConfig {
    fn default() -> Self {
        GrpoLossConfig {
            clip_eps: 0.2,
            beta_kl: 1.0,
        }
    }
}

fn host(v: &[f32], dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), dev)?)
}

/// Eq. 9 with PPO clipping, over the batch's tokens: ℓ = −min(r·A, clip(r, 1±ε)·A) (+ β_KL·|log r| on
/// outliers), r = exp(logp − logp_old), averaged with the certainty weights: Σ M·ℓ / Σ M. `logp` carries the
/// gradient; the rest are per-token constants.
pub fn grpo_loss(
    logp: &Tensor,
    logp_old: &[f32],
    adv: &[f32],
    mask: &[f32],
    outliers: &[bool],
    cfg: &GrpoLossConfig,
) -> Result<Tensor> {
    let n = logp.dim(0)?;
    if [logp_old.len(), adv.len(), mask.len(), outliers.len()]
        .iter()
        .any(|&l| l != n)
    {
        return Err(TrainError::Invalid(
            "per-token inputs of different lengths".into(),
        ));
    }
    let dev = logp.device();
    let log_ratio = (logp - host(logp_old, dev)?)?;
    let ratio = log_ratio.exp()?;
    let a = host(adv, dev)?;
    let unclipped = (&ratio * &a)?;
    let clipped = (ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)? * &a)?;
    let mut per_token = unclipped.minimum(&clipped)?.neg()?;
    if cfg.beta_kl > 0.0 && outliers.iter().any(|&o| o) {
        let flags: Vec<f32> = outliers
            .iter()
            .map(|&o| if o { cfg.beta_kl as f32 } else { 0.0 })
            .collect();
        // |log r| as log r · sign(log r) with the sign held constant: its gradient at r = 1 is 0, as torch's
        // abs has it (candle's abs gives +1 there, which would push every outlier's log-probability down on
        // the first update of a batch, when the penalty is zero).
        let abs = (&log_ratio * log_ratio.sign()?.detach())?;
        per_token = (per_token + (abs * host(&flags, dev)?)?)?;
    }
    let total: f32 = mask.iter().sum();
    if total <= 0.0 {
        return Err(TrainError::Invalid(
            "the certainty mask sums to zero".into(),
        ));
    }
    Ok(((per_token * host(mask, dev)?)?.sum_all()? / total as f64)?)
}

/// `grpo_loss` over a part of the batch's tokens, with the whole batch's Σ M as the denominator: the parts'
/// losses add up to the batch's, so their gradients can be accumulated one micro-batch at a time.
pub fn grpo_loss_part(
    logp: &Tensor,
    logp_old: &[f32],
    adv: &[f32],
    mask: &[f32],
    outliers: &[bool],
    cfg: &GrpoLossConfig,
    batch_mask_total: f32,
) -> Result<Tensor> {
    let part: f32 = mask.iter().sum();
    if batch_mask_total <= 0.0 {
        return Err(TrainError::Invalid(
            "the certainty mask sums to zero".into(),
        ));
    }
    if part <= 0.0 {
        // Every token of this part weighs zero: no loss, but keep the graph (and its device) intact.
        return Ok((logp.sum_all()? * 0.0)?);
    }
    Ok((grpo_loss(logp, logp_old, adv, mask, outliers, cfg)? * (part / batch_mask_total) as f64)?)
}

/// Eq. 7: the masked average log-probability of a sequence (`logp` per token, differentiable).
pub fn masked_reward(logp: &Tensor, mask: &[f32]) -> Result<Tensor> {
    let total: f32 = mask.iter().sum();
    if total <= 0.0 {
        return Err(TrainError::Invalid(
            "the certainty mask sums to zero".into(),
        ));
    }
    Ok(((logp * host(mask, logp.device())?)?.sum_all()? / total as f64)?)
}

/// Eq. 3 for one pair: −log σ(β (r′_c − r′_r) − γ), computed as softplus(−z) for stability.
pub fn simpo_pair_loss(
    reward_chosen: &Tensor,
    reward_rejected: &Tensor,
    beta: f64,
    gamma: f64,
) -> Result<Tensor> {
    let z = (((reward_chosen - reward_rejected)? * beta)? - gamma)?;
    // softplus(−z) = max(−z, 0) + log(1 + exp(−|z|))
    let neg = z.neg()?;
    Ok((neg.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn dedup_follows_eq5() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Enough distinct rollouts: n distinct ones.
        let r = ["a", "b", "a", "c", "d", "b", "e"];
        for _ in 0..20 {
            let k = oversample_dedup(&r, 4, &mut rng);
            let items: HashSet<_> = k.iter().map(|&i| r[i]).collect();
            assert_eq!((k.len(), items.len()), (4, 4));
        }
        // Too few: every distinct one, then duplicates, each rollout at most once.
        let r = ["a", "a", "a", "b", "b", "c"];
        for _ in 0..20 {
            let mut k = oversample_dedup(&r, 5, &mut rng);
            assert_eq!(k.len(), 5);
            let items: HashSet<_> = k.iter().map(|&i| r[i]).collect();
            assert_eq!(items.len(), 3);
            k.sort();
            k.dedup();
            assert_eq!(k.len(), 5, "no rollout twice");
        }
        assert_eq!(oversample_dedup(&["a", "a"], 5, &mut rng).len(), 2);
    }

    #[test]
    fn advantages_by_hand() {
        // mean 0.25, unbiased std √(0.75/3) = 0.5.
        let a = group_advantages(&[1.0, 0.0, 0.0, 0.0]);
        let want = [
            0.75 / 0.5001,
            -0.25 / 0.5001,
            -0.25 / 0.5001,
            -0.25 / 0.5001,
        ];
        for (x, y) in a.iter().zip(want) {
            assert!((x - y).abs() < 1e-5, "{a:?}");
        }
        assert_eq!(group_advantages(&[1.0, 1.0, 1.0]), vec![0.0; 3]);
        assert_eq!(group_advantages(&[0.0]), vec![0.0]);
    }

    #[test]
    fn mask_by_hand() {
        // Items 1-2-3, 1-2-4, 5-6: root branches (1 | 5), after 1 one child (2), after 1-2 two (3 | 4).
        let t = Trie::from_items([
            (&[1u32, 2, 3][..], 0),
            (&[1, 2, 4][..], 1),
            (&[5, 6][..], 2),
        ])
        .unwrap();
        assert_eq!(
            certainty_mask(&t, &[1, 2, 3], 0.5).unwrap(),
            vec![1.0, 0.5, 1.0]
        );
        assert_eq!(certainty_mask(&t, &[5, 6], 0.5).unwrap(), vec![1.0, 1.0]);
        assert!(certainty_mask(&t, &[1, 9], 0.5).is_err());
    }

    #[test]
    fn kl_cov_matches_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..50 {
            let n = rng.random_range(1..300);
            let lp: Vec<f32> = (0..n).map(|_| -rng.random::<f32>() * 5.0).collect();
            let ad: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
            let ratio = [5e-3, 0.1, 0.5][rng.random_range(0..3)];
            let flags = kl_cov_outliers(&lp, &ad, ratio);
            let k = ((ratio * n as f64).floor() as usize).clamp(1, n);
            assert_eq!(flags.iter().filter(|&&f| f).count(), k);
            let ml = lp.iter().sum::<f32>() / n as f32;
            let ma = ad.iter().sum::<f32>() / n as f32;
            let cov: Vec<f32> = (0..n).map(|i| (lp[i] - ml) * (ad[i] - ma)).collect();
            let min_in = (0..n)
                .filter(|&i| flags[i])
                .map(|i| cov[i])
                .fold(f32::INFINITY, f32::min);
            let max_out = (0..n)
                .filter(|&i| !flags[i])
                .map(|i| cov[i])
                .fold(f32::NEG_INFINITY, f32::max);
            assert!(
                min_in >= max_out,
                "every outlier covaries at least as much as every other token"
            );
        }
    }

    fn grad_of(loss: &Tensor, v: &Var) -> Vec<f32> {
        loss.backward()
            .unwrap()
            .get(v.as_tensor())
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn grpo_loss_values_gradients_and_clipping() {
        let cfg = GrpoLossConfig {
            clip_eps: 0.2,
            beta_kl: 0.0,
        };
        let lp = Var::new(&[-1.0f32, -2.0, -0.5], &Device::Cpu).unwrap();
        let old = [-1.0f32, -2.0, -0.5];
        let adv = [1.0f32, -1.0, 2.0];
        let mask = [1.0f32, 0.5, 1.0];
        let l = grpo_loss(lp.as_tensor(), &old, &adv, &mask, &[false; 3], &cfg).unwrap();
        // ratio 1: loss = −Σ M·A / Σ M = −(1 − 0.5 + 2) / 2.5.
        assert!((l.to_scalar::<f32>().unwrap() + 1.0).abs() < 1e-6);
        // d loss / d logp = −M·A / Σ M: a positive advantage pushes its log-probability up.
        let g = grad_of(&l, &lp);
        for (gi, want) in g.iter().zip([-0.4f32, 0.2, -0.8]) {
            assert!((gi - want).abs() < 1e-6, "{g:?}");
        }
        // Past the clip range in the advantage's direction the gradient vanishes.
        let lp2 = Var::new(&[-1.0f32 + 0.5], &Device::Cpu).unwrap(); // ratio e^0.5 > 1.2
        let l2 = grpo_loss(lp2.as_tensor(), &[-1.0], &[1.0], &[1.0], &[false], &cfg).unwrap();
        assert_eq!(grad_of(&l2, &lp2), vec![0.0]);
        // The KL-Cov penalty adds β·|log r| on outliers only.
        let cfg = GrpoLossConfig {
            clip_eps: 10.0,
            beta_kl: 1.0,
        };
        let lp3 = Var::new(&[-0.9f32, -0.9], &Device::Cpu).unwrap();
        let a = grpo_loss(
            lp3.as_tensor(),
            &[-1.0, -1.0],
            &[0.0, 0.0],
            &[1.0, 1.0],
            &[true, false],
            &cfg,
        )
        .unwrap();
        assert!((a.to_scalar::<f32>().unwrap() - 0.1 / 2.0).abs() < 1e-5);
        // ... with gradient β·sign(log r)·M / Σ M on the outlier, and none at r = 1 (the first update of a batch).
        let g = grad_of(&a, &lp3);
        assert!((g[0] - 0.5).abs() < 1e-6 && g[1].abs() < 1e-6, "{g:?}");
        let lp4 = Var::new(&[-1.0f32, -1.0], &Device::Cpu).unwrap();
        let b = grpo_loss(
            lp4.as_tensor(),
            &[-1.0, -1.0],
            &[0.0, 0.0],
            &[1.0, 1.0],
            &[true, true],
            &cfg,
        )
        .unwrap();
        assert_eq!(grad_of(&b, &lp4), vec![0.0, 0.0]);
    }

    #[test]
    fn simpo_loss_value_and_gradient_signs() {
        let c = Var::new(&[-1.0f32, -3.0], &Device::Cpu).unwrap();
        let r = Var::new(&[-2.0f32, -2.0], &Device::Cpu).unwrap();
        let mask = [1.0f32, 0.5];
        let rc = masked_reward(c.as_tensor(), &mask).unwrap(); // (−1 − 1.5)/1.5
        let rr = masked_reward(r.as_tensor(), &mask).unwrap(); // −2
        let loss = simpo_pair_loss(&rc, &rr, 2.0, 0.5).unwrap();
        let z = 2.0 * (-2.5f64 / 1.5 + 2.0) - 0.5;
        let want = (1.0 + (-z).exp()).ln();
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-6);
        let grads = loss.backward().unwrap();
        let gc: Vec<f32> = grads.get(c.as_tensor()).unwrap().to_vec1().unwrap();
        let gr: Vec<f32> = grads.get(r.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(
            gc.iter().all(|&g| g < 0.0),
            "raising the chosen item's log-probability lowers the loss"
        );
        assert!(
            gr.iter().all(|&g| g > 0.0),
            "raising the rejected item's log-probability raises it"
        );
        assert!(
            (gc[1] / gc[0] - 0.5).abs() < 1e-5,
            "the mask weights the tokens"
        );
    }
}
