//! Integer and logic instructions over the 32 lanes of a warp (PTX ISA §9.7.1, §9.7.8).
//!
//! Values arrive zero-extended in 64-bit slots and leave zero-extended from the operation's
//! width. Arithmetic wraps (`add`, `sub`, `mul.lo`, `neg`, `abs` of the most negative value).
//! Where the ISA leaves a result unspecified, softgpu does what the hardware's sequences do:
//!
//! - `div` and `rem` by zero give all ones (`u32::MAX` for `.u32`, `-1` for `.s32`): the ISA says
//!   "Division by zero yields an unspecified, machine-specific value", and all ones is what
//!   NVIDIA GPUs are reported to return for both (Stack Overflow question 12960005, answered
//!   by an NVIDIA engineer; not verified on hardware here);
//! - `div.s` of the most negative value by -1 wraps to the most negative value, `rem` gives 0;
//! - `rem` of negative operands truncates towards zero (C's `%`: the sign of the dividend).
//!
//! Shift amounts are unsigned 32-bit values; amounts at or above the width are clamped to the
//! width: `shl` and logical `shr` give 0, arithmetic `shr` gives all sign bits.

use super::lanes::{Lanes, Val, map1, map2, map3};
use crate::ptx::inst::{IntOp, IntUnOp, MadPart};
use crate::ptx::types::IntTy;

macro_rules! lanes2 {
    ($a:expr, $b:expr, $out:expr, |$x:ident: $t:ty, $y:ident: $u:ty| $body:expr) => {
        map2($a, $b, $out, |xa, yb| {
            let $x = xa as $t;
            let $y = yb as $u;
            $body
        })
    };
}

/// The 32 lanes of `a op b`.
pub(crate) fn binary(op: IntOp, ty: IntTy, a: Val<'_>, b: Val<'_>, out: &mut Lanes) {
    macro_rules! typed {
        ($u:ty, $s:ty, $bits:expr) => {{
            const BITS: u32 = $bits;
            match (op, ty.signed()) {
                (IntOp::Add, _) => lanes2!(a, b, out, |x: $u, y: $u| x.wrapping_add(y) as u64),
                (IntOp::Sub, _) => lanes2!(a, b, out, |x: $u, y: $u| x.wrapping_sub(y) as u64),
                (IntOp::MulLo, _) => lanes2!(a, b, out, |x: $u, y: $u| x.wrapping_mul(y) as u64),
                (IntOp::MulHi, false) => {
                    lanes2!(a, b, out, |x: $u, y: $u| ((x as u128 * y as u128) >> BITS) as $u as u64)
                }
                (IntOp::MulHi, true) => {
                    lanes2!(a, b, out, |x: $s, y: $s| ((x as i128 * y as i128) >> BITS) as $u as u64)
                }
                (IntOp::Div, false) => lanes2!(a, b, out, |x: $u, y: $u| x.checked_div(y).unwrap_or(<$u>::MAX) as u64),
                (IntOp::Div, true) => lanes2!(a, b, out, |x: $s, y: $s| if y == 0 {
                    <$u>::MAX as u64
                } else {
                    x.wrapping_div(y) as $u as u64
                }),
                (IntOp::Rem, false) => {
                    lanes2!(a, b, out, |x: $u, y: $u| x.checked_rem(y).unwrap_or(<$u>::MAX) as u64)
                }
                (IntOp::Rem, true) => {
                    lanes2!(a, b, out, |x: $s, y: $s| if y == 0 {
                        <$u>::MAX as u64
                    } else {
                        x.wrapping_rem(y) as $u as u64
                    })
                }
                (IntOp::Min, false) => lanes2!(a, b, out, |x: $u, y: $u| x.min(y) as u64),
                (IntOp::Min, true) => lanes2!(a, b, out, |x: $s, y: $s| x.min(y) as $u as u64),
                (IntOp::Max, false) => lanes2!(a, b, out, |x: $u, y: $u| x.max(y) as u64),
                (IntOp::Max, true) => lanes2!(a, b, out, |x: $s, y: $s| x.max(y) as $u as u64),
                (IntOp::And, _) => lanes2!(a, b, out, |x: $u, y: $u| (x & y) as u64),
                (IntOp::Or, _) => lanes2!(a, b, out, |x: $u, y: $u| (x | y) as u64),
                (IntOp::Xor, _) => lanes2!(a, b, out, |x: $u, y: $u| (x ^ y) as u64),
                (IntOp::Shl, _) => {
                    lanes2!(a, b, out, |x: $u, y: u32| if y >= BITS { 0 } else { (x << y) as u64 })
                }
                (IntOp::Shr, false) => {
                    lanes2!(a, b, out, |x: $u, y: u32| if y >= BITS { 0 } else { (x >> y) as u64 })
                }
                (IntOp::Shr, true) => lanes2!(a, b, out, |x: $s, y: u32| (x >> y.min(BITS - 1)) as $u as u64),
            }
        }};
    }
    match ty.bits() {
        16 => typed!(u16, i16, 16),
        32 => typed!(u32, i32, 32),
        _ => typed!(u64, i64, 64),
    }
}

/// The 32 lanes of `op a`.
pub(crate) fn unary(op: IntUnOp, ty: IntTy, a: Val<'_>, out: &mut Lanes) {
    macro_rules! typed {
        ($u:ty, $s:ty) => {
            match op {
                IntUnOp::Not => map1(a, out, |x| !(x as $u) as u64),
                IntUnOp::Neg => map1(a, out, |x| (x as $u).wrapping_neg() as u64),
                IntUnOp::Abs => map1(a, out, |x| (x as $u as $s).wrapping_abs() as $u as u64),
            }
        };
    }
    match ty.bits() {
        16 => typed!(u16, i16),
        32 => typed!(u32, i32),
        _ => typed!(u64, i64),
    }
}

/// The 32 lanes of `mul.wide`: the full product of two `ty` operands.
pub(crate) fn mul_wide(ty: IntTy, a: Val<'_>, b: Val<'_>, out: &mut Lanes) {
    match ty {
        IntTy::U16 => lanes2!(a, b, out, |x: u16, y: u16| (x as u32 * y as u32) as u64),
        IntTy::S16 => lanes2!(a, b, out, |x: i16, y: i16| (x as i32 * y as i32) as u32 as u64),
        IntTy::U32 => lanes2!(a, b, out, |x: u32, y: u32| x as u64 * y as u64),
        IntTy::S32 => lanes2!(a, b, out, |x: i32, y: i32| (x as i64 * y as i64) as u64),
        // The decoder refuses `.wide` of 64-bit operands.
        IntTy::U64 | IntTy::S64 => lanes2!(a, b, out, |x: u64, y: u64| x.wrapping_mul(y)),
    }
}

/// The 32 lanes of `mad.lo`, `mad.hi` or `mad.wide`: `part` of `a * b`, plus `c` (of the
/// result's width), wrapping to that width.
pub(crate) fn mad(part: MadPart, ty: IntTy, a: Val<'_>, b: Val<'_>, c: Val<'_>, out: &mut Lanes) {
    let bits = ty.bits();
    let (signed, width) = (ty.signed(), if part == MadPart::Wide { 2 * bits } else { bits });
    let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
    map3(a, b, c, out, |x, y, z| {
        // The exact product in 128 bits: the operands extended from their width.
        let (x, y) = (extend(x, bits, signed), extend(y, bits, signed));
        let product =
            if signed { (i128::from(x as i64) * i128::from(y as i64)) as u128 } else { u128::from(x) * u128::from(y) };
        let part = match part {
            MadPart::Lo | MadPart::Wide => product as u64,
            MadPart::Hi => (product >> bits) as u64,
        };
        part.wrapping_add(z) & mask
    });
}

/// `v` (of `from_bits`, sign-extended when `signed`) as a 64-bit pattern.
pub(crate) fn extend(v: u64, from_bits: u32, signed: bool) -> u64 {
    if from_bits >= 64 {
        v
    } else if signed {
        let shift = 64 - from_bits;
        (((v << shift) as i64) >> shift) as u64
    } else {
        v & ((1 << from_bits) - 1)
    }
}

/// The low `bits` of `v`.
pub(crate) fn truncate(v: u64, bits: u32) -> u64 {
    if bits >= 64 { v } else { v & ((1 << bits) - 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(op: IntOp, ty: IntTy, a: u64, b: u64) -> u64 {
        let mut out = [0; 32];
        binary(op, ty, Val::Lanes(&[a; 32]), Val::Splat(b), &mut out);
        out[0]
    }

    #[test]
    fn division_by_zero_and_overflow() {
        assert_eq!(one(IntOp::Div, IntTy::U32, 7, 0), 0xFFFF_FFFF);
        assert_eq!(one(IntOp::Rem, IntTy::U32, 7, 0), 0xFFFF_FFFF);
        assert_eq!(one(IntOp::Rem, IntTy::S64, 7, 0), u64::MAX);
        assert_eq!(one(IntOp::Div, IntTy::S32, 7, 0), 0xFFFF_FFFF);
        assert_eq!(one(IntOp::Div, IntTy::S32, 0x8000_0000, 0xFFFF_FFFF), 0x8000_0000);
        assert_eq!(one(IntOp::Rem, IntTy::S32, 0x8000_0000, 0xFFFF_FFFF), 0);
        assert_eq!(one(IntOp::Rem, IntTy::S32, (-7i32) as u32 as u64, 2), (-1i32) as u32 as u64);
        assert_eq!(one(IntOp::Div, IntTy::U64, 7, 0), u64::MAX);
    }

    #[test]
    fn shifts_clamp() {
        assert_eq!(one(IntOp::Shl, IntTy::U32, 1, 31), 0x8000_0000);
        assert_eq!(one(IntOp::Shl, IntTy::U32, 1, 32), 0);
        assert_eq!(one(IntOp::Shl, IntTy::U32, 1, 0xFFFF_FFFF), 0);
        assert_eq!(one(IntOp::Shr, IntTy::U64, u64::MAX, 64), 0);
        assert_eq!(one(IntOp::Shr, IntTy::S32, 0x8000_0000, 40), 0xFFFF_FFFF);
        assert_eq!(one(IntOp::Shr, IntTy::S64, 1 << 63, 63), u64::MAX);
        assert_eq!(one(IntOp::Shl, IntTy::U16, 0x8001, 1), 2);
    }

    #[test]
    fn high_halves() {
        assert_eq!(one(IntOp::MulHi, IntTy::U32, 0xFFFF_FFFF, 0xFFFF_FFFF), 0xFFFF_FFFE);
        assert_eq!(one(IntOp::MulHi, IntTy::S32, 0xFFFF_FFFF, 0xFFFF_FFFF), 0);
        assert_eq!(one(IntOp::MulHi, IntTy::S32, 0xFFFF_FFFF, 2), 0xFFFF_FFFF);
        let mut out = [0; 32];
        mul_wide(IntTy::S32, Val::Splat(0xFFFF_FFFF), Val::Lanes(&[3; 32]), &mut out);
        assert_eq!(out[0], (-3i64) as u64);
    }
}
