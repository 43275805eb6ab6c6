//! Sums of squared fake-quantization errors for many candidate scales in one pass over the data.

use super::simd::{LANES, multiversion};
use super::walk::Reducer;
use crate::arith::{RECIPROCAL_RANGE_LIMIT, fake_quant, fake_quant_reciprocal, fake_quant_reciprocal_in_range};

/// The first quotients `|x| * inv` that [`fake_quant_reciprocal_in_range`] takes (2^24).
const IN_RANGE_QUOTIENT: f32 = 16_777_216.0;

/// Values scored against every candidate before moving on (they stay in L1).
const BLOCK: usize = 2048;

/// Values of a block of rows (channel axis innermost) scored against every candidate before
/// moving on (they stay in L2).
const ROW_BLOCK: usize = 16_384;

/// Sums `d * d` into lane `j` of `acc` for the `d(j, v)` of `x`, lane `j` taking values
/// `j, j + LANES, …`; then adds the lanes in a fixed pairwise order. The same order for every
/// instruction set, so every kernel gives the same bits.
#[inline(always)]
fn lane_sum(x: &[f32], d: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for j in 0..LANES {
            let e = d(ch[j]) as f64;
            // The square of an f32 is exact in f64: a fused multiply-add rounds the same.
            acc[j] = e.mul_add(e, acc[j]);
        }
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        let e = d(v) as f64;
        acc[j] = e.mul_add(e, acc[j]);
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0]
}

multiversion! {
    /// `sum((fq(x, s) - x)^2)` in f64, with a true division.
    fn sq_err_sum_div(x: &[f32], s: f32, qmin: f32, qmax: f32) -> f64 {
        lane_sum(x, |v| fake_quant(v, s, qmin, qmax) - v)
    }
}

multiversion! {
    /// `sum((fq(x, s) - x)^2)` in f64, with the corrected reciprocal (the same bits as the
    /// division when the integer range is within ±2^22; needs hardware FMA to be fast).
    fn sq_err_sum_fma(x: &[f32], s: f32, inv: f32, qmin: f32, qmax: f32) -> f64 {
        lane_sum(x, |v| fake_quant_reciprocal(v, s, inv, qmin, qmax) - v)
    }
}

multiversion! {
    /// [`sq_err_sum_fma`] for values with `|x| * inv <= 2^24` (see
    /// [`fake_quant_reciprocal_in_range`]): the same bits, two operations fewer per value.
    fn sq_err_sum_fma_in_range(x: &[f32], s: f32, inv: f32, qmin: f32, qmax: f32) -> f64 {
        lane_sum(x, |v| fake_quant_reciprocal_in_range(v, s, inv, qmin, qmax) - v)
    }
}

multiversion! {
    /// The largest `|v|` of `x` as bits (NaN above every finite value and infinity).
    fn abs_max_bits(x: &[f32]) -> u32 {
        x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff))
    }
}

multiversion! {
    /// For rows of `err.len()` values (value `j` in channel `j`), adds the squared error of every
    /// value under its channel's scale `s[j]` into `err[j]` (true division).
    fn sq_err_rows_div(rows: &[f32], s: &[f32], qmin: f32, qmax: f32, err: &mut [f64]) {
        let channels = err.len();
        for row in rows.chunks_exact(channels) {
            for ((e, &v), &sc) in err.iter_mut().zip(row).zip(s) {
                let d = (fake_quant(v, sc, qmin, qmax) - v) as f64;
                *e = d.mul_add(d, *e);
            }
        }
    }
}

/// [`sq_err_rows_div`] with the corrected reciprocals `inv[j] = 1 / s[j]`; `IN_RANGE`: every
/// `|v| * inv[j]` is at most 2^24 (see [`fake_quant_reciprocal_in_range`]). Four rows at a
/// time: each channel's sum and scale are loaded once per four values, and the values are still
/// added in row order (the same bits as one row at a time).
#[inline(always)]
fn rows_fma<const IN_RANGE: bool>(rows: &[f32], s: &[f32], inv: &[f32], qmin: f32, qmax: f32, err: &mut [f64]) {
    #[inline(always)]
    fn diff<const IN_RANGE: bool>(v: f32, sc: f32, iv: f32, qmin: f32, qmax: f32) -> f64 {
        let fq = if IN_RANGE {
            fake_quant_reciprocal_in_range(v, sc, iv, qmin, qmax)
        } else {
            fake_quant_reciprocal(v, sc, iv, qmin, qmax)
        };
        (fq - v) as f64
    }
    let channels = err.len();
    let mut quads = rows.chunks_exact(4 * channels);
    for quad in &mut quads {
        let (r0, rest) = quad.split_at(channels);
        let (r1, rest) = rest.split_at(channels);
        let (r2, r3) = rest.split_at(channels);
        let values = r0.iter().zip(r1).zip(r2).zip(r3);
        for ((e, (&sc, &iv)), (((&v0, &v1), &v2), &v3)) in err.iter_mut().zip(s.iter().zip(inv)).zip(values) {
            let d0 = diff::<IN_RANGE>(v0, sc, iv, qmin, qmax);
            let d1 = diff::<IN_RANGE>(v1, sc, iv, qmin, qmax);
            let d2 = diff::<IN_RANGE>(v2, sc, iv, qmin, qmax);
            let d3 = diff::<IN_RANGE>(v3, sc, iv, qmin, qmax);
            let sum = d0.mul_add(d0, *e);
            let sum = d1.mul_add(d1, sum);
            let sum = d2.mul_add(d2, sum);
            *e = d3.mul_add(d3, sum);
        }
    }
    for row in quads.remainder().chunks_exact(channels) {
        for (((e, &v), &sc), &iv) in err.iter_mut().zip(row).zip(s).zip(inv) {
            let d = diff::<IN_RANGE>(v, sc, iv, qmin, qmax);
            *e = d.mul_add(d, *e);
        }
    }
}

multiversion! {
    /// [`rows_fma`], for any values.
    fn sq_err_rows_fma(rows: &[f32], s: &[f32], inv: &[f32], qmin: f32, qmax: f32, err: &mut [f64]) {
        rows_fma::<false>(rows, s, inv, qmin, qmax, err);
    }
}

multiversion! {
    /// [`rows_fma`], for values with every `|v| * inv[j] <= 2^24`.
    fn sq_err_rows_fma_in_range(rows: &[f32], s: &[f32], inv: &[f32], qmin: f32, qmax: f32, err: &mut [f64]) {
        rows_fma::<true>(rows, s, inv, qmin, qmax, err);
    }
}

/// The scales for which the reciprocal kernels are exact: neither `1 / s` nor the products and
/// remainders of the correction leave the normal range of f32 (a subnormal scale has an infinite
/// reciprocal). Calibration scales are far inside it (they are at least `f32::EPSILON`).
const RECIPROCAL_SCALES: std::ops::RangeInclusive<f32> = 7.888_609e-31..=1.267_650_6e30; // 2^-100 ..= 2^100

/// Whether the reciprocal kernels apply: hardware FMA, an integer range within ±2^22, and every
/// scale in [`RECIPROCAL_SCALES`].
fn use_reciprocal(scales: &[f32], qmin: f32, qmax: f32) -> bool {
    let small = qmin.abs() <= RECIPROCAL_RANGE_LIMIT && qmax.abs() <= RECIPROCAL_RANGE_LIMIT;
    let small = small && scales.iter().all(|s| RECIPROCAL_SCALES.contains(s));
    #[cfg(target_arch = "x86_64")]
    let fma = std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fma = cfg!(target_feature = "fma") || cfg!(target_arch = "aarch64");
    small && fma
}

/// Squared fake-quantization errors of `k` candidate scales per channel.
pub(crate) struct FakeQuantReducer<'s> {
    /// Candidate scales, `k` rows of `channels` (candidate-major).
    scales: &'s [f32],
    /// `1 / scales`, when the reciprocal kernels apply.
    inverses: Option<Vec<f32>>,
    /// The largest of each candidate's `1 / scales` over the channels.
    max_inverse: Vec<f32>,
    /// Candidates per channel.
    k: usize,
    /// Channels.
    channels: usize,
    /// Lower clamp.
    qmin: f32,
    /// Upper clamp.
    qmax: f32,
}

impl<'s> FakeQuantReducer<'s> {
    /// The reducer for `scales` (`[k][channels]`, every scale > 0) and the integer range.
    pub(crate) fn new(scales: &'s [f32], k: usize, channels: usize, qmin: f32, qmax: f32) -> Self {
        let inverses: Option<Vec<f32>> =
            use_reciprocal(scales, qmin, qmax).then(|| scales.iter().map(|s| 1.0 / s).collect());
        let max_inverse = match &inverses {
            Some(inv) => inv.chunks(channels.max(1)).map(|c| c.iter().fold(0f32, |m, &v| m.max(v))).collect(),
            None => Vec::new(),
        };
        FakeQuantReducer { scales, inverses, max_inverse, k, channels, qmin, qmax }
    }

    /// The error sum of one channel's values `x`, whose largest `|v|` is `amax`, under candidate
    /// `kk`.
    fn sum(&self, x: &[f32], amax: f32, kk: usize, c: usize) -> f64 {
        let i = kk * self.channels + c;
        match &self.inverses {
            // Rounding is monotonic: every |v| * inv is at most amax * inv.
            Some(inv) if amax * inv[i] <= IN_RANGE_QUOTIENT => {
                sq_err_sum_fma_in_range(x, self.scales[i], inv[i], self.qmin, self.qmax)
            }
            Some(inv) => sq_err_sum_fma(x, self.scales[i], inv[i], self.qmin, self.qmax),
            None => sq_err_sum_div(x, self.scales[i], self.qmin, self.qmax),
        }
    }
}

/// Error sums of a range of channels, candidate-major: `err[kk * count + (c - first)]`.
pub(crate) struct FakeQuantPart {
    first: usize,
    count: usize,
    pub err: Vec<f64>,
}

impl Reducer for FakeQuantReducer<'_> {
    type Part = FakeQuantPart;

    fn part(&self, first: usize, count: usize) -> FakeQuantPart {
        FakeQuantPart { first, count, err: vec![0.0; self.k * count] }
    }

    fn part_bytes(&self, count: usize) -> usize {
        8 * self.k * count + 32
    }

    fn run(&self, part: &mut FakeQuantPart, c: usize, x: &[f32]) {
        let i = c - part.first;
        for block in x.chunks(BLOCK) {
            // The block's largest |v| decides, per candidate, whether the first quotient needs
            // its bound (NaN: always).
            let amax = f32::from_bits(abs_max_bits(block));
            for kk in 0..self.k {
                part.err[kk * part.count + i] += self.sum(block, amax, kk, c);
            }
        }
    }

    fn rows(&self, part: &mut FakeQuantPart, rows: &[f32], channels: usize) {
        // A block of rows is scored against every candidate while it is in cache; each sum still
        // takes its rows in order.
        let block_rows = (ROW_BLOCK / channels.max(1)).max(4) / 4 * 4;
        for block in rows.chunks(block_rows * channels) {
            let amax = f32::from_bits(abs_max_bits(block));
            for kk in 0..self.k {
                let s = &self.scales[kk * channels..][..channels];
                let err = &mut part.err[kk * channels..][..channels];
                match &self.inverses {
                    Some(inv) => {
                        let inv = &inv[kk * channels..][..channels];
                        if amax * self.max_inverse[kk] <= IN_RANGE_QUOTIENT {
                            sq_err_rows_fma_in_range(block, s, inv, self.qmin, self.qmax, err)
                        } else {
                            sq_err_rows_fma(block, s, inv, self.qmin, self.qmax, err)
                        }
                    }
                    None => sq_err_rows_div(block, s, self.qmin, self.qmax, err),
                }
            }
        }
    }

    fn merge(&self, part: &mut FakeQuantPart, other: FakeQuantPart) {
        for (a, b) in part.err.iter_mut().zip(other.err) {
            *a += b;
        }
    }

    fn concat(&self, parts: Vec<FakeQuantPart>) -> FakeQuantPart {
        let first = parts.first().map_or(0, |p| p.first);
        let count: usize = parts.iter().map(|p| p.count).sum();
        let mut out = self.part(first, count);
        let mut offset = 0;
        for p in parts {
            for kk in 0..self.k {
                out.err[kk * count + offset..][..p.count].copy_from_slice(&p.err[kk * p.count..][..p.count]);
            }
            offset += p.count;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::arith::fake_quant_reciprocal;

    use super::*;
    use crate::arith::fake_quant_sq_err;

    #[test]
    fn sums_match_a_plain_loop() {
        let x: Vec<f32> = (0..5003).map(|i| ((i as f32) * 0.71).cos() * 2.5).collect();
        for s in [0.01f32, 0.02, 0.5, f32::EPSILON, 3.7e5] {
            let want: f64 = x.iter().map(|&v| fake_quant_sq_err(v, s, -128.0, 127.0)).sum();
            let got = sq_err_sum_div(&x, s, -128.0, 127.0);
            assert!((got - want).abs() <= 1e-12 * want, "s {s}: {got} vs {want}");
            assert_eq!(sq_err_sum_fma(&x, s, 1.0 / s, -128.0, 127.0), got, "s {s}");
        }
    }

    /// The reciprocal with one correction is the correctly rounded quotient: every mantissa of
    /// four binades against a few awkward scales, and values around half-integer quotients.
    #[test]
    fn reciprocal_fake_quant_equals_the_division() {
        let scales = [f32::EPSILON, 1.0e-3, 0.0371, 0.1, 1.0 / 3.0, 7.7, 1.0e5];
        for &s in &scales {
            let inv = 1.0 / s;
            for exp in [100u32, 120, 127, 140] {
                for m in (0..1u32 << 23).step_by(97) {
                    for x in [f32::from_bits((exp << 23) | m), -f32::from_bits((exp << 23) | m)] {
                        let (a, b) = (fake_quant(x, s, -128.0, 127.0), fake_quant_reciprocal(x, s, inv, -128.0, 127.0));
                        assert_eq!(a.to_bits(), b.to_bits(), "x {x} s {s}");
                    }
                }
            }
            for k in -140..140 {
                let x0 = (k as f32 + 0.5) * s;
                for d in -4i32..=4 {
                    let x = f32::from_bits((x0.to_bits() as i32 + d) as u32);
                    let qmax = 32767.0;
                    let (a, b) = (fake_quant(x, s, -32768.0, qmax), fake_quant_reciprocal(x, s, inv, -32768.0, qmax));
                    assert_eq!(a.to_bits(), b.to_bits(), "x {x} s {s}");
                }
            }
        }
        for x in [f32::MAX, -f32::MAX, 1e30, -1e-45, 0.0, -0.0] {
            assert_eq!(
                fake_quant_reciprocal(x, f32::EPSILON, 1.0 / f32::EPSILON, -8.0, 7.0),
                fake_quant(x, f32::EPSILON, -8.0, 7.0)
            );
        }
    }

    #[test]
    fn scales_outside_the_normal_range_use_the_division() {
        let x = [0.0f32, 1e-39, -3e-39, 0.5, -2.0, 1e30];
        for s in [1e-39f32, 1e-45, 3e35] {
            let r = FakeQuantReducer::new(std::slice::from_ref(&s), 1, 1, -128.0, 127.0);
            assert!(r.inverses.is_none(), "s {s}");
            let mut part = r.part(0, 1);
            r.run(&mut part, 0, &x);
            let want: f64 = x.iter().map(|&v| fake_quant_sq_err(v, s, -128.0, 127.0)).sum();
            assert_eq!(part.err[0], want, "s {s}");
        }
        assert!(RECIPROCAL_SCALES.contains(&2f32.powi(-100)) && RECIPROCAL_SCALES.contains(&2f32.powi(100)));
    }

    #[test]
    fn kernels_without_the_quotient_bound_give_the_same_bits_in_their_range() {
        let x: Vec<f32> = (0..4099).map(|i| ((i as f32) * 0.71).cos() * 2.5 + (i % 7) as f32 * 1e-3).collect();
        let amax = f32::from_bits(abs_max_bits(&x));
        assert_eq!(amax, x.iter().fold(0f32, |m, v| m.max(v.abs())));
        for s in [0.01f32, 0.02, 0.5, f32::EPSILON * 8.0, 3.7e5] {
            let inv = 1.0 / s;
            assert!(amax * inv <= IN_RANGE_QUOTIENT, "s {s}");
            let (a, b) =
                (sq_err_sum_fma(&x, s, inv, -128.0, 127.0), sq_err_sum_fma_in_range(&x, s, inv, -128.0, 127.0));
            assert_eq!(a.to_bits(), b.to_bits(), "s {s}");
        }
        let channels = 7;
        let s: Vec<f32> = (0..channels).map(|c| 0.01 + c as f32 * 0.003).collect();
        let inv: Vec<f32> = s.iter().map(|s| 1.0 / s).collect();
        let rows = &x[..x.len() / channels * channels];
        let (mut a, mut b) = (vec![0.0; channels], vec![0.0; channels]);
        sq_err_rows_fma(rows, &s, &inv, -128.0, 127.0, &mut a);
        sq_err_rows_fma_in_range(rows, &s, &inv, -128.0, 127.0, &mut b);
        assert_eq!(a, b);
        // A block beyond the range takes the bounded kernel: the sums stay those of the division.
        let mut wide = x.clone();
        wide[100] = 1e30;
        let r = FakeQuantReducer::new(std::slice::from_ref(&s[0]), 1, 1, -128.0, 127.0);
        let mut part = r.part(0, 1);
        r.run(&mut part, 0, &wide);
        let want = sq_err_sum_div(&wide[..BLOCK], s[0], -128.0, 127.0)
            + sq_err_sum_div(&wide[BLOCK..2 * BLOCK], s[0], -128.0, 127.0)
            + sq_err_sum_div(&wide[2 * BLOCK..], s[0], -128.0, 127.0);
        assert_eq!(part.err[0], want);
    }
}
