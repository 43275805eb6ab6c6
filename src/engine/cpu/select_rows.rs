//! Per-channel percentile bins by selection when the channel axis is innermost (rows of one
//! value per channel): the trick of [`select`](super::select), with a bracket per channel, in one
//! pass over the rows.
//!
//! 1. A sample of the rows (spread over the tensor) gives each channel a bracket `[lo, hi]` of
//!    its `|x|` that very probably holds the wanted order statistics.
//! 2. One pass over the rows computes every channel's extremes, counts its values below `lo` and
//!    collects those inside the bracket (about 1% of them), sixteen channels at a time, several
//!    rows at a time: which values are inside is noted as a bit mask per sixteen, and those
//!    values are collected after the rows, from the cache.
//! 3. When every channel's wanted ranks fall among its collected values, a selection gives each
//!    value and its bin follows from the exact bin rule of SPEC §5: exactly the histogram's
//!    answer. Otherwise (a sample that missed, a range where the bin rule is not monotone, NaN
//!    or infinity) the caller counts the histograms.
//!
//! The rows are cut among tasks; a task keeps its buffers for the next one. The channels' last
//! steps (the sample's selection, the merge of the tasks' collections and the final selection)
//! run in parallel over blocks of channels.

use rayon::prelude::*;

use super::min_max::{self, ExtremesPart, ExtremesReducer};
use super::select::{abs_bits, bins_of_collected, order_statistics};
use super::simd::{LANES, multiversion, prefetch};
use super::walk::Reducer;
use crate::search::percentile::{DecidingRank, deciding_rank};
use crate::tensor::Element;

/// Rows in the sample (at most; at least one row in [`SAMPLE_EVERY`]).
const SAMPLE_ROWS: usize = 1024;
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
const ROWS_PER_TASK: usize = 1 << 11;
/// Rows folded at a time by [`scan_rows`]: each channel's running state is loaded and stored
/// once per this many rows.
const ROWS_PER_PASS: usize = 4;
/// Passes ahead of the one folded whose rows [`scan_rows`] asks for.
const PREFETCH_PASSES: usize = 1;
/// Channels per task of the sample's transposition and selection.
const SAMPLE_BLOCK: usize = 16;
/// Sampled rows ahead of the one read that the sample's transposition asks for.
const SAMPLE_AHEAD: usize = 8;
/// Values widened at a time from f16/bf16.
const WIDEN_BLOCK: usize = 1 << 14;
/// `|x|` bits from which a value is infinite or NaN.
const NON_FINITE_BITS: u32 = 0x7f80_0000;

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
    let brackets = Brackets::from_sample(data, outer, channels, &wanted)?;
    let tasks = outer.div_ceil(ROWS_PER_TASK);
    let parts: Vec<Found> = (0..tasks)
        .into_par_iter()
        .map_init(Scan::default, |scan, t| {
            let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(outer);
            let cap = (brackets.cap_fraction * (rows.len() * channels) as f64) as usize + 4096;
            scan.reset(channels, cap);
            let slice = &data[rows.start * channels..rows.end * channels];
            match T::as_f32(slice) {
                Some(x) => scan_rows(x, &brackets, scan),
                None => {
                    let mut buf = vec![0f32; (WIDEN_BLOCK / channels).max(1) * channels];
                    for src in slice.chunks(buf.len()) {
                        T::widen(src, &mut buf[..src.len()]);
                        scan_rows(&buf[..src.len()], &brackets, scan);
                    }
                }
            }
            scan.found()
        })
        .collect();
    if parts.iter().any(|p| p.top >= NON_FINITE_BITS || p.overflowed) {
        return None; // NaN or infinity (the caller counts them), or a bracket that held too much
    }
    // Each channel: its extremes, count below and collected values over the tasks (in row
    // order), then its bins.
    let per_channel: Vec<Option<(f32, f32, Vec<usize>)>> = (0..channels)
        .into_par_iter()
        .map_init(Vec::new, |values: &mut Vec<u32>, c| {
            values.clear();
            let (mut lo, mut hi, mut below) = (f32::INFINITY, f32::NEG_INFINITY, 0u64);
            for p in &parts {
                lo = min_max::min(lo, p.min[c]);
                hi = min_max::max(hi, p.max[c]);
                below += p.below[c] as u64;
                values.extend_from_slice(p.inside(c));
            }
            let found = bins_of_collected(lo, hi, below, values, bins, &ranks)?;
            Some((lo, hi, found))
        })
        .collect();
    let mut e = ExtremesReducer.part(0, channels);
    let mut out = Vec::with_capacity(channels * targets.len());
    for (c, found) in per_channel.into_iter().enumerate() {
        let (lo, hi, found) = found?;
        (e.min[c], e.max[c]) = (lo, hi);
        out.extend(found);
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
        let rows: Vec<usize> = (0..m)
            .map(|j| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (j * slice + (state >> 33) as usize % slice.max(1)).min(outer - 1)
            })
            .collect();
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
        // A block of channels at a time: its sample transposed channel-major (`sample[k * m + j]`
        // is channel `c0 + k`'s value in sampled row `j`), then each channel's two order
        // statistics.
        let blocks: Vec<(Vec<u32>, Vec<u32>)> = (0..channels.div_ceil(SAMPLE_BLOCK))
            .into_par_iter()
            .map(|block| {
                let c0 = block * SAMPLE_BLOCK;
                let w = SAMPLE_BLOCK.min(channels - c0);
                let mut sample = vec![0u32; w * m];
                for (j, &row) in rows.iter().enumerate() {
                    // The row SAMPLE_AHEAD ahead is asked for now: the rows are far apart.
                    if let Some(&ahead) = rows.get(j + SAMPLE_AHEAD) {
                        prefetch(&data[ahead * channels + c0..][..w]);
                    }
                    for (k, v) in data[row * channels + c0..][..w].iter().enumerate() {
                        sample[k * m + j] = abs_bits(v.to_f32());
                    }
                }
                sample
                    .chunks_mut(m)
                    .map(|s| {
                        let (lo, hi) = order_statistics(s, lo_at, hi_at);
                        (lo, hi - lo)
                    })
                    .unzip()
            })
            .collect();
        let (mut lo, mut width) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
        for (l, w) in blocks {
            lo.extend(l);
            width.extend(w);
        }
        Some(Brackets { lo, width, cap_fraction: 2.0 * (last - first) / mf })
    }
}

/// A task's running state over its rows: per channel the extremes and the count below the
/// bracket, and the values inside the brackets (as bits, with their channel, up to a cap). Kept
/// from task to task for its buffers.
#[derive(Default)]
struct Scan {
    min: Vec<f32>,
    max: Vec<f32>,
    below: Vec<u32>,
    /// The largest `|x|` bits seen: NaN and infinity have the largest of all.
    top: u32,
    /// The values inside their channel's bracket, in the order met: `channel << 32 | bits`,
    /// the first `count` (the buffer's length is the cap).
    inside: Vec<u64>,
    count: usize,
    /// The brackets held more values than the cap: the collection is incomplete.
    overflowed: bool,
    /// Which lanes of each sixteen channels of each row of a pass are inside their bracket:
    /// row `r`'s at `masks[r * mask_row..]`, the row's sixteens rounded up to a multiple of 4
    /// (the last ones zero).
    masks: Vec<u16>,
    mask_row: usize,
}

impl Scan {
    /// Ready for a task over `channels` channels, with room for `cap` values inside.
    fn reset(&mut self, channels: usize, cap: usize) {
        self.min.clear();
        self.min.resize(channels, f32::INFINITY);
        self.max.clear();
        self.max.resize(channels, f32::NEG_INFINITY);
        self.below.clear();
        self.below.resize(channels, 0);
        self.inside.resize(cap, 0);
        self.mask_row = (channels / LANES).div_ceil(4) * 4;
        self.masks.clear();
        self.masks.resize(ROWS_PER_PASS * self.mask_row, 0);
        (self.top, self.count, self.overflowed) = (0, 0, false);
    }

    #[inline(always)]
    fn push(&mut self, c: usize, bits: u32) {
        match self.inside.get_mut(self.count) {
            Some(slot) => {
                *slot = (c as u64) << 32 | bits as u64;
                self.count += 1;
            }
            None => self.overflowed = true,
        }
    }

    /// Pushes the values of `row` whose lanes are set in the masks of row `r` of the pass, the
    /// masks of 64 channels at a time.
    #[inline(always)]
    fn collect_row(&mut self, r: usize, row: &[f32]) {
        let masks = &self.masks[r * self.mask_row..][..self.mask_row];
        let mut count = self.count;
        for (q, quad) in masks.chunks_exact(4).enumerate() {
            let mut m = quad[0] as u64 | (quad[1] as u64) << 16 | (quad[2] as u64) << 32 | (quad[3] as u64) << 48;
            while m != 0 {
                let c = 64 * q + m.trailing_zeros() as usize;
                match self.inside.get_mut(count) {
                    Some(slot) => {
                        *slot = (c as u64) << 32 | abs_bits(row[c]) as u64;
                        count += 1;
                    }
                    None => self.overflowed = true,
                }
                m &= m - 1;
            }
        }
        self.count = count;
    }

    /// Folds channels `first ..` of one row in, one value at a time.
    #[inline(always)]
    fn tail(&mut self, row: &[f32], first: usize, b: &Brackets) {
        for (j, &v) in row.iter().enumerate() {
            let c = first + j;
            let bits = abs_bits(v);
            self.min[c] = min_max::min(self.min[c], v);
            self.max[c] = min_max::max(self.max[c], v);
            self.top = self.top.max(bits);
            self.below[c] += (bits < b.lo[c]) as u32;
            if bits.wrapping_sub(b.lo[c]) <= b.width[c] {
                self.push(c, bits);
            }
        }
    }

    /// What the task found, its collected values sorted by channel (a counting sort).
    fn found(&self) -> Found {
        let channels = self.min.len();
        let pushed = &self.inside[..self.count];
        let mut ends = vec![0usize; channels];
        for &p in pushed {
            ends[(p >> 32) as usize] += 1;
        }
        let mut at = 0;
        for e in ends.iter_mut() {
            at += *e;
            *e = at;
        }
        // Filled from the back of each channel's range, so that `ends` ends up as the ends.
        let mut inside = vec![0u32; pushed.len()];
        let mut next = ends.clone();
        for &p in pushed.iter().rev() {
            let c = (p >> 32) as usize;
            next[c] -= 1;
            inside[next[c]] = p as u32;
        }
        Found {
            min: self.min.clone(),
            max: self.max.clone(),
            below: self.below.clone(),
            top: self.top,
            overflowed: self.overflowed,
            inside,
            ends,
        }
    }
}

/// What a task found (see [`Scan`]), its collected values packed channel after channel:
/// channel `c`'s end where `ends[c]` says.
struct Found {
    min: Vec<f32>,
    max: Vec<f32>,
    below: Vec<u32>,
    top: u32,
    overflowed: bool,
    inside: Vec<u32>,
    ends: Vec<usize>,
}

impl Found {
    /// The values of channel `c` inside its bracket.
    fn inside(&self, c: usize) -> &[u32] {
        let start = if c == 0 { 0 } else { self.ends[c - 1] };
        &self.inside[start..self.ends[c]]
    }
}

/// Adds whole rows of `s.min.len()` values (value `j` in channel `j`) to the task's state.
fn scan_rows(rows: &[f32], b: &Brackets, s: &mut Scan) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { x86::scan_rows(rows, b, s) };
        return;
    }
    scan_rows_portable(rows, b, s);
}

multiversion! {
    /// [`scan_rows`] in plain Rust, one row at a time, sixteen channels at a time.
    fn scan_rows_portable(rows: &[f32], b: &Brackets, s: &mut Scan) {
        let channels = s.min.len();
        let full = channels - channels % LANES;
        for row in rows.chunks_exact(channels) {
            for (g, c) in (0..full).step_by(LANES).enumerate() {
                let v = &row[c..c + LANES];
                let (lo, width) = (&b.lo[c..c + LANES], &b.width[c..c + LANES]);
                let (min, max, below) = (&mut s.min[c..c + LANES], &mut s.max[c..c + LANES], &mut s.below[c..c + LANES]);
                let mut hit = 0u16;
                let mut top = s.top;
                for j in 0..LANES {
                    let bits = abs_bits(v[j]);
                    min[j] = min_max::min(min[j], v[j]);
                    max[j] = min_max::max(max[j], v[j]);
                    top = top.max(bits);
                    below[j] += (bits < lo[j]) as u32;
                    hit |= ((bits.wrapping_sub(lo[j]) <= width[j]) as u16) << j;
                }
                s.top = top;
                s.masks[g] = hit;
            }
            s.collect_row(0, &row[..full]);
            s.tail(&row[full..], full, b);
        }
    }
}

/// [`scan_rows`] with AVX-512 intrinsics: the masks of a compare are what the collection needs,
/// and plain Rust cannot ask for them.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512i, _MM_HINT_T0, _mm_prefetch, _mm512_and_si512, _mm512_castps_si512, _mm512_cmple_epu32_mask,
        _mm512_cmplt_epu32_mask, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_add_epi32, _mm512_max_epu32,
        _mm512_max_ps, _mm512_min_ps, _mm512_reduce_max_epu32, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_storeu_ps, _mm512_storeu_si512, _mm512_sub_epi32,
    };

    use super::{Brackets, LANES, PREFETCH_PASSES, ROWS_PER_PASS, Scan};

    /// [`scan_rows`](super::scan_rows): [`ROWS_PER_PASS`] rows at a time, then the rows left.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scan_rows(rows: &[f32], b: &Brackets, s: &mut Scan) {
        let channels = s.min.len();
        let step = ROWS_PER_PASS * channels;
        let mut passes = rows.chunks_exact(step);
        for (p, pass) in (&mut passes).enumerate() {
            let ahead = rows.get((p + PREFETCH_PASSES) * step..).unwrap_or(&[]);
            fold::<ROWS_PER_PASS>(pass, ahead, b, s);
        }
        for row in passes.remainder().chunks_exact(channels) {
            fold::<1>(row, &[], b, s);
        }
    }

    /// Folds `R` rows in: sixteen channels at a time, their state loaded once, the `R` rows'
    /// values folded in row order, the state stored once; which lanes are inside their bracket
    /// noted in the masks, and those values collected after, row after row.
    /// Asks for the lines of the `R` rows at the start of `ahead` as it goes (the hardware
    /// prefetchers stop at page boundaries, and a row of 1024 channels is a page).
    #[target_feature(enable = "avx512f")]
    fn fold<const R: usize>(rows: &[f32], ahead: &[f32], b: &Brackets, s: &mut Scan) {
        let channels = s.min.len();
        let groups = channels / LANES;
        let full = groups * LANES;
        let state_ok = s.max.len() == channels
            && s.below.len() == channels
            && groups <= s.mask_row
            && s.masks.len() >= R * s.mask_row;
        if rows.len() != R * channels || b.lo.len() != channels || b.width.len() != channels || !state_ok {
            return; // never: the callers pass whole rows of the task's channels
        }
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let one = _mm512_set1_epi32(1);
        let mut top = _mm512_setzero_si512();
        let (x, mask_row) = (rows.as_ptr(), s.mask_row);
        let (min_at, max_at, below_at) = (s.min.as_mut_ptr(), s.max.as_mut_ptr(), s.below.as_mut_ptr());
        let (lo_at, width_at, masks_at) = (b.lo.as_ptr(), b.width.as_ptr(), s.masks.as_mut_ptr());
        let ahead = (ahead.len() >= R * channels).then_some(ahead.as_ptr());
        for g in 0..groups {
            let c = g * LANES;
            // SAFETY: `c + LANES <= full <= channels`, the length of `s.min`, `s.max`, `s.below`,
            // `b.lo`, `b.width`, of each of the `R` rows of `rows` and (when `ahead` is `Some`)
            // of `R` rows at its start; `g < groups <= mask_row` and `R * mask_row <=
            // s.masks.len()` (all checked above). The loads and stores take unaligned pointers;
            // a prefetch never faults.
            unsafe {
                if let Some(ahead) = ahead {
                    for r in 0..R {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(r * channels + c).cast::<i8>());
                    }
                }
                let mut min = _mm512_loadu_ps(min_at.add(c));
                let mut max = _mm512_loadu_ps(max_at.add(c));
                let mut below = _mm512_loadu_si512(below_at.add(c).cast::<__m512i>());
                let lo = _mm512_loadu_si512(lo_at.add(c).cast::<__m512i>());
                let width = _mm512_loadu_si512(width_at.add(c).cast::<__m512i>());
                for r in 0..R {
                    let v = _mm512_loadu_ps(x.add(r * channels + c));
                    let bits = _mm512_and_si512(_mm512_castps_si512(v), abs);
                    // `min_max::min` and `max`: the running value unless `v` is smaller
                    // (larger); NaN and equal values keep the running one.
                    min = _mm512_min_ps(v, min);
                    max = _mm512_max_ps(v, max);
                    top = _mm512_max_epu32(top, bits);
                    below = _mm512_mask_add_epi32(below, _mm512_cmplt_epu32_mask(bits, lo), below, one);
                    *masks_at.add(r * mask_row + g) = _mm512_cmple_epu32_mask(_mm512_sub_epi32(bits, lo), width);
                }
                _mm512_storeu_ps(min_at.add(c), min);
                _mm512_storeu_ps(max_at.add(c), max);
                _mm512_storeu_si512(below_at.add(c).cast::<__m512i>(), below);
            }
        }
        s.top = s.top.max(_mm512_reduce_max_epu32(top));
        for r in 0..R {
            let row = &rows[r * channels..][..channels];
            s.collect_row(r, &row[..full]);
            s.tail(&row[full..], full, b);
        }
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

    /// The two kernels (plain Rust for CPUs without AVX-512, intrinsics for those with it) find
    /// the same: every channel count, row count and pass split, values in and out of brackets.
    #[test]
    fn both_kernels_find_the_same() {
        for channels in [1usize, 15, 16, 17, 64, 80, 130] {
            for rows in [1usize, 3, 4, 9, 13] {
                let x: Vec<f32> = (0..rows * channels).map(|i| (((i * 7919) % 211) as f32 - 105.0) * 0.125).collect();
                let brackets = Brackets {
                    lo: (0..channels).map(|c| abs_bits(1.0 + (c % 5) as f32)).collect(),
                    width: (0..channels).map(|c| abs_bits(4.0 + c as f32) - abs_bits(1.0 + (c % 5) as f32)).collect(),
                    cap_fraction: 1.0,
                };
                let run = |kernel: fn(&[f32], &Brackets, &mut Scan)| {
                    let mut scan = Scan::default();
                    scan.reset(channels, rows * channels);
                    // In two calls, as a task that widens f16 does.
                    let half = rows / 2 * channels;
                    kernel(&x[..half], &brackets, &mut scan);
                    kernel(&x[half..], &brackets, &mut scan);
                    let f = scan.found();
                    let inside: Vec<Vec<u32>> = (0..channels)
                        .map(|c| {
                            let mut v = f.inside(c).to_vec();
                            v.sort_unstable();
                            v
                        })
                        .collect();
                    (f.min, f.max, f.below, f.top, f.overflowed, inside)
                };
                let plain = run(scan_rows_portable);
                assert_eq!(run(scan_rows), plain, "{channels} channels, {rows} rows");
                // And what they found is what one value at a time finds.
                for c in 0..channels {
                    let lane: Vec<f32> = x.iter().skip(c).step_by(channels).copied().collect();
                    let bits: Vec<u32> = lane.iter().map(|&v| abs_bits(v)).collect();
                    let (lo, width) = (brackets.lo[c], brackets.width[c]);
                    let mut inside: Vec<u32> = bits.iter().copied().filter(|b| b.wrapping_sub(lo) <= width).collect();
                    inside.sort_unstable();
                    assert_eq!(plain.0[c], lane.iter().copied().fold(f32::INFINITY, f32::min));
                    assert_eq!(plain.1[c], lane.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                    assert_eq!(plain.2[c] as usize, bits.iter().filter(|&&b| b < lo).count());
                    assert_eq!(plain.5[c], inside, "channel {c}");
                }
            }
        }
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
