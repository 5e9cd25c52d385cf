//! Row-major f32 matrix products on one thread, for kernels that run many small products in parallel tasks.

/// A row-major matrix view: `data[r * ld + c]`, optionally read transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub t: bool,
}

impl<'a> Mat<'a> {
    pub fn n(data: &'a [f32], ld: usize) -> Self {
        Mat { data, ld, t: false }
    }

    pub fn t(data: &'a [f32], ld: usize) -> Self {
        Mat { data, ld, t: true }
    }

    /// (row stride, column stride) of the matrix as read.
    fn strides(&self) -> (isize, isize) {
        if self.t {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }

    /// The element count the view reads for a `rows × cols` matrix (as read).
    fn needed(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        let (r, c) = if self.t { (cols, rows) } else { (rows, cols) };
        (r - 1) * self.ld + c
    }
}

/// C[m×n] (row-major, leading dimension `ldc`) = (C if `accumulate`) + alpha · A[m×k] · B[k×n].
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    a: Mat,
    b: Mat,
    alpha: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + n
            && a.data.len() >= a.needed(m, k)
            && b.data.len() >= b.needed(k, n),
        "matmul operands too short for {m}×{k}·{k}×{n}"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    // SAFETY: the assertion above bounds every index the product touches inside the three slices, and `c`
    // is borrowed mutably, so nothing else reads or writes it meanwhile.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], at: bool, b: &[f32], bt: bool) -> Vec<f32> {
        let ga = |r: usize, c: usize| if at { a[c * m + r] } else { a[r * k + c] };
        let gb = |r: usize, c: usize| if bt { b[c * k + r] } else { b[r * n + c] };
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k).map(|i| ga(r, i) * gb(i, c)).sum();
            }
        }
        out
    }

    #[test]
    fn every_transpose_combination_matches_the_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
            let am = if at { Mat::t(&a, m) } else { Mat::n(&a, k) };
            let bm = if bt { Mat::t(&b, k) } else { Mat::n(&b, n) };
            let mut c = vec![1f32; m * n];
            matmul(m, n, k, &mut c, n, am, bm, 2.0, true);
            let want = naive(m, n, k, &a, at, &b, bt);
            for (x, w) in c.iter().zip(&want) {
                assert!((x - (1.0 + 2.0 * w)).abs() < 1e-5, "{at} {bt}: {x} vs {w}");
            }
        }
    }
}
