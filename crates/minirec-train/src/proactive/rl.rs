//! ProRL's policy-gradient training of the path generator, and the naive estimator it corrects.
//!
//! Per step: P prompts, m sampled paths each; the frozen user model scores every step; step rewards with or
//! without SRC; advantages with PSAE or the whole-path estimator; one on-policy update (no ratio, no clip) of
//! L = −(1/N) Σ (ℓ_a A_a) + β Σ (ℓ_a − ℓ_ref,a)/N over the N actions of the batch (titles and END), ℓ_a the mean
//! token log-probability of action a. The raw k1 term's gradient is β ∇ℓ_a whatever the reference says, so the
//! reference only serves the logged KL.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{Tensor, Var};
use minirec_model::Decoder;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::advantage::{psae, whole_path, Advantages, Rollout};
use super::policy::{sample_paths, Path as GenPath, PathIndex, PathQuery};
use super::reward::{self, score_paths, RewardConfig, Step, StepKind, StepStats, UserModel};
use crate::error::{Result, TrainError};
use crate::logprobs::token_logprobs;
use crate::optim::AdamW;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProRlConfig {
    pub steps: usize,
    pub prompts_per_step: usize,
    /// Rollouts per prompt (m).
    pub rollouts: usize,
    pub temperature: f32,
    pub max_len: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// β of the k1 KL term.
    pub beta: f64,
    /// Stepwise Reward Centering.
    pub src: bool,
    /// Position-Specific Advantage Estimation (else the whole-path estimator).
    pub psae: bool,
    pub w_ctr: f64,
    pub w_ioi: f64,
    pub w_ior: f64,
    pub seed: u64,
}

impl Default for ProRlConfig {
    /// The authors' settings where they fit a CPU (m = 16, T = 1, β = 0.01, AdamW wd 0.05, clip 1.0, 5 %
    /// warm-up, weights (1, 1, 1)); the sizes are ours.
    fn default() -> Self {
        ProRlConfig {
            steps: 16,
            prompts_per_step: 4,
            rollouts: 16,
            temperature: 1.0,
            max_len: 3,
            lr: 1e-5,
            warmup_ratio: 0.05,
            weight_decay: 0.05,
            max_grad_norm: 1.0,
            beta: 0.01,
            src: true,
            psae: true,
            w_ctr: 1.0,
            w_ioi: 1.0,
            w_ior: 1.0,
            seed: 42,
        }
    }
}

impl ProRlConfig {
    fn reward(&self) -> RewardConfig {
        RewardConfig {
            w_ctr: self.w_ctr,
            w_ioi: self.w_ioi,
            w_ior: self.w_ior,
            max_path: self.max_len,
            center: self.src,
        }
    }

    /// The arm's name in tables: naive PG, +SRC, +PSAE, ProRL.
    pub fn arm(&self) -> &'static str {
        match (self.src, self.psae) {
            (false, false) => "naive-pg",
            (true, false) => "src",
            (false, true) => "psae",
            (true, true) => "prorl",
        }
    }
}

/// One training prompt: the generator's query and the user model's view of it (item rows).
pub struct ProRlPrompt {
    pub query: PathQuery,
    pub history: Vec<u32>,
    pub target: u32,
}

/// What one step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProRlStep {
    pub step: usize,
    pub mean_len: f64,
    pub ended_share: f64,
    pub mean_ioi: f64,
    pub mean_ior: f64,
    pub mean_ctr: f64,
    /// Mean step reward (≈ 0 under SRC once the statistics settle) and mean path return.
    pub mean_step_reward: f64,
    pub mean_return: f64,
    pub kl: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub stats_frozen: bool,
    pub seconds: f64,
}

/// The user model's item row of each catalog title (any item that has it).
pub type TitleRows = [u32];

/// The per-step metrics of each path of a group.
fn score_group(
    user: &impl UserModel,
    p: &ProRlPrompt,
    paths: &[GenPath],
    rows: &TitleRows,
) -> Result<Vec<Vec<Step>>> {
    let items: Vec<Vec<Option<u32>>> = paths
        .iter()
        .map(|g| g.titles.iter().map(|&t| Some(rows[t as usize])).collect())
        .collect();
    let qs: Vec<reward::PathQuery> = items
        .iter()
        .map(|path| reward::PathQuery {
            history: &p.history,
            path,
            target: p.target,
        })
        .collect();
    score_paths(user, &qs)
}

/// Per token of the batch's responses, the weight of its log-probability in the loss, and the batch's
/// (prompt, response) pairs; the action count N.
struct LossPlan {
    pairs: Vec<(Vec<u32>, Vec<u32>)>,
    weights: Vec<f32>,
    /// For the logged KL: each token's 1/(len·N).
    kl_weights: Vec<f32>,
    actions: usize,
}

fn plan_loss(
    pi: &PathIndex,
    batch: &[&ProRlPrompt],
    paths: &[Vec<GenPath>],
    adv: &[Vec<Advantages>],
    beta: f64,
) -> LossPlan {
    let mut plan = LossPlan {
        pairs: Vec::new(),
        weights: Vec::new(),
        kl_weights: Vec::new(),
        actions: 0,
    };
    let mut per_token: Vec<(f64, usize)> = Vec::new();
    for ((p, group), advs) in batch.iter().zip(paths).zip(adv) {
        for (g, a) in group.iter().zip(advs) {
            let lens = pi.action_lengths(&g.titles, g.ended);
            if lens.is_empty() {
                continue;
            }
            let action_adv: Vec<f64> = a.steps.iter().copied().chain(a.end).collect();
            for (len, adv) in lens.iter().zip(action_adv) {
                per_token.extend(std::iter::repeat_n((adv, *len), *len));
            }
            plan.actions += lens.len();
            plan.pairs
                .push((p.query.prompt.clone(), pi.response(&g.titles, g.ended)));
        }
    }
    let n = plan.actions.max(1) as f64;
    for (adv, len) in per_token {
        let l = len as f64 * n;
        plan.weights.push(((-adv + beta) / l) as f32);
        plan.kl_weights.push((1.0 / l) as f32);
    }
    plan
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Trains `model` (its `vars`) with ProRL or one of its ablations; writes `prorl_log.jsonl` into `run`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Decoder,
    vars: Vec<(String, Var)>,
    reference: Option<&Decoder>,
    pi: &PathIndex,
    user: &impl UserModel,
    rows: &TitleRows,
    prompts: &[ProRlPrompt],
    cfg: &ProRlConfig,
    run: &Path,
) -> Result<Vec<ProRlStep>> {
    if prompts.is_empty() || cfg.prompts_per_step == 0 || cfg.rollouts < 2 || cfg.max_len == 0 {
        return Err(TrainError::Invalid(
            "ProRL needs prompts, at least one prompt per step, two rollouts per prompt and a path length of at least 1".into(),
        ));
    }
    std::fs::create_dir_all(run).map_err(|e| TrainError::io(run, e))?;
    let log_path = run.join("prorl_log.jsonl");
    let mut log = std::fs::File::create(&log_path).map_err(|e| TrainError::io(&log_path, e))?;
    let mut opt = AdamW::with_weight_decay(vars, cfg.weight_decay)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.shuffle(&mut rng);
    // SRC's statistics come from the first epoch (one pass over the prompts), then stay frozen.
    let epoch_steps = prompts.len().div_ceil(cfg.prompts_per_step);
    let warmup = (cfg.steps as f64 * cfg.warmup_ratio).round() as usize;
    let rcfg = cfg.reward();
    let mut stats = StepStats::default();
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let batch: Vec<&ProRlPrompt> = (0..cfg.prompts_per_step)
            .map(|k| &prompts[order[(step * cfg.prompts_per_step + k) % prompts.len()]])
            .collect();
        let queries: Vec<PathQuery> = batch
            .iter()
            .map(|p| PathQuery {
                prompt: p.query.prompt.clone(),
                banned: p.query.banned.clone(),
            })
            .collect();
        let paths = sample_paths(
            model,
            pi,
            &queries,
            cfg.rollouts,
            cfg.max_len,
            cfg.temperature,
            &mut rng,
        )?;
        let metrics: Vec<Vec<Vec<Step>>> = batch
            .iter()
            .zip(&paths)
            .map(|(p, g)| score_group(user, p, g, rows))
            .collect::<Result<_>>()?;
        stats.observe(metrics.iter().flatten().flatten());
        if step + 1 >= epoch_steps {
            stats.frozen = true;
        }
        let groups: Vec<Vec<Rollout>> = metrics
            .iter()
            .zip(&paths)
            .map(|(m, g)| {
                m.iter()
                    .zip(g)
                    .map(|(steps, path)| Rollout {
                        rewards: steps.iter().map(|s| stats.reward(&rcfg, s)).collect(),
                        ended: path.ended,
                    })
                    .collect()
            })
            .collect();
        let adv: Vec<Vec<Advantages>> = groups
            .iter()
            .map(|g| if cfg.psae { psae(g) } else { whole_path(g) })
            .collect();
        let plan = plan_loss(pi, &batch, &paths, &adv, cfg.beta);
        let (loss, kl, norm) = update(model, reference, &mut opt, &plan, cfg, step, warmup)?;
        let valid = || {
            metrics
                .iter()
                .flatten()
                .flatten()
                .filter(|s| s.kind == StepKind::Valid)
        };
        let all_paths = || paths.iter().flatten();
        let line = ProRlStep {
            step: step + 1,
            mean_len: mean(all_paths().map(|p| p.titles.len() as f64)),
            ended_share: mean(all_paths().map(|p| p.ended as u8 as f64)),
            mean_ioi: mean(valid().map(|s| s.ioi)),
            mean_ior: mean(valid().map(|s| s.ior)),
            mean_ctr: mean(valid().map(|s| s.ctr)),
            mean_step_reward: mean(
                groups
                    .iter()
                    .flatten()
                    .flat_map(|r| r.rewards.iter().copied()),
            ),
            mean_return: mean(groups.iter().flatten().map(|r| r.rewards.iter().sum())),
            kl,
            loss,
            grad_norm: norm,
            lr: lr_at(cfg, step, warmup),
            stats_frozen: stats.frozen,
            seconds: t0.elapsed().as_secs_f64(),
        };
        writeln!(
            log,
            "{}",
            serde_json::to_string(&line).expect("serialisable")
        )
        .map_err(|e| TrainError::io(&log_path, e))?;
        tracing::info!(
            "prorl {} step {}/{}: len {:.2}, return {:+.3}, IoI {:+.3}, CTR {:.3}, kl {:+.4}",
            cfg.arm(),
            line.step,
            cfg.steps,
            line.mean_len,
            line.mean_return,
            line.mean_ioi,
            line.mean_ctr,
            line.kl
        );
        out.push(line);
    }
    Ok(out)
}

/// Constant learning rate after a linear warm-up (the authors' schedule).
fn lr_at(cfg: &ProRlConfig, step: usize, warmup: usize) -> f64 {
    if step < warmup {
        cfg.lr * (step + 1) as f64 / warmup as f64
    } else {
        cfg.lr
    }
}

/// One on-policy update; returns the loss, the logged KL and the gradient norm.
fn update(
    model: &Decoder,
    reference: Option<&Decoder>,
    opt: &mut AdamW,
    plan: &LossPlan,
    cfg: &ProRlConfig,
    step: usize,
    warmup: usize,
) -> Result<(f64, f64, f64)> {
    if plan.pairs.is_empty() {
        return Ok((0.0, 0.0, 0.0));
    }
    let pairs: Vec<(&[u32], &[u32])> = plan
        .pairs
        .iter()
        .map(|(p, r)| (p.as_slice(), r.as_slice()))
        .collect();
    let dev = model.device();
    let lp = token_logprobs(model, &pairs, false)?;
    let n = plan.weights.len();
    let w = Tensor::from_slice(&plan.weights, n, dev)?;
    let loss = (&lp * &w)?.sum_all()?;
    let kw = Tensor::from_slice(&plan.kl_weights, n, dev)?;
    let kl = match reference {
        Some(r) => {
            let lr = token_logprobs(r, &pairs, true)?;
            ((lp.detach() - lr)? * &kw)?.sum_all()?.to_scalar::<f32>()? as f64
        }
        None => f64::NAN,
    };
    let mut acc = opt.accumulator();
    opt.accumulate(&mut acc, &model.backward(&loss)?)?;
    let norm = opt.step(acc, lr_at(cfg, step, warmup), cfg.max_grad_norm)?;
    let l = loss.to_scalar::<f32>()? as f64;
    if !l.is_finite() || !norm.is_finite() {
        return Err(TrainError::NonFinite {
            step,
            loss: l as f32,
            last_good: "(ProRL keeps no checkpoints; rerun the stage)".into(),
        });
    }
    Ok((l, kl, norm))
}
