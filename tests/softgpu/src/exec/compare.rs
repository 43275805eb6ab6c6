//! Comparisons (PTX ISA §9.7.6, with §9.3.1's comparison operators) over the 32 lanes of a
//! warp: one bit per lane.
//!
//! Ordered float comparisons (`eq ne lt le gt ge`) are false when either operand is NaN;
//! unordered ones (`equ neu ltu leu gtu geu`) are true; `num` is true when neither is NaN, `nan`
//! when either is. `.ftz` flushes subnormal `.f32` operands to zeros first. -0 equals +0.

use super::float::ftz32;
use super::lanes::{Lanes, Val, at, test2};
use crate::ptx::inst::{Cmp, CmpTy};
use crate::ptx::types::IntTy;

/// The bits of `a cmp b` for floats read by `f`.
#[inline(always)]
fn float(cmp: Cmp, a: Val<'_>, b: Val<'_>, f: impl Fn(u64) -> f64 + Copy) -> u32 {
    let u = move |x: f64, y: f64| x.is_nan() || y.is_nan();
    match cmp {
        Cmp::Eq => test2(a, b, |x, y| f(x) == f(y)),
        Cmp::Ne => test2(a, b, |x, y| !u(f(x), f(y)) && f(x) != f(y)),
        Cmp::Lt => test2(a, b, |x, y| f(x) < f(y)),
        Cmp::Le => test2(a, b, |x, y| f(x) <= f(y)),
        Cmp::Gt => test2(a, b, |x, y| f(x) > f(y)),
        Cmp::Ge => test2(a, b, |x, y| f(x) >= f(y)),
        Cmp::Equ => test2(a, b, |x, y| u(f(x), f(y)) || f(x) == f(y)),
        Cmp::Neu => test2(a, b, |x, y| f(x) != f(y)),
        Cmp::Ltu => test2(a, b, |x, y| u(f(x), f(y)) || f(x) < f(y)),
        Cmp::Leu => test2(a, b, |x, y| u(f(x), f(y)) || f(x) <= f(y)),
        Cmp::Gtu => test2(a, b, |x, y| u(f(x), f(y)) || f(x) > f(y)),
        Cmp::Geu => test2(a, b, |x, y| u(f(x), f(y)) || f(x) >= f(y)),
        Cmp::Num => test2(a, b, |x, y| !u(f(x), f(y))),
        Cmp::Nan => test2(a, b, |x, y| u(f(x), f(y))),
    }
}

/// The bits of `a cmp b` for integers read by `f` (the ordered operators only: the decoder
/// gives integer comparisons no other).
#[inline(always)]
fn int<T: PartialOrd>(cmp: Cmp, a: Val<'_>, b: Val<'_>, f: impl Fn(u64) -> T + Copy) -> u32 {
    match cmp {
        Cmp::Eq => test2(a, b, |x, y| f(x) == f(y)),
        Cmp::Ne => test2(a, b, |x, y| f(x) != f(y)),
        Cmp::Lt => test2(a, b, |x, y| f(x) < f(y)),
        Cmp::Le => test2(a, b, |x, y| f(x) <= f(y)),
        Cmp::Gt => test2(a, b, |x, y| f(x) > f(y)),
        Cmp::Ge => test2(a, b, |x, y| f(x) >= f(y)),
        _ => 0,
    }
}

/// The bit of each lane of `a cmp b`.
pub(crate) fn setp(cmp: Cmp, ty: CmpTy, a: Val<'_>, b: Val<'_>) -> u32 {
    match ty {
        // f32 to f64 is exact, and so are the comparisons.
        CmpTy::F32 { ftz: false } => float(cmp, a, b, |x| f64::from(f32::from_bits(x as u32))),
        CmpTy::F32 { ftz: true } => float(cmp, a, b, |x| f64::from(ftz32(f32::from_bits(x as u32)))),
        CmpTy::F64 => float(cmp, a, b, f64::from_bits),
        CmpTy::Int(IntTy::U16) => int(cmp, a, b, |x| x as u16),
        CmpTy::Int(IntTy::S16) => int(cmp, a, b, |x| x as i16),
        CmpTy::Int(IntTy::U32) => int(cmp, a, b, |x| x as u32),
        CmpTy::Int(IntTy::S32) => int(cmp, a, b, |x| x as i32),
        CmpTy::Int(IntTy::U64) => int(cmp, a, b, |x| x),
        CmpTy::Int(IntTy::S64) => int(cmp, a, b, |x| x as i64),
    }
}

/// The 32 lanes of `selp`: `a` where the bit of `c` is set, else `b`.
pub(crate) fn selp(a: Val<'_>, b: Val<'_>, c: u32, out: &mut Lanes) {
    for (lane, o) in out.iter_mut().enumerate() {
        *o = if c >> lane & 1 != 0 { at(a, lane) } else { at(b, lane) };
    }
}
