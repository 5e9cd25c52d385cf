//! Custom candle ops with a CPU forward and backward pass for the pieces of the model that candle's composed
//! ops make slow (single-threaded) or memory-hungry (every intermediate kept for backward).

pub mod attention;
pub mod gemm;
pub mod rms_norm;
pub mod rope;
pub mod silu_mul;
