//! HR@K and NDCG@K for one relevant item per sample (the next item) under the all-ranking protocol: the
//! model ranks every title, and the metric looks at where the target's title lands.
//!
//! With one relevant item, the ideal DCG is 1, so NDCG@K = 1 / log2(rank + 2) for a 0-based rank < K, else 0.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub const DEFAULT_KS: [usize; 3] = [5, 10, 20];

/// Parses `5,10,20`.
pub fn parse_ks(s: &str) -> Result<Vec<usize>, String> {
    let mut ks = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let k: usize = part
            .parse()
            .map_err(|_| format!("cut-off {part:?} is not a positive integer"))?;
        if k == 0 {
            return Err("cut-offs must be at least 1".into());
        }
        ks.push(k);
    }
    if ks.is_empty() {
        return Err("no cut-off given".into());
    }
    ks.sort_unstable();
    ks.dedup();
    Ok(ks)
}

/// The 0-based rank of `target` in `ranked` after dropping repeated titles (a repeat would otherwise push
/// the target down for nothing), and whether any repeat was dropped.
pub fn rank_of<S: AsRef<str>>(target: &str, ranked: &[S]) -> (Option<usize>, bool) {
    let mut seen: std::collections::HashSet<&str> =
        std::collections::HashSet::with_capacity(ranked.len());
    let mut rank = 0usize;
    let mut found = None;
    let mut dup = false;
    for r in ranked {
        let r = r.as_ref();
        if !seen.insert(r) {
            dup = true;
            continue;
        }
        if found.is_none() && r == target {
            found = Some(rank);
        }
        rank += 1;
    }
    (found, dup)
}

#[derive(Debug, Clone)]
pub struct RankingMetrics {
    ks: Vec<usize>,
    hits: Vec<u64>,
    ndcg: Vec<f64>,
    n: u64,
    lists_with_repeats: u64,
}

impl RankingMetrics {
    pub fn new(ks: &[usize]) -> Self {
        let mut ks = ks.to_vec();
        ks.sort_unstable();
        ks.dedup();
        assert!(!ks.is_empty() && ks[0] > 0, "cut-offs must be positive");
        RankingMetrics {
            hits: vec![0; ks.len()],
            ndcg: vec![0.0; ks.len()],
            ks,
            n: 0,
            lists_with_repeats: 0,
        }
    }

    /// Adds one sample by the target's 0-based rank (`None`: not ranked at all).
    pub fn add_rank(&mut self, rank: Option<usize>) {
        self.n += 1;
        if let Some(r) = rank {
            let gain = 1.0 / ((r + 2) as f64).log2();
            for (j, &k) in self.ks.iter().enumerate() {
                if r < k {
                    self.hits[j] += 1;
                    self.ndcg[j] += gain;
                }
            }
        }
    }

    /// Adds one sample by its ranked list of titles.
    pub fn add<S: AsRef<str>>(&mut self, target: &str, ranked: &[S]) {
        let (rank, dup) = rank_of(target, ranked);
        self.lists_with_repeats += u64::from(dup);
        self.add_rank(rank);
    }

    pub fn n(&self) -> u64 {
        self.n
    }

    pub fn report(&self) -> MetricsReport {
        let n = self.n.max(1) as f64;
        MetricsReport {
            n: self.n,
            ks: self.ks.clone(),
            hr: self.hits.iter().map(|&h| h as f64 / n).collect(),
            ndcg: self.ndcg.iter().map(|&g| g / n).collect(),
            lists_with_repeats: self.lists_with_repeats,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsReport {
    pub n: u64,
    pub ks: Vec<usize>,
    pub hr: Vec<f64>,
    pub ndcg: Vec<f64>,
    pub lists_with_repeats: u64,
}

impl MetricsReport {
    pub fn get(&self, name: &str) -> Option<f64> {
        let (metric, k) = name.split_once('@')?;
        let k: usize = k.parse().ok()?;
        let j = self.ks.iter().position(|&x| x == k)?;
        match metric {
            "hr" => Some(self.hr[j]),
            "ndcg" => Some(self.ndcg[j]),
            _ => None,
        }
    }

    /// Flat JSON: `{"n": N, "ndcg@5": x, ..., "hr@5": x, ...}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("n".into(), Value::from(self.n));
        for (j, k) in self.ks.iter().enumerate() {
            m.insert(format!("ndcg@{k}"), Value::from(self.ndcg[j]));
        }
        for (j, k) in self.ks.iter().enumerate() {
            m.insert(format!("hr@{k}"), Value::from(self.hr[j]));
        }
        m.insert(
            "lists_with_repeats".into(),
            Value::from(self.lists_with_repeats),
        );
        Value::Object(m)
    }

    /// Reads back what [`MetricsReport::to_json`] wrote.
    pub fn from_json(v: &Value) -> Option<Self> {
        let m = v.as_object()?;
        let mut ks: Vec<usize> = m
            .keys()
            .filter_map(|k| k.strip_prefix("hr@")?.parse().ok())
            .collect();
        ks.sort_unstable();
        let get = |k: String| m.get(&k).and_then(Value::as_f64);
        Some(MetricsReport {
            n: m.get("n")?.as_u64()?,
            hr: ks
                .iter()
                .map(|k| get(format!("hr@{k}")))
                .collect::<Option<_>>()?,
            ndcg: ks
                .iter()
                .map(|k| get(format!("ndcg@{k}")))
                .collect::<Option<_>>()?,
            lists_with_repeats: m
                .get("lists_with_repeats")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            ks,
        })
    }

    /// A plain-text table: one row per cut-off.
    pub fn table(&self) -> String {
        let mut s = format!(
            "n = {}\n{:>6}  {:>8}  {:>8}\n",
            self.n, "K", "HR@K", "NDCG@K"
        );
        for (j, k) in self.ks.iter().enumerate() {
            s.push_str(&format!(
                "{k:>6}  {:>8.4}  {:>8.4}\n",
                self.hr[j], self.ndcg[j]
            ));
        }
        s
    }

    pub fn as_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (j, k) in self.ks.iter().enumerate() {
            m.insert(format!("hr@{k}"), self.hr[j]);
            m.insert(format!("ndcg@{k}"), self.ndcg[j]);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let mut m = RankingMetrics::new(&[5, 10, 20]);
        m.add("a", &["b", "a", "c"]);
        m.add("z", &["b", "c"]);
        let r = m.report();
        assert_eq!(MetricsReport::from_json(&r.to_json()), Some(r));
        assert_eq!(
            MetricsReport::from_json(&serde_json::json!({"hr@5": 1.0})),
            None
        );
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn hand_computed_three_samples() {
        // Ranks 0, 3 and a miss. NDCG gains: 1/log2(2) = 1, 1/log2(5) = 0.430676558.
        let mut m = RankingMetrics::new(&[1, 3, 5]);
        m.add("a", &["a", "b", "c"]);
        m.add("d", &["a", "b", "c", "d", "e"]);
        m.add("z", &["a", "b"]);
        let r = m.report();
        assert_eq!(r.n, 3);
        close(r.get("hr@1").unwrap(), 1.0 / 3.0);
        close(r.get("hr@3").unwrap(), 1.0 / 3.0);
        close(r.get("hr@5").unwrap(), 2.0 / 3.0);
        close(r.get("ndcg@1").unwrap(), 1.0 / 3.0);
        close(r.get("ndcg@3").unwrap(), 1.0 / 3.0);
        close(
            r.get("ndcg@5").unwrap(),
            (1.0 + 0.430_676_558_073_393) / 3.0,
        );
    }

    #[test]
    fn rank_boundaries_at_k() {
        // A target at 0-based rank 4 is inside top-5 and outside top-4; rank 2's gain is 1/log2(4) = 0.5.
        let mut m = RankingMetrics::new(&[4, 5]);
        m.add_rank(Some(4));
        let r = m.report();
        close(r.get("hr@4").unwrap(), 0.0);
        close(r.get("hr@5").unwrap(), 1.0);
        close(r.get("ndcg@5").unwrap(), 1.0 / 6f64.log2());
        let mut m = RankingMetrics::new(&[3]);
        m.add_rank(Some(2));
        close(m.report().get("ndcg@3").unwrap(), 0.5);
    }

    #[test]
    fn repeated_titles_do_not_push_the_target_down() {
        assert_eq!(rank_of("c", &["a", "a", "b", "c"]), (Some(2), true));
        assert_eq!(rank_of("c", &["a", "b", "c"]), (Some(2), false));
        assert_eq!(rank_of("x", &["a"]), (None, false));
        let mut m = RankingMetrics::new(&[3]);
        m.add("c", &["a", "a", "b", "c"]);
        assert_eq!(m.report().lists_with_repeats, 1);
        close(m.report().get("hr@3").unwrap(), 1.0);
    }

    #[test]
    fn json_has_the_documented_keys() {
        let mut m = RankingMetrics::new(&DEFAULT_KS);
        m.add("a", &["a"]);
        let j = m.report().to_json();
        for key in [
            "n", "ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20",
        ] {
            assert!(j.get(key).is_some(), "missing {key}");
        }
        assert_eq!(j["n"], 1);
    }

    #[test]
    fn parses_cut_offs() {
        assert_eq!(parse_ks("20,5,10").unwrap(), vec![5, 10, 20]);
        assert_eq!(parse_ks(" 1 ").unwrap(), vec![1]);
        assert!(parse_ks("0").is_err());
        assert!(parse_ks("a").is_err());
        assert!(parse_ks("").is_err());
    }
}
