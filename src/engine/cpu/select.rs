//! Percentile bins by selection: the extremes and the bins of percentile targets from **one**
//! pass over the data, where a histogram needs two (the range `max |x|` is known only after a
//! first pass) and costs a scattered counter update per value.
//!
//! The first bin whose cumulative count reaches a target is the bin of one order statistic of
//! `|x|` ([`DecidingRank`]). So:
//!
//! 1. A sample of the tensor (runs of consecutive values spread over it) gives a bracket
//!    `[lo, hi]` of `|x|` that very probably holds the wanted order statistics.
//! 2. One pass computes the extremes, counts the values below `lo` and collects those inside
//!    the bracket (a small fraction of the tensor, capped).
//! 3. When every wanted rank falls among the collected values, a selection finds each value and
//!    its bin follows from the exact bin rule of SPEC §5, with the range from the extremes. The
//!    answer is exactly the histogram's. Otherwise (an unrepresentative sample), the caller falls
//!    back to the histogram.
//!
//! Values are compared through the bits of `|v|`, which order finite floats as their values.

use ndarray::ArrayViewD;

use super::histogram::bin_of;
use super::min_max::{self, Extremes, ExtremesPart, ExtremesReducer};
use super::simd::{LANES, multiversion, prefetch};
use super::walk::{Reducer, reduce};
use crate::search::percentile::{DecidingRank, deciding_rank};
use crate::tensor::{Element, HostLayout};

/// The sample: about one value in [`SAMPLE_EVERY`] of the tensor, between [`MIN_SAMPLE`] and
/// [`MAX_SAMPLE`] values, in runs of [`LONG_RUN`] consecutive values (tensors of at least
/// [`LONG_RUNS_FROM`] values) or [`SHORT_RUN`] (smaller ones, e.g. one channel's values: more
/// runs make a tighter bracket).
const SAMPLE_EVERY: usize = 16;
const MIN_SAMPLE: usize = 4096;
const MAX_SAMPLE: usize = 65536;
const LONG_RUN: usize = 64;
const SHORT_RUN: usize = 16;
const LONG_RUNS_FROM: usize = 1 << 20;
/// Tensors smaller than this use the histogram: the sample would be too much of the tensor.
pub(crate) const MIN_ELEMENTS: usize = 1 << 15;
/// The sample standard deviations the bracket adds on each side of a rank.
const SPREAD: f64 = 6.0;
/// Sample positions added on each side of a rank on top of [`SPREAD`], as a fraction of the run
/// length (the values of a run are not independent).
const SLACK_PER_RUN: f64 = 0.5;
/// The most a bracket may expect to hold, as a fraction of the tensor (a larger one, for a
/// percentile near the middle, is not worth collecting: the histogram is used). The smallest
/// samples (a channel of 2^15 to 2^16 values) need about 2% for the 99.99th percentile.
const MAX_EXPECTED_FRACTION: f64 = 1.0 / 16.0;

/// The extremes of the tensor and, when the selection succeeded, the bins of `targets`
/// (see [`first_bin_reaching`](crate::search::percentile::first_bin_reaching)) in a histogram of
/// `bins` bins on `[0, max |x|]`. `None` for the bins when the caller must count a histogram:
/// the tensor is small or not contiguous, it holds NaN or infinity, the range is so large that
/// `max |x| * bins` overflows, or the sample missed.
pub(crate) fn extremes_and_percentile_bins<T: Element>(
    view: &ArrayViewD<'_, T>,
    bins: usize,
    targets: &[f32],
) -> (ExtremesPart, Option<Vec<usize>>) {
    let layout = HostLayout::new(view, None);
    let n = view.len();
    let ranks: Vec<DecidingRank> = targets.iter().map(|&t| deciding_rank(t, n as u64)).collect();
    let wanted: Vec<u64> =
        ranks.iter().filter_map(|r| if let DecidingRank::Rank(k) = *r { Some(k) } else { None }).collect();
    let bracket = match &layout {
        HostLayout::Dense { data, .. } if data.len() == n && n >= MIN_ELEMENTS && !wanted.is_empty() => {
            bracket_from_sample(data, &wanted)
        }
        _ => None,
    };
    let Some(bracket) = bracket else {
        return (reduce(layout, &ExtremesReducer), None);
    };
    let found = reduce(layout, &bracket);
    let mut e = ExtremesReducer.part(0, 1);
    e.add(0, found.extremes);
    let bins = bins_of_ranks(&e, found, bins, &ranks);
    (e, bins)
}

/// The bin of every rank, from the values `found` collected; `None` when one is missing.
fn bins_of_ranks(e: &ExtremesPart, mut found: Found, bins: usize, ranks: &[DecidingRank]) -> Option<Vec<usize>> {
    let (&[lo], &[hi]) = (e.min.as_slice(), e.max.as_slice()) else {
        return None;
    };
    if e.non_finite > 0 || found.overflowed {
        return None;
    }
    bins_of_collected(lo, hi, found.below, &mut found.inside, bins, ranks)
}

/// The bin of every rank among the (finite) values of one tensor or channel, with the extremes
/// `min` and `max`, from the count of values below a bracket (`below`) and the `|v|` bits of
/// all those inside it (`inside`, reordered); `None` when a rank falls outside what was
/// collected, or where `max |x| * bins` overflows (the bin rule is not monotone there).
pub(crate) fn bins_of_collected(
    min: f32,
    max: f32,
    below: u64,
    inside: &mut [u32],
    bins: usize,
    ranks: &[DecidingRank],
) -> Option<Vec<usize>> {
    if bins == 0 {
        return None;
    }
    let range = if -min > max { -min } else { max };
    let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
    if !(range * bins_f).is_finite() {
        return None; // where `|v| * bins` overflows, the bin rule is not monotone
    }
    ranks
        .iter()
        .map(|rank| match *rank {
            DecidingRank::FirstBin => Some(0),
            DecidingRank::NoBin => Some(bins),
            DecidingRank::Rank(k) => {
                let j = k.checked_sub(below + 1)? as usize;
                if j >= inside.len() {
                    return None;
                }
                let v = f32::from_bits(nth_smallest(inside, j));
                Some(if range > 0.0 { bin_of(v, bins_f, top, range, nb) as usize } else { 0 })
            }
        })
        .collect()
}

/// The bins of `targets` in a histogram of `bins` bins on `[0, range]` of the values whose `|v|`
/// bits are `values` (all of them, finite, `range` their largest): by selection of the deciding
/// order statistics, or (where `range * bins` overflows and the bin rule is not monotone) by
/// counting. For channels with fewer values than bins, where this costs less than a histogram.
pub(crate) fn bins_of_all_values(values: &mut [u32], range: f32, bins: usize, targets: &[f32]) -> Vec<usize> {
    let n = values.len() as u64;
    let (bins_f, top, nb) = (bins as f32, bins.saturating_sub(1) as f32, bins as u32);
    if range > 0.0 && !(range * bins_f).is_finite() {
        let mut counts = vec![0u64; bins];
        for &b in values.iter() {
            let i = bin_of(f32::from_bits(b), bins_f, top, range, nb) as usize;
            if i < bins {
                counts[i] += 1;
            }
        }
        return targets.iter().map(|&t| crate::search::percentile::first_bin_reaching(&counts, t)).collect();
    }
    targets
        .iter()
        .map(|&t| match deciding_rank(t, n) {
            DecidingRank::FirstBin => 0,
            DecidingRank::NoBin => bins,
            DecidingRank::Rank(k) => {
                let bits = nth_smallest(values, k as usize - 1);
                if range > 0.0 { bin_of(f32::from_bits(bits), bins_f, top, range, nb) as usize } else { 0 }
            }
        })
        .collect()
}

/// The bits of `|v|`: for finite values, ordered as the values.
#[inline(always)]
pub(crate) fn abs_bits(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

/// A bracket `[lo, hi]` of `|x|` bits around the ranks `wanted` (1-based, among `data.len()`),
/// from a sample of `data`; `None` when it would be too wide to be worth collecting.
fn bracket_from_sample<T: Element>(data: &[T], wanted: &[u64]) -> Option<Bracket> {
    let n = data.len();
    let run = if n >= LONG_RUNS_FROM { LONG_RUN } else { SHORT_RUN };
    let runs = (n / SAMPLE_EVERY).clamp(MIN_SAMPLE, MAX_SAMPLE) / run;
    let slack = SLACK_PER_RUN * run as f64;
    let mut sample = Vec::with_capacity(run * runs);
    // Run r starts in the r-th slice of the tensor, at an offset that varies from run to run, so
    // that a period in the data (a channel, a row) does not line up with the runs.
    let slice = n / runs;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let starts: Vec<usize> = (0..runs)
        .map(|r| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let room = slice.saturating_sub(run).max(1);
            (r * slice + (state >> 33) as usize % room).min(n - run)
        })
        .collect();
    // Every run is asked for before any is read: their cache misses overlap.
    for &start in &starts {
        prefetch(&data[start..start + run]);
    }
    for &start in &starts {
        sample.extend(data[start..start + run].iter().map(|v| abs_bits(v.to_f32())));
    }
    bracket_of_sample(&mut sample, n, wanted, slack)
}

/// The bracket of `|x|` bits around the ranks `wanted` (1-based, among `n` values) from a sample
/// of them (as bits, reordered), with `slack` sample positions added on each side; `None` when it
/// would be too wide to be worth collecting.
pub(crate) fn bracket_of_sample(sample: &mut [u32], n: usize, wanted: &[u64], slack: f64) -> Option<Bracket> {
    let m = sample.len() as f64;
    let position = |k: u64, side: f64| {
        let q = k as f64 / n as f64;
        q * m + side * (SPREAD * (m * q * (1.0 - q)).sqrt() + slack)
    };
    let first = wanted.iter().map(|&k| position(k, -1.0)).fold(f64::INFINITY, f64::min);
    let last = wanted.iter().map(|&k| position(k, 1.0)).fold(f64::NEG_INFINITY, f64::max);
    if (last - first) / m > MAX_EXPECTED_FRACTION {
        return None;
    }
    // The two order statistics of the sample that bound the bracket.
    let (lo_at, hi_at) = ((first >= 0.0).then_some(first as usize), (last < m - 1.0).then_some(last.ceil() as usize));
    let (lo, hi) = order_statistics(sample, lo_at, hi_at);
    // Each piece may collect its share of twice the expected count, plus some room.
    let cap_fraction = 2.0 * (last - first) / m;
    Some(Bracket { lo, hi, cap_fraction })
}

/// The values at positions `lo_at` and `hi_at` of `sample` in sorted order (`0` and `u32::MAX`
/// for a position that is `None`), each by [`nth_smallest`], not a sort. May reorder `sample`.
pub(crate) fn order_statistics(sample: &mut [u32], lo_at: Option<usize>, hi_at: Option<usize>) -> (u32, u32) {
    let hi = hi_at.map_or(u32::MAX, |at| nth_smallest(sample, at));
    let lo = lo_at.map_or(0, |at| nth_smallest(sample, at));
    (lo, hi)
}

/// Positions this close to either end of the order are found by one pass that keeps the few
/// largest (smallest) values seen, not by a selection: the percentiles of calibration lie there.
const NEAR_END: usize = 16;

/// The value at position `at` (0-based, `at < values.len()`) of `values` in ascending order:
/// by one pass keeping the [`NEAR_END`] largest or smallest values when `at` is that close to
/// an end, else by a selection (which reorders `values`).
pub(crate) fn nth_smallest(values: &mut [u32], at: usize) -> u32 {
    let n = values.len();
    if n - at <= NEAR_END {
        return nth_from_end(values, n - at, true);
    }
    if at < NEAR_END {
        return nth_from_end(values, at + 1, false);
    }
    *values.select_nth_unstable(at).1
}

multiversion! {
    /// The `k`-th (1-based, `1 <= k <= min(NEAR_END, values.len())`) largest value of `values`
    /// (`largest`), or smallest: one pass that keeps the `k` first met so far in order, testing
    /// [`LANES`] values at a time against the `k`-th kept (few of them enter).
    fn nth_from_end(values: &[u32], k: usize, largest: bool) -> u32 {
        let before = |a: u32, b: u32| if largest { a > b } else { a < b };
        let mut kept = [0u32; NEAR_END];
        let mut held = 0;
        let mut keep = |v: u32, kept: &mut [u32; NEAR_END]| {
            // Insert `v`, dropping the last kept value when all k slots are full.
            let mut i = if held < k { held } else { k - 1 };
            while i > 0 && before(v, kept[i - 1]) {
                kept[i] = kept[i - 1];
                i -= 1;
            }
            kept[i] = v;
            held = (held + 1).min(k);
        };
        let (first, rest) = values.split_at(k.min(values.len()));
        for &v in first {
            keep(v, &mut kept);
        }
        let mut chunks = rest.chunks_exact(LANES);
        for chunk in &mut chunks {
            let last = kept[k - 1];
            let mut enters = false;
            for &v in chunk {
                enters |= before(v, last);
            }
            if enters {
                for &v in chunk {
                    if before(v, kept[k - 1]) {
                        keep(v, &mut kept);
                    }
                }
            }
        }
        for &v in chunks.remainder() {
            if before(v, kept[k - 1]) {
                keep(v, &mut kept);
            }
        }
        kept[k - 1]
    }
}

/// Finds the extremes of `x`, counts the values of `|x|` below `lo` and collects those in
/// `[lo, hi]` (as bits), up to a cap per piece.
pub(crate) struct Bracket {
    /// The bracket's ends, as `|x|` bits.
    pub(crate) lo: u32,
    pub(crate) hi: u32,
    /// The most a piece may collect, as a fraction of the values it saw.
    pub(crate) cap_fraction: f64,
}

/// What a piece of the tensor found.
pub(crate) struct Found {
    extremes: Extremes,
    below: u64,
    inside: Vec<u32>,
    /// Values scanned (the cap on `inside` grows with them).
    seen: u64,
    /// A piece collected more than its cap: the values inside are incomplete.
    overflowed: bool,
}

/// Values per block: the u32 lane counters flush to u64 after each block.
const BLOCK: usize = 1 << 20;

multiversion! {
    /// Adds to `found` the extremes of `x`, its values below `lo` (counted) and those in
    /// `[lo, hi]` (collected, while there is room under `cap`), in one vectorised loop; a vector
    /// of [`LANES`] values with one inside is collected on a separate (rare) path.
    fn scan(x: &[f32], lo: u32, hi: u32, cap: usize, found: &mut Found) {
        let width = hi.wrapping_sub(lo);
        for block in x.chunks(BLOCK) {
            let mut low = [f32::INFINITY; LANES];
            let mut high = [f32::NEG_INFINITY; LANES];
            let mut nf = [0u32; LANES];
            let mut below = [0u32; LANES];
            let mut lanes = block.chunks_exact(LANES);
            for ch in &mut lanes {
                let mut hits = [0u32; LANES];
                for j in 0..LANES {
                    let (v, b) = (ch[j], abs_bits(ch[j]));
                    low[j] = min_max::min(low[j], v);
                    high[j] = min_max::max(high[j], v);
                    nf[j] += min_max::non_finite(v);
                    below[j] += (b < lo) as u32;
                    hits[j] = (b.wrapping_sub(lo) <= width) as u32;
                }
                if hits.iter().fold(0, |a, &h| a | h) != 0 {
                    collect(ch, lo, hi, cap, found);
                }
            }
            for &v in lanes.remainder() {
                let b = abs_bits(v);
                low[0] = min_max::min(low[0], v);
                high[0] = min_max::max(high[0], v);
                nf[0] += min_max::non_finite(v);
                below[0] += (b < lo) as u32;
            }
            collect(lanes.remainder(), lo, hi, cap, found);
            for j in 0..LANES {
                found.extremes = found.extremes.join(Extremes { min: low[j], max: high[j], non_finite: nf[j] as u64 });
                found.below += below[j] as u64;
            }
        }
    }
}

/// Collects the values of `x` inside `[lo, hi]` (the rare path of [`scan`]: out of its loop, so
/// that its registers stay there).
#[cold]
#[inline(never)]
fn collect(x: &[f32], lo: u32, hi: u32, cap: usize, found: &mut Found) {
    let width = hi.wrapping_sub(lo);
    for &v in x {
        let b = abs_bits(v);
        if b.wrapping_sub(lo) <= width {
            if found.inside.len() < cap {
                found.inside.push(b);
            } else {
                found.overflowed = true;
            }
        }
    }
}

impl Reducer for Bracket {
    type Part = Found;

    fn part(&self, _first: usize, _count: usize) -> Found {
        Found { extremes: Extremes::EMPTY, below: 0, inside: Vec::new(), seen: 0, overflowed: false }
    }

    fn part_bytes(&self, _count: usize) -> usize {
        64
    }

    fn run(&self, part: &mut Found, _c: usize, x: &[f32]) {
        // The cap grows with the values seen, so a piece of any size gets its share.
        part.seen += x.len() as u64;
        let cap = (self.cap_fraction * part.seen as f64) as usize + 4096;
        scan(x, self.lo, self.hi, cap, part);
    }

    fn rows(&self, part: &mut Found, rows: &[f32], _channels: usize) {
        self.run(part, 0, rows);
    }

    fn merge(&self, part: &mut Found, other: Found) {
        part.extremes = part.extremes.join(other.extremes);
        part.below += other.below;
        part.seen += other.seen;
        part.overflowed |= other.overflowed;
        part.inside.extend(other.inside);
    }

    fn concat(&self, parts: Vec<Found>) -> Found {
        let mut out = self.part(0, 0);
        for p in parts {
            self.merge(&mut out, p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::engine::cpu::{self, abs_histogram};
    use crate::observer::MIX_FRACTIONS;
    use crate::search::percentile::{first_bin_reaching, fraction_target, percentile_target};
    use crate::synthetic::{Distribution, generate};
    use crate::tensor::TensorView;

    /// The bins of `targets` from the histogram, the way SPEC states it.
    fn by_histogram(x: &ArrayD<f32>, bins: usize, targets: &[f32]) -> Vec<usize> {
        let range = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let hist = abs_histogram(&TensorView::F32(x.view()), bins, range);
        targets.iter().map(|&t| first_bin_reaching(&hist, t)).collect()
    }

    fn targets(n: usize) -> Vec<Vec<f32>> {
        vec![
            vec![percentile_target(99.99, n)],
            vec![percentile_target(99.0, n)],
            vec![percentile_target(100.0, n)],
            vec![percentile_target(0.0, n)],
            vec![percentile_target(50.0, n)],
            MIX_FRACTIONS.iter().map(|&f| fraction_target(f, n)).collect(),
        ]
    }

    fn tensors(n: usize) -> Vec<(&'static str, ArrayD<f32>)> {
        let shape = IxDyn(&[n]);
        let mut out = vec![];
        for dist in [Distribution::LaplaceOutliers, Distribution::Gaussian, Distribution::Relu] {
            out.push((dist.name(), generate(dist, &[n], 7)));
        }
        out.push(("ascending", ArrayD::from_shape_fn(shape.clone(), |i| i[0] as f32)));
        out.push(("descending", ArrayD::from_shape_fn(shape.clone(), |i| -((n - i[0]) as f32))));
        out.push(("constant", ArrayD::from_elem(shape.clone(), 0.75)));
        out.push(("zeros", ArrayD::from_elem(shape.clone(), 0.0)));
        // Large values only where the sample's runs are unlikely to be: the selection must notice.
        out.push((
            "sparse spikes",
            ArrayD::from_shape_fn(shape.clone(), |i| if i[0] % 4099 == 4000 { 1e3 } else { 0.5 }),
        ));
        out.push(("two levels", ArrayD::from_shape_fn(shape, |i| if (i[0] / 1000) % 2 == 0 { 1.0 } else { 3.0 })));
        out
    }

    /// Every position of every order, near the ends or not, equals the sorted value, duplicates
    /// and all.
    #[test]
    fn nth_smallest_equals_the_sorted_value() {
        for n in [1usize, 2, 5, 16, 17, 40, 300] {
            for pattern in 0..4 {
                let values: Vec<u32> = (0..n)
                    .map(|i| match pattern {
                        0 => (i * 7919 % 101) as u32,
                        1 => i as u32,
                        2 => (n - i) as u32,
                        _ => (i % 3) as u32,
                    })
                    .collect();
                let mut sorted = values.clone();
                sorted.sort_unstable();
                for (at, &want) in sorted.iter().enumerate() {
                    let mut v = values.clone();
                    assert_eq!(nth_smallest(&mut v, at), want, "n {n}, pattern {pattern}, at {at}");
                }
                let mut v = values.clone();
                for (lo, hi) in [(0, n - 1), (n / 2, n - 1), (n / 3, n / 2)] {
                    assert_eq!(order_statistics(&mut v, Some(lo), Some(hi)), (sorted[lo], sorted[hi]));
                }
            }
        }
    }

    #[test]
    fn agrees_with_the_histogram() {
        for n in [MIN_ELEMENTS, (1 << 20) + 3] {
            for (name, x) in tensors(n) {
                for t in targets(n) {
                    for bins in [2048, 7] {
                        let expected = by_histogram(&x, bins, &t);
                        let (e, found) = extremes_and_percentile_bins(&x.view(), bins, &t);
                        assert_eq!(e.non_finite, 0);
                        let plain = crate::engine::cpu::min_max::extremes(x.as_slice().unwrap_or(&[]));
                        assert_eq!((e.min[0], e.max[0]), (plain.min, plain.max), "{name}, n {n}");
                        if let Some(found) = found {
                            assert_eq!(found, expected, "{name}, n {n}, bins {bins}, targets {t:?}");
                        }
                        // With the histogram as the fall-back where the selection gave up.
                        let (_, found) = cpu::extremes_and_percentile_bins(&TensorView::F32(x.view()), bins, &t);
                        assert_eq!(found, expected, "{name}, n {n}, bins {bins}, targets {t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn activations_need_one_pass() {
        let n = 1 << 20;
        for dist in [Distribution::LaplaceOutliers, Distribution::Gaussian, Distribution::Relu] {
            let x = generate(dist, &[n], 11);
            for t in [vec![percentile_target(99.99, n)], targets(n)[5].clone()] {
                let (_, found) = extremes_and_percentile_bins(&x.view(), 2048, &t);
                assert_eq!(found, Some(by_histogram(&x, 2048, &t)), "{}", dist.name());
            }
        }
    }

    #[test]
    fn f16_agrees_with_the_histogram() {
        let n = 1 << 18;
        let x = generate(Distribution::LaplaceOutliers, &[n], 3);
        let h = x.mapv(half::f16::from_f32);
        let widened = h.mapv(|v| v.to_f32());
        let t = vec![percentile_target(99.99, n)];
        let (_, found) = extremes_and_percentile_bins(&h.view(), 2048, &t);
        assert_eq!(found, Some(by_histogram(&widened, 2048, &t)));
    }

    #[test]
    fn non_finite_or_small_tensors_fall_back() {
        let mut x = generate(Distribution::Gaussian, &[1 << 18], 5);
        x[[100]] = f32::NAN;
        let t = [percentile_target(99.99, x.len())];
        let (e, found) = extremes_and_percentile_bins(&x.view(), 2048, &t);
        assert_eq!((e.non_finite, found), (1, None));
        let x = generate(Distribution::Gaussian, &[MIN_ELEMENTS - 1], 5);
        assert_eq!(extremes_and_percentile_bins(&x.view(), 2048, &t).1, None);
    }
}
