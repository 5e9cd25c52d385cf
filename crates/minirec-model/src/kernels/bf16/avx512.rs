//! The AVX512_BF16 kernel (AMD Zen 4 and later, Intel Cooper Lake): 7×32 output tiles from `vdpbf16ps`,
//! which adds a pair of bf16 products into each of 16 f32 lanes. Zen 4 runs it at about twice its f32 FMA
//! rate (BENCHMARKS.md); on Intel CPUs with AMX the tile kernel is taken instead.
//!
//! Written in inline assembly when the AVX-512 intrinsics and `target_feature`s (Rust 1.89) were past this
//! workspace's MSRV. It uses zmm0–zmm15 only, declared as clobbered through their xmm names; the rest of the
//! crate is built for baseline x86-64, so no compiled code holds values in their upper halves.

/// Input rows per micro-tile: 14 accumulators (7 rows × two 16-column halves) and the two weight vectors
/// fill the 16 registers.
pub const MR: usize = 7;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::NR;
    use std::arch::x86_64::__cpuid_count;

    /// AVX-512F with the OS's zmm state (std's detection reads XCR0), and AVX512_BF16 (CPUID 7.1 EAX bit 5).
    pub fn enable() -> bool {
        if !std::is_x86_feature_detected!("avx512f") {
            return false;
        }
        // SAFETY: CPUID is always present on x86-64 (the intrinsic is safe from Rust 1.87, unsafe at our MSRV).
        #[allow(unused_unsafe)]
        let (subleaves, eax) = unsafe { (__cpuid_count(7, 0).eax, __cpuid_count(7, 1).eax) };
        subleaves >= 1 && eax & (1 << 5) != 0
    }

    /// C[7 × 32] (row stride `ldc` floats) = A[kp pairs × 7 rows] · B[kp pairs × 32 columns], overwriting C.
    ///
    /// # Safety
    /// `enable()` returned true; `a` holds `kp` × 7 pairs (pair p of row r at `p * 7 + r`), `b` `kp` × `NR`
    /// pairs, `c` 7 rows of 32 floats `ldc` apart; `kp` ≥ 1.
    pub unsafe fn tile_7x32(a: *const u32, b: *const u32, kp: usize, c: *mut f32, ldc: usize) {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "2:",
            "vmovups zmm14, [{b}]",
            "vmovups zmm15, [{b} + 64]",
            "vdpbf16ps zmm0, zmm14, dword ptr [{a}]{{1to16}}",
            "vdpbf16ps zmm1, zmm15, dword ptr [{a}]{{1to16}}",
            "vdpbf16ps zmm2, zmm14, dword ptr [{a} + 4]{{1to16}}",
            "vdpbf16ps zmm3, zmm15, dword ptr [{a} + 4]{{1to16}}",
            "vdpbf16ps zmm4, zmm14, dword ptr [{a} + 8]{{1to16}}",
            "vdpbf16ps zmm5, zmm15, dword ptr [{a} + 8]{{1to16}}",
            "vdpbf16ps zmm6, zmm14, dword ptr [{a} + 12]{{1to16}}",
            "vdpbf16ps zmm7, zmm15, dword ptr [{a} + 12]{{1to16}}",
            "vdpbf16ps zmm8, zmm14, dword ptr [{a} + 16]{{1to16}}",
            "vdpbf16ps zmm9, zmm15, dword ptr [{a} + 16]{{1to16}}",
            "vdpbf16ps zmm10, zmm14, dword ptr [{a} + 20]{{1to16}}",
            "vdpbf16ps zmm11, zmm15, dword ptr [{a} + 20]{{1to16}}",
            "vdpbf16ps zmm12, zmm14, dword ptr [{a} + 24]{{1to16}}",
            "vdpbf16ps zmm13, zmm15, dword ptr [{a} + 24]{{1to16}}",
            "add {a}, 28",
            "add {b}, {bstep}",
            "dec {q}",
            "jnz 2b",
            "vmovups [{c}], zmm0",
            "vmovups [{c} + 64], zmm1",
            "add {c}, {sc}",
            "vmovups [{c}], zmm2",
            "vmovups [{c} + 64], zmm3",
            "add {c}, {sc}",
            "vmovups [{c}], zmm4",
            "vmovups [{c} + 64], zmm5",
            "add {c}, {sc}",
            "vmovups [{c}], zmm6",
            "vmovups [{c} + 64], zmm7",
            "add {c}, {sc}",
            "vmovups [{c}], zmm8",
            "vmovups [{c} + 64], zmm9",
            "add {c}, {sc}",
            "vmovups [{c}], zmm10",
            "vmovups [{c} + 64], zmm11",
            "add {c}, {sc}",
            "vmovups [{c}], zmm12",
            "vmovups [{c} + 64], zmm13",
            // Leaves the upper halves clean for the SSE code around it (no transition penalty).
            "vzeroupper",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            q = inout(reg) kp => _,
            c = inout(reg) c => _,
            bstep = in(reg) NR * 4,
            sc = in(reg) ldc * 4,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub fn enable() -> bool {
        false
    }
    pub unsafe fn tile_7x32(_: *const u32, _: *const u32, _: usize, _: *mut f32, _: usize) {
        unreachable!("bf16 weights are never packed off x86-64")
    }
}

pub use imp::*;
