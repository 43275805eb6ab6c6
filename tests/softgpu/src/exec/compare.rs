//! Comparisons (PTX ISA §9.7.6, with §9.3.1's comparison operators) over the 32 lanes of a
//! warp: one bit per lane.
//!
//! Ordered float comparisons (`eq ne lt le gt ge`) are false when either operand is NaN;
//! unordered ones (`equ neu ltu leu gtu geu`) are true; `num` is true when neither is NaN, `nan`
//! when either is. `.ftz` flushes subnormal `.f32` operands to zeros first. -0 equals +0.

use super::float::ftz32;
use super::warp::Lanes;
use crate::ptx::inst::{Cmp, CmpTy};
use crate::ptx::types::IntTy;

#[inline]
fn float(cmp: Cmp, x: f64, y: f64) -> bool {
    let unordered = x.is_nan() || y.is_nan();
    match cmp {
        Cmp::Eq => x == y,
        Cmp::Ne => !unordered && x != y,
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
        Cmp::Equ => unordered || x == y,
        Cmp::Neu => x != y,
        Cmp::Ltu => unordered || x < y,
        Cmp::Leu => unordered || x <= y,
        Cmp::Gtu => unordered || x > y,
        Cmp::Geu => unordered || x >= y,
        Cmp::Num => !unordered,
        Cmp::Nan => unordered,
    }
}

#[inline]
fn ordered<T: PartialOrd>(cmp: Cmp, x: T, y: T) -> bool {
    match cmp {
        Cmp::Eq => x == y,
        Cmp::Ne => x != y,
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
        // The decoder gives integer comparisons the ordered operators only.
        _ => false,
    }
}

/// The bit of each lane of `a cmp b`.
pub(crate) fn setp(cmp: Cmp, ty: CmpTy, a: &Lanes, b: &Lanes) -> u32 {
    let mut bits = 0u32;
    for (lane, (&x, &y)) in a.iter().zip(b.iter()).enumerate() {
        let t = match ty {
            // f32 to f64 is exact, and so are the comparisons.
            CmpTy::F32 { ftz } => {
                let (mut fx, mut fy) = (f32::from_bits(x as u32), f32::from_bits(y as u32));
                if ftz {
                    (fx, fy) = (ftz32(fx), ftz32(fy));
                }
                float(cmp, f64::from(fx), f64::from(fy))
            }
            CmpTy::F64 => float(cmp, f64::from_bits(x), f64::from_bits(y)),
            CmpTy::Int(IntTy::U16) => ordered(cmp, x as u16, y as u16),
            CmpTy::Int(IntTy::S16) => ordered(cmp, x as i16, y as i16),
            CmpTy::Int(IntTy::U32) => ordered(cmp, x as u32, y as u32),
            CmpTy::Int(IntTy::S32) => ordered(cmp, x as i32, y as i32),
            CmpTy::Int(IntTy::U64) => ordered(cmp, x, y),
            CmpTy::Int(IntTy::S64) => ordered(cmp, x as i64, y as i64),
        };
        bits |= u32::from(t) << lane;
    }
    bits
}

/// The 32 lanes of `selp`: `a` where the bit of `c` is set, else `b`.
pub(crate) fn selp(a: &Lanes, b: &Lanes, c: u32, out: &mut Lanes) {
    for (lane, (o, (&x, &y))) in out.iter_mut().zip(a.iter().zip(b.iter())).enumerate() {
        *o = if c >> lane & 1 != 0 { x } else { y };
    }
}
