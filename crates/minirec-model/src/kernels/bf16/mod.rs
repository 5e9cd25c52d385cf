//! Products with frozen weights stored in bf16, on the CPU's bf16 units: Intel's AMX tiles (`tdpbf16ps`,
//! ≈ 2.3 TFLOP/s a core on Sapphire Rapids against ≈ 0.13 for f32 AVX-512 FMAs) or, without AMX,
//! AVX512_BF16's `vdpbf16ps` (pairs of bf16 products into f32 lanes; on AMD Zen 4 about twice its f32 rate).
//!
//! `y [m, n] = x [m, k] · wᵀ` for a frozen weight `w [n, k]`: the weight is packed once (`PackedBf16::new`),
//! the f32 input is rounded to bf16 (nearest even) per product, and every sum is kept in f32. Where the CPU
//! or the OS offers neither, nothing is packed and the caller keeps the f32 product. (On the Intel Xeon
//! measured, `vdpbf16ps` was slower than f32 FMAs — 56 against 80 GFLOP/s a core — but AMX is there.)

use std::sync::OnceLock;

use rayon::prelude::*;

mod amx;
mod avx512;

/// Output columns per packed block: two 16-column tiles or zmm vectors.
const NR: usize = 32;
/// Input rows per AMX micro-tile: two 16-row tiles.
const AMX_MR: usize = 32;
/// Input pairs per tile row (64 bytes); the packed weight's pairs are a multiple of it.
const KT: usize = 16;

/// The bf16 kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Amx,
    Avx512Bf16,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX-BF16",
            Kernel::Avx512Bf16 => "AVX512_BF16",
        }
    }

    /// Input rows per micro-tile.
    fn mr(self) -> usize {
        match self {
            Kernel::Amx => AMX_MR,
            Kernel::Avx512Bf16 => avx512::MR,
        }
    }
}

/// The fastest bf16 kernel this CPU and OS run (asks the OS for the AMX tile state once per process).
pub fn kernel() -> Option<Kernel> {
    static KERNEL: OnceLock<Option<Kernel>> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        if amx::enable() {
            Some(Kernel::Amx)
        } else if avx512::enable() {
            Some(Kernel::Avx512Bf16)
        } else {
            None
        }
    })
}

static WANTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks inference (evaluation, recommendation, benchmarks) to hold frozen weights in bf16 where the CPU
/// runs a bf16 kernel (the CLI's `--bf16-weights`). Training never does: its passes stay f32.
pub fn set_wanted(on: bool) {
    WANTED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `set_wanted` asked for bf16 copies (whatever the CPU).
pub fn asked() -> bool {
    WANTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether inference should pack its frozen weights now: asked for and available.
pub fn wanted() -> bool {
    WANTED.load(std::sync::atomic::Ordering::Relaxed) && available()
}

/// Whether this CPU and OS run a bf16 kernel.
pub fn available() -> bool {
    kernel().is_some()
}

/// f32 → bf16 bits, rounded to nearest even (NaN kept a quiet NaN), as `vcvtne2ps2bf16` does.
#[inline]
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

/// A frozen weight [n, k] in bf16, laid out as both kernels read it (AMX B tiles, zmm rows): for each block
/// of `NR` output columns and each pair of inputs (2p, 2p + 1), the block's `NR` pairs side by side (zero
/// past n and k).
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

    /// Packs the transpose of a row-major `src [r, c]`, i.e. the weight `[c, r]`, reading `src` in place:
    /// for mixed-precision training, whose backward multiplies by `wᵀ` and by the input's transpose.
    pub fn new_transposed(src: &[f32], r: usize, c: usize) -> Option<Self> {
        assert_eq!(src.len(), r * c, "matrix of {} for [{r}, {c}]", src.len());
        if !available() || r == 0 || c == 0 {
            return None;
        }
        let (n, k) = (c, r);
        let kp = k.div_ceil(2).div_ceil(KT) * KT;
        let mut data = vec![0u32; n.div_ceil(NR) * kp * NR];
        data.par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(blk, out)| {
                let cols = blk * NR..(blk * NR + NR).min(n);
                for p in 0..k.div_ceil(2) {
                    let lo = &src[2 * p * c..][..c];
                    let hi = (2 * p + 1 < k).then(|| &src[(2 * p + 1) * c..][..c]);
                    for (cc, col) in cols.clone().enumerate() {
                        let h = hi.map_or(0, |h| to_bf16(h[col]) as u32);
                        out[p * NR + cc] = to_bf16(lo[col]) as u32 | (h << 16);
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
        let kernel = kernel().expect("a pack exists only where a bf16 kernel runs");
        let mr = kernel.mr();
        let rows = m.div_ceil(mr) * mr;
        let a = pack_rows(x, m, rows, self.k, self.kp, kernel);
        let blocks = self.n.div_ceil(NR);
        let ld = blocks * NR;
        // Every tile overwrites its 32 columns of `mr` rows, and the tiles cover rows × ld: no zeroing pass
        // (at the LM head it was a 63 MB memset every decode step).
        let mut y: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(rows * ld);
        // SAFETY: MaybeUninit needs no initialisation; the capacity was just reserved.
        unsafe { y.set_len(rows * ld) };
        // Rows per task: a chunk of packed input that stays in L2 (≈ 256 KB) while the column blocks pass.
        let chunk = ((256 * 1024) / (self.kp * 4)).clamp(mr, 512) / mr * mr;
        let tasks: Vec<(usize, usize)> = (0..rows.div_ceil(chunk))
            .flat_map(|r| (0..blocks).map(move |b| (r, b)))
            .collect();
        let out = SyncPtr(y.as_mut_ptr().cast::<f32>());
        tasks.par_iter().for_each(|&(rc, blk)| {
            let span = rc * chunk..((rc + 1) * chunk).min(rows);
            let b = &self.data[blk * self.kp * NR..(blk + 1) * self.kp * NR];
            // SAFETY: `kernel` runs here (there is a pack); each task writes the disjoint tile span × block
            // of `y` (rows × ld, outliving the loop), reading `a` (rows × kp, either layout: a row block
            // starts at r · kp) and `b` (kp × NR) in bounds.
            unsafe {
                if kernel == Kernel::Amx {
                    amx::configure();
                }
                for r in span.step_by(mr) {
                    let (a, c) = (a.as_ptr().add(r * self.kp), out.at(r * ld + blk * NR));
                    match kernel {
                        Kernel::Amx => amx::tile_32x32(a, b.as_ptr(), self.kp, c, ld),
                        Kernel::Avx512Bf16 => avx512::tile_7x32(a, b.as_ptr(), self.kp, c, ld),
                    }
                }
                if kernel == Kernel::Amx {
                    amx::release();
                }
            }
        });
        // SAFETY: the tasks above wrote every element (see the allocation); MaybeUninit<f32> has f32's layout.
        let y = unsafe {
            let mut y = std::mem::ManuallyDrop::new(y);
            Vec::from_raw_parts(y.as_mut_ptr().cast::<f32>(), y.len(), y.capacity())
        };
        compact(y, m, self.n, ld)
    }
}

/// The transpose `[c, r]` of a row-major `src [r, c]`, in blocks of 32 output rows (one pass over `src` reads
/// 32 neighbouring floats of each row).
pub fn transpose(src: &[f32], r: usize, c: usize) -> Vec<f32> {
    assert_eq!(src.len(), r * c, "matrix of {} for [{r}, {c}]", src.len());
    const B: usize = 32;
    let mut out = vec![0f32; r * c];
    if r == 0 {
        return out;
    }
    out.par_chunks_mut(B * r)
        .enumerate()
        .for_each(|(blk, rows)| {
            let j0 = blk * B;
            let width = rows.len() / r;
            for (i, row) in src.chunks(c).enumerate() {
                for (dj, &v) in row[j0..j0 + width].iter().enumerate() {
                    rows[dj * r + i] = v;
                }
            }
        });
    out
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

/// The input rows as bf16 pairs (zero past m and k), `rows × kp` in all: row-major for AMX's tile loads; for
/// AVX512_BF16, in panels of `MR` rows with each pair's rows side by side, so the micro-kernel's broadcasts
/// read one stream.
fn pack_rows(x: &[f32], m: usize, rows: usize, k: usize, kp: usize, kernel: Kernel) -> Vec<u32> {
    let mr = kernel.mr();
    let mut a = vec![0u32; rows * kp];
    a[..m.div_ceil(mr) * mr * kp]
        .par_chunks_mut(mr * kp)
        .zip(x.par_chunks(mr * k))
        .for_each(|(panel, xs)| {
            for (r, row) in xs.chunks(k).enumerate() {
                if kernel == Kernel::Amx {
                    round_pairs(row, &mut panel[r * kp..(r + 1) * kp]);
                    continue;
                }
                for p in 0..k.div_ceil(2) {
                    panel[p * mr + r] = pair(row, p);
                }
            }
        });
    a
}

/// `row`'s values as bf16 pairs into the front of `out` (the rest untouched). The AMX layout keeps a row's pairs
/// side by side, so this is one pass the compiler vectorises — on AVX-512 where the CPU has it (every CPU with
/// a bf16 kernel does): it was a quarter of a 2,048-row product's time as scalar code.
fn round_pairs(row: &[f32], out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512 F and BW (checked just above).
        return unsafe { round_pairs_avx512(row, out) };
    }
    round_pairs_portable(row, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_pairs_avx512(row: &[f32], out: &mut [u32]) {
    round_pairs_portable(row, out)
}

#[inline(always)]
fn round_pairs_portable(row: &[f32], out: &mut [u32]) {
    let full = row.len() / 2;
    for (o, two) in out[..full].iter_mut().zip(row.chunks_exact(2)) {
        *o = to_bf16(two[0]) as u32 | ((to_bf16(two[1]) as u32) << 16);
    }
    if row.len() % 2 == 1 {
        out[full] = to_bf16(row[row.len() - 1]) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::lcg;

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
            eprintln!("skipped: no bf16 kernel on this CPU");
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
    fn transposed_packs_and_transpose_match_the_plain_ones() {
        for &(r, c) in &[(1, 1), (3, 5), (33, 70), (64, 40), (7, 97)] {
            let src = lcg(r * c, 11 + r as u64);
            let t = transpose(&src, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], src[i * c + j]);
                }
            }
            if !available() {
                continue;
            }
            let packed = PackedBf16::new_transposed(&src, r, c).expect("available");
            let plain = PackedBf16::new(&t, c, r).expect("available");
            assert_eq!(packed.dims(), (c, r));
            assert!(packed.data == plain.data, "[{r}, {c}]: the packs differ");
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
