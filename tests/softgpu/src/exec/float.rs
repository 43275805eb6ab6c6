//! Floating-point instructions over the 32 lanes of a warp (PTX ISA §9.7.3).
//!
//! - Arithmetic (`add sub mul div fma rcp.rn sqrt.rn`) is IEEE 754 with round-to-nearest-even,
//!   computed by the host's IEEE operations (`fma` by `mul_add`, one rounding).
//! - `.ftz` (`.f32` only) flushes subnormal inputs and results to zeros of the same sign; a
//!   result is flushed when the rounded result is subnormal.
//! - `.sat` (`.f32` only) clamps the result to [0, 1]; NaN, negative numbers and -0 give +0.
//! - A NaN result is the canonical NaN: `0x7fffffff` for `.f32` (CUDA: "the result of a
//!   single-precision floating-point operation involving one or more input NaNs is the quiet
//!   NaN of bit pattern 0x7fffffff"); `0x7fffffffffffffff` for `.f64` (the ISA does not say
//!   which NaN; any NaN is a valid result).
//! - `min`/`max`: the non-NaN operand when one is NaN, the canonical NaN when both are (any NaN
//!   with `.NaN`); -0 is below +0.
//! - `abs`/`neg`: `.f32` NaN gives the canonical NaN (the ISA: "unspecified NaN"); `.f64` NaN is
//!   passed through unchanged (the ISA).
//! - `rcp.approx.ftz.f64`: as the ISA describes it: the reciprocal of the high 32 bits of the
//!   operand (sign, exponent, 20 fraction bits), its own high 32 bits kept and the low 32 bits
//!   zero; the table of special values (subnormal or zero → infinity, infinity → zero, NaN →
//!   `0x7fffffff00000000`) and subnormal results flushed. The ISA calls it a "gross
//!   approximation" without a bound: softgpu's reciprocal of the high word is correctly rounded
//!   and then truncated to 20 fraction bits (a relative error below 2^-19 of the operand's
//!   reciprocal), so the Newton steps that follow it in qcalib's kernels do real work, as on
//!   hardware.

use super::lanes::{Lanes, Val, map1, map2, map3};
use crate::ptx::inst::{FloatMode, FloatOp, FloatUnOp};
use crate::ptx::types::FloatTy;

/// The canonical `.f32` NaN.
pub(crate) const NAN32: u32 = 0x7fff_ffff;
/// The canonical `.f64` NaN.
pub(crate) const NAN64: u64 = 0x7fff_ffff_ffff_ffff;

/// The bits of `r`, a NaN as [`NAN32`]. Tested on the bits: rustc 1.95 in release turns
/// `if r.is_nan() { NAN32 } else { r.to_bits() }` after a `sqrt` into a select of floats that
/// gives back the NaN `sqrt` made (0xffc00000 for `sqrt(-1)` on x86) instead of the constant.
#[inline(always)]
pub(crate) fn canonical32(r: f32) -> u32 {
    let bits = r.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 { NAN32 } else { bits }
}

/// The bits of `r`, a NaN as [`NAN64`] (tested on the bits, see [`canonical32`]).
#[inline(always)]
pub(crate) fn canonical64(r: f64) -> u64 {
    let bits = r.to_bits();
    if bits & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000 { NAN64 } else { bits }
}

/// `x` with a subnormal value flushed to a zero of the same sign.
#[inline]
pub(crate) fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() { f32::from_bits(x.to_bits() & 0x8000_0000) } else { x }
}

#[inline(always)]
fn input32(bits: u64, mode: FloatMode) -> f32 {
    let x = f32::from_bits(bits as u32);
    if mode.ftz { ftz32(x) } else { x }
}

/// The bits of an `.f32` result after `.ftz`, `.sat` and NaN canonicalisation.
#[inline(always)]
fn result32(r: f32, mode: FloatMode) -> u64 {
    let mut r = r;
    if mode.ftz {
        r = ftz32(r);
    }
    if mode.sat {
        r = if r > 1.0 {
            1.0
        } else if r > 0.0 {
            r
        } else {
            0.0
        };
    }
    u64::from(canonical32(r))
}

#[inline(always)]
fn result64(r: f64) -> u64 {
    canonical64(r)
}

/// PTX `min`: the non-NaN operand if one is NaN; -0 below +0.
#[inline]
fn min_num<F: Float>(x: F, y: F) -> Option<F> {
    match (x.nan(), y.nan()) {
        (true, true) => None,
        (true, false) => Some(y),
        (false, true) => Some(x),
        _ if x.lt(y) || (x.eq(y) && x.negative()) => Some(x),
        _ => Some(y),
    }
}

/// PTX `max`: the non-NaN operand if one is NaN; +0 above -0.
#[inline]
fn max_num<F: Float>(x: F, y: F) -> Option<F> {
    match (x.nan(), y.nan()) {
        (true, true) => None,
        (true, false) => Some(y),
        (false, true) => Some(x),
        _ if y.lt(x) || (x.eq(y) && !x.negative()) => Some(x),
        _ => Some(y),
    }
}

/// What `min_num`/`max_num` need of f32 and f64.
trait Float: Copy {
    fn nan(self) -> bool;
    fn lt(self, o: Self) -> bool;
    fn eq(self, o: Self) -> bool;
    fn negative(self) -> bool;
}

impl Float for f32 {
    fn nan(self) -> bool {
        self.is_nan()
    }
    fn lt(self, o: Self) -> bool {
        self < o
    }
    fn eq(self, o: Self) -> bool {
        self == o
    }
    fn negative(self) -> bool {
        self.is_sign_negative()
    }
}

impl Float for f64 {
    fn nan(self) -> bool {
        self.is_nan()
    }
    fn lt(self, o: Self) -> bool {
        self < o
    }
    fn eq(self, o: Self) -> bool {
        self == o
    }
    fn negative(self) -> bool {
        self.is_sign_negative()
    }
}

#[inline(always)]
fn f64b(x: u64) -> f64 {
    f64::from_bits(x)
}

#[inline(always)]
fn min64(x: u64, y: u64) -> u64 {
    min_num(f64b(x), f64b(y)).map_or(NAN64, f64::to_bits)
}

#[inline(always)]
fn max64(x: u64, y: u64) -> u64 {
    max_num(f64b(x), f64b(y)).map_or(NAN64, f64::to_bits)
}

#[inline(always)]
fn bits32(r: Option<f32>) -> u64 {
    u64::from(r.map_or(NAN32, f32::to_bits))
}

/// The 32 lanes of `a op b`.
pub(crate) fn binary(op: FloatOp, ty: FloatTy, mode: FloatMode, a: Val<'_>, b: Val<'_>, out: &mut Lanes) {
    if ty == FloatTy::F64 {
        let nan = |x: u64, y: u64| f64b(x).is_nan() || f64b(y).is_nan();
        match op {
            FloatOp::Add => map2(a, b, out, |x, y| result64(f64b(x) + f64b(y))),
            FloatOp::Sub => map2(a, b, out, |x, y| result64(f64b(x) - f64b(y))),
            FloatOp::Mul => map2(a, b, out, |x, y| result64(f64b(x) * f64b(y))),
            FloatOp::Div => map2(a, b, out, |x, y| result64(f64b(x) / f64b(y))),
            FloatOp::Min => map2(a, b, out, min64),
            FloatOp::Max => map2(a, b, out, max64),
            FloatOp::MinNan => map2(a, b, out, |x, y| if nan(x, y) { NAN64 } else { min64(x, y) }),
            FloatOp::MaxNan => map2(a, b, out, |x, y| if nan(x, y) { NAN64 } else { max64(x, y) }),
        }
        return;
    }
    // `.f32`: the plain forms in loops of their own, `.ftz` and `.sat` in general ones.
    let plain = FloatMode { ftz: false, sat: false };
    macro_rules! f32_ops {
        ($mode:expr) => {{
            let m = $mode;
            let (i, r) = (move |x: u64| input32(x, m), move |v: f32| result32(v, m));
            let nan = move |x: u64, y: u64| i(x).is_nan() || i(y).is_nan();
            match op {
                FloatOp::Add => map2(a, b, out, |x, y| r(i(x) + i(y))),
                FloatOp::Sub => map2(a, b, out, |x, y| r(i(x) - i(y))),
                FloatOp::Mul => map2(a, b, out, |x, y| r(i(x) * i(y))),
                FloatOp::Div => map2(a, b, out, |x, y| r(i(x) / i(y))),
                FloatOp::Min => map2(a, b, out, |x, y| bits32(min_num(i(x), i(y)))),
                FloatOp::Max => map2(a, b, out, |x, y| bits32(max_num(i(x), i(y)))),
                FloatOp::MinNan => {
                    map2(a, b, out, |x, y| if nan(x, y) { u64::from(NAN32) } else { bits32(min_num(i(x), i(y))) })
                }
                FloatOp::MaxNan => {
                    map2(a, b, out, |x, y| if nan(x, y) { u64::from(NAN32) } else { bits32(max_num(i(x), i(y))) })
                }
            }
        }};
    }
    if mode == plain { f32_ops!(plain) } else { f32_ops!(mode) }
}

/// The 32 lanes of `fma a, b, c`: `a * b + c` with one rounding.
pub(crate) fn fma(ty: FloatTy, mode: FloatMode, a: Val<'_>, b: Val<'_>, c: Val<'_>, out: &mut Lanes) {
    if ty == FloatTy::F64 {
        map3(a, b, c, out, |x, y, z| result64(f64b(x).mul_add(f64b(y), f64b(z))));
    } else {
        map3(a, b, c, out, |x, y, z| result32(input32(x, mode).mul_add(input32(y, mode), input32(z, mode)), mode));
    }
}

/// `rcp.approx.ftz.f64` of the bits `a` (see the module's documentation).
pub(crate) fn rcp_approx_ftz_f64(a: u64) -> u64 {
    let sign = a & (1 << 63);
    let high = a & 0xFFFF_FFFF_0000_0000;
    let exp = (high >> 52) & 0x7FF;
    let frac20 = (high >> 32) & 0xF_FFFF;
    if exp == 0x7FF {
        return if frac20 != 0 { 0x7fff_ffff_0000_0000 } else { sign };
    }
    if exp == 0 {
        // Zero, or subnormal and flushed: an infinity of the same sign.
        return sign | 0x7FF0_0000_0000_0000;
    }
    let r = 1.0 / f64::from_bits(high);
    if r.is_subnormal() {
        return sign;
    }
    r.to_bits() & 0xFFFF_FFFF_0000_0000
}

/// The 32 lanes of `op a`.
pub(crate) fn unary(op: FloatUnOp, ty: FloatTy, mode: FloatMode, a: Val<'_>, out: &mut Lanes) {
    if ty == FloatTy::F64 {
        match op {
            FloatUnOp::Abs => map1(a, out, |x| if f64b(x).is_nan() { x } else { x & !(1 << 63) }),
            FloatUnOp::Neg => map1(a, out, |x| if f64b(x).is_nan() { x } else { x ^ (1 << 63) }),
            FloatUnOp::Rcp => map1(a, out, |x| result64(1.0 / f64b(x))),
            FloatUnOp::Sqrt => map1(a, out, |x| result64(f64b(x).sqrt())),
            FloatUnOp::RcpApproxFtzF64 => map1(a, out, rcp_approx_ftz_f64),
        }
        return;
    }
    let (i, r) = (|x: u64| input32(x, mode), |v: f32| result32(v, mode));
    match op {
        FloatUnOp::Abs => map1(a, out, |x| r(i(x).abs())),
        FloatUnOp::Neg => map1(a, out, |x| r(-i(x))),
        FloatUnOp::Rcp => map1(a, out, |x| r(1.0 / i(x))),
        FloatUnOp::Sqrt => map1(a, out, |x| r(i(x).sqrt())),
        // The decoder takes `rcp.approx.ftz` for `.f64` only.
        FloatUnOp::RcpApproxFtzF64 => map1(a, out, |_| u64::from(NAN32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reciprocal_approximation_follows_the_isa() {
        assert_eq!(rcp_approx_ftz_f64(0.0f64.to_bits()), f64::INFINITY.to_bits());
        assert_eq!(rcp_approx_ftz_f64((-0.0f64).to_bits()), f64::NEG_INFINITY.to_bits());
        assert_eq!(rcp_approx_ftz_f64(1e-310f64.to_bits()), f64::INFINITY.to_bits());
        assert_eq!(rcp_approx_ftz_f64(f64::INFINITY.to_bits()), 0);
        assert_eq!(rcp_approx_ftz_f64(f64::NEG_INFINITY.to_bits()), 1 << 63);
        assert_eq!(rcp_approx_ftz_f64(f64::NAN.to_bits()), 0x7fff_ffff_0000_0000);
        assert_eq!(rcp_approx_ftz_f64(f64::MAX.to_bits()), 0, "a subnormal result is flushed");
        assert_eq!(f64::from_bits(rcp_approx_ftz_f64(4.0f64.to_bits())), 0.25);
        for x in [3.0f64, 7.0, 1e10, 123456.789, 1.0 + 1e-9] {
            let r = f64::from_bits(rcp_approx_ftz_f64(x.to_bits()));
            assert_eq!(r.to_bits() & 0xFFFF_FFFF, 0);
            assert!(((r - 1.0 / x) * x).abs() < 2f64.powi(-19), "{x}: {r}");
            // Two Newton steps (kernels/common.cuh, recip) reach the correctly rounded value or
            // an ulp from it.
            let mut r = r;
            for _ in 0..2 {
                let e = (-x).mul_add(r, 1.0);
                r = r.mul_add(e, r);
            }
            assert!((r.to_bits() as i64 - (1.0 / x).to_bits() as i64).abs() <= 1, "{x}");
        }
    }
}
