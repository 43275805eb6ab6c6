//! Min, max and the count of non-finite values, per channel, in one pass.

use super::simd::{LANES, multiversion};
use super::walk::Reducer;

/// Min and max of one channel's values, and how many were NaN or infinite.
///
/// NaN is skipped by the comparisons (the count says it was there); infinities take part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Extremes {
    pub min: f32,
    pub max: f32,
    pub non_finite: u64,
}

impl Extremes {
    pub(crate) const EMPTY: Extremes = Extremes { min: f32::INFINITY, max: f32::NEG_INFINITY, non_finite: 0 };

    pub(crate) fn join(self, o: Extremes) -> Extremes {
        Extremes { min: min(self.min, o.min), max: max(self.max, o.max), non_finite: self.non_finite + o.non_finite }
    }
}

/// The smaller of `a` and `b`, `a` when `b` is NaN.
#[inline(always)]
pub(crate) fn min(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

/// The larger of `a` and `b`, `a` when `b` is NaN.
#[inline(always)]
pub(crate) fn max(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// 1 for NaN and infinities, else 0.
#[inline(always)]
pub(crate) fn non_finite(v: f32) -> u32 {
    ((v.to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32
}

/// Values per block: the u32 lane counters flush to u64 after each block.
const BLOCK: usize = 1 << 20;

multiversion! {
    /// The extremes of `x`.
    pub(crate) fn extremes(x: &[f32]) -> Extremes {
        let mut out = Extremes::EMPTY;
        for block in x.chunks(BLOCK) {
            let mut lo = [f32::INFINITY; LANES];
            let mut hi = [f32::NEG_INFINITY; LANES];
            let mut nf = [0u32; LANES];
            let mut chunks = block.chunks_exact(LANES);
            for ch in &mut chunks {
                for j in 0..LANES {
                    lo[j] = min(lo[j], ch[j]);
                    hi[j] = max(hi[j], ch[j]);
                    nf[j] += non_finite(ch[j]);
                }
            }
            for (j, &v) in chunks.remainder().iter().enumerate() {
                lo[j] = min(lo[j], v);
                hi[j] = max(hi[j], v);
                nf[j] += non_finite(v);
            }
            let mut e = Extremes { min: lo[0], max: hi[0], non_finite: 0 };
            for j in 0..LANES {
                e.min = min(e.min, lo[j]);
                e.max = max(e.max, hi[j]);
                e.non_finite += nf[j] as u64;
            }
            out = out.join(e);
        }
        out
    }
}

multiversion! {
    /// Folds rows of `lo.len()` values (value `j` in channel `j`) into per-channel extremes;
    /// returns how many values were non-finite.
    ///
    /// The running extremes are the only per-channel state. Non-finite values are not counted
    /// in the pass: a few lanes keep the largest exponent field seen (an integer max: one cycle
    /// of latency, where a float sum made each row wait on a chain of additions), and only a
    /// pass that ends with the all-ones exponent of NaN and infinity there counts them exactly,
    /// in a second pass (a batch with NaN or infinity is refused anyway).
    fn extremes_rows(rows: &[f32], lo: &mut [f32], hi: &mut [f32]) -> u64 {
        let channels = lo.len();
        let mut poison = [0u32; LANES];
        for row in rows.chunks_exact(channels) {
            let mut lanes = lo.chunks_exact_mut(LANES).zip(hi.chunks_exact_mut(LANES)).zip(row.chunks_exact(LANES));
            for ((l, h), v) in &mut lanes {
                for j in 0..LANES {
                    l[j] = min(l[j], v[j]);
                    h[j] = max(h[j], v[j]);
                    poison[j] = poison[j].max(v[j].to_bits() & 0x7f80_0000);
                }
            }
            let tail = channels - channels % LANES;
            for ((l, h), &v) in lo[tail..].iter_mut().zip(&mut hi[tail..]).zip(&row[tail..]) {
                *l = min(*l, v);
                *h = max(*h, v);
                poison[0] = poison[0].max(v.to_bits() & 0x7f80_0000);
            }
        }
        if poison.contains(&0x7f80_0000) {
            rows.iter().map(|&v| non_finite(v) as u64).sum()
        } else {
            0
        }
    }
}

/// Per-channel extremes of a range of channels.
pub(crate) struct ExtremesPart {
    first: usize,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub non_finite: u64,
}

impl ExtremesPart {
    /// Joins the extremes `e` of values of channel `c` in.
    pub(crate) fn add(&mut self, c: usize, e: Extremes) {
        let i = c - self.first;
        self.min[i] = min(self.min[i], e.min);
        self.max[i] = max(self.max[i], e.max);
        self.non_finite += e.non_finite;
    }
}

/// The [`Reducer`] for [`extremes`].
pub(crate) struct ExtremesReducer;

impl Reducer for ExtremesReducer {
    type Part = ExtremesPart;

    fn part(&self, first: usize, count: usize) -> ExtremesPart {
        ExtremesPart { first, min: vec![f32::INFINITY; count], max: vec![f32::NEG_INFINITY; count], non_finite: 0 }
    }

    fn part_bytes(&self, count: usize) -> usize {
        8 * count + 32
    }

    fn run(&self, part: &mut ExtremesPart, c: usize, x: &[f32]) {
        part.add(c, extremes(x));
    }

    fn rows(&self, part: &mut ExtremesPart, rows: &[f32], _channels: usize) {
        part.non_finite += extremes_rows(rows, &mut part.min, &mut part.max);
    }

    fn merge(&self, part: &mut ExtremesPart, other: ExtremesPart) {
        for (a, b) in part.min.iter_mut().zip(other.min) {
            *a = min(*a, b);
        }
        for (a, b) in part.max.iter_mut().zip(other.max) {
            *a = max(*a, b);
        }
        part.non_finite += other.non_finite;
    }

    fn concat(&self, parts: Vec<ExtremesPart>) -> ExtremesPart {
        let first = parts.first().map_or(0, |p| p.first);
        let mut out = ExtremesPart { first, min: Vec::new(), max: Vec::new(), non_finite: 0 };
        for p in parts {
            out.min.extend(p.min);
            out.max.extend(p.max);
            out.non_finite += p.non_finite;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_of_awkward_lengths() {
        for n in [0usize, 1, 15, 16, 17, 1000] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
            let e = extremes(&x);
            let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!((e.min, e.max, e.non_finite), (lo, hi, 0), "n = {n}");
        }
    }

    #[test]
    fn non_finite_values_are_counted() {
        let x = [1.0, f32::NAN, -2.0, f32::INFINITY, f32::NEG_INFINITY, 3.0];
        assert_eq!(extremes(&x).non_finite, 3);
        let mut lo = vec![f32::INFINITY; 3];
        let mut hi = vec![f32::NEG_INFINITY; 3];
        assert_eq!(extremes_rows(&x, &mut lo, &mut hi), 3);
        assert_eq!(lo, vec![1.0, f32::NEG_INFINITY, -2.0]);
    }
}
