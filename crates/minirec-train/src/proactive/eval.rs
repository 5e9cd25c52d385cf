//! Evaluation of generated paths by a separate user model (the evaluator): ProRL's metric@K is the best, over
//! the top-K beam paths, of each metric averaged along the path.

use serde::{Deserialize, Serialize};

use super::policy::Path as GenPath;
use super::reward::{score_paths, PathQuery, StepKind, UserModel};
use crate::error::Result;

/// One path's metrics averaged along it (an empty path scores 0 on each).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct PathMetrics {
    pub ioi: f64,
    pub ior: f64,
    pub ctr: f64,
    pub len: usize,
}

/// One query's evaluation: each top path's metrics, best path first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryEval {
    pub paths: Vec<PathMetrics>,
}

impl QueryEval {
    /// metric@K: the best of the first K paths (0 when there are none).
    pub fn at(&self, k: usize, pick: impl Fn(&PathMetrics) -> f64) -> f64 {
        self.paths
            .iter()
            .take(k)
            .map(pick)
            .reduce(f64::max)
            .unwrap_or(0.0)
    }
}

/// Scores each query's paths (catalog titles mapped to the evaluator's item rows by `rows`).
pub fn evaluate(
    evaluator: &impl UserModel,
    histories: &[Vec<u32>],
    targets: &[u32],
    paths: &[Vec<GenPath>],
    rows: &[u32],
) -> Result<Vec<QueryEval>> {
    let mut out = Vec::with_capacity(paths.len());
    for ((h, &t), group) in histories.iter().zip(targets).zip(paths) {
        let items: Vec<Vec<Option<u32>>> = group
            .iter()
            .map(|g| g.titles.iter().map(|&x| Some(rows[x as usize])).collect())
            .collect();
        let qs: Vec<PathQuery> = items
            .iter()
            .map(|path| PathQuery {
                history: h,
                path,
                target: t,
            })
            .collect();
        let steps = score_paths(evaluator, &qs)?;
        let paths = steps
            .iter()
            .map(|s| {
                let avg = |f: fn(&super::reward::Step) -> f64| {
                    if s.is_empty() {
                        0.0
                    } else {
                        s.iter().map(f).sum::<f64>() / s.len() as f64
                    }
                };
                PathMetrics {
                    ioi: avg(|x| x.ioi),
                    ior: avg(|x| x.ior),
                    ctr: avg(|x| x.ctr),
                    len: s.iter().filter(|x| x.kind == StepKind::Valid).count(),
                }
            })
            .collect();
        out.push(QueryEval { paths });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_at_k_is_the_best_of_the_first_k_paths() {
        let m = |ioi: f64| PathMetrics {
            ioi,
            ..Default::default()
        };
        let q = QueryEval {
            paths: vec![m(0.1), m(-0.5), m(0.7)],
        };
        assert_eq!(q.at(1, |p| p.ioi), 0.1);
        assert_eq!(q.at(2, |p| p.ioi), 0.1);
        assert_eq!(q.at(3, |p| p.ioi), 0.7);
        assert_eq!(QueryEval { paths: vec![] }.at(5, |p| p.ioi), 0.0);
    }
}
