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

use super::float::{NAN32, canonical32, canonical64};
use super::int::{extend, truncate};
use super::lanes::{Lanes, Val, map1};
use super::softfloat::{self, Format, Value};
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

/// The bits of the f32 equal to the binary16 `h` (exact; NaN to the canonical NaN).
#[inline(always)]
fn f16_to_f32(h: u64) -> u32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let (e, f) = ((h as u32 >> 10) & 0x1f, h as u32 & 0x3ff);
    match e {
        0x1f if f != 0 => NAN32,
        0x1f => sign | 0x7f80_0000,
        // Zero or subnormal: f * 2^-24, exact in f32.
        0 => sign | (f as f32 * (1.0 / 16_777_216.0)).to_bits(),
        _ => sign | (e + 112) << 23 | f << 13,
    }
}

/// The exact value of a float of type `t` as an f64 (every format here widens exactly).
fn to_f64(bits: u64, t: FloatTy) -> f64 {
    match t {
        FloatTy::F64 => f64::from_bits(bits),
        FloatTy::F32 => f64::from(f32::from_bits(bits as u32)),
        FloatTy::F16 => f64::from(f32::from_bits(f16_to_f32(bits))),
        FloatTy::Bf16 => f64::from(f32::from_bits((bits as u32 & 0xffff) << 16)),
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

/// `x` rounded to an integral value by `rnd`, exactly and without the C library (the host's
/// arithmetic rounds to nearest even): IEEE's roundToIntegral, which keeps the sign of zero.
#[inline(always)]
fn round_integral(x: f64, rnd: Rounding) -> f64 {
    const TWO52: f64 = 4_503_599_627_370_496.0;
    // From 2^52 on, every f64 is integral; infinities and NaN stay as they are.
    if x.is_nan() || x.abs() >= TWO52 {
        return x;
    }
    let t = (x as i64) as f64; // towards zero, exactly
    let r = match rnd {
        // Adding 2^52 leaves no fraction bits: the sum is rounded to an integer, ties to even.
        Rounding::NearestEven => (x.abs() + TWO52) - TWO52,
        Rounding::TowardZero => t,
        Rounding::Down if t > x => t - 1.0,
        Rounding::Up if t < x => t + 1.0,
        Rounding::Down | Rounding::Up => t,
    };
    r.copysign(x)
}

/// `r` (integral or infinite, not NaN) clamped to the range of an integer of `bits`.
#[inline(always)]
fn clamp_to_int(r: f64, bits: u32, signed: bool) -> u64 {
    if signed {
        let (lo, hi) =
            if bits == 64 { (i64::MIN, i64::MAX) } else { (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1) };
        truncate((r as i64).clamp(lo, hi) as u64, bits)
    } else {
        let hi = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        (r as u64).min(hi)
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
                canonical64(v)
            } else if from == FloatTy::F16 && to == FloatTy::F32 {
                u64::from(f16_to_f32(bits))
            } else if from == FloatTy::F64 && to == FloatTy::F32 && rnd == Rounding::NearestEven {
                let v = f64::from_bits(bits) as f32;
                u64::from(canonical32(v))
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
            let r = match ty {
                _ if v.is_nan() => f.canonical_nan(),
                FloatTy::F64 => round_integral(v, rnd).to_bits(),
                // An integral value of the source's format is exact in it.
                FloatTy::F32 => u64::from((round_integral(v, rnd) as f32).to_bits()),
                _ => softfloat::convert(round_integral(v, rnd).to_bits(), softfloat::F64, f, Rounding::NearestEven),
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
            clamp_to_int(round_integral(v, rnd), to_bits, to_signed)
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
pub(crate) fn cvt(conv: Conv, a: Val<'_>, out: &mut Lanes) {
    use Rounding::NearestEven as Rn;
    match conv {
        // The conversions of qcalib's kernels, each in a loop of its own.
        Conv::FloatFloat { from: FloatTy::F32, to: FloatTy::F64, ftz: false, sat: false, .. } => map1(a, out, |x| {
            let v = f64::from(f32::from_bits(x as u32));
            canonical64(v)
        }),
        Conv::FloatFloat { from: FloatTy::F64, to: FloatTy::F32, rnd: Rn, ftz: false, sat: false } => {
            map1(a, out, |x| {
                let v = f64::from_bits(x) as f32;
                u64::from(canonical32(v))
            })
        }
        Conv::FloatFloat { from: FloatTy::F16, to: FloatTy::F32, sat: false, .. } => {
            map1(a, out, |x| u64::from(f16_to_f32(x)))
        }
        Conv::FloatRound { ty: FloatTy::F32, rnd, ftz: false, sat: false } => map1(a, out, |x| {
            let v = f32::from_bits(x as u32);
            let r = round_integral(f64::from(v), rnd) as f32;
            u64::from(canonical32(r))
        }),
        Conv::FloatRound { ty: FloatTy::F64, rnd, ftz: false, sat: false } => map1(a, out, |x| {
            let r = round_integral(f64::from_bits(x), rnd);
            canonical64(r)
        }),
        Conv::FloatInt { from: FloatTy::F32, to_bits, to_signed, rnd, ftz: false } => map1(a, out, |x| {
            let v = f64::from(f32::from_bits(x as u32));
            match v.is_nan() {
                true if to_bits != 64 => 0,
                true => 1 << 63,
                false => clamp_to_int(round_integral(v, rnd), to_bits, to_signed),
            }
        }),
        Conv::FloatInt { from: FloatTy::F64, to_bits, to_signed, rnd, ftz: false } => map1(a, out, |x| {
            let v = f64::from_bits(x);
            if v.is_nan() { 1 << (to_bits - 1) } else { clamp_to_int(round_integral(v, rnd), to_bits, to_signed) }
        }),
        Conv::IntFloat { from, to: FloatTy::F32, rnd: Rn, ftz: false, sat: false } => match from.signed() {
            false => map1(a, out, |x| u64::from((truncate(x, from.bits()) as f32).to_bits())),
            true => map1(a, out, |x| u64::from((extend(x, from.bits(), true) as i64 as f32).to_bits())),
        },
        Conv::IntFloat { from, to: FloatTy::F64, rnd: Rn, ftz: false, sat: false } => match from.signed() {
            false => map1(a, out, |x| (truncate(x, from.bits()) as f64).to_bits()),
            true => map1(a, out, |x| (extend(x, from.bits(), true) as i64 as f64).to_bits()),
        },
        Conv::IntInt { from, to_bits, sat: false, .. } => match from.signed() {
            false => map1(a, out, |x| truncate(truncate(x, from.bits()), to_bits)),
            true => map1(a, out, |x| truncate(extend(x, from.bits(), true), to_bits)),
        },
        _ => map1(a, out, |x| one(conv, x)),
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
