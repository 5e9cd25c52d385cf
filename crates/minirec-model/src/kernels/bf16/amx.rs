//! The AMX tile kernel (Intel Sapphire Rapids and later): 32×32 output tiles from `tdpbf16ps`.

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::super::{KT, NR};
    use std::arch::x86_64::*;

    /// AMX-TILE and AMX-BF16 (CPUID 7.0 EDX bits 24, 22) and the OS's
    /// permission for the tile state (Linux: arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA).
    pub fn enable() -> bool {
        // SAFETY: CPUID is always present on x86-64 (the intrinsic is safe from Rust 1.87, unsafe at our MSRV).
        #[allow(unused_unsafe)]
        let edx = unsafe { __cpuid_count(7, 0) }.edx;
        if edx & (1 << 24) == 0 || edx & (1 << 22) == 0 {
            return false;
        }
        request_tile_state()
    }

    #[cfg(target_os = "linux")]
    fn request_tile_state() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_state() -> bool {
        false
    }

    /// Palette 1, all eight tiles 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        TileConfig(c)
    };

    /// # Safety
    /// `enable()` returned true.
    pub unsafe fn configure() {
        std::arch::asm!("ldtilecfg [{c}]", c = in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    }

    /// # Safety
    /// `enable()` returned true.
    pub unsafe fn release() {
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }

    /// C[32 × 32] (row stride `ldc` floats) = A[32 rows × kp pairs] · B[kp pairs × 32 columns] over all `kp`
    /// (a multiple of 16) pairs.
    ///
    /// # Safety
    /// Tiles configured (`configure`); `a` holds 32 rows of `kp` pairs, `b` `kp` rows of `NR` pairs, and `c`
    /// 32 rows of 32 floats, `ldc` apart.
    pub unsafe fn tile_32x32(a: *const u32, b: *const u32, kp: usize, c: *mut f32, ldc: usize) {
        let a_stride = kp * 4;
        let a_low = a.add(16 * kp);
        let c_low = c.add(16 * ldc);
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a} + {sa}]",
            "tileloadd tmm5, [{al} + {sa}]",
            "tileloadd tmm6, [{b} + {sb}]",
            "tileloadd tmm7, [{b} + {sb} + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 64",
            "add {al}, 64",
            "add {b}, {bstep}",
            "dec {q}",
            "jnz 2b",
            "tilestored [{c} + {sc}], tmm0",
            "tilestored [{c} + {sc} + 64], tmm1",
            "tilestored [{cl} + {sc}], tmm2",
            "tilestored [{cl} + {sc} + 64], tmm3",
            a = inout(reg) a => _,
            al = inout(reg) a_low => _,
            b = inout(reg) b => _,
            q = inout(reg) kp / KT => _,
            sa = in(reg) a_stride,
            sb = in(reg) NR * 4,
            bstep = in(reg) KT * NR * 4,
            c = in(reg) c,
            cl = in(reg) c_low,
            sc = in(reg) ldc * 4,
            options(nostack),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub fn enable() -> bool {
        false
    }
    pub unsafe fn configure() {}
    pub unsafe fn release() {}
    pub unsafe fn tile_32x32(_: *const u32, _: *const u32, _: usize, _: *mut f32, _: usize) {
        unreachable!("bf16 weights are never packed off x86-64")
    }
}

pub use imp::*;
