//! Which target items carry a difference between two systems: each target's share of B − A at NDCG@K. RL on a
//! few hundred prompts moves the titles it was rewarded for; on Industrial one item (3.5% of the training
//! targets, 4.4% of the test samples) carried more than half of a selection arm's gain, which a table of means
//! does not show.

use std::collections::BTreeMap;

use crate::compare::{ndcg_at, pair};
use crate::predictions::Prediction;

/// One target's samples and their part of B − A.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetShare {
    pub target: String,
    pub samples: usize,
    /// Mean NDCG@K of A and of B over this target's samples.
    pub a: f64,
    pub b: f64,
    /// Σ over its samples of (B − A), divided by all samples: the shares of every target sum to B − A.
    pub contribution: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetShares {
    pub k: usize,
    pub n: usize,
    /// B − A over all samples.
    pub diff: f64,
    /// The targets with the largest |contribution|, largest first.
    pub top: Vec<TargetShare>,
    /// Distinct targets among the samples.
    pub targets: usize,
}

/// The `top` targets whose samples move B − A at NDCG@`k` the most (ties: more samples, then by title).
pub fn target_shares(
    a: &[Prediction],
    b: &[Prediction],
    k: usize,
    top: usize,
) -> Result<TargetShares, String> {
    let pairs = pair(a, b)?;
    let n = pairs.len();
    if n == 0 {
        return Err("nothing to compare: no paired samples".into());
    }
    let mut by: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for (p, q) in &pairs {
        let e = by.entry(p.target.as_str()).or_default();
        e.0 += 1;
        e.1 += ndcg_at(p, k);
        e.2 += ndcg_at(q, k);
    }
    let targets = by.len();
    let diff = by.values().map(|(_, sa, sb)| sb - sa).sum::<f64>() / n as f64;
    let mut shares: Vec<TargetShare> = by
        .into_iter()
        .map(|(t, (m, sa, sb))| TargetShare {
            target: t.to_string(),
            samples: m,
            a: sa / m as f64,
            b: sb / m as f64,
            contribution: (sb - sa) / n as f64,
        })
        .collect();
    shares.sort_by(|x, y| {
        y.contribution
            .abs()
            .total_cmp(&x.contribution.abs())
            .then(y.samples.cmp(&x.samples))
            .then(x.target.cmp(&y.target))
    });
    shares.truncate(top);
    Ok(TargetShares {
        k,
        n,
        diff,
        top: shares,
        targets,
    })
}

impl TargetShares {
    /// A Markdown table of the top targets, with the part of B − A they carry together.
    pub fn table(&self, name_a: &str, name_b: &str) -> String {
        let carried: f64 = self.top.iter().map(|s| s.contribution).sum();
        let mut s = format!(
            "The {} targets (of {}) that move {name_b} − {name_a} at NDCG@{} the most: together {:+.4} of the \
             {:+.4} over {} samples\n\n\
             | target | samples | NDCG@{} {name_a} | NDCG@{} {name_b} | share of the difference |\n\
             | --- | --- | --- | --- | --- |\n",
            self.top.len(),
            self.targets,
            self.k,
            carried,
            self.diff,
            self.n,
            self.k,
            self.k
        );
        for t in &self.top {
            s.push_str(&format!(
                "| {} | {} | {:.4} | {:.4} | {:+.4} |\n",
                t.target.replace('|', "\\|"),
                t.samples,
                t.a,
                t.b,
                t.contribution
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predictions::pred;

    /// By hand: x's two samples gain 1 − 1/log2(3) and 1 (B puts x first), y's one loses 1 (B drops it),
    /// z's is unchanged; n = 4.
    #[test]
    fn shares_by_hand_sum_to_the_difference() {
        let a = [
            pred("x", &["q", "x"]),
            pred("x", &["q", "r"]),
            pred("y", &["y", "q"]),
            pred("z", &["z"]),
        ];
        let b = [
            pred("x", &["x", "q"]),
            pred("x", &["x", "r"]),
            pred("y", &["q", "r"]),
            pred("z", &["z"]),
        ];
        let s = target_shares(&a, &b, 10, 10).unwrap();
        let g = 1.0 - 1.0 / 3f64.log2();
        assert_eq!((s.n, s.targets, s.k), (4, 3, 10));
        assert!((s.diff - (g + 1.0 - 1.0) / 4.0).abs() < 1e-12);
        let names: Vec<&str> = s.top.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["x", "y", "z"], "|contribution| order");
        assert!((s.top[0].contribution - (g + 1.0) / 4.0).abs() < 1e-12);
        assert!((s.top[0].a - (1.0 / 3f64.log2()) / 2.0).abs() < 1e-12);
        assert_eq!((s.top[0].b, s.top[0].samples), (1.0, 2));
        assert_eq!(s.top[1].contribution, -0.25);
        let total: f64 = s.top.iter().map(|t| t.contribution).sum();
        assert!((total - s.diff).abs() < 1e-12);
        // Only the top one, and a cut-off the gains fall outside of.
        assert_eq!(target_shares(&a, &b, 10, 1).unwrap().top.len(), 1);
        let at1 = target_shares(&a, &b, 1, 10).unwrap();
        assert!(
            (at1.top[0].contribution - 0.5).abs() < 1e-12,
            "x: 0 → 1 twice at K = 1"
        );
        let t = s.table("A", "B");
        assert!(t.contains("| x | 2 |") && t.contains("of 3"), "{t}");
    }

    #[test]
    fn files_over_other_samples_are_refused() {
        let a = [pred("x", &["x"])];
        let b = [pred("y", &["y"])];
        assert!(target_shares(&a, &b, 10, 5)
            .unwrap_err()
            .contains("targets differ"));
    }
}
