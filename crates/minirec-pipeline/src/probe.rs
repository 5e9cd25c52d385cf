//! Whether RL will have a signal: GRPO learns only from groups whose m rollouts differ in reward, so a model
//! that rarely samples its prompts' targets gives it nothing (all-fail groups). This samples a seeded slice of
//! a split at several temperatures and reports, per temperature, the mean reward and the share of prompts
//! with at least one hit among their first m rollouts for several m (the first m of the same draws: samples
//! are independent, so the first m are m draws).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use minirec_data::{PreparedDataset, Split};
use minirec_model::decode::{sample, ItemIndex};
use minirec_model::load::{default_dtype, pick_device};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What to probe: a model on a seeded slice of a split.
pub struct ProbeJob<'a> {
    pub model: &'a Path,
    pub data: &'a Path,
    pub split: Split,
    pub samples: usize,
    /// Group sizes m to report; rollouts drawn per prompt are the largest.
    pub ms: Vec<usize>,
    pub temperatures: Vec<f32>,
    /// Prompts per sampling call.
    pub batch: usize,
    pub seed: u64,
    pub cpu: bool,
}

/// One temperature's rollouts summarised.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeRow {
    pub temperature: f32,
    /// Mean reward (hit rate) over every rollout.
    pub mean_reward: f64,
    /// (m, share of prompts with at least one hit among their first m rollouts) = 1 − all-fail share.
    pub with_hit: Vec<(usize, f64)>,
    /// Mean number of distinct titles among a prompt's rollouts.
    pub distinct: f64,
    /// Each prompt's hits among all its rollouts, in the slice's order (the same seed gives the same prompts to
    /// every model, so two models' probes pair prompt by prompt).
    pub hits: Vec<usize>,
    pub seconds: f64,
}

/// Summarises one temperature's rollouts: per prompt, its rollouts' titles in draw order and its target.
pub fn summarise(temperature: f32, rolls: &[(Vec<u32>, u32)], ms: &[usize]) -> ProbeRow {
    let n = rolls.len().max(1) as f64;
    let draws: usize = rolls.iter().map(|(r, _)| r.len()).sum();
    let per_prompt: Vec<usize> = rolls
        .iter()
        .map(|(r, t)| r.iter().filter(|x| *x == t).count())
        .collect();
    let hits: usize = per_prompt.iter().sum();
    let with_hit = ms
        .iter()
        .map(|&m| {
            let k = rolls
                .iter()
                .filter(|(r, t)| r.iter().take(m).any(|x| x == t))
                .count();
            (m, k as f64 / n)
        })
        .collect();
    let distinct = rolls
        .iter()
        .map(|(r, _)| r.iter().collect::<std::collections::HashSet<_>>().len() as f64)
        .sum::<f64>()
        / n;
    ProbeRow {
        temperature,
        mean_reward: hits as f64 / draws.max(1) as f64,
        with_hit,
        distinct,
        hits: per_prompt,
        seconds: 0.0,
    }
}

/// Samples the slice at each temperature (with `--bf16-weights`, on the bf16 kernel) and summarises it.
pub fn probe_rollouts(job: &ProbeJob, progress: bool) -> Result<Vec<ProbeRow>> {
    let m_max = job.ms.iter().copied().max().unwrap_or(0);
    if m_max == 0 || job.temperatures.is_empty() || job.samples == 0 {
        bail!("probe: give at least one group size m ≥ 1, one temperature and one sample");
    }
    // NaN is refused too.
    if let Some(t) = job.temperatures.iter().find(|t| t.is_nan() || **t <= 0.0) {
        bail!("probe: temperature {t} is not positive");
    }
    let ds = PreparedDataset::load(job.data)?;
    let split = ds.split(job.split);
    if split.is_empty() {
        bail!("the {} split of {} is empty", job.split, job.data.display());
    }
    let picked = minirec_eval::seeded_subset(split.len(), job.samples, job.seed);
    let samples: Vec<&minirec_data::Sample> = picked.iter().map(|&i| &split[i]).collect();
    let device = pick_device(job.cpu)?;
    let loaded =
        crate::model::load_llm_for_inference(job.model, "model", &device, default_dtype(&device))?;
    let tok = &loaded.tokenizer;
    let prompts = minirec_train::rl::prompts_for(&ds, &samples, tok)?;
    let titles = ds.catalog.titles().to_vec();
    let index = ItemIndex::build(tok, &titles, |t| ds.prompt.response(t))?;
    let mut rows = Vec::new();
    for &temp in &job.temperatures {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
        let pb = if progress {
            indicatif::ProgressBar::new(prompts.len() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut rolls = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(job.batch.max(1)) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.prompt.clone()).collect();
            let drawn = sample(&loaded.model, &index, &ids, m_max, temp, &mut rng)?;
            for (p, d) in chunk.iter().zip(drawn) {
                rolls.push((d.iter().map(|s| s.title).collect(), p.target));
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        let mut row = summarise(temp, &rolls, &job.ms);
        row.seconds = t0.elapsed().as_secs_f64();
        rows.push(row);
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[ProbeRow]) -> String {
    let ms: Vec<usize> = rows
        .first()
        .map(|r| r.with_hit.iter().map(|(m, _)| *m).collect())
        .unwrap_or_default();
    let mut out = String::from("| temperature | mean reward |");
    for m in &ms {
        out += &format!(" prompts with a hit, m = {m} |");
    }
    out += " distinct titles | seconds |\n|---|---|";
    out += &"---|".repeat(ms.len() + 2);
    out.push('\n');
    for r in rows {
        out += &format!("| {} | {:.4} |", r.temperature, r.mean_reward);
        for (_, s) in &r.with_hit {
            out += &format!(" {s:.3} |");
        }
        out += &format!(" {:.1} | {:.0} |\n", r.distinct, r.seconds);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_hits_prefixes_and_distinct_titles_by_hand() {
        // Prompt A (target 7): 3, 7, 7, 2 — B (target 1): 4, 4, 4, 4 — C (target 5): 2, 2, 2, 5.
        let rolls = vec![
            (vec![3, 7, 7, 2], 7),
            (vec![4, 4, 4, 4], 1),
            (vec![2, 2, 2, 5], 5),
        ];
        let r = summarise(0.8, &rolls, &[1, 2, 4]);
        assert_eq!(r.mean_reward, 3.0 / 12.0);
        // m = 1: nobody's first draw hits; m = 2: A; m = 4: A and C.
        assert_eq!(r.with_hit, vec![(1, 0.0), (2, 1.0 / 3.0), (4, 2.0 / 3.0)]);
        assert_eq!(r.distinct, (3.0 + 1.0 + 2.0) / 3.0);
        assert_eq!(r.hits, vec![2, 0, 1]);
        let t = table(&[r]);
        assert!(
            t.contains("| 0.8 | 0.2500 | 0.000 | 0.333 | 0.667 | 2.0 |"),
            "{t}"
        );
    }
}
