//! Custom candle ops with a CPU forward and backward pass for the pieces of the model that candle's composed
//! ops make slow (single-threaded) or memory-hungry (every intermediate kept for backward).

pub mod attention;
pub mod bf16;
pub mod decode_attention;
pub mod exp;
pub mod frozen;
pub mod gemm;
pub mod log_sum_exp;
pub mod mixed;
pub mod rms_norm;
pub mod rope;
pub mod silu_mul;
pub mod target_logprob;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Whether the kernels serve this tensor: f32 on the CPU. Elsewhere the model runs candle's own ops.
pub fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The f32 elements of a contiguous CPU input of kernel `op`.
pub(crate) fn cpu_f32<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: f32 only on the CPU, got {:?}", s.dtype());
    };
    match l.contiguous_offsets() {
        Some((from, to)) => Ok(&data[from..to]),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

/// Runs `f` on the f32 elements of each tensor in row-major order, read in place (a tensor that is not
/// contiguous is copied once), for a backward pass.
pub(crate) fn with_host<R>(
    op: &str,
    ts: &[&Tensor],
    f: impl FnOnce(&[&[f32]]) -> R,
) -> candle_core::Result<R> {
    let owned = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(s, l)| match &**s {
            candle_core::Storage::Cpu(c) => cpu_f32(op, c, l),
            _ => candle_core::bail!("{op}: CPU tensors only"),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(f(&slices))
}

/// Reproducible values in [-1, 1) for the kernels' tests.
#[cfg(test)]
pub(crate) fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}
