//! report.md's RL training table: for each RL run, how much reward signal its rollouts carried and how the
//! policy's entropy moved, read from its `rl_log.jsonl`. These are the numbers that say why a row moved or did
//! not (a subset with no rewarded group leaves the SFT model where it was), so they come from the tool rather
//! than from a script beside it.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use minirec_train::rl::{read_step_logs, StepLog};

/// One run's log, condensed. A "quarter" is ⌈steps / 4⌉ consecutive steps (the last may be shorter, and a run
/// of fewer than 8 steps may have fewer than four).
#[derive(Debug, Clone, PartialEq)]
pub struct RlTraining {
    pub steps: usize,
    pub groups: usize,
    /// Groups (prompts) with at least one kept rollout hitting the target, per quarter.
    pub hit_groups_by_quarter: Vec<usize>,
    pub all_fail_share: f64,
    /// Mean reward per rollout over the first and the last quarter.
    pub reward: (f64, f64),
    /// Entropy estimate at step 0 (the starting policy) and over the last quarter.
    pub entropy: (f64, f64),
    /// Distinct titles among a prompt's rollouts, at step 0 and over the last quarter.
    pub distinct: (f64, f64),
    /// SimPO loss over the first and the last quarter's steps that had one (RISER's all-fail groups).
    pub simpo: Option<(f64, f64)>,
    pub rollout_s: f64,
    pub update_s: f64,
}

impl RlTraining {
    pub fn hit_groups(&self) -> usize {
        self.hit_groups_by_quarter.iter().sum()
    }

    /// The groups with a hit of each quarter, as "8, 8, 5, 6".
    fn by_quarter(&self) -> String {
        let counts: Vec<String> = self
            .hit_groups_by_quarter
            .iter()
            .map(|q| q.to_string())
            .collect();
        counts.join(", ")
    }
}

fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (n, s) = xs
        .into_iter()
        .fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| s / n as f64)
}

/// Condenses a log of `prompts_per_step` prompts a step; `None` for a log with no step yet. The log keeps
/// shares, not counts, so a last step with fewer prompts is counted as a full one.
pub fn summarize(log: &[StepLog], prompts_per_step: usize) -> Option<RlTraining> {
    let first = log.first()?;
    let quarter = log.len().div_ceil(4);
    let quarters: Vec<&[StepLog]> = log.chunks(quarter).collect();
    let (head, tail) = (quarters[0], quarters[quarters.len() - 1]);
    let groups_with_hit = |q: &[StepLog]| -> usize {
        q.iter()
            .map(|s| (s.hit_rate * prompts_per_step as f64).round() as usize)
            .sum()
    };
    let simpo = |q: &[StepLog]| mean(q.iter().filter_map(|s| s.simpo_loss));
    Some(RlTraining {
        steps: log.len(),
        groups: log.len() * prompts_per_step,
        hit_groups_by_quarter: quarters.iter().map(|q| groups_with_hit(q)).collect(),
        all_fail_share: mean(log.iter().map(|s| s.all_fail_share))?,
        reward: (
            mean(head.iter().map(|s| s.mean_reward))?,
            mean(tail.iter().map(|s| s.mean_reward))?,
        ),
        entropy: (first.entropy, mean(tail.iter().map(|s| s.entropy))?),
        distinct: (
            first.distinct_rollouts,
            mean(tail.iter().map(|s| s.distinct_rollouts))?,
        ),
        simpo: simpo(head).zip(simpo(tail)),
        rollout_s: log.iter().map(|s| s.rollout_s).sum(),
        update_s: log.iter().map(|s| s.update_s).sum(),
    })
}

/// The condensed log of the RL run in `run` (its `rl_log.jsonl`), `None` before its first step.
pub fn summarize_run(run: &std::path::Path, prompts_per_step: usize) -> Result<Option<RlTraining>> {
    let steps = read_step_logs(&run.join("rl_log.jsonl"))?;
    Ok(summarize(&steps, prompts_per_step))
}

impl std::fmt::Display for RlTraining {
    /// One line for a terminal: the signal the run had and where its policy went.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "groups with a hit {} of {} ({} by quarter), all-fail {:.1}%, entropy {:.2} -> {:.2}, distinct rollouts {:.1} -> {:.1}",
            self.hit_groups(),
            self.groups,
            self.by_quarter(),
            100.0 * self.all_fail_share,
            self.entropy.0,
            self.entropy.1,
            self.distinct.0,
            self.distinct.1,
        )?;
        if let Some((a, b)) = self.simpo {
            write!(f, ", SimPO loss {a:.2} -> {b:.2}")?;
        }
        Ok(())
    }
}

fn row(name: &str, t: &RlTraining) -> String {
    let simpo = t
        .simpo
        .map(|(a, b)| format!("{a:.2} → {b:.2}"))
        .unwrap_or_else(|| "–".into());
    format!(
        "| {name} | {} | {} of {} ({}) | {:.1}% | {:.3} → {:.3} | {:.2} → {:.2} | {:.1} → {:.1} | {simpo} | {:.0} | {:.0} |",
        t.steps,
        t.hit_groups(),
        t.groups,
        t.by_quarter(),
        100.0 * t.all_fail_share,
        t.reward.0,
        t.reward.1,
        t.entropy.0,
        t.entropy.1,
        t.distinct.0,
        t.distinct.1,
        t.rollout_s,
        t.update_s,
    )
}

/// The table for the RL runs named, each `(name, rl_log.jsonl)`; empty when none has a step logged. A log
/// that does not parse is an error naming its file and line.
pub(crate) fn rl_training_section(
    runs: &[(String, std::path::PathBuf)],
    prompts_per_step: usize,
) -> Result<String> {
    let mut rows = Vec::new();
    for (name, log) in runs {
        let steps = read_step_logs(log).with_context(|| format!("RL run {name}"))?;
        if let Some(t) = summarize(&steps, prompts_per_step) {
            rows.push(row(name, &t));
        }
    }
    if rows.is_empty() {
        return Ok(String::new());
    }
    let mut md = String::new();
    writeln!(
        md,
        "## RL training: the reward signal each run had\n\n\
         From each run's `rl/NAME/rl_log.jsonl`. Groups with a hit: prompts with at least one kept rollout \
         that hit the target (by quarter of the run's steps); GRPO learns only from those, RISER's SimPO from the \
         all-fail rest. Reward: mean per rollout, first → last quarter; entropy and distinct titles among a \
         prompt's rollouts: step 0 (the starting policy) → last quarter; SimPO loss: first → last quarter.\n"
    )?;
    writeln!(
        md,
        "| run | steps | groups with a hit | all-fail | reward | entropy | distinct rollouts | SimPO loss | rollouts s | updates s |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    )?;
    for r in rows {
        writeln!(md, "{r}")?;
    }
    writeln!(md)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize, hit_rate: f64, reward: f64, entropy: f64, simpo: Option<f64>) -> StepLog {
        StepLog {
            step: i,
            mean_reward: reward,
            hit_rate,
            all_fail_share: 1.0 - hit_rate,
            distinct_rollouts: 20.0 - i as f64,
            entropy,
            kl_ref: None,
            grpo_loss: None,
            simpo_loss: simpo,
            grad_norm: 0.0,
            rollout_s: 10.0,
            update_s: 2.5,
            tokens: 0,
            demo_reward: None,
            plain_reward: None,
            prompt_hits: Vec::new(),
        }
    }

    #[test]
    fn a_log_is_condensed_by_quarter_as_counted_by_hand() {
        // 6 steps of 4 prompts: quarters of 2, 2, 2 steps. Hits: 1, 0 | 2, 0 | 0, 4 groups.
        let hits = [0.25, 0.0, 0.5, 0.0, 0.0, 1.0];
        let log: Vec<StepLog> = hits
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let simpo = (h < 1.0 && i != 1).then_some(i as f64);
                step(i, h, h / 2.0, 2.0 - i as f64 * 0.2, simpo)
            })
            .collect();
        let t = summarize(&log, 4).unwrap();
        assert_eq!(t.steps, 6);
        assert_eq!(t.groups, 24);
        assert_eq!(t.hit_groups_by_quarter, vec![1, 2, 4]);
        assert_eq!(t.hit_groups(), 7);
        // All-fail shares 0.75, 1, 0.5, 1, 1, 0: mean 4.25 / 6.
        assert!((t.all_fail_share - 4.25 / 6.0).abs() < 1e-12);
        assert!((t.reward.0 - 0.0625).abs() < 1e-12, "{:?}", t.reward);
        assert!((t.reward.1 - 0.25).abs() < 1e-12, "{:?}", t.reward);
        assert!((t.entropy.0 - 2.0).abs() < 1e-12);
        assert!((t.entropy.1 - 1.1).abs() < 1e-12, "{:?}", t.entropy);
        assert_eq!(t.distinct, (20.0, 15.5));
        // SimPO: step 0 in the first quarter (step 1 had none), step 4 in the last (step 5 had none).
        assert_eq!(t.simpo, Some((0.0, 4.0)));
        assert_eq!((t.rollout_s, t.update_s), (60.0, 15.0));
    }

    #[test]
    fn a_log_without_simpo_or_steps_says_so() {
        assert_eq!(summarize(&[], 8), None);
        let t = summarize(&[step(0, 0.125, 0.01, 1.0, None)], 8).unwrap();
        assert_eq!(t.hit_groups_by_quarter, vec![1]);
        assert_eq!(t.simpo, None);
        assert!(
            row("full-grpo", &t).contains("| 1 of 8 (1) | 87.5% |"),
            "{}",
            row("full-grpo", &t)
        );
    }

    #[test]
    fn the_terminal_line_names_the_signal() {
        let t = summarize(&[step(0, 0.25, 0.1, 1.5, Some(5.0))], 8).unwrap();
        assert_eq!(
            t.to_string(),
            "groups with a hit 2 of 8 (2 by quarter), all-fail 75.0%, entropy 1.50 -> 1.50, \
             distinct rollouts 20.0 -> 20.0, SimPO loss 5.00 -> 5.00"
        );
    }

    #[test]
    fn a_broken_log_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rl_log.jsonl");
        std::fs::write(&log, "{\"step\":0,\"mean_reward\":0.5}\nnot json\n").unwrap();
        let err = rl_training_section(&[("full-grpo".into(), log)], 8).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("full-grpo") && msg.contains("line 2"), "{msg}");
    }
}
