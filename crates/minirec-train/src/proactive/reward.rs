//! Step rewards of a path from a frozen user model (ProRL's simulator), and Stepwise Reward Centering.
//!
//! With h_t the history plus the valid path items before step t and T the target:
//! IoI_t = log p(T | h_t, i_t) − log p(T | h_t) (gain in the target's log-probability), IoR_t = rank(T | h_t) −
//! rank(T | h_t, i_t) (ranks it climbs), CTR_t = sigmoid(s(i_t | h_t)) (the user model's acceptance of the item).
//! An invalid step (no item) gets CTR −1 and IoI, IoR = the batch's minimum − 1; a duplicate (an item the user
//! already has, or the target itself) gets CTR 0 and **[P]** IoI = IoR = 0, since it is not added to h.

use std::collections::HashSet;

use crate::Result;

/// A user model: the score (logit) of every item for each history. Item ids index the returned rows.
pub trait UserModel {
    fn scores(&self, histories: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Valid,
    Duplicate,
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub ioi: f64,
    pub ior: f64,
    pub ctr: f64,
}

/// A path to score: the history, the steps (None: a step that named no item), the target.
pub struct PathQuery<'a> {
    pub history: &'a [u32],
    pub path: &'a [Option<u32>],
    pub target: u32,
}

/// The target's log-probability and rank (1 = first) under one row of scores.
fn log_prob_and_rank(scores: &[f32], target: u32) -> (f64, f64) {
    let t = scores[target as usize];
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + scores
            .iter()
            .map(|&s| (s as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let above = scores.iter().filter(|&&s| s > t).count();
    (t as f64 - lse, (above + 1) as f64)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Every step of every path, scored with one call to the user model for all the histories involved.
pub fn score_paths(user: &impl UserModel, paths: &[PathQuery]) -> Result<Vec<Vec<Step>>> {
    // The histories h_0, h_1, … each path passes through (one more after each valid step).
    let mut histories: Vec<Vec<u32>> = Vec::new();
    let mut plans = Vec::with_capacity(paths.len());
    for p in paths {
        let mut h = p.history.to_vec();
        let mut have: HashSet<u32> = h.iter().copied().collect();
        have.insert(p.target);
        let first = histories.len();
        histories.push(h.clone());
        let mut kinds = Vec::with_capacity(p.path.len());
        for step in p.path {
            kinds.push(match step {
                None => StepKind::Invalid,
                Some(i) if !have.insert(*i) => StepKind::Duplicate,
                Some(i) => {
                    h.push(*i);
                    histories.push(h.clone());
                    StepKind::Valid
                }
            });
        }
        plans.push((first, kinds));
    }
    let scores = user.scores(&histories)?;
    let mut out = Vec::with_capacity(paths.len());
    for (p, (first, kinds)) in paths.iter().zip(plans) {
        let mut at = first;
        let mut steps = Vec::with_capacity(kinds.len());
        for (kind, item) in kinds.into_iter().zip(p.path) {
            let zero = Step {
                kind,
                ioi: 0.0,
                ior: 0.0,
                ctr: 0.0,
            };
            steps.push(match (kind, item) {
                (StepKind::Valid, Some(i)) => {
                    let (lp0, r0) = log_prob_and_rank(&scores[at], p.target);
                    let (lp1, r1) = log_prob_and_rank(&scores[at + 1], p.target);
                    let ctr = sigmoid(scores[at][*i as usize] as f64);
                    at += 1;
                    Step {
                        kind,
                        ioi: lp1 - lp0,
                        ior: r0 - r1,
                        ctr,
                    }
                }
                (StepKind::Invalid, _) => Step { ctr: -1.0, ..zero },
                _ => zero,
            });
        }
        out.push(steps);
    }
    fill_invalid(&mut out);
    Ok(out)
}

/// Invalid steps' IoI and IoR: the batch's minimum over valid steps, minus 1.
fn fill_invalid(paths: &mut [Vec<Step>]) {
    let valid = || paths.iter().flatten().filter(|s| s.kind == StepKind::Valid);
    let least = |xs: Vec<f64>| xs.into_iter().reduce(f64::min).unwrap_or(0.0) - 1.0;
    let min_ioi = least(valid().map(|s| s.ioi).collect());
    let min_ior = least(valid().map(|s| s.ior).collect());
    for s in paths.iter_mut().flatten() {
        if s.kind == StepKind::Invalid {
            s.ioi = min_ioi;
            s.ior = min_ior;
        }
    }
}

/// Running mean and variance (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Welford {
    pub n: u64,
    pub mean: f64,
    m2: f64,
}

impl Welford {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn std(&self) -> f64 {
        if self.n < 2 {
            return 1.0;
        }
        (self.m2 / (self.n - 1) as f64).sqrt()
    }
}

/// The weights and switches of the step reward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardConfig {
    pub w_ctr: f64,
    pub w_ioi: f64,
    pub w_ior: f64,
    pub max_path: usize,
    /// Stepwise Reward Centering: subtract each metric's mean. Off, the metrics are only scaled by the same
    /// deviations (**[P]**: so that the two estimators differ in the centering alone).
    pub center: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            w_ctr: 1.0,
            w_ioi: 1.0,
            w_ior: 1.0,
            max_path: 10,
            center: true,
        }
    }
}

/// Statistics of the three metrics over valid steps, gathered during the first epoch and then frozen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepStats {
    pub ioi: Welford,
    pub ior: Welford,
    pub ctr: Welford,
    pub frozen: bool,
}

impl StepStats {
    /// Adds the valid steps (nothing once frozen).
    pub fn observe<'a>(&mut self, steps: impl IntoIterator<Item = &'a Step>) {
        if self.frozen {
            return;
        }
        for s in steps.into_iter().filter(|s| s.kind == StepKind::Valid) {
            self.ioi.push(s.ioi);
            self.ior.push(s.ior);
            self.ctr.push(s.ctr);
        }
    }

    /// r_t = w_ctr·z(CTR)/L_max + w_ioi·z(IoI) + w_ior·z(IoR), z(x) = (x − μ)/max(σ, 0.1) (μ = 0 without centering).
    pub fn reward(&self, cfg: &RewardConfig, s: &Step) -> f64 {
        let z = |x: f64, w: &Welford| {
            let mu = if cfg.center { w.mean } else { 0.0 };
            (x - mu) / w.std().max(0.1)
        };
        cfg.w_ctr * z(s.ctr, &self.ctr) / cfg.max_path.max(1) as f64
            + cfg.w_ioi * z(s.ioi, &self.ioi)
            + cfg.w_ior * z(s.ior, &self.ior)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Scores that depend on the history's last item only: item j after item i scores table[i][j].
    struct Table(Vec<Vec<f32>>);

    impl UserModel for Table {
        fn scores(&self, histories: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
            Ok(histories
                .iter()
                .map(|h| self.0[*h.last().unwrap() as usize].clone())
                .collect())
        }
    }

    #[test]
    fn step_metrics_match_hand_computed_values() {
        // Items 0..4, target 3. After 0: the target scores 0 (rank 4); after 1: 2 (rank 1).
        let user = Table(vec![
            vec![1.0, 0.5, 2.0, 0.0],
            vec![0.0, 0.0, 1.0, 2.0],
            vec![0.0, 0.0, 0.0, 0.0],
            vec![0.0; 4],
        ]);
        let lse = |r: &[f32]| r.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let (h, path) = (
            vec![0u32],
            vec![Some(1u32), Some(1), None, Some(3), Some(2)],
        );
        let steps = score_paths(
            &user,
            &[PathQuery {
                history: &h,
                path: &path,
                target: 3,
            }],
        )
        .unwrap();
        let s = &steps[0];
        let ioi = (2.0 - lse(&user.0[1])) - (0.0 - lse(&user.0[0]));
        assert_eq!(s[0].kind, StepKind::Valid);
        assert!((s[0].ioi - ioi).abs() < 1e-9);
        assert_eq!(s[0].ior, 4.0 - 1.0);
        assert!((s[0].ctr - 1.0 / (1.0 + (-0.5f64).exp())).abs() < 1e-9);
        // Item 1 again, and the target itself: duplicates.
        assert_eq!(
            (s[1].kind, s[1].ctr, s[1].ioi),
            (StepKind::Duplicate, 0.0, 0.0)
        );
        assert_eq!(s[3].kind, StepKind::Duplicate);
        // No item: CTR −1, IoI and IoR one below the batch's valid minimum.
        let min_ioi = s[0].ioi.min(s[4].ioi);
        assert_eq!(s[2].kind, StepKind::Invalid);
        assert_eq!(s[2].ctr, -1.0);
        assert!((s[2].ioi - (min_ioi - 1.0)).abs() < 1e-9);
        // Item 2 follows item 1 (the duplicate was not added): from rank 1 to rank 1 (all tie at 0).
        assert_eq!(s[4].ior, 1.0 - 1.0);
        assert!((s[4].ctr - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-9);
    }

    fn synthetic_step(rng: &mut ChaCha8Rng) -> Step {
        Step {
            kind: StepKind::Valid,
            ioi: 0.3 + rng.random::<f64>() - 0.5,
            ior: 5.0 + 20.0 * (rng.random::<f64>() - 0.5),
            ctr: 0.2 + 0.7 * rng.random::<f64>(),
        }
    }

    /// SRC's point: with frozen first-epoch statistics the expected step reward is 0, so a longer path earns
    /// nothing more in expectation; without centering every extra step adds reward.
    #[test]
    fn centering_makes_the_expected_step_reward_zero() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut stats = StepStats::default();
        let first: Vec<Step> = (0..20_000).map(|_| synthetic_step(&mut rng)).collect();
        stats.observe(&first);
        stats.frozen = true;
        stats.observe(&[synthetic_step(&mut rng); 1]);
        assert_eq!(stats.ioi.n, 20_000);
        let centered = RewardConfig::default();
        let naive = RewardConfig {
            center: false,
            ..centered
        };
        let fresh: Vec<Step> = (0..20_000).map(|_| synthetic_step(&mut rng)).collect();
        let mean = |c: &RewardConfig| fresh.iter().map(|s| stats.reward(c, s)).sum::<f64>() / 2e4;
        assert!(mean(&centered).abs() < 0.03, "{}", mean(&centered));
        assert!(mean(&naive) > 1.0, "{}", mean(&naive));
        // Mean return of paths of length 1..=10: flat with centering, growing without.
        let ret = |c: &RewardConfig, l: usize| {
            fresh
                .chunks(l)
                .take(1500)
                .map(|p| p.iter().map(|s| stats.reward(c, s)).sum::<f64>())
                .sum::<f64>()
                / 1500.0
        };
        assert!((ret(&centered, 10) - ret(&centered, 1)).abs() < 0.3);
        assert!(ret(&naive, 10) - ret(&naive, 1) > 9.0 * 1.0);
    }
}
