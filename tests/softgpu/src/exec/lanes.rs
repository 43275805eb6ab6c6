//! The operands of an instruction over the 32 lanes of a warp, and the loops that apply a lane
//! function to them: a register is read in place, an immediate is one value for every lane.
//! Each loop is instantiated for each kind of operand, so the lane function is inlined into a
//! straight loop over 32 values.

/// One value per lane.
pub(crate) type Lanes = [u64; 32];

/// A source operand's values.
#[derive(Clone, Copy)]
pub(crate) enum Val<'a> {
    /// A register: one value per lane.
    Lanes(&'a Lanes),
    /// An immediate: the same value in every lane.
    Splat(u64),
}

/// `out[i] = f(a[i])`.
#[inline(always)]
pub(crate) fn map1(a: Val<'_>, out: &mut Lanes, f: impl Fn(u64) -> u64) {
    match a {
        Val::Lanes(a) => {
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x);
            }
        }
        Val::Splat(x) => *out = [f(x); 32],
    }
}

/// `out[i] = f(a[i], b[i])`.
#[inline(always)]
pub(crate) fn map2(a: Val<'_>, b: Val<'_>, out: &mut Lanes, f: impl Fn(u64, u64) -> u64) {
    match (a, b) {
        (Val::Lanes(a), Val::Lanes(b)) => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (Val::Lanes(a), Val::Splat(y)) => {
            for (o, &x) in out.iter_mut().zip(a) {
                *o = f(x, y);
            }
        }
        (Val::Splat(x), Val::Lanes(b)) => {
            for (o, &y) in out.iter_mut().zip(b) {
                *o = f(x, y);
            }
        }
        (Val::Splat(x), Val::Splat(y)) => *out = [f(x, y); 32],
    }
}

/// `out[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
pub(crate) fn map3(a: Val<'_>, b: Val<'_>, c: Val<'_>, out: &mut Lanes, f: impl Fn(u64, u64, u64) -> u64) {
    match c {
        Val::Lanes(c) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f(at(a, i), at(b, i), c[i]);
            }
        }
        Val::Splat(z) => map2(a, b, out, |x, y| f(x, y, z)),
    }
}

/// The bit of each lane of `f(a[i], b[i])`.
#[inline(always)]
pub(crate) fn test2(a: Val<'_>, b: Val<'_>, f: impl Fn(u64, u64) -> bool) -> u32 {
    let mut bits = 0u32;
    match (a, b) {
        (Val::Lanes(a), Val::Lanes(b)) => {
            for i in 0..32 {
                bits |= u32::from(f(a[i], b[i])) << i;
            }
        }
        (Val::Lanes(a), Val::Splat(y)) => {
            for (i, &x) in a.iter().enumerate() {
                bits |= u32::from(f(x, y)) << i;
            }
        }
        (Val::Splat(x), Val::Lanes(b)) => {
            for (i, &y) in b.iter().enumerate() {
                bits |= u32::from(f(x, y)) << i;
            }
        }
        (Val::Splat(x), Val::Splat(y)) => bits = if f(x, y) { u32::MAX } else { 0 },
    }
    bits
}

/// The value of lane `i`.
#[inline(always)]
pub(crate) fn at(v: Val<'_>, i: usize) -> u64 {
    match v {
        Val::Lanes(l) => l[i],
        Val::Splat(x) => x,
    }
}
