//! The proactive task's samples, built from a prepared dataset's sequences.
//!
//! The authors' `proc_path` construction is not public. **[P]** Ours takes the user's own trajectory: for a
//! target at position T of a user's sequence and a path length L, the path is the L items the user actually
//! interacted with just before T, and the history the (up to `max_history`) items before those. A real path is
//! one that did lead this user to the target, which is what SFT should imitate; windows whose path repeats an
//! item, holds the target or an item of the history, or whose history holds the target, are skipped, since generated paths may not repeat either.

use std::collections::{BTreeMap, HashSet};

use minirec_data::Sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One proactive sample: external item ids, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSample {
    pub user: String,
    pub history: Vec<String>,
    pub target: String,
    /// The supervised path (SFT's response), between the history and the target.
    pub path: Vec<String>,
}

/// Each user's item sequence, oldest first, rebuilt from next-item samples (a sample's history followed by its
/// target; later samples extend it). Users in the order they first appear.
pub fn user_sequences(samples: &[Sample]) -> Vec<(String, Vec<String>)> {
    let mut by_user: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    let mut order = Vec::new();
    for s in samples {
        let e = by_user.entry(&s.user).or_default();
        if e.is_empty() {
            order.push(s.user.as_str());
        }
        e.push(s);
    }
    order
        .into_iter()
        .map(|u| {
            let mut rows = by_user.remove(u).unwrap_or_default();
            rows.sort_by_key(|s| (s.timestamp, s.history.len()));
            let mut seq: Vec<String> = Vec::new();
            for s in rows {
                if seq.is_empty() {
                    seq.extend(s.history.iter().cloned());
                }
                seq.push(s.target.clone());
            }
            (u.to_string(), seq)
        })
        .collect()
}

/// Path samples from next-item samples: for every position T ≥ 2 of each user's sequence, a path length drawn
/// uniformly from 1..=min(max_path, T − 1) (seeded), at least one history item kept.
pub fn build_paths(
    samples: &[Sample],
    max_path: usize,
    max_history: usize,
    seed: u64,
) -> Vec<PathSample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (user, seq) in user_sequences(samples) {
        for t in 2..seq.len() {
            let l = rng.random_range(1..=max_path.min(t - 1).max(1));
            let start = t - l;
            let history = &seq[start.saturating_sub(max_history)..start];
            let path = &seq[start..t];
            if history.is_empty() || !distinct_path(history, path, &seq[t]) {
                continue;
            }
            out.push(PathSample {
                user: user.clone(),
                history: history.to_vec(),
                target: seq[t].clone(),
                path: path.to_vec(),
            });
        }
    }
    out
}

/// A path a generator could produce (no item twice, none from the history, not the target) toward a target the
/// history does not hold.
fn distinct_path(history: &[String], path: &[String], target: &str) -> bool {
    let mut seen: HashSet<&str> = history.iter().map(String::as_str).collect();
    seen.insert(target) && path.iter().all(|p| seen.insert(p.as_str()))
}

/// (history, target) pairs for evaluation: each next-item sample's history and target, where the history holds
/// at least one item and the target is not in it (a path toward an item the user already has is meaningless).
pub fn eval_pairs(samples: &[Sample]) -> Vec<PathSample> {
    samples
        .iter()
        .filter(|s| !s.history.is_empty() && !s.history.contains(&s.target))
        .map(|s| PathSample {
            user: s.user.clone(),
            history: s.history.clone(),
            target: s.target.clone(),
            path: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user: &str, history: &[&str], target: &str, t: i64) -> Sample {
        Sample {
            id: 0,
            user: user.into(),
            history: history.iter().map(|s| s.to_string()).collect(),
            target: target.into(),
            timestamp: t,
        }
    }

    #[test]
    fn sequences_are_rebuilt_from_next_item_samples() {
        let s = vec![
            sample("u", &["a"], "b", 1),
            sample("v", &["x"], "y", 1),
            sample("u", &["a", "b"], "c", 2),
            sample("u", &["a", "b", "c"], "d", 3),
        ];
        let seqs = user_sequences(&s);
        assert_eq!(
            seqs[0],
            (
                "u".into(),
                vec!["a", "b", "c", "d"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        assert_eq!(seqs[1].1, vec!["x".to_string(), "y".into()]);
    }

    #[test]
    fn paths_are_the_users_own_items_between_history_and_target() {
        let s = vec![sample("u", &["a", "b", "c", "d", "e"], "f", 1)];
        let paths = build_paths(&s, 3, 10, 1);
        // Targets at positions 2..=5 (c, d, e, f), each with a path of 1..=min(3, T − 1) items.
        assert_eq!(paths.len(), 4);
        let seq = ["a", "b", "c", "d", "e", "f"];
        for p in &paths {
            let t = seq.iter().position(|x| *x == p.target).unwrap();
            let l = p.path.len();
            assert!((1..=3).contains(&l) && l < t, "{p:?}");
            assert_eq!(p.path, seq[t - l..t].to_vec());
            assert_eq!(p.history, seq[..t - l].to_vec());
        }
    }

    #[test]
    fn windows_with_repeats_are_skipped() {
        // Sequence a b c b d: the target b at position 3 is in its history; a path holding the second b with
        // the first in its history, or both, repeats an item.
        let s = vec![sample("u", &["a", "b", "c", "b"], "d", 1)];
        let mut kept = HashSet::new();
        for seed in 0..40 {
            for p in build_paths(&s, 3, 10, seed) {
                let mut seen: HashSet<&String> = p.history.iter().collect();
                assert!(seen.insert(&p.target), "{p:?}");
                assert!(p.path.iter().all(|x| seen.insert(x)), "{p:?}");
                kept.insert((p.target.clone(), p.path.len()));
            }
        }
        // Over many seeds every allowed window (T, L) appears, and no other: brute force over all of them.
        let seq = ["a", "b", "c", "b", "d"];
        let mut want = HashSet::new();
        for t in 2..seq.len() {
            for l in 1..t {
                let (h, path) = (&seq[..t - l], &seq[t - l..t]);
                let mut seen: HashSet<&str> = h.iter().copied().collect();
                if seen.insert(seq[t]) && path.iter().all(|x| seen.insert(x)) {
                    want.insert((seq[t].to_string(), l));
                }
            }
        }
        assert_eq!(kept, want);
    }
}
