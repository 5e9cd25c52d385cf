//! Two systems' ranked lists over the same samples: each metric's difference with a paired-bootstrap interval.

use std::collections::BTreeMap;

use crate::metrics::rank_of;
use crate::predictions::Prediction;
use crate::subset::SplitMix64;

/// One metric of a comparison: the means of A and B and B − A with its bootstrap 95% interval.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricDiff {
    pub metric: String,
    pub a: f64,
    pub b: f64,
    pub diff: f64,
    pub low: f64,
    pub high: f64,
}

impl MetricDiff {
    /// The interval excludes 0: the difference is resolved at the 95% level.
    pub fn resolved(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// Samples paired.
    pub n: usize,
    pub resamples: usize,
    pub seed: u64,
    pub metrics: Vec<MetricDiff>,
    /// How B's ranked lists moved against A's.
    pub movement: crate::movement::Movement,
}

/// One sample's NDCG@K: 1/log2(rank + 2) when the target is inside the cut-off.
pub(crate) fn ndcg_at(p: &Prediction, k: usize) -> f64 {
    rank_of(&p.target, &p.ranked)
        .0
        .filter(|&r| r < k)
        .map_or(0.0, |r| 1.0 / ((r + 2) as f64).log2())
}

/// Per-sample HR@K and NDCG@K (1/log2(rank + 2) inside the cut-off), by metric name.
fn per_sample(p: &[&Prediction], ks: &[usize]) -> BTreeMap<String, Vec<f64>> {
    let mut m = BTreeMap::new();
    let ranks: Vec<Option<usize>> = p.iter().map(|x| rank_of(&x.target, &x.ranked).0).collect();
    for &k in ks {
        let inside = |r: &Option<usize>| r.filter(|&r| r < k);
        m.insert(
            format!("hr@{k}"),
            ranks
                .iter()
                .map(|r| inside(r).map_or(0.0, |_| 1.0))
                .collect(),
        );
        m.insert(
            format!("ndcg@{k}"),
            ranks
                .iter()
                .map(|r| inside(r).map_or(0.0, |r| 1.0 / ((r + 2) as f64).log2()))
                .collect(),
        );
    }
    m
}

/// Pairs the two files' samples: by `sample` index when every line has one (both files must hold the same
/// samples), else line by line. The paired targets must agree.
pub(crate) fn pair<'a>(
    a: &'a [Prediction],
    b: &'a [Prediction],
) -> Result<Vec<(&'a Prediction, &'a Prediction)>, String> {
    let indexed = |v: &[Prediction]| v.iter().all(|p| p.sample.is_some());
    let pairs: Vec<_> = if indexed(a) && indexed(b) {
        let by: BTreeMap<usize, &Prediction> = b.iter().map(|p| (p.sample.unwrap(), p)).collect();
        if by.len() != b.len() || a.len() != b.len() {
            return Err(format!(
                "the files hold different samples ({} and {} lines, {} distinct in B)",
                a.len(),
                b.len(),
                by.len()
            ));
        }
        a.iter()
            .map(|p| {
                let s = p.sample.unwrap();
                by.get(&s)
                    .map(|q| (p, *q))
                    .ok_or_else(|| format!("sample {s} of A is not in B"))
            })
            .collect::<Result<_, _>>()?
    } else {
        if a.len() != b.len() {
            return Err(format!(
                "{} and {} predictions: without sample indices the files must pair line by line",
                a.len(),
                b.len()
            ));
        }
        a.iter().zip(b).collect()
    };
    if let Some((i, (p, q))) = pairs
        .iter()
        .enumerate()
        .find(|(_, (p, q))| p.target != q.target)
    {
        return Err(format!(
            "pair {} (sample {:?}): targets differ ({:?} vs {:?}); the files are not over the same samples",
            i + 1,
            p.sample,
            p.target,
            q.target
        ));
    }
    Ok(pairs)
}

/// B − A for HR@K and NDCG@K at each cut-off, with a paired-bootstrap 95% percentile interval: `resamples`
/// draws of n samples with replacement (seeded), the same draws for every metric.
pub fn paired_bootstrap(
    a: &[Prediction],
    b: &[Prediction],
    ks: &[usize],
    resamples: usize,
    seed: u64,
) -> Result<Comparison, String> {
    let pairs = pair(a, b)?;
    let n = pairs.len();
    if n == 0 || resamples == 0 {
        return Err("nothing to compare: no paired samples or no resamples".into());
    }
    let movement = crate::movement::movement(&pairs, ks);
    let (pa, pb): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let (ma, mb) = (per_sample(&pa, ks), per_sample(&pb, ks));
    let mut rng = SplitMix64(seed);
    let draws: Vec<Vec<usize>> = (0..resamples)
        .map(|_| (0..n).map(|_| rng.below(n)).collect())
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut metrics = Vec::new();
    for &k in ks {
        for name in [format!("ndcg@{k}"), format!("hr@{k}")] {
            let (va, vb) = (&ma[&name], &mb[&name]);
            let d: Vec<f64> = vb.iter().zip(va).map(|(y, x)| y - x).collect();
            let mut boot: Vec<f64> = draws
                .iter()
                .map(|idx| idx.iter().map(|&i| d[i]).sum::<f64>() / n as f64)
                .collect();
            boot.sort_by(f64::total_cmp);
            let q =
                |p: f64| boot[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
            metrics.push(MetricDiff {
                metric: name.clone(),
                a: mean(va),
                b: mean(vb),
                diff: mean(&d),
                low: q(0.025),
                high: q(0.975),
            });
        }
    }
    Ok(Comparison {
        n,
        resamples,
        seed,
        metrics,
        movement,
    })
}

/// B − A of one per-sample metric (the same samples in the same order), with a paired-bootstrap 95% percentile
/// interval over `resamples` seeded draws.
pub fn paired_mean_diff(
    metric: &str,
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
) -> Result<MetricDiff, String> {
    let n = a.len();
    if n == 0 || n != b.len() || resamples == 0 {
        return Err(format!(
            "{metric}: cannot pair {} with {} samples ({resamples} resamples)",
            a.len(),
            b.len()
        ));
    }
    let d: Vec<f64> = b.iter().zip(a).map(|(y, x)| y - x).collect();
    let (low, high) = bootstrap_interval(&d, resamples, seed);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(MetricDiff {
        metric: metric.to_string(),
        a: mean(a),
        b: mean(b),
        diff: mean(&d),
        low,
        high,
    })
}

/// One system's metric: its mean over the samples with the bootstrap 95% percentile interval of that mean.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricInterval {
    pub metric: String,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// NDCG@K and HR@K of one system's lists at each cut-off, each with the interval of its mean over
/// `resamples` seeded bootstrap draws of the samples (one seed for every metric). What a row's own
/// uncertainty is; whether two rows differ is `paired_bootstrap`'s question, whose interval is narrower.
pub fn mean_intervals(
    p: &[Prediction],
    ks: &[usize],
    resamples: usize,
    seed: u64,
) -> Vec<MetricInterval> {
    let refs: Vec<&Prediction> = p.iter().collect();
    let per = per_sample(&refs, ks);
    let mut out = Vec::new();
    for &k in ks {
        for name in [format!("ndcg@{k}"), format!("hr@{k}")] {
            let v = &per[&name];
            let (low, high) = bootstrap_interval(v, resamples, seed);
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            out.push(MetricInterval {
                metric: name,
                mean,
                low,
                high,
            });
        }
    }
    out
}

/// A plain-text table of `mean_intervals`' output: one row per cut-off, HR@K and NDCG@K with their intervals.
pub fn intervals_table(
    n: u64,
    ks: &[usize],
    iv: &[MetricInterval],
    resamples: usize,
    seed: u64,
) -> String {
    let mut s = format!(
        "n = {n}; 95% intervals: bootstrap of the mean, {resamples} resamples, seed {seed}\n\
         {:>6}  {:>8}  {:<18}  {:>8}  [95%]\n",
        "K", "HR@K", "[95%]", "NDCG@K"
    );
    let cell = |name: String| {
        iv.iter().find(|m| m.metric == name).map_or_else(
            || format!("{:>8}  {:<18}", "–", ""),
            |m| format!("{:>8.4}  [{:.4}, {:.4}]", m.mean, m.low, m.high),
        )
    };
    for k in ks {
        s.push_str(&format!(
            "{k:>6}  {}  {}\n",
            cell(format!("hr@{k}")),
            cell(format!("ndcg@{k}"))
        ));
    }
    s
}

/// `{"resamples": R, "seed": S, "ndcg@5": [low, high], ...}`: the intervals beside a metrics JSON's means.
pub fn intervals_json(iv: &[MetricInterval], resamples: usize, seed: u64) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("resamples".into(), resamples.into());
    m.insert("seed".into(), seed.into());
    for x in iv {
        m.insert(x.metric.clone(), serde_json::json!([x.low, x.high]));
    }
    serde_json::Value::Object(m)
}

/// The 2.5% and 97.5% percentiles of the mean of `x` over `resamples` seeded bootstrap draws.
pub fn bootstrap_interval(x: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = x.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64(seed);
    let mut boot: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| x[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    boot.sort_by(f64::total_cmp);
    let q = |p: f64| boot[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (q(0.025), q(0.975))
}

impl Comparison {
    /// A Markdown table: one row per metric, resolved differences marked.
    pub fn table(&self, name_a: &str, name_b: &str) -> String {
        let mut s = format!(
            "{name_b} vs {name_a}: {} paired samples, {} bootstrap resamples (seed {})\n\n\
             | metric | {name_a} | {name_b} | difference | 95% interval | resolved |\n\
             | --- | --- | --- | --- | --- | --- |\n",
            self.n, self.resamples, self.seed
        );
        for m in &self.metrics {
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:+.4} | [{:+.4}, {:+.4}] | {} |\n",
                m.metric,
                m.a,
                m.b,
                m.diff,
                m.low,
                m.high,
                if m.resolved() { "yes" } else { "no" }
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(target: &str, ranked: &[&str], sample: Option<usize>) -> Prediction {
        Prediction {
            target: target.into(),
            ranked: ranked.iter().map(|s| s.to_string()).collect(),
            sample,
        }
    }

    #[test]
    fn hand_computed_differences_and_intervals() {
        // A hits at rank 2 on sample 0 only; B hits at rank 1 on samples 0 and 1.
        let a = vec![pred("x", &["y", "x"], None), pred("z", &["y"], None)];
        let b = vec![pred("x", &["x"], None), pred("z", &["z"], None)];
        let c = paired_bootstrap(&a, &b, &[1, 2], 2000, 7).unwrap();
        let get = |m: &str| c.metrics.iter().find(|d| d.metric == m).unwrap().clone();
        let hr1 = get("hr@1");
        assert_eq!((hr1.a, hr1.b, hr1.diff), (0.0, 1.0, 1.0));
        // Every sample differs by exactly 1 at HR@1: the interval is the point.
        assert_eq!((hr1.low, hr1.high), (1.0, 1.0));
        assert!(hr1.resolved());
        let nd2 = get("ndcg@2");
        let g = 1.0 / 3f64.log2();
        assert!((nd2.a - g / 2.0).abs() < 1e-12);
        assert!((nd2.diff - (1.0 - g / 2.0)).abs() < 1e-12);
        // Differences per sample are 1 − g and 1: the interval lies between them.
        assert!(nd2.low >= 1.0 - g - 1e-12 && nd2.high <= 1.0 + 1e-12);
        // The same system against itself: zero difference, unresolved.
        let same = paired_bootstrap(&a, &a, &[1], 100, 1).unwrap();
        assert!(same.metrics.iter().all(|m| m.diff == 0.0 && !m.resolved()));
    }

    #[test]
    fn interval_covers_a_noisy_difference_and_is_seeded() {
        // 400 samples: A hits on every 4th, B on every 2nd; the true HR@1 difference is 0.25.
        let a: Vec<_> = (0..400)
            .map(|i| pred("t", if i % 4 == 0 { &["t"] } else { &["u"] }, Some(i)))
            .collect();
        let mut b: Vec<_> = (0..400)
            .map(|i| pred("t", if i % 2 == 0 { &["t"] } else { &["u"] }, Some(i)))
            .collect();
        b.reverse(); // paired by sample index, not line
        let c = paired_bootstrap(&a, &b, &[1], 1000, 3).unwrap();
        let d = &c.metrics[1];
        assert_eq!(d.metric, "hr@1");
        assert!((d.diff - 0.25).abs() < 1e-12);
        // The paired differences are 0 or 1 with p = 0.25: sd of the mean ≈ 0.0217, 95% ≈ ±0.042.
        assert!(d.low < 0.25 && d.high > 0.25 && d.high - d.low > 0.06 && d.high - d.low < 0.11);
        let again = paired_bootstrap(&a, &b, &[1], 1000, 3).unwrap();
        assert_eq!(again.metrics, c.metrics);
    }

    #[test]
    fn unpaired_files_are_refused_with_the_reason() {
        let a = vec![pred("x", &[], None), pred("y", &[], None)];
        let b = vec![pred("x", &[], None)];
        assert!(paired_bootstrap(&a, &b, &[1], 10, 1)
            .unwrap_err()
            .contains("line by line"));
        let b = vec![pred("x", &[], None), pred("q", &[], None)];
        assert!(paired_bootstrap(&a, &b, &[1], 10, 1)
            .unwrap_err()
            .contains("targets differ"));
        let a = vec![pred("x", &[], Some(0)), pred("y", &[], Some(1))];
        let b = vec![pred("x", &[], Some(0)), pred("y", &[], Some(2))];
        assert!(paired_bootstrap(&a, &b, &[1], 10, 1)
            .unwrap_err()
            .contains("sample 1"));
    }

    #[test]
    fn a_systems_own_intervals_by_hand() {
        // Ranks 0, 1, miss, miss: NDCG@2 per sample 1, 1/log2(3), 0, 0; HR@2 1, 1, 0, 0; HR@1 1, 0, 0, 0.
        let p = vec![
            pred("a", &["a", "b"], None),
            pred("a", &["b", "a"], None),
            pred("a", &["b", "c"], None),
            pred("a", &[], None),
        ];
        let m = mean_intervals(&p, &[1, 2], 2000, 5);
        let names: Vec<&str> = m.iter().map(|x| x.metric.as_str()).collect();
        assert_eq!(names, ["ndcg@1", "hr@1", "ndcg@2", "hr@2"]);
        let g = 1.0 / 3f64.log2();
        assert!((m[2].mean - (1.0 + g) / 4.0).abs() < 1e-12);
        assert_eq!((m[1].mean, m[3].mean), (0.25, 0.5));
        // HR@1's mean of 4 draws from {1, 0, 0, 0} is 0 with p = 0.32 (so the 2.5th percentile), ≤ 0.5 with
        // p = 0.95 and 1 with p = 0.004: its 97.5th percentile is 0.5 or 0.75.
        assert_eq!(m[1].low, 0.0);
        assert!(m[1].high >= 0.5 && m[1].high <= 0.75);
        assert_eq!(
            (m[3].low, m[3].high),
            bootstrap_interval(&[1.0, 1.0, 0.0, 0.0], 2000, 5)
        );
        // Every list hits at rank 0: the interval is the point.
        let all = vec![pred("a", &["a"], None); 3];
        let m = mean_intervals(&all, &[5], 100, 1);
        assert!(m.iter().all(|x| (x.mean, x.low, x.high) == (1.0, 1.0, 1.0)));
    }

    #[test]
    fn paired_mean_diff_of_a_constant_shift_is_exact() {
        let a = [0.1, 0.5, 0.2, 0.9];
        let b: Vec<f64> = a.iter().map(|x| x + 0.25).collect();
        let d = paired_mean_diff("ioi@1", &a, &b, 500, 3).unwrap();
        assert!(
            (d.diff - 0.25).abs() < 1e-12
                && (d.low - 0.25).abs() < 1e-12
                && (d.high - 0.25).abs() < 1e-12
        );
        assert!(d.resolved());
        // One sample moves by +1, three by 0: the mean moves by 0.25, and some draws miss the mover.
        let c = [0.1, 0.5, 0.2, 1.9];
        let e = paired_mean_diff("ioi@1", &a, &c, 2000, 3).unwrap();
        assert!((e.diff - 0.25).abs() < 1e-12);
        assert_eq!(e.low, 0.0);
        assert!(e.high >= 0.5);
        assert!(paired_mean_diff("x", &a, &c[..2], 10, 1).is_err());
    }
}
