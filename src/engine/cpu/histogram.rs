//! Histograms of `|x|` with the exact bin rule of SPEC §5.

use super::simd::multiversion;
use super::walk::Reducer;

/// The bin of `|v|` in a histogram of `bins` bins on `[0, hi]` (`hi > 0`), or `bins` when `|v|`
/// is outside the range (not counted). SPEC §5: `floor(f32(f32(|v| * bins) / hi))`, every step
/// rounded to f32, with the top edge (and any overflow of the product) in the last bin.
#[inline(always)]
pub(crate) fn bin_of(v: f32, bins_f: f32, top: f32, hi: f32, bins: u32) -> u32 {
    let a = v.abs();
    let pos = (a * bins_f) / hi;
    let pos = if pos < top { pos } else { top }; // also catches +inf (and NaN, never counted)
    // `pos` is in [0, bins - 1]: the conversion is a plain truncation, i.e. floor.
    let b = pos as u32;
    if a > hi || a.is_nan() { bins } else { b }
}

/// Values whose bins are computed at a time, before the counts are bumped.
const BLOCK: usize = 256;

multiversion! {
    /// Adds the histogram of `|x|` on `[0, hi]` into four interleaved sub-histograms of
    /// `bins + 1` counters each (the extra one takes the values outside the range).
    fn accumulate(x: &[f32], hi: f32, bins: usize, sub: &mut [u32]) {
        let stride = bins + 1;
        let (s0, rest) = sub.split_at_mut(stride);
        let (s1, rest) = rest.split_at_mut(stride);
        let (s2, s3) = rest.split_at_mut(stride);
        let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
        let mut idx = [0u32; BLOCK];
        for block in x.chunks(BLOCK) {
            for (i, &v) in idx.iter_mut().zip(block) {
                *i = bin_of(v, bins_f, top, hi, nb);
            }
            let idx = &idx[..block.len()];
            let mut quads = idx.chunks_exact(4);
            for q in &mut quads {
                s0[q[0] as usize] += 1;
                s1[q[1] as usize] += 1;
                s2[q[2] as usize] += 1;
                s3[q[3] as usize] += 1;
            }
            for &b in quads.remainder() {
                s0[b as usize] += 1;
            }
        }
    }
}

/// The histogram of `|x|` in `bins` bins on `[0, hi]` (SPEC §5), per channel.
pub(crate) struct HistogramReducer {
    pub bins: usize,
    pub hi: f32,
}

/// Counts of a range of channels, `bins` per channel, plus a u32 scratch for the channel being
/// filled.
pub(crate) struct HistogramPart {
    first: usize,
    bins: usize,
    counts: Vec<u64>,
    scratch: Vec<u32>,
    scratch_channel: Option<usize>,
    scratch_values: u64,
}

/// Values the u32 scratch takes before it is flushed (each counter stays below 2^32).
const SCRATCH_LIMIT: u64 = 1 << 31;

impl HistogramPart {
    fn flush(&mut self) {
        if let Some(c) = self.scratch_channel.take() {
            let stride = self.bins + 1;
            let dst = &mut self.counts[(c - self.first) * self.bins..][..self.bins];
            for (b, d) in dst.iter_mut().enumerate() {
                let s = &mut self.scratch;
                *d += s[b] as u64 + s[stride + b] as u64 + s[2 * stride + b] as u64 + s[3 * stride + b] as u64;
            }
            self.scratch.iter_mut().for_each(|s| *s = 0);
            self.scratch_values = 0;
        }
    }

    /// The counts, `bins` per channel.
    pub(crate) fn into_counts(mut self) -> Vec<u64> {
        self.flush();
        self.counts
    }
}

impl Reducer for HistogramReducer {
    type Part = HistogramPart;

    fn part(&self, first: usize, count: usize) -> HistogramPart {
        HistogramPart {
            first,
            bins: self.bins,
            counts: vec![0; count * self.bins],
            scratch: Vec::new(),
            scratch_channel: None,
            scratch_values: 0,
        }
    }

    fn part_bytes(&self, count: usize) -> usize {
        8 * count * self.bins + 16 * (self.bins + 1)
    }

    fn run(&self, part: &mut HistogramPart, c: usize, x: &[f32]) {
        if x.is_empty() {
            return;
        }
        if self.hi <= 0.0 {
            // hi == lo == 0: an all-zero range; zeros count in bin 0, anything else is outside.
            part.counts[(c - part.first) * self.bins] += x.iter().filter(|v| **v == 0.0).count() as u64;
            return;
        }
        for piece in x.chunks(SCRATCH_LIMIT as usize) {
            if part.scratch_channel != Some(c) || part.scratch_values + piece.len() as u64 > SCRATCH_LIMIT {
                part.flush();
                if part.scratch.is_empty() {
                    part.scratch = vec![0; 4 * (self.bins + 1)];
                }
                part.scratch_channel = Some(c);
            }
            accumulate(piece, self.hi, self.bins, &mut part.scratch);
            part.scratch_values += piece.len() as u64;
        }
    }

    fn rows(&self, part: &mut HistogramPart, rows: &[f32], channels: usize) {
        part.flush();
        let (bins_f, top, nb) = (self.bins as f32, (self.bins - 1) as f32, self.bins as u32);
        for row in rows.chunks_exact(channels) {
            for (c, &v) in row.iter().enumerate() {
                let b = if self.hi > 0.0 {
                    bin_of(v, bins_f, top, self.hi, nb)
                } else if v == 0.0 {
                    0
                } else {
                    nb
                };
                if b < nb {
                    part.counts[c * self.bins + b as usize] += 1;
                }
            }
        }
    }

    fn merge(&self, part: &mut HistogramPart, mut other: HistogramPart) {
        part.flush();
        other.flush();
        for (a, b) in part.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    fn concat(&self, parts: Vec<HistogramPart>) -> HistogramPart {
        let first = parts.first().map_or(0, |p| p.first);
        let mut out = self.part(first, 0);
        for p in parts {
            out.counts.extend(p.into_counts());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], bins: usize, hi: f32) -> Vec<u64> {
        let mut h = vec![0u64; bins];
        for &v in x {
            let a = v.abs();
            if a > hi {
                continue;
            }
            let pos = ((a * bins as f32) / hi).floor() as usize;
            h[pos.min(bins - 1)] += 1;
        }
        h
    }

    #[test]
    fn matches_the_spec_rule() {
        let x: Vec<f32> = (0..10_007).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        for (bins, hi) in [(1, 3.0), (7, 3.0), (2048, 3.0), (512, 1.5)] {
            let r = HistogramReducer { bins, hi };
            let mut p = r.part(0, 1);
            r.run(&mut p, 0, &x);
            assert_eq!(p.into_counts(), reference(&x, bins, hi), "bins {bins} hi {hi}");
        }
    }

    #[test]
    fn top_edge_goes_to_the_last_bin_and_overflow_is_caught() {
        assert_eq!(bin_of(3.0, 4.0, 3.0, 3.0, 4), 3);
        assert_eq!(bin_of(-3.0, 4.0, 3.0, 3.0, 4), 3);
        assert_eq!(bin_of(3.5, 4.0, 3.0, 3.0, 4), 4);
        assert_eq!(bin_of(3.0e38, 2048.0, 2047.0, 3.0e38, 2048), 2047);
    }

    #[test]
    fn zero_range_counts_zeros_in_bin_zero() {
        let r = HistogramReducer { bins: 4, hi: 0.0 };
        let mut p = r.part(0, 1);
        r.run(&mut p, 0, &[0.0, -0.0, 0.0]);
        assert_eq!(p.into_counts(), vec![3, 0, 0, 0]);
    }
}
