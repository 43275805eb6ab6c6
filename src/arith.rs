//! The f32 arithmetic of SPEC §2, in one place: the moving average, the scale formula and fake
//! quantization. Every engine and every observer goes through these functions (the CPU loops
//! inline [`fake_quant`]; the CUDA kernels mirror it with non-contracted intrinsics).

use crate::dtype::QuantRange;

/// The smallest scale, f32 machine epsilon `2^-23`.
pub const EPS: f32 = f32::EPSILON;

/// One step of the moving average, rounded to f32 at every operation:
/// `old + c * (cur - old)`.
///
/// **Deviation** (overflow only): when the f32 formula overflows — `cur - old` when the two lie
/// more than `f32::MAX` apart (e.g. `-3e38` and `3e38`), or the final sum rounding past
/// `f32::MAX` next to it — it gives ±infinity, or NaN for `c = 0`, and would turn the observer's
/// state non-finite for good. There the step is computed in f64 and rounded once to f32, which
/// gives a finite value between `old` and `cur`. Every other input gives exactly the f32 result
/// of SPEC §2.
///
/// ```
/// use qcalib::arith::moving_average;
/// assert_eq!(moving_average(1.0, 3.0, 0.5), 2.0);
/// assert_eq!(moving_average(1.0, 3.0, 0.0), 1.0); // 0 freezes the first batch
/// assert_eq!(moving_average(1.0, 3.0, 1.0), 3.0); // 1 keeps only the last
/// assert_eq!(moving_average(-3e38, 3e38, 0.0), -3e38); // no overflow into inf or NaN
/// assert_eq!(moving_average(-3e38, 3e38, 1.0), 3e38);
/// assert_eq!(moving_average(-9.910844e37, -f32::MAX, 1.0), -f32::MAX); // f32 rounds past MAX
/// ```
#[inline]
pub fn moving_average(old: f32, cur: f32, c: f32) -> f32 {
    let d = cur - old;
    let t = c * d;
    let new = old + t;
    if new.is_finite() || !(old.is_finite() && cur.is_finite()) {
        return new;
    }
    (old as f64 + c as f64 * (cur as f64 - old as f64)) as f32
}

/// The symmetric scale of the range `(min_val, max_val)`:
/// `max(max(-min_val, max_val, 0) / divisor, EPS)` with `divisor = (quant_max - quant_min) / 2`.
///
/// ```
/// use qcalib::{arith::scale, QuantDType, QuantRange};
/// let r = QuantRange::resolve(QuantDType::QInt8, None, None).unwrap();
/// assert_eq!(scale(-2.0, 1.0, &r), 2.0 / 127.5);
/// assert_eq!(scale(0.0, 0.0, &r), qcalib::arith::EPS);
/// ```
#[inline]
pub fn scale(min_val: f32, max_val: f32, range: &QuantRange) -> f32 {
    scale_with_divisor(min_val, max_val, range.scale_divisor())
}

/// [`scale`] with the divisor already computed (for loops over many candidates).
#[inline]
pub fn scale_with_divisor(min_val: f32, max_val: f32, divisor: f32) -> f32 {
    let amax = max3(-min_val, max_val, 0.0);
    let s = amax / divisor;
    if s > EPS { s } else { EPS }
}

#[inline]
fn max3(a: f32, b: f32, c: f32) -> f32 {
    let m = if a > b { a } else { b };
    if m > c { m } else { c }
}

/// Fake quantization of one value: `clamp(round_half_to_even(x / s), qmin, qmax) * s`, in f32.
///
/// ```
/// use qcalib::arith::fake_quant;
/// assert_eq!(fake_quant(0.25, 0.5, -128.0, 127.0), 0.0); // 0.5 rounds to even 0
/// assert_eq!(fake_quant(0.75, 0.5, -128.0, 127.0), 1.0); // 1.5 rounds to even 2
/// assert_eq!(fake_quant(1000.0, 1.0, -128.0, 127.0), 127.0);
/// ```
#[inline(always)]
pub fn fake_quant(x: f32, s: f32, qmin: f32, qmax: f32) -> f32 {
    let q = (x / s).round_ties_even();
    let q = if q < qmin { qmin } else { q };
    let q = if q > qmax { qmax } else { q };
    q * s
}

/// The largest `|quant_min|`/`|quant_max|` for which [`fake_quant_reciprocal`] equals
/// [`fake_quant`]: beyond it, quotients clamp to the range either way.
pub const RECIPROCAL_RANGE_LIMIT: f32 = 4_194_304.0; // 2^22

/// [`fake_quant`] without a division: `inv = 1 / s` (rounded to f32) gives `x * inv`, and one
/// fused multiply-add on the exact remainder `x - q * s` corrects it to the correctly rounded
/// quotient `x / s` (Markstein's correction). Bit for bit equal to [`fake_quant`] when
/// `|qmin|, |qmax| <= 2^22`; several times faster on CPUs with FMA, where division is slow.
/// On CPUs without FMA `mul_add` is emulated in software: use [`fake_quant`] there.
///
/// ```
/// use qcalib::arith::{fake_quant, fake_quant_reciprocal};
/// let s = 0.037f32;
/// for x in [0.0f32, 0.0185, -0.0555, 1.0, 4.7, -1e30] {
///     assert_eq!(fake_quant_reciprocal(x, s, 1.0 / s, -128.0, 127.0), fake_quant(x, s, -128.0, 127.0));
/// }
/// ```
#[inline(always)]
pub fn fake_quant_reciprocal(x: f32, s: f32, inv: f32, qmin: f32, qmax: f32) -> f32 {
    // Bound the first guess so that the remainder stays finite for huge |x|: quotients beyond
    // 2^24 clamp to the integer range anyway.
    const BOUND: f32 = 16_777_216.0; // 2^24
    let q0 = x * inv;
    let q0 = if q0 < -BOUND { -BOUND } else { q0 };
    let q0 = if q0 > BOUND { BOUND } else { q0 };
    corrected_fake_quant(x, q0, s, inv, qmin, qmax)
}

/// [`fake_quant_reciprocal`] for a value whose first quotient `x * inv` is known to be within
/// ±2^24, where the bound that function puts on it changes nothing (two operations fewer).
#[inline(always)]
pub(crate) fn fake_quant_reciprocal_in_range(x: f32, s: f32, inv: f32, qmin: f32, qmax: f32) -> f32 {
    corrected_fake_quant(x, x * inv, s, inv, qmin, qmax)
}

/// The fake-quantized `x` from a first quotient `q0` within one ulp of `x / s`: Markstein's
/// correction with the exact remainder, then rounding, clamping and scaling.
#[inline(always)]
fn corrected_fake_quant(x: f32, q0: f32, s: f32, inv: f32, qmin: f32, qmax: f32) -> f32 {
    let r = (-q0).mul_add(s, x);
    let q = r.mul_add(inv, q0).round_ties_even();
    let q = if q < qmin { qmin } else { q };
    let q = if q > qmax { qmax } else { q };
    q * s
}

/// The squared fake-quantization error of one value, in f64 (the difference is taken in f32,
/// its square is exact in f64).
#[inline(always)]
pub fn fake_quant_sq_err(x: f32, s: f32, qmin: f32, qmax: f32) -> f64 {
    let d = (fake_quant(x, s, qmin, qmax) - x) as f64;
    d * d
}
