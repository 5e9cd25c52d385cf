//! Principal components by orthogonal (subspace) iteration, to bring 384-dimensional title embeddings down to
//! the recommender's dimension for "*" (text-initialised) variants.

use crate::error::{BaselineError, Result};

/// Projects the rows of `x` (n × d, row-major) onto their top `k` principal components (centred), scaled so the
/// result has per-coordinate standard deviation `target_std`. Returns n × k, row-major.
pub fn pca_project(x: &[f32], n: usize, d: usize, k: usize, target_std: f32) -> Result<Vec<f32>> {
    if x.len() != n * d || k == 0 || k > d || n < 2 {
        return Err(BaselineError::Invalid(format!(
            "PCA of {n}×{d} to {k} dimensions is not possible"
        )));
    }
    let mut mean = vec![0f64; d];
    for r in x.chunks(d) {
        mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0f64; d * d];
    let mut c = vec![0f64; d];
    for r in x.chunks(d) {
        for j in 0..d {
            c[j] = r[j] as f64 - mean[j];
        }
        for i in 0..d {
            let ci = c[i];
            for j in i..d {
                cov[i * d + j] += ci * c[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            cov[i * d + j] = cov[j * d + i];
        }
    }
    // Q (d × k), column j at q[j*d..]: a fixed, deterministic start, then Q ← orth(C Q).
    let mut q: Vec<f64> = (0..k * d)
        .map(|i| (((i * 2654435761) % 1000) as f64 / 1000.0) - 0.5)
        .collect();
    orthonormalise(&mut q, d, k);
    for _ in 0..200 {
        let mut next = vec![0f64; k * d];
        for j in 0..k {
            let col = &q[j * d..(j + 1) * d];
            for i in 0..d {
                next[j * d + i] = (0..d).map(|t| cov[i * d + t] * col[t]).sum();
            }
        }
        orthonormalise(&mut next, d, k);
        let delta: f64 = next
            .iter()
            .zip(&q)
            .map(|(a, b)| (a.abs() - b.abs()).abs())
            .sum();
        q = next;
        if delta < 1e-9 * (k * d) as f64 {
            break;
        }
    }
    let mut out = vec![0f32; n * k];
    for (r, row) in x.chunks(d).enumerate() {
        for j in 0..k {
            let col = &q[j * d..(j + 1) * d];
            out[r * k + j] = (0..d)
                .map(|t| (row[t] as f64 - mean[t]) * col[t])
                .sum::<f64>() as f32;
        }
    }
    let var = out.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / out.len() as f64;
    let scale = if var > 0.0 {
        target_std as f64 / var.sqrt()
    } else {
        1.0
    };
    out.iter_mut().for_each(|v| *v = (*v as f64 * scale) as f32);
    Ok(out)
}

/// Modified Gram–Schmidt on k columns of length d.
fn orthonormalise(q: &mut [f64], d: usize, k: usize) {
    for j in 0..k {
        for p in 0..j {
            let dot: f64 = (0..d).map(|i| q[j * d + i] * q[p * d + i]).sum();
            for i in 0..d {
                q[j * d + i] -= dot * q[p * d + i];
            }
        }
        let norm: f64 = (0..d).map(|i| q[j * d + i].powi(2)).sum::<f64>().sqrt();
        if norm > 1e-300 {
            for i in 0..d {
                q[j * d + i] /= norm;
            }
        }
    }
}
