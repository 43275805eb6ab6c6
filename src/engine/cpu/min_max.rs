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

/// Rows folded into the running extremes per pass: each channel's extremes stay in registers
/// across them, so the per-channel state is loaded and stored once per this many rows.
const ROWS_PER_PASS: usize = 8;

multiversion! {
    /// Folds rows of `lo.len()` values (value `j` in channel `j`) into per-channel extremes;
    /// returns how many values were non-finite.
    ///
    /// [`ROWS_PER_PASS`] rows at a time, 16 channels at a time: each channel's running
    /// extremes are loaded once, folded with its values of those rows in row order (the same
    /// result as one row at a time) and stored once. Non-finite values are not counted in the
    /// pass: a few lanes keep the largest exponent field seen (an integer max), and only a pass
    /// that ends with the all-ones exponent of NaN and infinity there counts them exactly, in a
    /// second pass (a batch with NaN or infinity is refused anyway).
    fn extremes_rows(rows: &[f32], lo: &mut [f32], hi: &mut [f32]) -> u64 {
        let channels = lo.len();
        let tail = channels - channels % LANES;
        let mut poison = [0u32; LANES];
        let mut passes = rows.chunks_exact(ROWS_PER_PASS * channels);
        for pass in &mut passes {
            for c in (0..tail).step_by(LANES) {
                let (mut l, mut h) = ([0f32; LANES], [0f32; LANES]);
                l.copy_from_slice(&lo[c..c + LANES]);
                h.copy_from_slice(&hi[c..c + LANES]);
                for r in 0..ROWS_PER_PASS {
                    let v = &pass[r * channels + c..][..LANES];
                    for j in 0..LANES {
                        l[j] = min(l[j], v[j]);
                        h[j] = max(h[j], v[j]);
                        poison[j] = poison[j].max(v[j].to_bits() & 0x7f80_0000);
                    }
                }
                lo[c..c + LANES].copy_from_slice(&l);
                hi[c..c + LANES].copy_from_slice(&h);
            }
            for row in pass.chunks_exact(channels) {
                fold_row(&row[tail..], &mut lo[tail..], &mut hi[tail..], &mut poison);
            }
        }
        for row in passes.remainder().chunks_exact(channels) {
            fold_row(row, lo, hi, &mut poison);
        }
        if poison.contains(&0x7f80_0000) {
            rows.iter().map(|&v| non_finite(v) as u64).sum()
        } else {
            0
        }
    }
}

/// Folds one row (or the same part of one) into `lo`, `hi` and the exponent lanes.
#[inline(always)]
fn fold_row(row: &[f32], lo: &mut [f32], hi: &mut [f32], poison: &mut [u32; LANES]) {
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
        *l = min(*l, v);
        *h = max(*h, v);
        poison[0] = poison[0].max(v.to_bits() & 0x7f80_0000);
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

    /// Rows folded several at a time give what one value at a time gives, for every split into
    /// full passes, leftover rows and leftover channels; equal values keep the first seen (the
    /// sign of a zero survives).
    #[test]
    fn rows_fold_like_a_plain_loop() {
        for channels in [1usize, 15, 16, 17, 48, 53] {
            for n_rows in [0usize, 1, 7, 8, 9, 17, 24] {
                let x: Vec<f32> = (0..channels * n_rows)
                    .map(|i| match (i * 7919) % 37 {
                        0 => 0.0,
                        1 => -0.0,
                        k => (k as f32 - 18.0) * 0.25,
                    })
                    .collect();
                let (mut lo, mut hi) = (vec![f32::INFINITY; channels], vec![f32::NEG_INFINITY; channels]);
                assert_eq!(extremes_rows(&x, &mut lo, &mut hi), 0);
                let (mut want_lo, mut want_hi) = (vec![f32::INFINITY; channels], vec![f32::NEG_INFINITY; channels]);
                for row in x.chunks_exact(channels) {
                    for (j, &v) in row.iter().enumerate() {
                        want_lo[j] = min(want_lo[j], v);
                        want_hi[j] = max(want_hi[j], v);
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&lo), bits(&want_lo), "{channels} channels, {n_rows} rows");
                assert_eq!(bits(&hi), bits(&want_hi), "{channels} channels, {n_rows} rows");
            }
        }
        let mut x = vec![1.0f32; 17 * 9];
        x[3] = f32::NAN;
        x[16 * 17 / 2] = f32::INFINITY;
        x[17 * 9 - 1] = f32::NEG_INFINITY;
        let (mut lo, mut hi) = (vec![f32::INFINITY; 17], vec![f32::NEG_INFINITY; 17]);
        assert_eq!(extremes_rows(&x, &mut lo, &mut hi), 3);
    }
}
