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

use super::warp::Lanes;
use crate::ptx::inst::{FloatMode, FloatOp, FloatUnOp};
use crate::ptx::types::FloatTy;

/// The canonical `.f32` NaN.
pub(crate) const NAN32: u32 = 0x7fff_ffff;
/// The canonical `.f64` NaN.
pub(crate) const NAN64: u64 = 0x7fff_ffff_ffff_ffff;

/// `x` with a subnormal value flushed to a zero of the same sign.
#[inline]
pub(crate) fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() { f32::from_bits(x.to_bits() & 0x8000_0000) } else { x }
}

#[inline]
fn input32(bits: u64, mode: FloatMode) -> f32 {
    let x = f32::from_bits(bits as u32);
    if mode.ftz { ftz32(x) } else { x }
}

/// The bits of an `.f32` result after `.ftz`, `.sat` and NaN canonicalisation.
#[inline]
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
    u64::from(if r.is_nan() { NAN32 } else { r.to_bits() })
}

#[inline]
fn result64(r: f64) -> u64 {
    if r.is_nan() { NAN64 } else { r.to_bits() }
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

/// The 32 lanes of `a op b`.
pub(crate) fn binary(op: FloatOp, ty: FloatTy, mode: FloatMode, a: &Lanes, b: &Lanes, out: &mut Lanes) {
    let lanes = out.iter_mut().zip(a.iter().zip(b.iter()));
    if ty == FloatTy::F64 {
        for (o, (&x, &y)) in lanes {
            let (x, y) = (f64::from_bits(x), f64::from_bits(y));
            *o = match op {
                FloatOp::Add => result64(x + y),
                FloatOp::Sub => result64(x - y),
                FloatOp::Mul => result64(x * y),
                FloatOp::Div => result64(x / y),
                FloatOp::Min => min_num(x, y).map_or(NAN64, f64::to_bits),
                FloatOp::Max => max_num(x, y).map_or(NAN64, f64::to_bits),
                FloatOp::MinNan => {
                    if x.is_nan() || y.is_nan() {
                        NAN64
                    } else {
                        min_num(x, y).map_or(NAN64, f64::to_bits)
                    }
                }
                FloatOp::MaxNan => {
                    if x.is_nan() || y.is_nan() {
                        NAN64
                    } else {
                        max_num(x, y).map_or(NAN64, f64::to_bits)
                    }
                }
            };
        }
        return;
    }
    for (o, (&x, &y)) in lanes {
        let (x, y) = (input32(x, mode), input32(y, mode));
        *o = match op {
            FloatOp::Add => result32(x + y, mode),
            FloatOp::Sub => result32(x - y, mode),
            FloatOp::Mul => result32(x * y, mode),
            FloatOp::Div => result32(x / y, mode),
            FloatOp::Min => min_num(x, y).map_or(u64::from(NAN32), |r| u64::from(r.to_bits())),
            FloatOp::Max => max_num(x, y).map_or(u64::from(NAN32), |r| u64::from(r.to_bits())),
            FloatOp::MinNan if x.is_nan() || y.is_nan() => u64::from(NAN32),
            FloatOp::MaxNan if x.is_nan() || y.is_nan() => u64::from(NAN32),
            FloatOp::MinNan => min_num(x, y).map_or(u64::from(NAN32), |r| u64::from(r.to_bits())),
            FloatOp::MaxNan => max_num(x, y).map_or(u64::from(NAN32), |r| u64::from(r.to_bits())),
        };
    }
}

/// The 32 lanes of `fma a, b, c`: `a * b + c` with one rounding.
pub(crate) fn fma(ty: FloatTy, mode: FloatMode, a: &Lanes, b: &Lanes, c: &Lanes, out: &mut Lanes) {
    for (o, ((&x, &y), &z)) in out.iter_mut().zip(a.iter().zip(b.iter()).zip(c.iter())) {
        *o = if ty == FloatTy::F64 {
            result64(f64::from_bits(x).mul_add(f64::from_bits(y), f64::from_bits(z)))
        } else {
            result32(input32(x, mode).mul_add(input32(y, mode), input32(z, mode)), mode)
        };
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
pub(crate) fn unary(op: FloatUnOp, ty: FloatTy, mode: FloatMode, a: &Lanes, out: &mut Lanes) {
    for (o, &x) in out.iter_mut().zip(a.iter()) {
        *o = if ty == FloatTy::F64 {
            let v = f64::from_bits(x);
            match op {
                FloatUnOp::Abs if v.is_nan() => x,
                FloatUnOp::Abs => x & !(1 << 63),
                FloatUnOp::Neg if v.is_nan() => x,
                FloatUnOp::Neg => x ^ (1 << 63),
                FloatUnOp::Rcp => result64(1.0 / v),
                FloatUnOp::Sqrt => result64(v.sqrt()),
                FloatUnOp::RcpApproxFtzF64 => rcp_approx_ftz_f64(x),
            }
        } else {
            let v = input32(x, mode);
            match op {
                FloatUnOp::Abs => result32(v.abs(), mode),
                FloatUnOp::Neg => result32(-v, mode),
                FloatUnOp::Rcp => result32(1.0 / v, mode),
                FloatUnOp::Sqrt => result32(v.sqrt(), mode),
                // The decoder takes `rcp.approx.ftz` for `.f64` only.
                FloatUnOp::RcpApproxFtzF64 => u64::from(NAN32),
            }
        };
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
