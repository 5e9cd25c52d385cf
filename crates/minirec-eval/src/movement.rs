//! How one system's ranked lists moved against another's on the same samples: whether the first title stayed,
//! how much of each top K the two share, which targets entered or left the top K, and, where both rank the
//! target inside it, whether it moved up or down. What a metric's difference hides — a reordering that cancels,
//! or lists rewritten for the same score — shows here.

use std::collections::HashSet;

use crate::metrics::rank_of;
use crate::predictions::Prediction;

/// The lists' movement at one cut-off K, B against A.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CutoffMovement {
    pub k: usize,
    /// Mean share of A's top K that is also in B's top K.
    pub overlap: f64,
    /// Share of samples whose top K is the same, in the same order.
    pub identical: f64,
    /// Samples whose target is in B's top K and not in A's.
    pub entered: usize,
    /// Samples whose target is in A's top K and not in B's.
    pub left: usize,
    /// Of the samples whose target is in both top Ks: ranked higher by B, lower, at the same place.
    pub up: usize,
    pub down: usize,
    pub same: usize,
    /// Two-sided exact sign test of up against down (1 when neither occurs).
    pub sign_p: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Movement {
    pub n: usize,
    /// Share of samples whose first title is the same.
    pub top1_same: f64,
    pub cutoffs: Vec<CutoffMovement>,
}

/// A ranked list without repeated titles (as the metrics read it), cut at `k`.
fn top(ranked: &[String], k: usize) -> Vec<&str> {
    let mut seen = HashSet::new();
    ranked
        .iter()
        .map(String::as_str)
        .filter(|t| seen.insert(*t))
        .take(k)
        .collect()
}

/// P(X ≤ min(a, b)) · 2 for X ~ Binomial(a + b, ½), capped at 1: summed in log space, so large counts do not
/// underflow the terms one by one.
pub fn sign_test(a: usize, b: usize) -> f64 {
    let (n, m) = (a + b, a.min(b));
    if n == 0 {
        return 1.0;
    }
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut ln_c = 0f64; // ln C(n, 0)
    let mut terms = Vec::with_capacity(m + 1);
    for i in 0..=m {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(ln_c - ln2n);
    }
    let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let tail = top.exp() * terms.iter().map(|t| (t - top).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// B's lists against A's over paired samples (the same targets), at each cut-off.
pub fn movement(pairs: &[(&Prediction, &Prediction)], ks: &[usize]) -> Movement {
    let n = pairs.len();
    let share = |c: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let top1 = pairs
        .iter()
        .filter(|(a, b)| top(&a.ranked, 1) == top(&b.ranked, 1))
        .count();
    let ranks: Vec<(Option<usize>, Option<usize>)> = pairs
        .iter()
        .map(|(a, b)| {
            (
                rank_of(&a.target, &a.ranked).0,
                rank_of(&b.target, &b.ranked).0,
            )
        })
        .collect();
    let cutoffs = ks
        .iter()
        .map(|&k| {
            let (mut overlap, mut identical) = (0f64, 0usize);
            for (a, b) in pairs {
                let (ta, tb) = (top(&a.ranked, k), top(&b.ranked, k));
                identical += usize::from(ta == tb);
                if !ta.is_empty() {
                    let set: HashSet<&str> = tb.iter().copied().collect();
                    overlap +=
                        ta.iter().filter(|t| set.contains(*t)).count() as f64 / ta.len() as f64;
                }
            }
            let inside = |r: Option<usize>| r.is_some_and(|r| r < k);
            let mut m = CutoffMovement {
                k,
                overlap: if n == 0 { 0.0 } else { overlap / n as f64 },
                identical: share(identical),
                entered: 0,
                left: 0,
                up: 0,
                down: 0,
                same: 0,
                sign_p: 1.0,
            };
            for &(ra, rb) in &ranks {
                match (inside(ra), inside(rb)) {
                    (false, true) => m.entered += 1,
                    (true, false) => m.left += 1,
                    (true, true) => match rb.cmp(&ra) {
                        std::cmp::Ordering::Less => m.up += 1,
                        std::cmp::Ordering::Greater => m.down += 1,
                        std::cmp::Ordering::Equal => m.same += 1,
                    },
                    (false, false) => {}
                }
            }
            m.sign_p = sign_test(m.up, m.down);
            m
        })
        .collect();
    Movement {
        n,
        top1_same: share(top1),
        cutoffs,
    }
}

impl Movement {
    /// A Markdown table of the movement at each cut-off.
    pub fn table(&self, name_a: &str, name_b: &str) -> String {
        let mut s = format!(
            "How {name_b}'s lists moved against {name_a}'s: the same first title for {:.1}% of {} samples\n\n\
             | K | top-K overlap | identical top K | targets into top K | out of top K | in both: up / down / same | sign test p |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
            100.0 * self.top1_same,
            self.n
        );
        for c in &self.cutoffs {
            s.push_str(&format!(
                "| {} | {:.3} | {:.1}% | {} | {} | {} / {} / {} | {:.2e} |\n",
                c.k,
                c.overlap,
                100.0 * c.identical,
                c.entered,
                c.left,
                c.up,
                c.down,
                c.same,
                c.sign_p
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predictions::pred;

    #[test]
    fn hand_counted_movement() {
        let a = [
            pred("t", &["x", "t", "y"]), // target at 1 → B moves it to 0: up at K = 2, 3
            pred("t", &["t", "x", "y"]), // target at 0 → B: 2 (left the top 2, down at K = 3)
            pred("t", &["x", "y", "z"]), // absent → B: 1 (entered the top 2 and 3)
            pred("t", &["x", "x", "y", "z"]), // a repeat is dropped: top 2 is x, y; identical to B's
        ];
        let b = [
            pred("t", &["t", "x", "y"]),
            pred("t", &["x", "y", "t"]),
            pred("t", &["x", "t", "z"]),
            pred("t", &["x", "y", "q"]),
        ];
        let pairs: Vec<_> = a.iter().zip(&b).collect();
        let m = movement(&pairs, &[1, 2, 3]);
        assert_eq!(m.n, 4);
        assert_eq!(m.top1_same, 0.5); // samples 3 and 4 start with x in both
        let k2 = &m.cutoffs[1];
        // Overlaps of the top 2: {x,t}∩{t,x} = 1, {t,x}∩{x,y} = ½, {x,y}∩{x,t} = ½, {x,y}∩{x,y} = 1.
        assert!((k2.overlap - 0.75).abs() < 1e-12);
        assert_eq!(k2.identical, 0.25);
        assert_eq!(
            (k2.entered, k2.left, k2.up, k2.down, k2.same),
            (1, 1, 1, 0, 0)
        );
        let k3 = &m.cutoffs[2];
        assert_eq!(
            (k3.entered, k3.left, k3.up, k3.down, k3.same),
            (1, 0, 1, 1, 0)
        );
        assert_eq!(k3.sign_p, 1.0);
        let k1 = &m.cutoffs[0];
        assert_eq!((k1.entered, k1.left, k1.same), (1, 1, 0));
    }

    #[test]
    fn sign_test_matches_the_binomial_tail() {
        assert_eq!(sign_test(0, 0), 1.0);
        // 5 of 5 one way: 2 · 2⁻⁵.
        assert!((sign_test(5, 0) - 0.0625).abs() < 1e-12);
        // 8 against 2: P(X ≤ 2) = (1 + 10 + 45) / 1024, doubled.
        assert!((sign_test(2, 8) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(sign_test(7, 7), 1.0);
        // 204 against 52 (RESULTS.md's RISER reading): far below 1e-20, and no underflow to 0.
        let p = sign_test(204, 52);
        assert!(p > 0.0 && p < 1e-20, "{p}");
    }
}
