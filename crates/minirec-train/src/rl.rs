//! GRPO with the RISER stabilisers (papers/riser.txt §3, DESIGN.md): per step, m trie-constrained rollouts per
//! prompt, de-duplicated to n (Eq. 5); reward 1 for the target's title; groups with a hit train with the
//! clipped token-level GRPO loss weighted by the certainty mask (Eq. 6) and the KL-Cov penalty on outlier tokens
//! (Eq. 8–9); groups with no hit become SimPO pairs, ground truth against each rollout (Eq. 3, 7); loss
//! = w·L_SimPO + L′_GRPO. Every component can be switched off; with all off it is plain GRPO, optionally
//! with the classic KL penalty to a reference model. Each rollout batch is split into `updates_per_batch`
//! optimiser steps against the rollout-time ("old") log-probabilities, as verl and TRL do: on the first the ratio
//! is 1, from the second on clipping and KL-Cov's |log r| act.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use minirec_model::decode::{sample, ItemIndex, Sampled};
use minirec_model::lora::LoraConfig;
use minirec_model::{Decoder, TextTokenizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::logprobs::{token_logprobs, token_logprobs_per_sequence, tokens_processed};
use crate::optim::{Accumulator, AdamW, AdamWConfig};
use crate::riser::{
    certainty_mask, group_advantages, grpo_loss_part, kl_cov_outliers, masked_reward,
    oversample_dedup, simpo_pair_loss, GrpoLossConfig,
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RlConfig {
    pub max_steps: usize,
    pub prompts_per_step: usize,
    /// Rollouts sampled per prompt (m).
    pub rollouts: usize,
    /// Rollouts kept per prompt (n).
    pub keep: usize,
    pub temperature: f32,
    pub lr: f64,
    pub max_grad_norm: f64,
    pub clip_eps: f64,
    /// Eq. 5; off: the first n rollouts.
    pub dedup: bool,
    /// Eq. 6 decay d; `None`: every token weighs 1.
    pub mask_decay: Option<f32>,
    /// Eq. 8–9; off: no penalty.
    pub kl_cov: bool,
    pub kl_cov_ratio: f64,
    pub beta_kl: f64,
    /// SimPO on all-fail groups.
    pub simpo: bool,
    pub simpo_beta: f64,
    /// γ / β.
    pub simpo_gamma_ratio: f64,
    pub simpo_weight: f64,
    /// The classic KL(π‖π_ref) penalty (k3 estimator) with this β, for the vanilla-GRPO baseline.
    pub kl_ref_beta: Option<f64>,
    pub checkpoint_every: usize,
    /// Validation HR@1 (beam width 10) every this many steps, and before the first and after the last; 0: never.
    pub eval_every: usize,
    pub seed: u64,
    pub lora: Option<LoraConfig>,
    /// Sequences per forward/backward pass of an update (the update is the same; memory follows this).
    /// `None`: 8 on the CPU (fastest there, and lightest), 32 on a GPU.
    #[serde(default)]
    pub micro_batch: Option<usize>,
    /// Optimiser steps per rollout batch, each on a share of its sequences, all against the rollout-time
    /// log-probabilities. With 1 the ratio stays 1, so clipping and KL-Cov's penalty have no gradient.
    #[serde(default = "default_updates")]
    pub updates_per_batch: usize,
    /// Run a group's prompt once for all its rollouts (and a repeated sequence once); off: every sequence
    /// whole, as TRL does. The losses and gradients are the same either way.
    #[serde(default = "yes")]
    pub share_prompts: bool,
    /// In-Context RLVR: demonstrations (K) before the prompt of each of `demo_rollouts` (R) of the m rollouts;
    /// 0: none. Advantages are taken over the whole mixed group, every log-probability under the prompt the
    /// rollout was sampled with. Evaluation never sees demonstrations.
    #[serde(default)]
    pub demos: usize,
    #[serde(default)]
    pub demo_rollouts: usize,
    #[serde(default)]
    pub demo_select: crate::demos::DemoSelect,
    /// Mixed precision in the updates on the CPU's bf16 units (Intel AMX, AVX512_BF16): the products of
    /// trainable weights round their operands to bf16, as `sft --bf16-mixed` does. Every log-probability an
    /// update uses, the rollout-time ones included, comes from the same mixed pass, so the importance ratio
    /// compares like with like; rollouts sample in f32. Without such units it trains in f32 and says so.
    #[serde(default)]
    pub bf16_mixed: bool,
    #[serde(skip)]
    pub interrupt_after: Option<usize>,
}

fn default_updates() -> usize {
    2
}

fn yes() -> bool {
    true
}

impl Default for RlConfig {
    fn default() -> Self {
        RlConfig {
            max_steps: 100,
            prompts_per_step: 4,
            rollouts: 20,
            keep: 16,
            temperature: 1.0,
            lr: 1e-6,
            max_grad_norm: 1.0,
            clip_eps: 0.2,
            dedup: true,
            mask_decay: Some(0.6),
            kl_cov: true,
            kl_cov_ratio: 5e-3,
            beta_kl: 1.0,
            simpo: true,
            simpo_beta: 5.0,
            simpo_gamma_ratio: 0.7,
            simpo_weight: 1.0,
            kl_ref_beta: None,
            checkpoint_every: 50,
            eval_every: 25,
            seed: 42,
            lora: None,
            micro_batch: None,
            updates_per_batch: default_updates(),
            share_prompts: true,
            demos: 0,
            demo_rollouts: 0,
            demo_select: Default::default(),
            bf16_mixed: false,
            interrupt_after: None,
        }
    }
}

impl RlConfig {
    /// Plain GRPO (RISER Table 2 "+GRPO"): every RISER component off.
    pub fn plain_grpo(self) -> Self {
        RlConfig {
            dedup: false,
            mask_decay: None,
            kl_cov: false,
            simpo: false,
            ..self
        }
    }
}

/// One RL training prompt: its tokens and the title index of its target.
#[derive(Debug, Clone, PartialEq)]
pub struct RlPrompt {
    pub prompt: Vec<u32>,
    pub target: u32,
}

/// The RL prompts of samples: each history's prompt tokens and its target's title index.
pub fn prompts_for(
    ds: &minirec_data::PreparedDataset,
    samples: &[&minirec_data::Sample],
    tok: &TextTokenizer,
) -> Result<Vec<RlPrompt>> {
    let texts: Vec<String> = samples
        .iter()
        .map(|s| ds.prompt.render(ds.history_titles(s)))
        .collect();
    let ids = tok.encode_batch(&texts)?;
    Ok(ids
        .into_iter()
        .zip(samples)
        .map(|(prompt, s)| RlPrompt {
            prompt,
            target: ds
                .catalog
                .title_index(ds.target_title(s))
                .expect("a catalog title"),
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RlState {
    step: usize,
    /// AdamW's step count (its bias correction), `updates_per_batch` per RL step; absent in older checkpoints,
    /// which made one update per step.
    #[serde(default)]
    optimizer_steps: Option<usize>,
}

/// What one step measured (a line of `rl_log.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub mean_reward: f64,
    /// Share of prompts with at least one kept rollout hitting the target.
    pub hit_rate: f64,
    pub all_fail_share: f64,
    /// Distinct titles among the m rollouts, mean over prompts.
    pub distinct_rollouts: f64,
    /// Mean −log π of sampled tokens (a Monte-Carlo estimate of the policy's per-token entropy).
    pub entropy: f64,
    pub kl_ref: Option<f64>,
    pub grpo_loss: Option<f64>,
    pub simpo_loss: Option<f64>,
    pub grad_norm: f64,
    pub rollout_s: f64,
    pub update_s: f64,
    /// Tokens (prompt and response) run through the model by the step's updates, every pass counted: each
    /// sequence re-runs its prompt today, which is what one prompt pass per group would save.
    #[serde(default)]
    pub tokens: usize,
    /// In-context RL: mean reward of the rollouts sampled with demonstrations and of the plain ones (all m,
    /// before de-duplication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_reward: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_reward: Option<f64>,
    /// Per prompt of the step, in the order the run manifest's `trained_sample_ids` lists them: how many of its
    /// m rollouts (before de-duplication) hit the target. Which prompts were rewarded decides which items RL
    /// moves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_hits: Vec<u32>,
}

/// The steps of an RL log (`rl_log.jsonl`), without its validation lines.
pub fn read_step_logs(path: &Path) -> Result<Vec<StepLog>> {
    checkpoint::read_log(path)?
        .into_iter()
        .filter(|v| v.get("mean_reward").is_some())
        .map(|v| {
            serde_json::from_value(v).map_err(|e| TrainError::File {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })
        })
        .collect()
}

/// Log-probabilities of the sequences' response tokens and the tokens run to get them, shared or not.
fn logprobs(
    model: &Decoder,
    seqs: &[(&[u32], &[u32])],
    no_grad: bool,
    share: bool,
) -> Result<(Tensor, usize)> {
    if share {
        Ok((
            token_logprobs(model, seqs, no_grad)?,
            tokens_processed(seqs),
        ))
    } else {
        let n = seqs.iter().map(|(p, r)| p.len() + r.len()).sum();
        Ok((token_logprobs_per_sequence(model, seqs, no_grad)?, n))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RlSummary {
    pub steps: usize,
    pub first_rewards: f64,
    pub last_rewards: f64,
    pub output: PathBuf,
    pub rollout_s: f64,
    pub update_s: f64,
}

/// Masks (Eq. 6 or all ones) for each token sequence.
fn masks(index: &ItemIndex, seqs: &[&[u32]], decay: Option<f32>) -> Result<Vec<Vec<f32>>> {
    seqs.iter()
        .map(|s| match decay {
            Some(d) => certainty_mask(index.trie(), s, d),
            None => Ok(vec![1.0; s.len()]),
        })
        .collect()
}

/// What a rollout batch gives the update: the GRPO sequences (prompt, tokens, advantage) of groups with a hit,
/// the SimPO pairs (prompt, chosen, rejected) of all-fail groups, and the batch's statistics for the log.
#[derive(Default)]
struct Groups<'a> {
    grpo: Vec<(&'a [u32], &'a [u32], f32)>,
    pairs: Vec<(&'a [u32], &'a [u32], &'a [u32])>,
    reward_sum: f64,
    reward_n: usize,
    hits: usize,
    fails: usize,
    distinct: f64,
    neg_logprob_sum: f64,
    sampled_tokens: usize,
}

/// Keeps n of each prompt's m rollouts (Eq. 5 or the first n), rewards them, and sorts the groups into GRPO
/// groups (a hit) and SimPO pairs (no hit, when SimPO is on).
fn group_rollouts<'a>(
    batch: &[&'a RlPrompt],
    rolls: &'a [Vec<Sampled>],
    sampled_with: &[Vec<&'a [u32]>],
    index: &'a ItemIndex,
    cfg: &RlConfig,
    rng: &mut ChaCha8Rng,
) -> Groups<'a> {
    let mut g = Groups::default();
    for ((p, r), with) in batch.iter().zip(rolls).zip(sampled_with) {
        let titles: Vec<u32> = r.iter().map(|s| s.title).collect();
        g.distinct += titles
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len() as f64;
        for s in r {
            g.neg_logprob_sum -= s.logprob as f64;
            g.sampled_tokens += s.tokens.len();
        }
        let kept: Vec<usize> = if cfg.dedup {
            oversample_dedup(&titles, cfg.keep, rng)
        } else {
            (0..cfg.keep.min(r.len())).collect()
        };
        let rewards: Vec<f32> = kept
            .iter()
            .map(|&k| f32::from(u8::from(titles[k] == p.target)))
            .collect();
        g.reward_sum += rewards.iter().sum::<f32>() as f64;
        g.reward_n += rewards.len();
        if rewards.iter().any(|&x| x > 0.0) {
            g.hits += 1;
            let adv = group_advantages(&rewards);
            for (&k, a) in kept.iter().zip(adv) {
                g.grpo.push((with[k], &r[k].tokens, a));
            }
        } else {
            g.fails += 1;
            if cfg.simpo {
                let chosen = &index.sequences[p.target as usize];
                for &k in &kept {
                    g.pairs.push((with[k], chosen, &r[k].tokens));
                }
            }
        }
    }
    g
}

/// Running sums over a step's updates, for its log line.
#[derive(Default)]
struct UpdateSums {
    grpo: f64,
    grpo_n: usize,
    simpo: f64,
    simpo_n: usize,
    kl: f64,
    grad_norm: f64,
    updates: usize,
    tokens: usize,
}

/// Everything the updates of one rollout batch share.
struct Update<'a> {
    model: &'a Decoder,
    reference: Option<&'a Decoder>,
    index: &'a ItemIndex,
    cfg: &'a RlConfig,
    step: usize,
    /// Sequences per forward/backward pass.
    mb: usize,
    grpo: &'a [(&'a [u32], &'a [u32], f32)],
    seqs: Vec<(&'a [u32], &'a [u32])>,
    masks: Vec<Vec<f32>>,
    /// Per-token log-probabilities of the GRPO sequences at rollout time.
    old: Vec<Vec<f32>>,
}

impl Update<'_> {
    /// One update's GRPO part over its sequences `mine`, `mb` at a time, gradients added into `acc`. `first`:
    /// the forward pass already run for them (the first update, when it fits one micro-batch).
    fn grpo_part(
        &self,
        opt: &AdamW,
        acc: &mut Accumulator,
        mine: &[usize],
        mut first: Option<Tensor>,
        sums: &mut UpdateSums,
    ) -> Result<()> {
        let cfg = self.cfg;
        let (mut old_j, mut adv_j, mut mask_j) = (Vec::new(), Vec::new(), Vec::new());
        for &i in mine {
            old_j.extend_from_slice(&self.old[i]);
            adv_j.extend(std::iter::repeat_n(self.grpo[i].2, self.grpo[i].1.len()));
            mask_j.extend_from_slice(&self.masks[i]);
        }
        let outliers = if cfg.kl_cov {
            kl_cov_outliers(&old_j, &adv_j, cfg.kl_cov_ratio)
        } else {
            vec![false; old_j.len()]
        };
        let lcfg = GrpoLossConfig {
            clip_eps: cfg.clip_eps,
            beta_kl: if cfg.kl_cov { cfg.beta_kl } else { 0.0 },
        };
        let total_mask: f32 = mask_j.iter().sum();
        let n_tokens = old_j.len();
        let (mut l_sum, mut off) = (0f64, 0usize);
        for c in mine.chunks(self.mb) {
            let part: Vec<(&[u32], &[u32])> = c.iter().map(|&i| self.seqs[i]).collect();
            let n: usize = part.iter().map(|(_, t)| t.len()).sum();
            let lp = match first.take() {
                Some(lp) => lp,
                None => {
                    let (lp, n) = logprobs(self.model, &part, false, cfg.share_prompts)?;
                    sums.tokens += n;
                    lp
                }
            };
            let r = off..off + n;
            let mut l = grpo_loss_part(
                &lp,
                &old_j[r.clone()],
                &adv_j[r.clone()],
                &mask_j[r.clone()],
                &outliers[r],
                &lcfg,
                total_mask,
            )?;
            if let (Some(beta), Some(rm)) = (cfg.kl_ref_beta, self.reference) {
                let k3 = self.reference_kl(rm, &part, &lp, n_tokens, sums)?;
                l = (l + (k3 * beta)?)?;
            }
            l_sum += backward_part(self.model, opt, acc, &l, self.step)?;
            off += n;
        }
        sums.grpo += l_sum;
        sums.grpo_n += 1;
        Ok(())
    }

    /// The k3 estimator of KL(π‖π_ref), e^(ref − π) − (ref − π) − 1 per token, summed over `part` and
    /// averaged over the update's `n_tokens`.
    fn reference_kl(
        &self,
        rm: &Decoder,
        part: &[(&[u32], &[u32])],
        lp: &Tensor,
        n_tokens: usize,
        sums: &mut UpdateSums,
    ) -> Result<Tensor> {
        let (ref_lp, n) = logprobs(rm, part, true, self.cfg.share_prompts)?;
        sums.tokens += n;
        let d = (ref_lp.detach() - lp)?;
        let k3 = (((d.exp()? - &d)? - 1.0)?.sum_all()? / n_tokens as f64)?;
        sums.kl += k3.to_scalar::<f32>()? as f64;
        Ok(k3)
    }

    /// One update's SimPO part over its all-fail pairs, gradients added into `acc`. A micro-batch holds `mb`
    /// pairs when prompts are shared: a group's pairs share their prompt and chosen continuation, so `mb` of
    /// them run one prompt pass and `mb + 1` continuations, as a GRPO micro-batch of `mb` does. Unshared, each
    /// pair is two whole sequences, so `mb / 2`.
    fn simpo_part(
        &self,
        opt: &AdamW,
        acc: &mut Accumulator,
        my_pairs: &[&(&[u32], &[u32], &[u32])],
        sums: &mut UpdateSums,
    ) -> Result<()> {
        let cfg = self.cfg;
        let gamma = cfg.simpo_gamma_ratio * cfg.simpo_beta;
        let mut l_sum = 0f64;
        let per_part = if cfg.share_prompts {
            self.mb
        } else {
            (self.mb / 2).max(1)
        };
        for part in my_pairs.chunks(per_part) {
            let mut seqs: Vec<(&[u32], &[u32])> = Vec::with_capacity(2 * part.len());
            for (p, c, r) in part.iter().copied() {
                seqs.push((p, c));
                seqs.push((p, r));
            }
            let (lp, n) = logprobs(self.model, &seqs, false, cfg.share_prompts)?;
            sums.tokens += n;
            let toks: Vec<&[u32]> = seqs.iter().map(|(_, t)| *t).collect();
            let ms = masks(self.index, &toks, cfg.mask_decay)?;
            let mut off = 0;
            let mut rewards = Vec::with_capacity(seqs.len());
            for (t, m) in toks.iter().zip(&ms) {
                rewards.push(masked_reward(&lp.narrow(0, off, t.len())?, m)?);
                off += t.len();
            }
            let terms = (0..part.len())
                .map(|q| {
                    simpo_pair_loss(&rewards[2 * q], &rewards[2 * q + 1], cfg.simpo_beta, gamma)
                })
                .collect::<Result<Vec<_>>>()?;
            let l = (Tensor::stack(&terms, 0)?.sum_all()?
                * (cfg.simpo_weight / my_pairs.len() as f64))?;
            l_sum += backward_part(self.model, opt, acc, &l, self.step)?;
        }
        sums.simpo += l_sum;
        sums.simpo_n += 1;
        Ok(())
    }
}

/// The m rollouts of each prompt of a batch and the prompt each was sampled with: m − R plain, then R each
/// after its own demonstrations (In-Context RLVR; R = 0 without a pool).
struct Rollouts {
    rolls: Vec<Vec<Sampled>>,
    augmented: Vec<Vec<Vec<u32>>>,
    plain: usize,
}

impl Rollouts {
    fn draw(
        model: &Decoder,
        index: &ItemIndex,
        batch: &[(usize, &RlPrompt)],
        cfg: &RlConfig,
        demos: Option<&crate::demos::DemoPool>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let r = if demos.is_some() {
            cfg.demo_rollouts
        } else {
            0
        };
        let plain = cfg.rollouts - r;
        let prompts: Vec<Vec<u32>> = batch.iter().map(|(_, p)| p.prompt.clone()).collect();
        let mut rolls = if plain > 0 {
            sample(model, index, &prompts, plain, cfg.temperature, rng)?
        } else {
            vec![Vec::new(); batch.len()]
        };
        let augmented = match demos {
            Some(pool) if r > 0 => pool.augment(batch, cfg.demos, r, rng)?,
            _ => vec![Vec::new(); batch.len()],
        };
        if r > 0 {
            let flat: Vec<Vec<u32>> = augmented.iter().flatten().cloned().collect();
            let drawn = sample(model, index, &flat, 1, cfg.temperature, rng)?;
            for (b, chunk) in drawn.chunks(r).enumerate() {
                rolls[b].extend(chunk.iter().flatten().cloned());
            }
        }
        Ok(Rollouts {
            rolls,
            augmented,
            plain,
        })
    }

    /// Per prompt, the prompt each rollout was sampled with.
    fn sampled_with<'a>(&'a self, batch: &[(usize, &'a RlPrompt)]) -> Vec<Vec<&'a [u32]>> {
        batch
            .iter()
            .zip(&self.augmented)
            .map(|((_, p), aug)| {
                let mut v: Vec<&[u32]> = vec![p.prompt.as_slice(); self.plain];
                v.extend(aug.iter().map(Vec::as_slice));
                v
            })
            .collect()
    }

    /// Per prompt, its rollouts that hit the target.
    fn hits(&self, batch: &[(usize, &RlPrompt)]) -> Vec<u32> {
        batch
            .iter()
            .zip(&self.rolls)
            .map(|((_, p), r)| r.iter().filter(|s| s.title == p.target).count() as u32)
            .collect()
    }

    /// Mean reward of the plain rollouts and of those with demonstrations (None when there are none).
    fn rewards_by_kind(&self, batch: &[(usize, &RlPrompt)]) -> (Option<f64>, Option<f64>) {
        let (mut sums, mut counts) = ([0f64; 2], [0usize; 2]);
        for ((_, p), r) in batch.iter().zip(&self.rolls) {
            for (k, s) in r.iter().enumerate() {
                let kind = usize::from(k >= self.plain);
                sums[kind] += f64::from(u8::from(s.title == p.target));
                counts[kind] += 1;
            }
        }
        let mean = |i: usize| (counts[i] > 0).then(|| sums[i] / counts[i] as f64);
        (mean(0), mean(1))
    }
}

#[allow(clippy::too_many_arguments)]
fn one_step(
    model: &mut Decoder,
    mixed: bool,
    reference: Option<&Decoder>,
    index: &ItemIndex,
    batch: &[(usize, &RlPrompt)],
    demos: Option<&crate::demos::DemoPool>,
    cfg: &RlConfig,
    opt: &mut AdamW,
    rng: &mut ChaCha8Rng,
    step: usize,
) -> Result<StepLog> {
    let t0 = Instant::now();
    let drawn = Rollouts::draw(model, index, batch, cfg, demos, rng)?;
    let rollout_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let prompts: Vec<&RlPrompt> = batch.iter().map(|(_, p)| *p).collect();
    let with = drawn.sampled_with(batch);
    let groups = group_rollouts(&prompts, &drawn.rolls, &with, index, cfg, rng);
    // Rollouts sample in f32; the update's passes, all of its log-probabilities, run mixed when asked.
    model.set_mixed_bf16(mixed);
    let sums = update(model, reference, index, &groups, cfg, opt, step);
    model.set_mixed_bf16(false);
    let sums = sums?;
    let (plain_reward, demo_reward) = drawn.rewards_by_kind(batch);
    let mean = |s: f64, n: usize| (n > 0).then(|| s / n as f64);
    let n = batch.len().max(1) as f64;
    let g = &groups;
    Ok(StepLog {
        step,
        mean_reward: g.reward_sum / g.reward_n.max(1) as f64,
        hit_rate: g.hits as f64 / n,
        all_fail_share: g.fails as f64 / n,
        distinct_rollouts: g.distinct / n,
        entropy: g.neg_logprob_sum / g.sampled_tokens.max(1) as f64,
        kl_ref: if cfg.kl_ref_beta.is_some() && reference.is_some() {
            mean(sums.kl, sums.grpo_n)
        } else {
            None
        },
        grpo_loss: mean(sums.grpo, sums.grpo_n),
        simpo_loss: mean(sums.simpo, sums.simpo_n),
        grad_norm: mean(sums.grad_norm, sums.updates).unwrap_or(0.0),
        rollout_s,
        update_s: t1.elapsed().as_secs_f64(),
        tokens: sums.tokens,
        demo_reward: demos.and(demo_reward),
        plain_reward: demos.and(plain_reward),
        prompt_hits: drawn.hits(batch),
    })
}

/// The optimiser steps of one rollout batch. Its sequences are dealt into `updates_per_batch` mini-batches
/// (sequence i to mini-batch i mod k), one optimiser step each, all against the log-probabilities at rollout
/// time (PPO/verl style: the ratio, its clipping and KL-Cov's |log r| only act from the second update of a
/// batch on). Within an update the loss is a sum over sequences (GRPO tokens over the update's Σ M, SimPO
/// pairs over their count), taken `micro_batch` sequences at a time with the parts' gradients added up:
/// memory follows the micro-batch, the update does not.
fn update(
    model: &Decoder,
    reference: Option<&Decoder>,
    index: &ItemIndex,
    groups: &Groups,
    cfg: &RlConfig,
    opt: &mut AdamW,
    step: usize,
) -> Result<UpdateSums> {
    let k = cfg.updates_per_batch.max(1);
    let mb = cfg
        .micro_batch
        .unwrap_or(if model.device().is_cpu() { 8 } else { 32 })
        .max(1);
    let grpo = &groups.grpo;
    let toks: Vec<&[u32]> = grpo.iter().map(|(_, t, _)| *t).collect();
    let mut u = Update {
        model,
        reference,
        index,
        cfg,
        step,
        mb,
        grpo,
        seqs: grpo.iter().map(|(p, t, _)| (*p, *t)).collect(),
        masks: masks(index, &toks, cfg.mask_decay)?,
        old: vec![Vec::new(); grpo.len()],
    };
    let mut sums = UpdateSums::default();
    // Log-probabilities at rollout time, taken before the first update. The first update's own forward
    // provides its sequences' values when it fits one micro-batch; the rest take one extra pass.
    let first_fits = grpo.len().div_ceil(k) <= mb;
    let ahead: Vec<usize> = (0..grpo.len())
        .filter(|&i| i % k != 0 || !first_fits)
        .collect();
    for c in ahead.chunks(mb) {
        sums.tokens += current_logprobs(model, &u.seqs, c, &mut u.old, cfg.share_prompts)?.1;
    }
    for j in 0..k {
        let mine: Vec<usize> = (j..grpo.len()).step_by(k).collect();
        let my_pairs: Vec<_> = groups.pairs.iter().skip(j).step_by(k).collect();
        if mine.is_empty() && my_pairs.is_empty() {
            continue;
        }
        let mut acc = opt.accumulator();
        if !mine.is_empty() {
            let first = if j == 0 && first_fits {
                let (lp, n) =
                    current_logprobs(model, &u.seqs, &mine, &mut u.old, cfg.share_prompts)?;
                sums.tokens += n;
                Some(lp)
            } else {
                None
            };
            u.grpo_part(opt, &mut acc, &mine, first, &mut sums)?;
        }
        if !my_pairs.is_empty() {
            u.simpo_part(opt, &mut acc, &my_pairs, &mut sums)?;
        }
        sums.grad_norm += opt.step(acc, cfg.lr, cfg.max_grad_norm)?;
        sums.updates += 1;
    }
    Ok(sums)
}

/// Token log-probabilities of the sequences `which` of `seqs` under the current policy, in one forward pass:
/// stored per sequence into `into` (as the rollout-time values), and returned as the differentiable tensor
/// with the number of tokens run.
fn current_logprobs(
    model: &Decoder,
    seqs: &[(&[u32], &[u32])],
    which: &[usize],
    into: &mut [Vec<f32>],
    share: bool,
) -> Result<(Tensor, usize)> {
    let part: Vec<(&[u32], &[u32])> = which.iter().map(|&i| seqs[i]).collect();
    let (lp, tokens) = logprobs(model, &part, false, share)?;
    let flat: Vec<f32> = lp.to_vec1()?;
    let mut off = 0;
    for &i in which {
        let n = seqs[i].1.len();
        into[i] = flat[off..off + n].to_vec();
        off += n;
    }
    Ok((lp, tokens))
}

/// Back-propagates one part of an update's loss into `acc`; returns its value. A non-finite part stops the step
/// before this update moves any parameter (earlier updates of the batch have been applied).
fn backward_part(
    model: &Decoder,
    opt: &AdamW,
    acc: &mut Accumulator,
    l: &Tensor,
    step: usize,
) -> Result<f64> {
    let v = l.to_scalar::<f32>()?;
    if !v.is_finite() {
        return Err(TrainError::NonFinite {
            step,
            loss: v,
            last_good: String::new(),
        });
    }
    opt.accumulate_part(acc, &model.backward(l)?)?;
    Ok(v as f64)
}

/// The demonstration settings are consistent: K and R together, R within m, a pool when K > 0.
fn check_demos(cfg: &RlConfig, demos: Option<&crate::demos::DemoPool>) -> Result<()> {
    match (cfg.demos, cfg.demo_rollouts) {
        (0, 0) => Ok(()),
        (0, _) | (_, 0) => Err(TrainError::Invalid(
            "in-context RL needs both --demos K and --demo-rollouts R (or neither)".into(),
        )),
        (_, r) if r > cfg.rollouts => Err(TrainError::Invalid(format!(
            "--demo-rollouts {r} is more than the {} rollouts per prompt",
            cfg.rollouts
        ))),
        _ if demos.is_none() => Err(TrainError::Invalid(
            "--demos needs a pool of demonstrations".into(),
        )),
        _ => Ok(()),
    }
}

/// Share of prompts whose best-ranked title (beam width 10) is their target.
pub fn hr_at_1(model: &Decoder, index: &ItemIndex, prompts: &[RlPrompt]) -> Result<f64> {
    let mut hits = 0usize;
    for chunk in prompts.chunks(32) {
        let p: Vec<Vec<u32>> = chunk.iter().map(|x| x.prompt.clone()).collect();
        let ranked = minirec_model::decode::beam_search(model, index, &p, 10)?;
        hits += ranked
            .iter()
            .zip(chunk)
            .filter(|(r, x)| r.first().is_some_and(|s| s.title == x.target))
            .count();
    }
    Ok(hits as f64 / prompts.len().max(1) as f64)
}

/// Runs RL into `run` over `prompts` taken in order (cycling), `cfg.prompts_per_step` per step; `valid` (may be
/// empty) is scored for HR@1 every `cfg.eval_every` steps. Writes `rl_log.jsonl` and SVG curves.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Decoder,
    tok: &TextTokenizer,
    vars: Vec<(String, Var)>,
    index: &ItemIndex,
    prompts: &[RlPrompt],
    valid: &[RlPrompt],
    reference: Option<&Decoder>,
    demos: Option<&crate::demos::DemoPool>,
    cfg: &RlConfig,
    run: &Path,
    base: &str,
    resume: bool,
    progress: bool,
) -> Result<(RlSummary, Vec<StepLog>)> {
    if prompts.is_empty() || cfg.prompts_per_step == 0 || cfg.rollouts == 0 || cfg.keep == 0 {
        return Err(TrainError::Invalid(
            "RL needs prompts, and at least one prompt, rollout and kept rollout per step".into(),
        ));
    }
    check_demos(cfg, demos)?;
    let demos = demos.filter(|_| cfg.demos > 0);
    if cfg.kl_ref_beta.is_some() && reference.is_none() {
        return Err(TrainError::Invalid(
            "the KL penalty to the reference needs a reference model".into(),
        ));
    }
    std::fs::create_dir_all(run).map_err(|e| TrainError::io(run, e))?;
    let mixed = cfg.bf16_mixed && crate::sft::mixed_precision(model, true, cfg.lora.is_some());
    model.set_mixed_bf16(false);
    if mixed {
        tracing::info!("RL: the updates run mixed; rollouts, validation and the export stay f32");
    }
    let mut opt = AdamW::new(vars, AdamWConfig::default())?;
    let mut st = RlState {
        step: 0,
        optimizer_steps: None,
    };
    let mut last_good = String::from("(none yet)");
    let mut resumed_from = None;
    if resume {
        match checkpoint::restore_training(run, &mut opt, |s: &RlState| {
            s.optimizer_steps.unwrap_or(s.step)
        })? {
            Some((dir, s)) => {
                if s.step >= cfg.max_steps {
                    println!("rl: {} already finished at step {}", run.display(), s.step);
                } else {
                    tracing::info!("resuming from {} (step {})", dir.display(), s.step);
                }
                last_good = dir.display().to_string();
                resumed_from = Some(dir);
                st = s;
            }
            None => tracing::warn!(
                "--resume: no checkpoint in {}; starting from the beginning",
                run.display()
            ),
        }
    }
    if st.step < cfg.max_steps {
        let need = crate::disk::run_needs(&opt.vars, cfg.checkpoint_every, run);
        crate::disk::ensure_room(run, need, "rl: this run's checkpoints and export")?;
    }
    let log_path = run.join("rl_log.jsonl");
    let mut log = checkpoint::open_log(&log_path, resumed_from.as_deref())?;
    let pb = if progress {
        ProgressBar::new(cfg.max_steps as u64)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("rl [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_position(st.step as u64);
    let save = |opt: &AdamW, st: &RlState| -> Result<PathBuf> {
        let st = RlState {
            optimizer_steps: Some(opt.t),
            ..st.clone()
        };
        checkpoint::save_training(run, st.step, &st, opt, &[&log_path])
    };
    let validate = |model: &Decoder, step: usize, log: &mut std::fs::File| -> Result<()> {
        if cfg.eval_every > 0 && !valid.is_empty() {
            let hr = hr_at_1(model, index, valid)?;
            tracing::info!("step {step}: validation HR@1 {hr:.4}");
            writeln!(
                log,
                "{}",
                serde_json::json!({"step": step, "valid_hr@1": hr})
            )
            .map_err(|e| TrainError::io(&log_path, e))?;
        }
        Ok(())
    };
    if st.step == 0 {
        validate(model, 0, &mut log)?;
    }
    while st.step < cfg.max_steps {
        let from = st.step * cfg.prompts_per_step;
        let batch: Vec<(usize, &RlPrompt)> = (from..from + cfg.prompts_per_step)
            .map(|i| (i % prompts.len(), &prompts[i % prompts.len()]))
            .collect();
        // Seeded per step, so a resumed run samples exactly what the uninterrupted one did.
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (st.step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let entry = match one_step(
            model, mixed, reference, index, &batch, demos, cfg, &mut opt, &mut rng, st.step,
        ) {
            Err(TrainError::NonFinite { step, loss, .. }) => {
                pb.abandon();
                return Err(TrainError::NonFinite {
                    step,
                    loss,
                    last_good,
                });
            }
            other => other?,
        };
        writeln!(
            log,
            "{}",
            serde_json::to_string(&entry).expect("log serialises")
        )
        .map_err(|e| TrainError::io(&log_path, e))?;
        pb.set_message(format!("reward {:.3}", entry.mean_reward));
        st.step += 1;
        pb.set_position(st.step as u64);
        // Validation first, so the checkpoint's log length covers every line of its step.
        if cfg.eval_every > 0
            && (st.step.is_multiple_of(cfg.eval_every) || st.step == cfg.max_steps)
        {
            validate(model, st.step, &mut log)?;
        }
        if cfg.checkpoint_every > 0 && st.step.is_multiple_of(cfg.checkpoint_every) {
            last_good = save(&opt, &st)?.display().to_string();
        }
        if cfg.interrupt_after == Some(st.step) {
            pb.abandon();
            return Err(TrainError::Interrupted { step: st.step });
        }
    }
    save(&opt, &st)?;
    pb.finish_and_clear();
    crate::plot::charts_from_log(
        &log_path,
        run,
        "rl",
        &["mean_reward", "entropy", "valid_hr@1"],
    )?;
    let output = crate::sft::export(model, tok, cfg.lora.as_ref(), base, run)?;
    // The whole run's steps, from the log: a resumed run's summary equals an uninterrupted one's.
    let logs = read_step_logs(&log_path)?;
    let k = (logs.len() / 4).max(1);
    let avg = |s: &[StepLog]| s.iter().map(|l| l.mean_reward).sum::<f64>() / s.len().max(1) as f64;
    let summary = RlSummary {
        steps: st.step,
        first_rewards: avg(&logs[..k.min(logs.len())]),
        last_rewards: avg(&logs[logs.len().saturating_sub(k)..]),
        output,
        rollout_s: logs.iter().map(|l| l.rollout_s).sum(),
        update_s: logs.iter().map(|l| l.update_s).sum(),
    };
    Ok((summary, logs))
}
