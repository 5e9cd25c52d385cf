//! Custom candle ops with a CPU forward and backward pass for the pieces of the model that candle's composed
//! ops make slow (single-threaded) or memory-hungry (every intermediate kept for backward).

pub mod attention;
pub mod gemm;
pub mod rms_norm;
pub mod rope;
pub mod silu_mul;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Tensor};

/// Whether the kernels serve this tensor: f32 on the CPU. Elsewhere the model runs candle's own ops.
pub fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The f32 elements of a contiguous CPU input of kernel `op`.
fn cpu_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: f32 only on the CPU, got {:?}", s.dtype());
    };
    match l.contiguous_offsets() {
        Some((from, to)) => Ok(&data[from..to]),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

/// A tensor's elements in row-major order, for a backward pass.
fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}
