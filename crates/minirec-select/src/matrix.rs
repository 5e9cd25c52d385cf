//! A dense row-major f32 matrix on the host: one row of features per sample.

use candle_core::{Device, Tensor};

use crate::error::{Result, SelectError};

#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, dim: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * dim {
            return Err(SelectError::Invalid(format!(
                "matrix of {rows}×{dim} given {} values",
                data.len()
            )));
        }
        Ok(Matrix { rows, dim, data })
    }

    pub fn zeros(rows: usize, dim: usize) -> Self {
        Matrix {
            rows,
            dim,
            data: vec![0.0; rows * dim],
        }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (rows, dim) = t.dims2()?;
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        Matrix::new(rows, dim, data)
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.rows, self.dim),
            device,
        )?)
    }

    /// Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine.
    pub fn unit_rows(&self) -> Self {
        let mut out = self.clone();
        for r in out.data.chunks_mut(self.dim.max(1)) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                r.iter_mut().for_each(|x| *x /= n);
            }
        }
        out
    }

    /// The mean row.
    pub fn mean_row(&self) -> Vec<f32> {
        let mut m = vec![0f64; self.dim];
        for r in self.data.chunks(self.dim.max(1)) {
            m.iter_mut().zip(r).for_each(|(a, &b)| *a += b as f64);
        }
        m.iter()
            .map(|&x| (x / self.rows.max(1) as f64) as f32)
            .collect()
    }

    /// Rows `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: idx.len(),
            dim: self.dim,
            data,
        }
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa.sqrt() * bb.sqrt())) as f32
    }
}

/// Min-max scaling to [0, 1] (Eq. 7); a constant vector maps to all ones, so it neither helps nor hurts.
pub fn min_max(x: &[f32]) -> Vec<f32> {
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![1.0; x.len()];
    }
    x.iter().map(|&v| (v - lo) / (hi - lo)).collect()
}
