//! Mixed-precision products of trainable weights: `x · wᵀ` and both of its gradients on the bf16 kernel
//! (AMX or AVX512_BF16), with the operands rounded to bf16 per product and every sum, the weights and the
//! optimiser kept in f32 — what PyTorch's CPU autocast does. On these CPUs the bf16 units multiply 2–3×
//! faster than f32 FMAs (BENCHMARKS.md), and the products are most of a full fine-tuning step.
//!
//! The weight changes every optimiser step, so each pass packs it anew: O(n·k) work against the product's
//! O(rows·n·k).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::bf16::{transpose, PackedBf16};
use crate::profile::phase;

/// Where the phases of `MINIREC_PROFILE` are timed (the op runs on the CPU only).
const CPU: candle_core::Device = candle_core::Device::Cpu;

/// Whether the mixed product can take `x · wᵀ`: f32 matrices on the CPU and a bf16 kernel on it.
pub fn serves(x: &Tensor, w: &Tensor) -> bool {
    super::supported(x)
        && super::supported(w)
        && x.rank() == 2
        && w.rank() == 2
        && super::bf16::available()
}

/// `x [rows, in] · wᵀ` for `w [out, in]` on the bf16 kernel, differentiable in both.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, MixedLinear)
}

struct MixedLinear;

/// A pack of the bf16 kernel, which the forward pass has shown this CPU runs.
fn packed(p: Option<PackedBf16>) -> PackedBf16 {
    p.expect("the mixed product runs only where a bf16 kernel does")
}

impl CustomOp2 for MixedLinear {
    fn name(&self) -> &'static str {
        "minirec-mixed-bf16-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, k) = l1.shape().dims2()?;
        let (n, wk) = l2.shape().dims2()?;
        if wk != k {
            candle_core::bail!(
                "mixed linear: input {:?} for weight {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let x = super::cpu_f32("mixed linear", s1, l1)?;
        let w = super::cpu_f32("mixed linear", s2, l2)?;
        let pack = {
            let _p = phase("mixed: pack w", &CPU);
            PackedBf16::new(w, n, k)
        };
        let Some(pack) = pack else {
            candle_core::bail!("mixed linear: this CPU has no bf16 kernel");
        };
        let _p = phase("mixed: x·wᵀ", &CPU);
        Ok((
            CpuStorage::F32(pack.matmul_t(x, rows)),
            Shape::from((rows, n)),
        ))
    }

    /// `g · w` for the input and `gᵀ · x` for the weight, both on the kernel.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let ((rows, k), (n, _)) = (x.dims2()?, w.dims2()?);
        let dev = x.device();
        let gx = match x.track_op() {
            false => None,
            true => {
                let v = super::with_host("mixed linear backward", &[g, w], |s| {
                    let wt = {
                        let _p = phase("mixed: pack wᵀ", &CPU);
                        packed(PackedBf16::new_transposed(s[1], n, k))
                    };
                    let _p = phase("mixed: g·w", &CPU);
                    wt.matmul_t(s[0], rows)
                })?;
                Some(Tensor::from_vec(v, (rows, k), dev)?)
            }
        };
        let gw = match (w.track_op(), rows) {
            (false, _) => None,
            (true, 0) => Some(w.zeros_like()?),
            (true, _) => {
                let v = super::with_host("mixed linear backward", &[g, x], |s| {
                    let (gt, xt) = {
                        let _p = phase("mixed: gᵀ, pack xᵀ", &CPU);
                        let gt = transpose(s[0], rows, n);
                        (gt, packed(PackedBf16::new_transposed(s[1], rows, k)))
                    };
                    let _p = phase("mixed: gᵀ·x", &CPU);
                    xt.matmul_t(&gt, n)
                })?;
                Some(Tensor::from_vec(v, (n, k), dev)?)
            }
        };
        Ok((gx, gw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::lcg;
    use candle_core::{Device, Var};

    /// Largest |a − b| over the largest |b|.
    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let m = b.abs().unwrap().max_all().unwrap();
        (d.to_scalar::<f32>().unwrap()) / m.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn values_and_both_gradients_match_the_f32_product() {
        if !crate::kernels::bf16::available() {
            eprintln!("skipped: no bf16 kernel on this CPU");
            return;
        }
        let dev = Device::Cpu;
        for &(rows, k, n) in &[(1, 1, 1), (5, 7, 3), (37, 65, 50), (130, 96, 33)] {
            let x = Var::from_vec(lcg(rows * k, 3 + rows as u64), (rows, k), &dev).unwrap();
            let w = Var::from_vec(lcg(n * k, 5 + n as u64), (n, k), &dev).unwrap();
            // A loss that weights every output differently, so each gradient element is tested.
            let r = Tensor::from_vec(lcg(rows * n, 9), (rows, n), &dev).unwrap();
            let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
            let y32 = x.matmul(&w.t().unwrap()).unwrap();
            let ymx = linear(&x, &w).unwrap();
            assert!(rel(&ymx, &y32) < 2e-2, "{rows}×{k}·{n}: forward");
            let (g32, gmx) = (
                loss(&y32).backward().unwrap(),
                loss(&ymx).backward().unwrap(),
            );
            for (name, v) in [("x", &x), ("w", &w)] {
                let (a, b) = (gmx.get(v).unwrap(), g32.get(v).unwrap());
                assert_eq!(a.dims(), b.dims());
                assert!(rel(a, b) < 2e-2, "{rows}×{k}·{n}: gradient of {name}");
            }
        }
    }

    #[test]
    fn a_frozen_input_gets_no_gradient_and_empty_batches_pass() {
        if !crate::kernels::bf16::available() {
            return;
        }
        let dev = Device::Cpu;
        let x = Tensor::from_vec(lcg(12, 1), (3, 4), &dev).unwrap();
        let w = Var::from_vec(lcg(8, 2), (2, 4), &dev).unwrap();
        let g = linear(&x, &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_none() && g.get(&w).is_some());
        let none = Tensor::zeros((0, 4), candle_core::DType::F32, &dev).unwrap();
        let y = linear(&none, &w).unwrap();
        assert_eq!(y.dims(), &[0, 2]);
    }
}
