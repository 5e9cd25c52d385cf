//! Products with frozen weights stored in bf16, on Intel's AMX tile units (`tdpbf16ps`: a 16×32 bf16 tile
//! times a 32×16 one into 16×16 f32 sums in one instruction; ≈ 2.3 TFLOP/s a core on this kind of CPU,
//! against ≈ 0.13 for f32 AVX-512 FMAs).
//!
//! `y [m, n] = x [m, k] · wᵀ` for a frozen weight `w [n, k]`: the weight is packed once (`PackedBf16::new`),
//! the f32 input is rounded to bf16 (nearest even) per product, and every sum is kept in f32. Where the CPU
//! or the OS offers no AMX nothing is packed and the caller keeps the f32 product. (AVX512_BF16's
//! `vdpbf16ps` alone measured slower than f32 FMAs on this CPU — 56 against 80 GFLOP/s a core — so it is no
//! fallback; BENCHMARKS.md.)

use std::sync::OnceLock;

use rayon::prelude::*;

/// Output columns per packed block: two 16-column tiles.
const NR: usize = 32;
/// Input rows per micro-tile: two 16-row tiles.
const MR: usize = 32;
/// Input pairs per tile row (64 bytes).
const KT: usize = 16;

static WANTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks inference (evaluation, recommendation, benchmarks) to hold frozen weights in bf16 where the CPU
/// runs the AMX kernel (the CLI's `--bf16-weights`). Training never does: its passes stay f32.
pub fn set_wanted(on: bool) {
    WANTED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether inference should pack its frozen weights now: asked for and available.
pub fn wanted() -> bool {
    WANTED.load(std::sync::atomic::Ordering::Relaxed) && available()
}

/// Whether this CPU and OS run the AMX kernel (asks the OS for the tile state once per process).
pub fn available() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(amx::enable)
}

/// f32 → bf16 bits, rounded to nearest even (NaN kept a quiet NaN), as `vcvtne2ps2bf16` does.
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A pair of inputs (2p, 2p + 1) of `row` as one u32 (the even one low), zero past its end.
fn pair(row: &[f32], p: usize) -> u32 {
    let lo = row.get(2 * p).map_or(0, |&v| to_bf16(v) as u32);
    let hi = row.get(2 * p + 1).map_or(0, |&v| to_bf16(v) as u32);
    lo | (hi << 16)
}

/// A frozen weight [n, k] in bf16, laid out as AMX's B tiles: for each block of `NR` output columns and each
/// pair of inputs (2p, 2p + 1), the block's `NR` pairs side by side (zero past n and k).
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// Input pairs, rounded up to whole tiles.
    kp: usize,
    data: Vec<u32>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBf16 [{}, {}]", self.n, self.k)
    }
}

impl PackedBf16 {
    /// Packs a row-major weight [n, k]; `None` where the CPU cannot run the kernel.
    pub fn new(w: &[f32], n: usize, k: usize) -> Option<Self> {
        assert_eq!(w.len(), n * k, "weight of {} for [{n}, {k}]", w.len());
        if !available() || n == 0 || k == 0 {
            return None;
        }
        let kp = k.div_ceil(2).div_ceil(KT) * KT;
        let mut data = vec![0u32; n.div_ceil(NR) * kp * NR];
        data.par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(blk, out)| {
                for c in 0..NR.min(n - blk * NR) {
                    let row = &w[(blk * NR + c) * k..(blk * NR + c + 1) * k];
                    for p in 0..k.div_ceil(2) {
                        out[p * NR + c] = pair(row, p);
                    }
                }
            });
        Some(PackedBf16 { n, k, kp, data })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// `x [m, k] · wᵀ` → [m, n], row-major, multithreaded over column blocks and row chunks.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(
            x.len(),
            m * self.k,
            "input of {} for {m} × {}",
            x.len(),
            self.k
        );
        if m == 0 {
            return Vec::new();
        }
        let rows = m.div_ceil(MR) * MR;
        let a = pack_rows(x, m, rows, self.k, self.kp);
        let blocks = self.n.div_ceil(NR);
        let ld = blocks * NR;
        let mut y = vec![0f32; rows * ld];
        // Rows per task: a chunk of packed input that stays in L2 (≈ 256 KB) while the column blocks pass.
        let chunk = ((256 * 1024) / (self.kp * 4)).clamp(MR, 512) / MR * MR;
        let tasks: Vec<(usize, usize)> = (0..rows.div_ceil(chunk))
            .flat_map(|r| (0..blocks).map(move |b| (r, b)))
            .collect();
        let out = SyncPtr(y.as_mut_ptr());
        tasks.par_iter().for_each(|&(rc, blk)| {
            let span = rc * chunk..((rc + 1) * chunk).min(rows);
            let b = &self.data[blk * self.kp * NR..(blk + 1) * self.kp * NR];
            // SAFETY: `available()` held (there is a pack); each task writes the disjoint tile span × block
            // of `y` (rows × ld, outliving the loop), reading `a` (rows × kp) and `b` (kp × NR) in bounds.
            unsafe {
                amx::configure();
                for r in span.step_by(MR) {
                    amx::tile_32x32(
                        a.as_ptr().add(r * self.kp),
                        b.as_ptr(),
                        self.kp,
                        out.at(r * ld + blk * NR),
                        ld,
                    );
                }
                amx::release();
            }
        });
        compact(y, m, self.n, ld)
    }
}

/// The first `m` rows and `n` columns of a row-major [≥ m, ld] buffer.
fn compact(mut y: Vec<f32>, m: usize, n: usize, ld: usize) -> Vec<f32> {
    if ld != n {
        for r in 0..m {
            y.copy_within(r * ld..r * ld + n, r * n);
        }
    }
    y.truncate(m * n);
    y
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only to hand disjoint output tiles to parallel tasks (see `matmul_t`).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// # Safety
    /// `i` is inside the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// The input rows as bf16 pairs [rows, kp] (zero past m and k).
fn pack_rows(x: &[f32], m: usize, rows: usize, k: usize, kp: usize) -> Vec<u32> {
    let mut a = vec![0u32; rows * kp];
    a[..m * kp]
        .par_chunks_mut(kp * 64)
        .zip(x.par_chunks(k * 64))
        .for_each(|(out, xs)| {
            for (o, row) in out.chunks_mut(kp).zip(xs.chunks(k)) {
                // SAFETY: no requirement beyond the slices' bounds.
                unsafe { amx::pack_row(row, o) }
            }
        });
    a
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{pair, KT, NR};
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

    /// One input row as bf16 pairs (zero past its end). Plain code the compiler vectorises: the AVX-512
    /// conversion intrinsics need Rust 1.89, past this workspace's MSRV.
    ///
    /// # Safety
    /// None beyond the signature's (kept `unsafe` like the stub off x86-64).
    pub unsafe fn pack_row(row: &[f32], out: &mut [u32]) {
        for (p, o) in out.iter_mut().enumerate().take(row.len().div_ceil(2)) {
            *o = pair(row, p);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod amx {
    pub fn enable() -> bool {
        false
    }
    pub unsafe fn configure() {}
    pub unsafe fn release() {}
    pub unsafe fn tile_32x32(_: *const u32, _: *const u32, _: usize, _: *mut f32, _: usize) {
        unreachable!("bf16 weights are never packed off x86-64")
    }
    pub unsafe fn pack_row(_: &[f32], _: &mut [u32]) {
        unreachable!("bf16 weights are never packed off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
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

    /// The product of the bf16-rounded operands, summed in f64.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let r = |v: f32| from_bf16(to_bf16(v)) as f64;
        (0..m * n)
            .map(|i| {
                let (row, col) = (i / n, i % n);
                (0..k)
                    .map(|j| r(x[row * k + j]) * r(w[col * k + j]))
                    .sum::<f64>() as f32
            })
            .collect()
    }

    #[test]
    fn rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ lies halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn products_match_the_rounded_reference_at_odd_sizes() {
        if !available() {
            eprintln!("skipped: no AMX on this CPU");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (9, 47, 33),
            (17, 49, 64),
            (8, 96, 65),
            (70, 130, 577),
        ] {
            let x = lcg(m * k, 1 + m as u64);
            let w = lcg(n * k, 7 + n as u64);
            let packed = PackedBf16::new(&w, n, k).expect("available");
            let got = packed.matmul_t(&x, m);
            let want = reference(&x, &w, m, n, k);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{m}×{k}·{n}: [{i}] {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn many_rows_span_several_chunks() {
        if !available() {
            return;
        }
        let (m, n, k) = (1100, 50, 300);
        let x = lcg(m * k, 3);
        let w = lcg(n * k, 4);
        let got = PackedBf16::new(&w, n, k).unwrap().matmul_t(&x, m);
        let want = reference(&x, &w, m, n, k);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, e)| (g - e).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "worst |Δ| {worst}");
    }
}
