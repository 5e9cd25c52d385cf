//! exp over slices of f32, eight at a time on AVX-512, with the same bits as glibc's scalar `expf` (which
//! `f32::exp` calls on Linux): the vocabulary's log Σ exp, SiLU and the attention softmaxes spent about a tenth
//! of a beam-search evaluation in scalar `expf` (BENCHMARKS.md). Identical bits matter more than a faster,
//! different approximation: every recorded ranked list must be reproducible by a redone run.
//!
//! The algorithm is glibc's (from ARM's optimized-routines, `sysdeps/ieee754/flt-32/e_expf.c`), as its
//! x86-64 FMA build computes it: in f64, k = round(x·32/ln 2) by adding and subtracting 1.5·2⁵², r the
//! remainder by one fused multiply-subtract, 2^(k/32) from a 32-entry table with k's high bits added to the
//! exponent, and a cubic in r with fused multiply-adds, rounded once to f32. Inputs where glibc leaves that
//! path (|x| ≥ 88, NaN) are left to the scalar function, so they too match.

/// exp(x) for every element, in place; bit for bit `f32::exp` wherever that is glibc's `expf`.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { avx512::exp_in_place(xs) };
    }
    xs.iter_mut().for_each(|x| *x = x.exp());
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// glibc's `__exp2f_data`: tab[i] = bits(2^(i/32)) − (i << 47), so that adding k << 47 (k's low five
    /// bits select i) gives bits(2^(k/32)).
    const TAB: [u64; 32] = [
        0x3ff0000000000000,
        0x3fefd9b0d3158574,
        0x3fefb5586cf9890f,
        0x3fef9301d0125b51,
        0x3fef72b83c7d517b,
        0x3fef54873168b9aa,
        0x3fef387a6e756238,
        0x3fef1e9df51fdee1,
        0x3fef06fe0a31b715,
        0x3feef1a7373aa9cb,
        0x3feedea64c123422,
        0x3feece086061892d,
        0x3feebfdad5362a27,
        0x3feeb42b569d4f82,
        0x3feeab07dd485429,
        0x3feea47eb03a5585,
        0x3feea09e667f3bcd,
        0x3fee9f75e8ec5f74,
        0x3feea11473eb0187,
        0x3feea589994cce13,
        0x3feeace5422aa0db,
        0x3feeb737b0cdc5e5,
        0x3feec49182a3f090,
        0x3feed503b23e255d,
        0x3feee89f995ad3ad,
        0x3feeff76f2fb5e47,
        0x3fef199bdd85529c,
        0x3fef3720dcef9069,
        0x3fef5818dcfba487,
        0x3fef7c97337b9b5f,
        0x3fefa4afa2a490da,
        0x3fefd0765b6e4540,
    ];
    /// 32 / ln 2, the rounding shift 1.5·2⁵², and the cubic's coefficients (scaled for r in units of 1/32).
    const INV_LN2_N: u64 = 0x40471547652b82fe;
    const SHIFT: u64 = 0x4338000000000000;
    const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];
    /// The top 12 bits of |x| above which glibc leaves the fast path: |x| ≥ 88, infinities, NaN.
    const TOP12_88: u32 = 0x42b;
    /// Below this (−103.97…, log 2⁻¹⁵⁰) glibc returns +0 (−∞ included): masked attention keys land here, so
    /// these lanes are answered in the vector path instead of the scalar one.
    const UNDERFLOW: u32 = 0xc2cff1b4;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_in_place(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 floats; AVX-512F is enabled for this function.
            unsafe { exp8(c) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|x| *x = x.exp());
    }

    /// # Safety
    /// `c` holds at least 8 floats; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn exp8(c: &mut [f32]) {
        debug_assert!(c.len() >= 8);
        // SAFETY: `c` holds 8 floats.
        let x = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        // Lanes glibc computes elsewhere: patched by the scalar function below.
        let top = _mm256_and_si256(
            _mm256_srli_epi32::<20>(_mm256_castps_si256(x)),
            _mm256_set1_epi32(0x7ff),
        );
        let zero = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(f32::from_bits(UNDERFLOW)));
        let outside = _mm256_cmpgt_epi32(top, _mm256_set1_epi32(TOP12_88 as i32 - 1));
        let slow = _mm256_movemask_ps(_mm256_andnot_ps(zero, _mm256_castsi256_ps(outside)));
        let xd = _mm512_cvtps_pd(x);
        let inv = _mm512_set1_pd(f64::from_bits(INV_LN2_N));
        let shift = _mm512_set1_pd(f64::from_bits(SHIFT));
        let kd_shifted = _mm512_fmadd_pd(inv, xd, shift);
        let ki = _mm512_castpd_si512(kd_shifted);
        let kd = _mm512_sub_pd(kd_shifted, shift);
        let r = _mm512_fmsub_pd(inv, xd, kd);
        let s = _mm512_castsi512_pd(_mm512_add_epi64(table(ki), _mm512_slli_epi64::<47>(ki)));
        let c0 = _mm512_set1_pd(f64::from_bits(C[0]));
        let c1 = _mm512_set1_pd(f64::from_bits(C[1]));
        let c2 = _mm512_set1_pd(f64::from_bits(C[2]));
        let z = _mm512_fmadd_pd(c0, r, c1);
        let r2 = _mm512_mul_pd(r, r);
        let y = _mm512_fmadd_pd(c2, r, _mm512_set1_pd(1.0));
        let y = _mm512_mul_pd(_mm512_fmadd_pd(z, r2, y), s);
        let mut kept = [0f32; 8];
        if slow != 0 {
            kept.copy_from_slice(&c[..8]);
        }
        // SAFETY: `c` holds 8 floats.
        let out = _mm256_andnot_ps(zero, _mm512_cvtpd_ps(y));
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), out) };
        if slow != 0 {
            for (i, (o, v)) in c.iter_mut().zip(kept).enumerate() {
                if slow & (1 << i) != 0 {
                    *o = v.exp();
                }
            }
        }
    }

    /// TAB[k mod 32] for each lane's k.
    #[target_feature(enable = "avx512f")]
    fn table(ki: __m512i) -> __m512i {
        // SAFETY: each load reads 8 of TAB's 32 entries.
        let (t0, t1, t2, t3) = unsafe {
            (
                _mm512_loadu_si512(TAB.as_ptr().cast()),
                _mm512_loadu_si512(TAB[8..].as_ptr().cast()),
                _mm512_loadu_si512(TAB[16..].as_ptr().cast()),
                _mm512_loadu_si512(TAB[24..].as_ptr().cast()),
            )
        };
        // permutex2var picks among 16 entries by the low four bits; bit 4 chooses the half.
        let low = _mm512_permutex2var_epi64(t0, ki, t1);
        let high = _mm512_permutex2var_epi64(t2, ki, t3);
        let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
        _mm512_mask_blend_epi64(upper, low, high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `stride`-th float (all signs, NaNs, infinities, subnormals), starting at `offset`.
    fn agrees_on(stride: u64, offset: u64) -> u64 {
        let mut checked = 0;
        let mut batch = Vec::with_capacity(4099);
        let mut bits = offset;
        while bits <= u32::MAX as u64 {
            batch.push(f32::from_bits(bits as u32));
            bits += stride;
            if batch.len() == 4099 || bits > u32::MAX as u64 {
                let mut got = batch.clone();
                exp_in_place(&mut got);
                for (x, y) in batch.iter().zip(&got) {
                    let want = x.exp();
                    assert!(
                        want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan()),
                        "exp({x:e}) = {want:e}, got {y:e}"
                    );
                }
                checked += batch.len() as u64;
                batch.clear();
            }
        }
        checked
    }

    /// glibc's algorithm is what this reproduces; elsewhere `f32::exp` may round differently.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn matches_the_scalar_function_bit_for_bit() {
        assert!(agrees_on(997, 13) > 4_000_000);
        let edges = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            88.0,
            88.72,
            88.73,
            -87.9,
            -88.0,
            -103.2,
            -103.3,
            -103.97,
            -104.0,
            f32::from_bits(0xc2cff1b4),
            f32::from_bits(0xc2cff1b3),
            f32::from_bits(0xc2cff1b5),
            -1e30,
            f32::MIN_POSITIVE,
            1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        // Each edge in every lane position and in the scalar tail.
        for shift in 0..9 {
            let mut xs: Vec<f32> = (0..shift).map(|i| i as f32 * 0.1).collect();
            xs.extend(edges);
            let mut got = xs.clone();
            exp_in_place(&mut got);
            for (x, y) in xs.iter().zip(&got) {
                let want = x.exp();
                assert!(
                    want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan()),
                    "exp({x})"
                );
            }
        }
    }

    /// Every one of the 2³² floats (≈ 10 s in release): `cargo test --release -p minirec-model exp -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn matches_the_scalar_function_on_every_float() {
        assert_eq!(agrees_on(1, 0), 1 << 32);
    }
}
