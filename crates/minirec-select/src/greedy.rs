//! Diversity-aware greedy selection (MiniRec Eq. 13–15): at each step every candidate's D is its minimum cosine
//! distance to the chosen set, min-max normalised over the remaining candidates (1 while the set is empty), and
//! the candidate maximising V = D·q is taken, q = L + λR. A running min-distance array is updated with one
//! matrix-vector product per pick, so a step costs O(N·d) on the device plus O(N) on the host.

use candle_core::Device;

use crate::error::{Result, SelectError};
use crate::matrix::Matrix;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub index: usize,
    /// Normalised diversity at pick time.
    pub d: f32,
    /// V = D·q at pick time.
    pub v: f32,
}

/// Picks `m` of the rows of `features` (any scale; cosine is used). Without diversity, the top `m` by `q`.
pub fn greedy(
    features: &Matrix,
    quality: &[f32],
    m: usize,
    diversity: bool,
    device: &Device,
    progress: bool,
) -> Result<Vec<Pick>> {
    let n = features.rows;
    if quality.len() != n {
        return Err(SelectError::Invalid(format!(
            "{} quality scores for {n} samples",
            quality.len()
        )));
    }
    if m > n {
        return Err(SelectError::Invalid(format!(
            "asked for {m} samples but only {n} are available"
        )));
    }
    if !diversity {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| quality[b].total_cmp(&quality[a]).then(a.cmp(&b)));
        return Ok(order[..m]
            .iter()
            .map(|&i| Pick {
                index: i,
                d: 1.0,
                v: quality[i],
            })
            .collect());
    }
    let unit = features.unit_rows();
    let f = unit.to_tensor(device)?;
    let mut min_dist = vec![f32::INFINITY; n];
    let mut taken = vec![false; n];
    let mut picks = Vec::with_capacity(m);
    let pb = crate::bar(progress, m as u64, "greedy selection");
    for _ in 0..m {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (i, &d) in min_dist.iter().enumerate() {
            if !taken[i] {
                lo = lo.min(d);
                hi = hi.max(d);
            }
        }
        let spread = hi - lo;
        let norm = |d: f32| {
            if spread.is_finite() && spread > 0.0 {
                (d - lo) / spread
            } else {
                1.0
            }
        };
        let mut best: Option<(usize, f32, f32)> = None;
        for i in 0..n {
            if taken[i] {
                continue;
            }
            let d = norm(min_dist[i]);
            let v = d * quality[i];
            if best.is_none_or(|(_, _, bv)| v > bv) {
                best = Some((i, d, v));
            }
        }
        let (j, d, v) = best.expect("m ≤ n leaves a candidate");
        taken[j] = true;
        picks.push(Pick { index: j, d, v });
        let sims: Vec<f32> = f.matmul(&f.narrow(0, j, 1)?.t()?)?.squeeze(1)?.to_vec1()?;
        for (md, s) in min_dist.iter_mut().zip(sims) {
            *md = md.min(1.0 - s);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(picks)
}
