//! Per-channel percentile bins by selection when the channel axis is innermost (rows of one
//! value per channel): the trick of [`select`](super::select), with a bracket per channel, in one
//! pass over the rows.
//!
//! 1. A sample of the rows (spread over the tensor) gives each channel a bracket `[lo, hi]` of
//!    its `|x|` that very probably holds the wanted order statistics.
//! 2. One pass over the rows computes every channel's extremes, counts its values below `lo` and
//!    collects those inside the bracket (about 1% of them), sixteen channels at a time.
//! 3. When every channel's wanted ranks fall among its collected values, a selection gives each
//!    value and its bin follows from the exact bin rule of SPEC §5: exactly the histogram's
//!    answer. Otherwise (a sample that missed, a range where the bin rule is not monotone, NaN
//!    or infinity) the caller counts the histograms.

use rayon::prelude::*;

use super::histogram::bin_of;
use super::min_max::{self, ExtremesPart, ExtremesReducer};
use super::select::{abs_bits, order_statistics};
use super::simd::{LANES, multiversion, prefetch};
use super::walk::Reducer;
use crate::search::percentile::{DecidingRank, deciding_rank};
use crate::tensor::Element;

/// Rows in the sample (at most; at least one row in [`SAMPLE_EVERY`]).
const SAMPLE_ROWS: usize = 512;
const SAMPLE_EVERY: usize = 16;
/// Channels need at least this many values (rows) for the sample to be worth it.
pub(crate) const MIN_ROWS: usize = 1 << 13;
/// The sample standard deviations the bracket adds on each side of a rank, and the sample
/// positions added on top (the sampled rows are spread, their values close to independent).
const SPREAD: f64 = 6.0;
const SLACK: f64 = 2.0;
/// The most a bracket may expect to hold, as a fraction of a channel.
const MAX_EXPECTED_FRACTION: f64 = 1.0 / 16.0;
/// Rows per task.
const ROWS_PER_TASK: usize = 1 << 12;
/// Values widened at a time from f16/bf16.
const WIDEN_BLOCK: usize = 1 << 14;
/// Rows ahead of the one scanned that [`scan_rows`] prefetches.
const PREFETCH_ROWS: usize = 4;

/// The per-channel extremes of `outer` rows of `channels` values and, when the selection
/// succeeded, the bins of `targets` per channel (`[channel][target]`) of histograms of `bins`
/// bins on `[0, max |x|]` of each channel. `None` when the caller must count histograms.
pub(crate) fn extremes_and_percentile_bins_of_rows<T: Element>(
    data: &[T],
    outer: usize,
    channels: usize,
    bins: usize,
    targets: &[f32],
) -> Option<(ExtremesPart, Vec<usize>)> {
    if outer < MIN_ROWS || channels == 0 || bins == 0 {
        return None;
    }
    let ranks: Vec<DecidingRank> = targets.iter().map(|&t| deciding_rank(t, outer as u64)).collect();
    let wanted: Vec<u64> =
        ranks.iter().filter_map(|r| if let DecidingRank::Rank(k) = *r { Some(k) } else { None }).collect();
    if wanted.is_empty() {
        return None;
    }
    let bracket = Brackets::from_sample(data, outer, channels, &wanted)?;
    let tasks = outer.div_ceil(ROWS_PER_TASK);
    let parts: Vec<Found> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(outer);
            let mut found = Found::new(channels, &bracket, rows.len());
            let slice = &data[rows.start * channels..rows.end * channels];
            match T::as_f32(slice) {
                Some(x) => scan_rows(x, &bracket, &mut found),
                None => {
                    let mut buf = vec![0f32; (WIDEN_BLOCK / channels).max(1) * channels];
                    for src in slice.chunks(buf.len()) {
                        T::widen(src, &mut buf[..src.len()]);
                        scan_rows(&buf[..src.len()], &bracket, &mut found);
                    }
                }
            }
            found
        })
        .collect();
    let mut all: Option<Found> = None;
    let mut below = vec![0u64; channels];
    let mut non_finite = 0u64;
    for p in parts {
        for (total, &b) in below.iter_mut().zip(&p.below) {
            *total += b as u64;
        }
        non_finite += p.non_finite.iter().map(|&n| n as u64).sum::<u64>();
        match all.as_mut() {
            Some(all) => all.merge(p),
            None => all = Some(p),
        }
    }
    let mut all = all?; // at least one task: `outer >= MIN_ROWS`
    let mut e = ExtremesReducer.part(0, channels);
    (e.min, e.max, e.non_finite) = (all.min, all.max, non_finite);
    if e.non_finite > 0 || all.overflowed {
        return None;
    }
    let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
    let mut out = Vec::with_capacity(channels * targets.len());
    for (c, (inside, &below)) in all.inside.iter_mut().zip(&below).enumerate() {
        let range = {
            let (lo, hi) = (e.min[c], e.max[c]);
            if -lo > hi { -lo } else { hi }
        };
        if !(range * bins_f).is_finite() {
            return None; // where `|v| * bins` overflows, the bin rule is not monotone
        }
        for rank in &ranks {
            out.push(match *rank {
                DecidingRank::FirstBin => 0,
                DecidingRank::NoBin => bins,
                DecidingRank::Rank(k) => {
                    let j = k.checked_sub(below + 1)? as usize;
                    if j >= inside.len() {
                        return None;
                    }
                    let (_, &mut bits, _) = inside.select_nth_unstable(j);
                    if range > 0.0 { bin_of(f32::from_bits(bits), bins_f, top, range, nb) as usize } else { 0 }
                }
            });
        }
    }
    Some((e, out))
}

/// Every channel's bracket of `|x|` bits: `lo` and the width `hi - lo`.
struct Brackets {
    lo: Vec<u32>,
    width: Vec<u32>,
    /// The share of its rows a task may collect per channel.
    cap_fraction: f64,
}

impl Brackets {
    /// The brackets from a sample of rows, `None` when one would be too wide.
    fn from_sample<T: Element>(data: &[T], outer: usize, channels: usize, wanted: &[u64]) -> Option<Brackets> {
        let m = SAMPLE_ROWS.min(outer / SAMPLE_EVERY).max(1);
        let slice = outer / m;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        // The sample, channel-major: sample[c * m + j] is channel c's value in sampled row j.
        let mut sample = vec![0u32; channels * m];
        for j in 0..m {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let row = (j * slice + (state >> 33) as usize % slice.max(1)).min(outer - 1);
            for (c, v) in data[row * channels..(row + 1) * channels].iter().enumerate() {
                sample[c * m + j] = abs_bits(v.to_f32());
            }
        }
        let (mf, n) = (m as f64, outer as f64);
        let position = |k: u64, side: f64| {
            let q = k as f64 / n;
            q * mf + side * (SPREAD * (mf * q * (1.0 - q)).sqrt() + SLACK)
        };
        let first = wanted.iter().map(|&k| position(k, -1.0)).fold(f64::INFINITY, f64::min);
        let last = wanted.iter().map(|&k| position(k, 1.0)).fold(f64::NEG_INFINITY, f64::max);
        if (last - first) / mf > MAX_EXPECTED_FRACTION {
            return None;
        }
        let lo_at = (first >= 0.0).then_some(first as usize);
        let hi_at = (last < mf - 1.0).then_some(last.ceil() as usize);
        let (lo, width): (Vec<u32>, Vec<u32>) = sample
            .par_chunks_mut(m)
            .map(|s| {
                let (lo, hi) = order_statistics(s, lo_at, hi_at);
                (lo, hi - lo)
            })
            .unzip();
        Some(Brackets { lo, width, cap_fraction: 2.0 * (last - first) / mf })
    }
}

/// What a task found: per channel the extremes, non-finite count, the count below the bracket
/// and the values inside it (as bits, up to a cap).
struct Found {
    min: Vec<f32>,
    max: Vec<f32>,
    non_finite: Vec<u32>,
    below: Vec<u32>,
    inside: Vec<Vec<u32>>,
    cap: usize,
    overflowed: bool,
}

impl Found {
    /// What a task of `rows` rows starts with: every channel's collection with room for the
    /// values the bracket is expected to hold (half the cap), so that few of them grow (growing
    /// a thousand small vectors a few times each cost a fifth of the scan).
    fn new(channels: usize, b: &Brackets, rows: usize) -> Found {
        let cap = (b.cap_fraction * rows as f64) as usize + 64;
        Found {
            min: vec![f32::INFINITY; channels],
            max: vec![f32::NEG_INFINITY; channels],
            non_finite: vec![0; channels],
            below: vec![0; channels],
            inside: (0..channels).map(|_| Vec::with_capacity(cap / 2)).collect(),
            cap,
            overflowed: false,
        }
    }

    /// Adds the extremes and the collected values of `other`, the rows after this one's (its
    /// counts are added by the caller, in u64).
    fn merge(&mut self, other: Found) {
        for c in 0..self.min.len() {
            self.min[c] = min_max::min(self.min[c], other.min[c]);
            self.max[c] = min_max::max(self.max[c], other.max[c]);
        }
        for (a, b) in self.inside.iter_mut().zip(other.inside) {
            a.extend(b);
        }
        self.overflowed |= other.overflowed;
    }
}

multiversion! {
    /// Adds rows of `found.min.len()` values (value `j` in channel `j`), one row at a time in
    /// memory order (which the hardware prefetchers follow; folding several rows per pass, with
    /// each channel's state in registers across them, reads several pages at once and measured
    /// about twice as slow), sixteen channels at a time. Which lanes hold a value inside its
    /// channel's bracket is noted as a bit mask, and those values are collected after the row,
    /// from the cache: a branch on them in the loop would be mispredicted often enough to stall
    /// the loads.
    fn scan_rows(rows: &[f32], b: &Brackets, found: &mut Found) {
        let channels = found.min.len();
        let full = channels - channels % LANES;
        let mut masks = vec![0u16; full / LANES];
        for (r, row) in rows.chunks_exact(channels).enumerate() {
            // The row PREFETCH_ROWS ahead is asked for now: the hardware prefetchers stop at
            // page boundaries, and a row of 1024 channels is a page.
            if let Some(ahead) = rows.get((r + PREFETCH_ROWS) * channels..(r + PREFETCH_ROWS + 1) * channels) {
                prefetch(ahead);
            }
            for (g, c) in (0..full).step_by(LANES).enumerate() {
                let v = &row[c..c + LANES];
                let (lo, width) = (&b.lo[c..c + LANES], &b.width[c..c + LANES]);
                let (mut min, mut max, mut nf, mut below) = ([0f32; LANES], [0f32; LANES], [0u32; LANES], [0u32; LANES]);
                min.copy_from_slice(&found.min[c..c + LANES]);
                max.copy_from_slice(&found.max[c..c + LANES]);
                nf.copy_from_slice(&found.non_finite[c..c + LANES]);
                below.copy_from_slice(&found.below[c..c + LANES]);
                let mut hit = 0u16;
                for j in 0..LANES {
                    let bits = abs_bits(v[j]);
                    min[j] = min_max::min(min[j], v[j]);
                    max[j] = min_max::max(max[j], v[j]);
                    nf[j] += min_max::non_finite(v[j]);
                    below[j] += (bits < lo[j]) as u32;
                    hit |= ((bits.wrapping_sub(lo[j]) <= width[j]) as u16) << j;
                }
                found.min[c..c + LANES].copy_from_slice(&min);
                found.max[c..c + LANES].copy_from_slice(&max);
                found.non_finite[c..c + LANES].copy_from_slice(&nf);
                found.below[c..c + LANES].copy_from_slice(&below);
                masks[g] = hit;
            }
            for (g, &mask) in masks.iter().enumerate() {
                let mut m = mask;
                while m != 0 {
                    let c = g * LANES + m.trailing_zeros() as usize;
                    push(found, c, abs_bits(row[c]));
                    m &= m - 1;
                }
            }
            scan_tail(&row[full..], full, b, found);
        }
    }
}

/// The values of channels `first ..` of one row, one at a time.
#[inline(always)]
fn scan_tail(row: &[f32], first: usize, b: &Brackets, found: &mut Found) {
    for (j, &v) in row.iter().enumerate() {
        let c = first + j;
        let bits = abs_bits(v);
        found.min[c] = min_max::min(found.min[c], v);
        found.max[c] = min_max::max(found.max[c], v);
        found.non_finite[c] += min_max::non_finite(v);
        found.below[c] += (bits < b.lo[c]) as u32;
        if bits.wrapping_sub(b.lo[c]) <= b.width[c] {
            push(found, c, bits);
        }
    }
}

#[inline(always)]
fn push(found: &mut Found, c: usize, bits: u32) {
    if found.inside[c].len() < found.cap {
        found.inside[c].push(bits);
    } else {
        found.overflowed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::abs_histograms;
    use crate::observer::MIX_FRACTIONS;
    use crate::search::percentile::{first_bin_reaching, fraction_target, percentile_target};
    use crate::synthetic::{Distribution, generate};
    use crate::tensor::TensorView;

    /// The bins the way SPEC states them: a histogram per channel.
    fn by_histograms(x: &ndarray::ArrayD<f32>, bins: usize, targets: &[f32]) -> Vec<usize> {
        let channels = x.shape()[1];
        let hi: Vec<f32> =
            (0..channels).map(|c| x.index_axis(ndarray::Axis(1), c).iter().fold(0f32, |m, v| m.max(v.abs()))).collect();
        let h = abs_histograms(&TensorView::F32(x.view()), 1, &vec![bins; channels], &hi);
        h.chunks_exact(bins).flat_map(|h| targets.iter().map(|&t| first_bin_reaching(h, t))).collect()
    }

    #[test]
    fn rows_by_selection_equal_the_histograms() {
        let (rows, channels) = (MIN_ROWS + 1000, 37);
        for dist in [Distribution::LaplaceOutliers, Distribution::Gaussian, Distribution::Relu] {
            let x = generate(dist, &[rows, channels], 3);
            let mix: Vec<f32> = MIX_FRACTIONS.iter().map(|&f| fraction_target(f, rows)).collect();
            for targets in [vec![percentile_target(99.99, rows)], vec![percentile_target(99.0, rows)], mix] {
                for bins in [2048, 100] {
                    let data = x.as_slice().unwrap();
                    let got = extremes_and_percentile_bins_of_rows(data, rows, channels, bins, &targets);
                    let (e, found) = got.unwrap_or_else(|| panic!("{}: the selection gave up", dist.name()));
                    assert_eq!(found, by_histograms(&x, bins, &targets), "{} bins {bins}", dist.name());
                    for c in 0..channels {
                        let lane = x.index_axis(ndarray::Axis(1), c);
                        assert_eq!(e.min[c], lane.iter().copied().fold(f32::INFINITY, f32::min));
                        assert_eq!(e.max[c], lane.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                    }
                }
            }
        }
        // Too few rows, or a NaN: the caller counts histograms.
        let x = generate(Distribution::Gaussian, &[MIN_ROWS - 1, 4], 5);
        assert!(extremes_and_percentile_bins_of_rows(x.as_slice().unwrap(), MIN_ROWS - 1, 4, 2048, &[1.0]).is_none());
        let mut x = generate(Distribution::Gaussian, &[MIN_ROWS, 4], 5);
        x[[17, 2]] = f32::NAN;
        let t = [percentile_target(99.99, MIN_ROWS)];
        assert!(extremes_and_percentile_bins_of_rows(x.as_slice().unwrap(), MIN_ROWS, 4, 2048, &t).is_none());
    }
}
