//! Per-channel percentile bins by selection when every channel is one contiguous run of f32
//! values (channels outermost, e.g. `ch_axis = 0` of a weight): the trick of
//! [`select`](super::select) channel after channel, each channel read **once** from memory.
//!
//! A task takes consecutive channels in turn. For each one:
//!
//! 1. Its sample (one value per group of [`GROUP`] values, at an offset that varies from group
//!    to group) is read from the cache: the lines that hold it were asked for while the task
//!    scanned the channel before (a task's first channel reads them from memory).
//! 2. The sample gives a bracket `[lo, hi]` of `|x|` that very probably holds the wanted order
//!    statistics ([`bracket_of_sample`]).
//! 3. One pass over the channel finds its extremes, counts the values below `lo` and collects
//!    those inside the bracket, and meanwhile asks for the next channel's sample lines.
//! 4. A selection among the collected values gives each wanted order statistic and its bin by
//!    the exact bin rule of SPEC §5 ([`bins_of_collected`]): exactly the histogram's answer.
//!    Where the sample missed, the range overflows or the channel holds NaN or infinity, the
//!    channel gets no bins here and the caller counts its histogram.
//!
//! A task keeps its buffers from channel to channel: nothing is allocated per channel but its
//! bins.

use rayon::prelude::*;

use super::min_max::{self, Extremes};
use super::select::{MIN_ELEMENTS, abs_bits, bins_of_collected, bracket_of_sample};
use super::simd::{LANES, multiversion, prefetch};
use crate::search::percentile::{DecidingRank, deciding_rank};

/// The shortest run this applies to (a shorter one: the sample would be too much of it).
pub(crate) const MIN_RUN: usize = MIN_ELEMENTS;
/// The longest run this applies to: the next channel's sample lines (an eighth of the lines of
/// a run this long) must stay in the caches while the task scans a channel.
pub(crate) const MAX_RUN: usize = 1 << 17;
/// One sample value per this many values of a run.
const GROUP: usize = 64;
/// Sample positions added on each side of a rank on top of the spread of
/// [`bracket_of_sample`] (single values at varying offsets: close to independent).
const SLACK: f64 = 2.0;
/// Consecutive channels per task (each task reads its first channel's sample from memory).
const CHANNELS_PER_TASK: usize = 16;
/// `|x|` bits from which a value is infinite or NaN.
const NON_FINITE_BITS: u32 = 0x7f80_0000;

/// For each of the `channels` runs of `inner` values of `data` (`MIN_RUN <= inner <= MAX_RUN`),
/// its extremes and, when the selection succeeded, the bins of `targets` (see
/// [`first_bin_reaching`](crate::search::percentile::first_bin_reaching)) in a histogram of
/// `bins` bins on `[0, max |x|]` of that channel. `None` for a channel's bins where the caller
/// must count its histogram (its extremes are exact either way, NaN and infinity counted).
pub(crate) fn extremes_and_percentile_bins_of_runs(
    data: &[f32],
    channels: usize,
    inner: usize,
    bins: usize,
    targets: &[f32],
) -> Vec<(Extremes, Option<Vec<usize>>)> {
    let ranks: Vec<DecidingRank> = targets.iter().map(|&t| deciding_rank(t, inner as u64)).collect();
    let wanted: Vec<u64> =
        ranks.iter().filter_map(|r| if let DecidingRank::Rank(k) = *r { Some(k) } else { None }).collect();
    let data = &data[..channels * inner];
    if !(MIN_RUN..=MAX_RUN).contains(&inner) || wanted.is_empty() {
        return data.par_chunks(inner).map(|run| (min_max::extremes(run), None)).collect();
    }
    // The sample's positions, the same in every channel: one per group of GROUP values, at an
    // offset that varies from group to group.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let positions: Vec<usize> = (0..inner / GROUP)
        .map(|g| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            g * GROUP + (state >> 33) as usize % GROUP
        })
        .collect();
    let task = Task { inner, bins, ranks: &ranks, wanted: &wanted, positions: &positions };
    let per_task: Vec<Vec<(Extremes, Option<Vec<usize>>)>> =
        data.par_chunks(CHANNELS_PER_TASK * inner).map(|runs| task.run(runs)).collect();
    per_task.concat()
}

/// What every task shares.
struct Task<'a> {
    inner: usize,
    bins: usize,
    ranks: &'a [DecidingRank],
    wanted: &'a [u64],
    positions: &'a [usize],
}

impl Task<'_> {
    /// The channels of `runs` (consecutive runs of `inner` values), in turn.
    fn run(&self, runs: &[f32]) -> Vec<(Extremes, Option<Vec<usize>>)> {
        let n = self.inner;
        let mut out = Vec::with_capacity(runs.len() / n);
        let mut sample: Vec<u32> = Vec::with_capacity(self.positions.len());
        let mut scan = Scan::default();
        // The first channel's sample: every line asked for before any is read.
        if let Some(first) = runs.get(..n) {
            for &p in self.positions {
                prefetch(&first[p..p + 1]);
            }
            sample.extend(self.positions.iter().map(|&p| abs_bits(first[p])));
        }
        let mut channels = runs.chunks_exact(n).peekable();
        while let Some(run) = channels.next() {
            let next: &[f32] = channels.peek().copied().unwrap_or(&[]);
            out.push(self.channel(run, next, &mut sample, &mut scan));
            // The next channel's sample, from the lines asked for during the scan.
            sample.clear();
            if !next.is_empty() {
                sample.extend(self.positions.iter().map(|&p| abs_bits(next[p])));
            }
        }
        out
    }

    /// One channel, `run`, whose sample is `sample`; asks for the sample lines of `next`.
    fn channel(
        &self,
        run: &[f32],
        next: &[f32],
        sample: &mut [u32],
        scan: &mut Scan,
    ) -> (Extremes, Option<Vec<usize>>) {
        let n = run.len();
        let positions = if next.is_empty() { &[][..] } else { self.positions };
        let Some(bracket) = bracket_of_sample(sample, n, self.wanted, SLACK) else {
            // A bracket too wide to be worth collecting: the extremes alone.
            let (lo, hi) = (u32::MAX, u32::MAX); // a bracket that holds nothing
            scan.reset(0);
            scan_run(run, lo, hi, next, positions, scan);
            return (scan.extremes(run), None);
        };
        scan.reset((bracket.cap_fraction * n as f64) as usize + 4096);
        scan_run(run, bracket.lo, bracket.hi, next, positions, scan);
        let e = scan.extremes(run);
        if e.non_finite > 0 || scan.overflowed {
            return (e, None);
        }
        let found = bins_of_collected(e.min, e.max, scan.below, &mut scan.inside[..scan.count], self.bins, self.ranks);
        (e, found)
    }
}

/// What the scan of one channel found (kept from channel to channel for its buffer).
#[derive(Default)]
struct Scan {
    min: f32,
    max: f32,
    /// The largest `|x|` bits seen: NaN and infinity have the largest of all.
    top: u32,
    /// Values below the bracket.
    below: u64,
    /// The values inside the bracket (as `|x|` bits): the first `count`; the buffer has
    /// [`LANES`] slots past the cap.
    inside: Vec<u32>,
    count: usize,
    /// The bracket held more values than the cap: those collected are incomplete.
    overflowed: bool,
}

impl Scan {
    /// Adds the lanes of a scan, in lane order.
    fn add_lanes(&mut self, low: &[f32; LANES], high: &[f32; LANES], top: &[u32; LANES], below: &[u32; LANES]) {
        for j in 0..LANES {
            self.min = min_max::min(self.min, low[j]);
            self.max = min_max::max(self.max, high[j]);
            self.top = self.top.max(top[j]);
            self.below += below[j] as u64;
        }
    }

    /// Adds the values after the last whole group, one at a time.
    fn add_rest(&mut self, rest: &[f32], lo: u32, width: u32) {
        for &v in rest {
            let b = abs_bits(v);
            self.min = min_max::min(self.min, v);
            self.max = min_max::max(self.max, v);
            self.top = self.top.max(b);
            self.below += (b < lo) as u64;
        }
        for chunk in rest.chunks(LANES) {
            collect(chunk, lo, width, self);
        }
    }

    /// Ready for a channel, with room for `cap` values inside.
    fn reset(&mut self, cap: usize) {
        (self.min, self.max, self.top, self.below, self.count, self.overflowed) =
            (f32::INFINITY, f32::NEG_INFINITY, 0, 0, 0, false);
        self.inside.resize(cap + LANES, 0);
    }

    /// The extremes of the channel `run` just scanned (counting its NaN and infinities in a
    /// second pass: such a batch is refused anyway).
    fn extremes(&self, run: &[f32]) -> Extremes {
        let non_finite =
            if self.top >= NON_FINITE_BITS { run.iter().map(|&v| min_max::non_finite(v) as u64).sum() } else { 0 };
        Extremes { min: self.min, max: self.max, non_finite }
    }
}

/// Adds to `s` the extremes of `x`, its values of `|x|` below `lo` (counted) and those in
/// `[lo, hi]` (collected while there is room), [`LANES`] values at a time. Asks for the line of
/// `next` at `positions[g]` while it reads group `g` of `x` (`positions` ascending, one per
/// group, or empty). `x` holds at most [`MAX_RUN`] values (the lane counters are u32).
fn scan_run(x: &[f32], lo: u32, hi: u32, next: &[f32], positions: &[usize], s: &mut Scan) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { x86::scan_run(x, lo, hi, next, positions, s) };
        return;
    }
    scan_run_portable(x, lo, hi, next, positions, s);
}

multiversion! {
    /// [`scan_run`] in plain Rust: a vector with a value inside is collected on a separate path.
    fn scan_run_portable(x: &[f32], lo: u32, hi: u32, next: &[f32], positions: &[usize], s: &mut Scan) {
        let width = hi.wrapping_sub(lo);
        let mut low = [f32::INFINITY; LANES];
        let mut high = [f32::NEG_INFINITY; LANES];
        let mut top = [0u32; LANES];
        let mut below = [0u32; LANES];
        let mut groups = x.chunks_exact(GROUP);
        for (g, group) in (&mut groups).enumerate() {
            if let Some(ahead) = positions.get(g).and_then(|&p| next.get(p..p + 1)) {
                prefetch(ahead);
            }
            for ch in group.chunks_exact(LANES) {
                let mut hit = false;
                for j in 0..LANES {
                    let (v, b) = (ch[j], abs_bits(ch[j]));
                    low[j] = min_max::min(low[j], v);
                    high[j] = min_max::max(high[j], v);
                    top[j] = top[j].max(b);
                    below[j] += (b < lo) as u32;
                    hit |= b.wrapping_sub(lo) <= width;
                }
                if hit {
                    collect(ch, lo, width, s);
                }
            }
        }
        s.add_lanes(&low, &high, &top, &below);
        s.add_rest(groups.remainder(), lo, width);
    }
}

/// Collects the values of `x` (at most [`LANES`]) whose `|x|` bits `b` have
/// `b - lo <= width` (the rare path of [`scan_run`]: out of its loop, so that its registers stay
/// there), without a branch per value.
#[cold]
#[inline(never)]
fn collect(x: &[f32], lo: u32, width: u32, s: &mut Scan) {
    let Some(slots) = s.inside.get_mut(s.count..s.count + LANES) else {
        s.overflowed = true;
        return;
    };
    let mut k = 0;
    for &v in x.iter().take(LANES) {
        let b = abs_bits(v);
        slots[k & (LANES - 1)] = b;
        k += (b.wrapping_sub(lo) <= width) as usize;
    }
    s.count += k;
}

/// [`scan_run`] with AVX-512 intrinsics: a vector with values inside is collected in the loop,
/// its values inside compressed together by their mask (no call, no branch per value).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512i, _MM_HINT_T0, _mm_prefetch, _mm512_and_si512, _mm512_castps_si512, _mm512_cmple_epu32_mask,
        _mm512_cmplt_epu32_mask, _mm512_loadu_ps, _mm512_mask_add_epi32, _mm512_maskz_compress_epi32, _mm512_max_epu32,
        _mm512_max_ps, _mm512_min_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_si512, _mm512_storeu_ps,
        _mm512_storeu_si512, _mm512_sub_epi32,
    };

    use super::{GROUP, LANES, Scan};

    /// [`scan_run`](super::scan_run).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scan_run(x: &[f32], lo: u32, hi: u32, next: &[f32], positions: &[usize], s: &mut Scan) {
        let width = hi.wrapping_sub(lo);
        let groups = x.len() / GROUP;
        // The positions ascend, so the last one wanted is the largest.
        let prefetching = groups > 0 && positions.len() >= groups && positions[groups - 1] < next.len();
        let (lo_v, width_v) = (_mm512_set1_epi32(lo as i32), _mm512_set1_epi32(width as i32));
        let (abs, one) = (_mm512_set1_epi32(0x7fff_ffff), _mm512_set1_epi32(1));
        let (mut min, mut max) = (_mm512_set1_ps(f32::INFINITY), _mm512_set1_ps(f32::NEG_INFINITY));
        let (mut top, mut below) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        // Room to store a whole vector at `count`: `count <= last`.
        let last = s.inside.len().saturating_sub(LANES);
        let (mut count, mut overflowed, out) = (s.count, s.overflowed, s.inside.as_mut_ptr());
        for g in 0..groups {
            // SAFETY: `g < groups <= positions.len()`, `positions[g] <= positions[groups - 1] <
            // next.len()` (checked above), and a prefetch never faults; `(g + 1) * GROUP <=
            // x.len()`; a store of a vector at `count <= last` ends inside `s.inside`. The loads
            // and stores take unaligned pointers.
            unsafe {
                if prefetching {
                    _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(*positions.get_unchecked(g)).cast::<i8>());
                }
                for k in 0..GROUP / LANES {
                    let v = _mm512_loadu_ps(x.as_ptr().add(g * GROUP + k * LANES));
                    let bits = _mm512_and_si512(_mm512_castps_si512(v), abs);
                    // `min_max::min` and `max`: the running value unless `v` is smaller
                    // (larger); NaN and equal values keep the running one.
                    min = _mm512_min_ps(v, min);
                    max = _mm512_max_ps(v, max);
                    top = _mm512_max_epu32(top, bits);
                    below = _mm512_mask_add_epi32(below, _mm512_cmplt_epu32_mask(bits, lo_v), below, one);
                    let hit = _mm512_cmple_epu32_mask(_mm512_sub_epi32(bits, lo_v), width_v);
                    if hit != 0 {
                        if count <= last {
                            _mm512_storeu_si512(
                                out.add(count).cast::<__m512i>(),
                                _mm512_maskz_compress_epi32(hit, bits),
                            );
                            count += hit.count_ones() as usize;
                        } else {
                            overflowed = true;
                        }
                    }
                }
            }
        }
        (s.count, s.overflowed) = (count, overflowed);
        let (mut low, mut high, mut tops, mut belows) = ([0f32; LANES], [0f32; LANES], [0u32; LANES], [0u32; LANES]);
        // SAFETY: each array holds one vector; the stores take unaligned pointers.
        unsafe {
            _mm512_storeu_ps(low.as_mut_ptr(), min);
            _mm512_storeu_ps(high.as_mut_ptr(), max);
            _mm512_storeu_si512(tops.as_mut_ptr().cast::<__m512i>(), top);
            _mm512_storeu_si512(belows.as_mut_ptr().cast::<__m512i>(), below);
        }
        s.add_lanes(&low, &high, &tops, &belows);
        s.add_rest(&x[groups * GROUP..], lo, width);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::abs_histogram;
    use crate::observer::MIX_FRACTIONS;
    use crate::search::percentile::{first_bin_reaching, fraction_target, percentile_target};
    use crate::synthetic::{Distribution, generate};
    use crate::tensor::TensorView;

    /// The extremes and bins of one channel, the way SPEC states them.
    fn by_histogram(run: &[f32], bins: usize, targets: &[f32]) -> (Extremes, Vec<usize>) {
        let e = min_max::extremes(run);
        let range = if -e.min > e.max { -e.min } else { e.max };
        let view = ndarray::ArrayView1::from(run).into_dyn();
        let hist = abs_histogram(&TensorView::F32(view), bins, range);
        (e, targets.iter().map(|&t| first_bin_reaching(&hist, t)).collect())
    }

    /// Channels of several kinds side by side (each channel's sample is its own).
    fn channels(inner: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for (c, dist) in [Distribution::LaplaceOutliers, Distribution::Gaussian, Distribution::Relu].iter().enumerate()
        {
            out.extend(generate(*dist, &[inner], c as u64 + 1).iter().map(|v| v * (1 + 10 * c) as f32));
        }
        out.extend((0..inner).map(|i| i as f32)); // ascending
        out.extend((0..inner).map(|i| -((inner - i) as f32))); // descending
        out.extend(std::iter::repeat_n(0.75, inner)); // constant
        out.extend(std::iter::repeat_n(0.0, inner)); // zeros
        // Large values only where the sample is unlikely to be: the scan must notice.
        out.extend((0..inner).map(|i| if i % 4099 == 4000 { 1e3 } else { 0.5 }));
        out.extend((0..inner).map(|i| if (i / 1000) % 2 == 0 { 1.0 } else { 3.0 }));
        out.extend((0..inner).map(|i| if i == inner / 3 { 3.0e38 } else { i as f32 })); // range * bins overflows
        out
    }

    type Kernel = fn(&[f32], u32, u32, &[f32], &[usize], &mut Scan);

    /// The two kernels (plain Rust for CPUs without AVX-512, intrinsics for those with it) find
    /// the same, for runs of any length, with and without a next channel to ask for.
    #[test]
    fn both_kernels_find_the_same() {
        for n in [0usize, 1, 15, 16, 63, 64, 65, 1000, 4099] {
            let x: Vec<f32> = (0..n).map(|i| (((i * 7919) % 211) as f32 - 105.0) * 0.125).collect();
            let next: Vec<f32> = vec![1.0; n];
            let positions: Vec<usize> = (0..n / GROUP).map(|g| g * GROUP + g % GROUP).collect();
            for (lo, hi) in [(abs_bits(2.0), abs_bits(5.0)), (abs_bits(10.0), u32::MAX), (u32::MAX, u32::MAX), (0, 0)] {
                for cap in [0, 8, n] {
                    let run = |kernel: Kernel| {
                        let mut scan = Scan::default();
                        scan.reset(cap);
                        kernel(&x, lo, hi, &next, &positions, &mut scan);
                        let mut inside = scan.inside[..scan.count].to_vec();
                        inside.sort_unstable();
                        (scan.min, scan.max, scan.top, scan.below, scan.overflowed, inside)
                    };
                    let plain = run(scan_run_portable);
                    assert_eq!(run(scan_run), plain, "n {n}, bracket {lo:#x}..{hi:#x}, cap {cap}");
                    if !plain.4 {
                        let bits: Vec<u32> = x.iter().map(|&v| abs_bits(v)).collect();
                        let mut inside: Vec<u32> = bits.iter().copied().filter(|&b| b >= lo && b <= hi).collect();
                        inside.sort_unstable();
                        assert_eq!(plain.5, inside, "n {n}");
                        assert_eq!(plain.3 as usize, bits.iter().filter(|&&b| b < lo).count());
                    }
                }
            }
        }
    }

    #[test]
    fn every_channel_equals_its_histogram() {
        for inner in [MIN_RUN, 40_000 + 3, MAX_RUN] {
            let data = channels(inner);
            let count = data.len() / inner;
            let mix: Vec<f32> = MIX_FRACTIONS.iter().map(|&f| fraction_target(f, inner)).collect();
            let all = [
                vec![percentile_target(99.99, inner)],
                vec![percentile_target(99.0, inner)],
                vec![percentile_target(100.0, inner)],
                vec![percentile_target(0.0, inner)],
                vec![percentile_target(50.0, inner)],
                mix,
            ];
            for targets in all {
                for bins in [2048, 7] {
                    let got = extremes_and_percentile_bins_of_runs(&data, count, inner, bins, &targets);
                    assert_eq!(got.len(), count);
                    let mut selected = 0;
                    for (c, (e, found)) in got.into_iter().enumerate() {
                        let (want_e, want) = by_histogram(&data[c * inner..][..inner], bins, &targets);
                        assert_eq!(e, want_e, "inner {inner}, channel {c}");
                        if let Some(found) = found {
                            assert_eq!(found, want, "inner {inner}, channel {c}, bins {bins}, targets {targets:?}");
                            selected += 1;
                        }
                    }
                    // Activation-like channels at the usual percentiles need no histogram.
                    if targets.len() > 1 || targets[0] >= percentile_target(99.0, inner) {
                        assert!(selected >= 3, "inner {inner}: {selected} channels by selection");
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_values_are_counted_and_leave_no_bins() {
        let inner = MIN_RUN;
        let mut data = generate(Distribution::Gaussian, &[3 * inner], 5).iter().copied().collect::<Vec<f32>>();
        data[inner + 100] = f32::NAN;
        data[2 * inner + 7] = f32::INFINITY;
        data[2 * inner + 9] = f32::NEG_INFINITY;
        let got = extremes_and_percentile_bins_of_runs(&data, 3, inner, 2048, &[percentile_target(99.99, inner)]);
        let counts: Vec<u64> = got.iter().map(|(e, _)| e.non_finite).collect();
        assert_eq!(counts, [0, 1, 2]);
        assert!(got[0].1.is_some() && got[1].1.is_none() && got[2].1.is_none());
        assert_eq!(got[2].0.max, f32::INFINITY);
    }
}
