//! `cvt` (PTX ISA §9.7.9.21) over the 32 lanes of a warp.
//!
//! - Integer to integer: the source is sign- or zero-extended by its type, then truncated to the
//!   destination (or clamped to its range with `.sat`).
//! - Float to float: exact when widening; rounded by `.rn .rz .rm .rp` when narrowing; NaN gives
//!   the destination's canonical NaN; `.ftz` flushes `.f32` subnormal inputs and results;
//!   `.sat` clamps to [0, 1] (NaN to +0).
//! - Float to integral float (`.rni .rzi .rmi .rpi`, same format).
//! - Float to integer: rounded by `.rni .rzi .rmi .rpi`, then clamped to the destination's range
//!   (the ISA: "the result is clamped to the destination range by default"). NaN gives 0 when
//!   the source is not `.f64` and the destination is not 64 bits, and `1 << (bits - 1)`
//!   otherwise (the ISA's rule, e.g. `cvt.rzi.u64.f64` of NaN is `0x8000000000000000`).
//! - Integer to float: rounded by `.rn .rz .rm .rp`.

use super::float::{NAN32, NAN64};
use super::int::{extend, truncate};
use super::softfloat::{self, Format, Value};
use super::warp::Lanes;
use crate::ptx::inst::{Conv, Rounding};
use crate::ptx::types::FloatTy;

fn format(t: FloatTy) -> Format {
    match t {
        FloatTy::F16 => softfloat::F16,
        FloatTy::Bf16 => softfloat::BF16,
        FloatTy::F32 => softfloat::F32,
        FloatTy::F64 => softfloat::F64,
    }
}

/// The exact value of a float of type `t` as an f64 (every format here widens exactly).
fn to_f64(bits: u64, t: FloatTy) -> f64 {
    match t {
        FloatTy::F64 => f64::from_bits(bits),
        FloatTy::F32 => f64::from(f32::from_bits(bits as u32)),
        _ => f64::from_bits(softfloat::convert(bits, format(t), softfloat::F64, Rounding::NearestEven)),
    }
}

/// `bits` of `f` with a subnormal flushed to a zero of the same sign.
fn flush(bits: u64, f: Format) -> u64 {
    if softfloat::is_subnormal(bits, f) { bits & !((1 << (f.exp_bits + f.frac_bits)) - 1) } else { bits }
}

/// `.sat` on `bits` of `f`: [0, 1], NaN and every value not above +0 to +0.
fn saturate(bits: u64, f: Format) -> u64 {
    match softfloat::decode(bits, f) {
        Value::Nan | Value::Zero { .. } | Value::Infinity { negative: true } => 0,
        Value::Finite { negative: true, .. } => 0,
        Value::Infinity { negative: false } => {
            softfloat::convert(1.0f64.to_bits(), softfloat::F64, f, Rounding::NearestEven)
        }
        Value::Finite { negative: false, .. } => {
            let one = softfloat::convert(1.0f64.to_bits(), softfloat::F64, f, Rounding::NearestEven);
            if bits > one { one } else { bits }
        }
    }
}

fn round_integral(x: f64, rnd: Rounding) -> f64 {
    match rnd {
        Rounding::NearestEven => x.round_ties_even(),
        Rounding::TowardZero => x.trunc(),
        Rounding::Down => x.floor(),
        Rounding::Up => x.ceil(),
    }
}

/// One lane of `cvt`.
pub(crate) fn one(conv: Conv, x: u64) -> u64 {
    match conv {
        Conv::IntInt { from, to_bits, to_signed, sat } => {
            let v = if from.signed() {
                i128::from(extend(x, from.bits(), true) as i64)
            } else {
                i128::from(truncate(x, from.bits()))
            };
            let v = if sat {
                let (lo, hi) = if to_signed {
                    (-(1i128 << (to_bits - 1)), (1i128 << (to_bits - 1)) - 1)
                } else {
                    (0, (1i128 << to_bits) - 1)
                };
                v.clamp(lo, hi)
            } else {
                v
            };
            truncate(v as u64, to_bits)
        }
        Conv::FloatFloat { from, to, rnd, ftz, sat } => {
            let (ff, tf) = (format(from), format(to));
            let mut bits = truncate(x, from.bits());
            if ftz && from == FloatTy::F32 {
                bits = flush(bits, ff);
            }
            let mut r = if from == to {
                if matches!(softfloat::decode(bits, ff), Value::Nan) { tf.canonical_nan() } else { bits }
            } else if from == FloatTy::F32 && to == FloatTy::F64 {
                let v = f64::from(f32::from_bits(bits as u32));
                if v.is_nan() { NAN64 } else { v.to_bits() }
            } else if from == FloatTy::F64 && to == FloatTy::F32 && rnd == Rounding::NearestEven {
                let v = f64::from_bits(bits) as f32;
                u64::from(if v.is_nan() { NAN32 } else { v.to_bits() })
            } else {
                softfloat::convert(bits, ff, tf, rnd)
            };
            if ftz && to == FloatTy::F32 {
                r = flush(r, tf);
            }
            if sat { saturate(r, tf) } else { r }
        }
        Conv::FloatRound { ty, rnd, ftz, sat } => {
            let f = format(ty);
            let mut bits = truncate(x, ty.bits());
            if ftz && ty == FloatTy::F32 {
                bits = flush(bits, f);
            }
            let v = to_f64(bits, ty);
            let r = if v.is_nan() {
                f.canonical_nan()
            } else {
                // An integral value of the source's format is exact in it.
                softfloat::convert(round_integral(v, rnd).to_bits(), softfloat::F64, f, Rounding::NearestEven)
            };
            if sat { saturate(r, f) } else { r }
        }
        Conv::FloatInt { from, to_bits, to_signed, rnd, ftz } => {
            let mut bits = truncate(x, from.bits());
            if ftz && from == FloatTy::F32 {
                bits = flush(bits, format(from));
            }
            let v = to_f64(bits, from);
            if v.is_nan() {
                return if from != FloatTy::F64 && to_bits != 64 { 0 } else { 1 << (to_bits - 1) };
            }
            let r = round_integral(v, rnd);
            let (lo, hi) = if to_signed {
                (-(1i128 << (to_bits - 1)), (1i128 << (to_bits - 1)) - 1)
            } else {
                (0, (1i128 << to_bits) - 1)
            };
            let n = if r <= lo as f64 {
                lo
            } else if r >= hi as f64 {
                hi
            } else {
                r as i128
            };
            truncate(n as u64, to_bits)
        }
        Conv::IntFloat { from, to, rnd, ftz, sat } => {
            let v = if from.signed() {
                i128::from(extend(x, from.bits(), true) as i64)
            } else {
                i128::from(truncate(x, from.bits()))
            };
            let tf = format(to);
            let mut r = match (to, rnd) {
                (FloatTy::F32, Rounding::NearestEven) => u64::from((v as f32).to_bits()),
                (FloatTy::F64, Rounding::NearestEven) => (v as f64).to_bits(),
                _ => softfloat::round(v < 0, v.unsigned_abs(), 0, tf, rnd),
            };
            if ftz && to == FloatTy::F32 {
                r = flush(r, tf);
            }
            if sat { saturate(r, tf) } else { r }
        }
    }
}

/// The 32 lanes of `cvt`.
pub(crate) fn cvt(conv: Conv, a: &Lanes, out: &mut Lanes) {
    match conv {
        // The common conversions of qcalib's kernels, in loops of their own.
        Conv::FloatFloat { from: FloatTy::F32, to: FloatTy::F64, ftz: false, sat: false, .. } => {
            for (o, &x) in out.iter_mut().zip(a.iter()) {
                let v = f64::from(f32::from_bits(x as u32));
                *o = if v.is_nan() { NAN64 } else { v.to_bits() };
            }
        }
        Conv::IntInt { from, to_bits, sat: false, .. } if to_bits >= from.bits() && !from.signed() => {
            for (o, &x) in out.iter_mut().zip(a.iter()) {
                *o = truncate(x, from.bits());
            }
        }
        _ => {
            for (o, &x) in out.iter_mut().zip(a.iter()) {
                *o = one(conv, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::types::IntTy;

    fn f2i(from: FloatTy, to_bits: u32, to_signed: bool, rnd: Rounding, x: u64) -> u64 {
        one(Conv::FloatInt { from, to_bits, to_signed, rnd, ftz: false }, x)
    }

    #[test]
    fn float_to_integer_saturates_and_nan_follows_the_isa() {
        let f32b = |v: f32| u64::from(v.to_bits());
        assert_eq!(f2i(FloatTy::F32, 32, false, Rounding::TowardZero, f32b(-1.5)), 0);
        assert_eq!(f2i(FloatTy::F32, 32, false, Rounding::TowardZero, f32b(5e9)), 0xFFFF_FFFF);
        assert_eq!(f2i(FloatTy::F32, 32, false, Rounding::TowardZero, f32b(f32::NAN)), 0);
        assert_eq!(f2i(FloatTy::F32, 32, true, Rounding::TowardZero, f32b(-5e9)), 0x8000_0000);
        assert_eq!(f2i(FloatTy::F64, 64, false, Rounding::TowardZero, f64::NAN.to_bits()), 1 << 63);
        assert_eq!(f2i(FloatTy::F64, 32, false, Rounding::TowardZero, f64::NAN.to_bits()), 1 << 31);
        assert_eq!(f2i(FloatTy::F32, 64, true, Rounding::TowardZero, f32b(f32::NAN)), 1 << 63);
        assert_eq!(f2i(FloatTy::F64, 64, false, Rounding::TowardZero, 1.8446744073709552e19f64.to_bits()), u64::MAX);
        assert_eq!(f2i(FloatTy::F64, 64, true, Rounding::Up, 9.2e18f64.to_bits()), 9_200_000_000_000_000_000);
        assert_eq!(f2i(FloatTy::F32, 32, true, Rounding::NearestEven, f32b(2.5)), 2);
        assert_eq!(f2i(FloatTy::F32, 32, true, Rounding::NearestEven, f32b(-3.5)), (-4i32) as u32 as u64);
        assert_eq!(f2i(FloatTy::F32, 32, true, Rounding::Down, f32b(-0.5)), 0xFFFF_FFFF);
        assert_eq!(f2i(FloatTy::F32, 32, true, Rounding::Up, f32b(1e-45)), 1);
        let ftz = Conv::FloatInt { from: FloatTy::F32, to_bits: 32, to_signed: true, rnd: Rounding::Up, ftz: true };
        assert_eq!(one(ftz, f32b(1e-45)), 0, ".ftz flushes the subnormal input first");
    }

    #[test]
    fn integer_conversions() {
        let c = |from, to_bits, to_signed, sat, x| one(Conv::IntInt { from, to_bits, to_signed, sat }, x);
        assert_eq!(c(IntTy::U32, 16, false, false, 0x12345), 0x2345);
        assert_eq!(c(IntTy::S32, 64, true, false, 0xFFFF_FFFE), (-2i64) as u64);
        assert_eq!(c(IntTy::U32, 64, false, false, 0xFFFF_FFFE), 0xFFFF_FFFE);
        assert_eq!(c(IntTy::U32, 16, false, true, 0x12345), 0xFFFF);
        assert_eq!(c(IntTy::S32, 16, false, true, 0xFFFF_FFFE), 0);
        assert_eq!(c(IntTy::S64, 32, true, true, (-5_000_000_000i64) as u64), 0x8000_0000);
    }
}
