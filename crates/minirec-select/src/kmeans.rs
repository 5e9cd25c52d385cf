//! The KMeans baseline: k-means++ seeding and Lloyd iterations on the unit-normalised features, then the sample
//! nearest each centroid (each sample used once). Distances are computed on the device in row blocks.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, SelectError};
use crate::matrix::Matrix;

const BLOCK: usize = 8192;

/// Squared distances ‖x − c‖² between all rows and all centroids, block by block: calls `each(row, dists)`.
fn distances(
    x: &Tensor,
    x_sq: &[f32],
    c: &Matrix,
    device: &Device,
    mut each: impl FnMut(usize, &[f32]),
) -> Result<()> {
    let ct = c.to_tensor(device)?;
    let c_sq: Vec<f32> = (0..c.rows)
        .map(|j| c.row(j).iter().map(|v| v * v).sum())
        .collect();
    let n = x.dim(0)?;
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let dots: Vec<f32> = x
            .narrow(0, start, len)?
            .matmul(&ct.t()?)?
            .flatten_all()?
            .to_vec1()?;
        let mut row = vec![0f32; c.rows];
        for i in 0..len {
            for j in 0..c.rows {
                row[j] = (x_sq[start + i] - 2.0 * dots[i * c.rows + j] + c_sq[j]).max(0.0);
            }
            each(start + i, &row);
        }
        start += len;
    }
    Ok(())
}

/// Chooses `k` samples: the nearest distinct sample to each of k centroids. Returns (sample, distance²).
pub fn kmeans_select(
    features: &Matrix,
    k: usize,
    iters: usize,
    seed: u64,
    device: &Device,
    progress: bool,
) -> Result<Vec<(usize, f32)>> {
    let n = features.rows;
    if k == 0 || k > n {
        return Err(SelectError::Invalid(format!(
            "k-means needs 1 ≤ k ≤ {n} samples, got {k}"
        )));
    }
    let unit = features.unit_rows();
    let x = unit.to_tensor(device)?;
    let x_sq: Vec<f32> = (0..n)
        .map(|i| unit.row(i).iter().map(|v| v * v).sum())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pb = crate::bar(progress, (k + iters) as u64, "k-means");
    // k-means++: each new centre drawn with probability ∝ squared distance to the nearest chosen one.
    let mut centres = vec![rng.random_range(0..n)];
    let mut nearest = vec![f32::INFINITY; n];
    while centres.len() < k {
        let last = unit.select_rows(&centres[centres.len() - 1..]);
        distances(&x, &x_sq, &last, device, |i, d| {
            nearest[i] = nearest[i].min(d[0])
        })?;
        let total: f64 = nearest.iter().map(|&d| d as f64).sum();
        let next = if total > 0.0 {
            let mut t = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                t -= d as f64;
                if t <= 0.0 && d > 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.random_range(0..n)
        };
        centres.push(next);
        pb.inc(1);
    }
    let mut c = unit.select_rows(&centres);
    let mut assign = vec![usize::MAX; n];
    for _ in 0..iters {
        let mut changed = 0usize;
        distances(&x, &x_sq, &c, device, |i, d| {
            let best = (0..d.len())
                .min_by(|&a, &b| d[a].total_cmp(&d[b]))
                .expect("k ≥ 1");
            if assign[i] != best {
                assign[i] = best;
                changed += 1;
            }
        })?;
        let mut sums = vec![0f64; k * unit.dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a] += 1;
            for (s, &v) in sums[a * unit.dim..(a + 1) * unit.dim]
                .iter_mut()
                .zip(unit.row(i))
            {
                *s += v as f64;
            }
        }
        for j in 0..k {
            let dst = &mut c.data[j * unit.dim..(j + 1) * unit.dim];
            if counts[j] == 0 {
                // An empty cluster restarts at a random sample.
                dst.copy_from_slice(unit.row(rng.random_range(0..n)));
            } else {
                for (d, s) in dst.iter_mut().zip(&sums[j * unit.dim..(j + 1) * unit.dim]) {
                    *d = (*s / counts[j] as f64) as f32;
                }
            }
        }
        pb.inc(1);
        if changed == 0 {
            break;
        }
    }
    pb.finish_and_clear();
    // For each centroid its nearest samples (a short list each); centroids claim samples in order of
    // closeness, each sample once; a centroid whose list ran out takes the nearest unused sample.
    const SHORT: usize = 32;
    let mut near: Vec<Vec<(f32, usize)>> = vec![Vec::new(); k];
    distances(&x, &x_sq, &c, device, |i, d| {
        for (j, &dd) in d.iter().enumerate() {
            let l = &mut near[j];
            if l.len() < SHORT || dd < l[l.len() - 1].0 {
                let at = l.partition_point(|e| e.0 <= dd);
                l.insert(at, (dd, i));
                l.truncate(SHORT);
            }
        }
    })?;
    let mut pairs: Vec<(f32, usize, usize)> = near
        .iter()
        .enumerate()
        .flat_map(|(j, l)| l.iter().map(move |&(d, i)| (d, j, i)))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut done_c = vec![false; k];
    let mut used = vec![false; n];
    let mut out = Vec::with_capacity(k);
    for (d, j, i) in pairs {
        if !done_c[j] && !used[i] {
            done_c[j] = true;
            used[i] = true;
            out.push((i, d));
        }
    }
    for (j, done) in done_c.iter().enumerate() {
        if !*done {
            let cj = c.row(j);
            let (i, d) = (0..n)
                .filter(|&i| !used[i])
                .map(|i| {
                    let d: f32 = unit
                        .row(i)
                        .iter()
                        .zip(cj)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    (i, d)
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("k ≤ n leaves an unused sample");
            used[i] = true;
            out.push((i, d));
        }
    }
    Ok(out)
}
