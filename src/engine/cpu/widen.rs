//! f16 to f32, a register at a time: the F16C / AVX-512 conversion instructions when the CPU has
//! them (the `half` crate's slice conversion otherwise). Exact, like every f16 to f32 widening.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Widens `src` into `dst` (same length).
pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            unsafe { x86::avx512(src, dst) };
            return;
        }
        if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has F16C and AVX.
            unsafe { x86::f16c(src, dst) };
            return;
        }
    }
    src.convert_to_f32_slice(dst);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_loadu_si256, _mm256_storeu_ps, _mm512_cvtph_ps,
        _mm512_storeu_ps,
    };

    use half::f16;
    use half::slice::HalfFloatSliceExt;

    /// 16 values per instruction. `src` and `dst` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(src: &[f16], dst: &mut [f32]) {
        let mut s = src.chunks_exact(16);
        let mut d = dst.chunks_exact_mut(16);
        for (s, d) in (&mut s).zip(&mut d) {
            // SAFETY: `s` holds 16 f16 (32 bytes) to read and `d` room for 16 f32 (64 bytes);
            // both intrinsics take unaligned pointers.
            unsafe {
                let h = _mm256_loadu_si256(s.as_ptr().cast::<__m256i>());
                _mm512_storeu_ps(d.as_mut_ptr(), _mm512_cvtph_ps(h));
            }
        }
        s.remainder().convert_to_f32_slice(d.into_remainder());
    }

    /// 8 values per instruction. `src` and `dst` have the same length.
    #[target_feature(enable = "f16c,avx")]
    pub(super) unsafe fn f16c(src: &[f16], dst: &mut [f32]) {
        let mut s = src.chunks_exact(8);
        let mut d = dst.chunks_exact_mut(8);
        for (s, d) in (&mut s).zip(&mut d) {
            // SAFETY: `s` holds 8 f16 (16 bytes) to read and `d` room for 8 f32 (32 bytes);
            // both intrinsics take unaligned pointers.
            unsafe {
                let h = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        s.remainder().convert_to_f32_slice(d.into_remainder());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_f16_widens_exactly() {
        let src: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut dst = vec![0f32; src.len()];
        f16_to_f32(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            let want = s.to_f32();
            assert!(want.to_bits() == d.to_bits() || (want.is_nan() && d.is_nan()), "{:#06x}", s.to_bits());
        }
        // Odd lengths and offsets.
        for len in [0usize, 1, 7, 15, 17, 33] {
            let mut dst = vec![0f32; len];
            f16_to_f32(&src[3..3 + len], &mut dst);
            assert!(dst.iter().zip(&src[3..]).all(|(d, s)| d.to_bits() == s.to_f32().to_bits()));
        }
    }
}
