//! Histograms of `|x|` with the exact bin rule of SPEC §5.

use std::sync::Mutex;

use super::min_max::{self, Extremes, ExtremesPart, ExtremesReducer};
use super::simd::{LANES, multiversion, prefetch};
use super::walk::Reducer;

/// The bin of `|v|` in a histogram of `bins` bins on `[0, hi]` (`hi > 0`), or `bins` when `|v|`
/// is outside the range (not counted). SPEC §5: `floor(f32(f32(|v| * bins) / hi))`, every step
/// rounded to f32, with the top edge in the last bin. **Deviation**: where `|v| * bins` overflows
/// f32 (`|v| > f32::MAX / bins`, so only for ranges beyond about 1e35), the bin is
/// `floor(f32(f32(|v| / hi) * bins))` instead of the last bin that the overflow would give.
#[inline(always)]
pub(crate) fn bin_of(v: f32, bins_f: f32, top: f32, hi: f32, bins: u32) -> u32 {
    let a = v.abs();
    let product = a * bins_f;
    // One division either way (both arms of a select are computed): `product / hi`, times 1
    // (exact), or on overflow `a / hi`, times the bins.
    let finite = product < f32::INFINITY;
    let (num, scale) = if finite { (product, 1.0) } else { (a, bins_f) };
    let pos = (num / hi) * scale;
    let pos = if pos < top { pos } else { top }; // also catches NaN
    // `pos` is in [0, bins - 1] (< 2^23): adding 2^23 to its integer part puts that integer in
    // the low mantissa bits, exactly (a branch-free, vectorisable floor).
    let b = (pos.trunc() + 8_388_608.0).to_bits() & 0x007f_ffff;
    if a <= hi { b } else { bins } // NaN fails the test too: never counted
}

/// [`bin_of`] for a range where `hi * bins` is finite: no value in the range can overflow
/// `|v| * bins` (rounding is monotonic), and one outside it is not counted whatever its
/// quotient, so SPEC's rule applies as it stands, without the overflow case (a few vector
/// operations fewer per value).
#[inline(always)]
fn bin_of_in_range(v: f32, bins_f: f32, top: f32, hi: f32, bins: u32) -> u32 {
    let a = v.abs();
    let pos = (a * bins_f) / hi;
    let pos = if pos < top { pos } else { top };
    let b = (pos.trunc() + 8_388_608.0).to_bits() & 0x007f_ffff;
    if a <= hi { b } else { bins }
}

/// Values whose bins are computed at a time, before the counts are bumped.
const BLOCK: usize = 256;

/// How far ahead of the block being counted the data is prefetched, in values. The counting
/// phase of a block is slow and touches no new data, so the hardware prefetchers fall behind
/// the stream; asking for the data a few blocks ahead hides the memory latency.
const PREFETCH_AHEAD: usize = 8 * BLOCK;

/// Interleaved sub-histograms: consecutive values bump different copies, so runs of values in
/// the same bin (the common case: activations crowd a few bins) do not wait on each other.
/// Four, not more: the copies' busy bins must stay in L1 next to the streamed data. Measured
/// in one process on 2^26 values, 2048 bins: against eight copies, four are about 8% faster on
/// normal data and 4% slower when every value falls in a handful of bins; two and one copies
/// gain more on normal data but lose 11–25% there.
pub(crate) const COPIES: usize = 4;

/// Counters from one copy to the next: room for `bins + 1`, rounded so that the copies start
/// 512 bytes apart modulo 4 KiB (the same bin of two copies must not alias in the store buffer).
fn copy_stride(bins: usize) -> usize {
    (bins + 1).div_ceil(1024) * 1024 + 128
}

/// Adds the histogram of `|x|` on `[0, hi]` into [`COPIES`] interleaved sub-histograms of
/// [`copy_stride`] counters each (counter `bins` takes the values outside the range); with
/// `EXTREMES`, also returns the extremes of `x`, found in the same loop. `IN_RANGE`: `hi * bins`
/// is finite (see [`bin_of_in_range`]). `x` holds at most [`SCRATCH_LIMIT`] values, so no lane
/// counter overflows.
///
/// Value i of a block goes to copy i % COPIES. The bins of a whole block are computed in one
/// vectorised loop (with the extremes), and counted in a second, scalar one: fusing them would
/// scalarise the first.
#[inline(always)]
fn count<const EXTREMES: bool, const IN_RANGE: bool>(x: &[f32], hi: f32, bins: usize, sub: &mut [u32]) -> Extremes {
    let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
    let bin = |v: f32| {
        if IN_RANGE { bin_of_in_range(v, bins_f, top, hi, nb) } else { bin_of(v, bins_f, top, hi, nb) }
    };
    let stride = copy_stride(bins);
    // Every index counted below is a bin (at most `bins`) plus a copy's offset (at most
    // `(COPIES - 1) * stride`), so below `COPIES * stride`, as `sub` is long.
    let sub = &mut sub[..COPIES * stride];
    let offset: [u32; BLOCK] = std::array::from_fn(|i| ((i % COPIES) * stride) as u32);
    let mut idx = [0u32; BLOCK];
    let mut lo = [f32::INFINITY; LANES];
    let mut up = [f32::NEG_INFINITY; LANES];
    let mut nf = [0u32; LANES];
    let mut extremes = Extremes::EMPTY;
    for (i, block) in x.chunks(BLOCK).enumerate() {
        if let Some(ahead) = x.get(i * BLOCK + PREFETCH_AHEAD..) {
            prefetch(&ahead[..ahead.len().min(BLOCK)]);
        }
        if block.len() < BLOCK {
            for (j, &v) in block.iter().enumerate() {
                sub[bin(v) as usize + offset[j] as usize] += 1;
            }
            if EXTREMES {
                extremes = extremes.join(min_max::extremes(block));
            }
            break;
        }
        let lanes = block.chunks_exact(LANES).zip(idx.chunks_exact_mut(LANES)).zip(offset.chunks_exact(LANES));
        for ((v, slot), off) in lanes {
            for j in 0..LANES {
                if EXTREMES {
                    lo[j] = min_max::min(lo[j], v[j]);
                    up[j] = min_max::max(up[j], v[j]);
                    nf[j] += min_max::non_finite(v[j]);
                }
                // `min` makes the bound below structural (`bin_of` never exceeds `bins`).
                slot[j] = bin(v[j]).min(nb) + off[j];
            }
        }
        for &j in &idx {
            debug_assert!((j as usize) < sub.len());
            // SAFETY: `j < COPIES * stride == sub.len()` (see above). The bounds check this
            // skips costs a tenth of the whole histogram.
            unsafe { *sub.get_unchecked_mut(j as usize) += 1 };
        }
    }
    if EXTREMES {
        for j in 0..LANES {
            extremes = extremes.join(Extremes { min: lo[j], max: up[j], non_finite: nf[j] as u64 });
        }
    }
    extremes
}

multiversion! {
    /// [`count`] without the extremes.
    fn accumulate(x: &[f32], hi: f32, bins: usize, sub: &mut [u32]) {
        if in_range(hi, bins) {
            count::<false, true>(x, hi, bins, sub);
        } else {
            count::<false, false>(x, hi, bins, sub);
        }
    }
}

multiversion! {
    /// [`count`] with the extremes.
    fn accumulate_with_extremes(x: &[f32], hi: f32, bins: usize, sub: &mut [u32]) -> Extremes {
        if in_range(hi, bins) { count::<true, true>(x, hi, bins, sub) } else { count::<true, false>(x, hi, bins, sub) }
    }
}

/// Whether [`bin_of_in_range`] applies to `bins` bins on `[0, hi]`.
#[inline(always)]
fn in_range(hi: f32, bins: usize) -> bool {
    (hi * bins as f32).is_finite()
}

/// Where one channel's histogram is: `bins` bins on `[0, hi]` at `offset` in the counts (`bins`
/// 0: the channel has none and is not counted).
#[derive(Clone, Copy, Debug)]
struct ChannelBins {
    bins: usize,
    hi: f32,
    offset: usize,
}

/// Where per-channel counts are added: channel `c`'s into `sink[c]` (`bins[c]` counters), each
/// behind its own lock so that the parts of a channel, counted on different threads, add into it
/// in turn. Parts add their counts there as they finish with a channel, instead of each holding
/// its channels' counts until one vector of all of them is assembled.
pub(crate) type Sink<'s> = [Mutex<&'s mut [u64]>];

/// `out` cut into the [`Sink`] of channels of `bins` bins each (`out` holds their sum).
pub(crate) fn sink<'s>(bins: &[usize], mut out: &'s mut [u64]) -> Vec<Mutex<&'s mut [u64]>> {
    bins.iter()
        .map(|&b| {
            let (head, rest) = std::mem::take(&mut out).split_at_mut(b);
            out = rest;
            Mutex::new(head)
        })
        .collect()
}

/// Histograms of `|x|` with the bin rule of SPEC §5: one over the whole tensor, or one per
/// channel, each with its own bin count and range; the counts held by the parts (see
/// [`HistogramPart::into_counts`]), or added into a [`Sink`].
pub(crate) struct HistogramReducer<'s> {
    channels: Vec<ChannelBins>,
    sink: Option<&'s Sink<'s>>,
}

/// Bytes of u16 counters a task of the channel-innermost layout keeps (in L2 while it walks the
/// rows) where [`count_tile_rows`] does not apply: its block of channels is as wide as fits.
/// Measured (CPU time in one process, 2^26 values, 1024 channels, 2048 bins): 128 KiB (32
/// channels) against 256 KiB, about 10% less; 64 KiB (16 channels: a row's block is one cache
/// line per page) about 30% more. Later, with the KL observer's whole batch (CPU time of 20
/// batches, load 6-7 on the 2-core machine): 512 KiB (128 channels) the same as 128 KiB to within
/// 3%, a whole row of 1024 channels (4 MiB) slower; and bumping the counters of 16 channels at a
/// time out of a chunk of wide rows (so that they stay in L1) gained nothing either.
const BLOCK_COUNTER_BYTES: usize = 128 << 10;

/// The most bytes of u16 counters of a block of [`TILE_WIDTH`] channels counted by
/// [`count_tile_rows`] (up to 2048 bins a channel): half the L2 of the machines measured. Its
/// second phase keeps only a few channels' busy counters in L1, so the block can be wider than
/// [`BLOCK_COUNTER_BYTES`] allows the row kernel, and a row's block is eight cache lines of a page
/// instead of two.
const TILE_COUNTER_BYTES: usize = 512 << 10;

/// Blocks of channels a task of the channel-innermost layout takes in turn through each chunk of
/// its rows (see [`Reducer::column_group`]). Measured in one process (CPU time of the KL
/// observer's per-channel batch, 2^26 values, 1024 channels, blocks of 128, the 2-core machine):
/// 4 blocks about 5% less than 1 at load 1 to 2, about 20% less at load 3 to 4 (when other
/// processes push the page tables out of the caches), 2 blocks about half that; 8 blocks (whole
/// rows) about as fast as 4, with half the tasks.
const COLUMN_GROUP: usize = 4;

impl HistogramReducer<'static> {
    /// One histogram of `bins` bins on `[0, hi]` (per tensor).
    pub(crate) fn new(bins: usize, hi: f32) -> Self {
        HistogramReducer { channels: vec![ChannelBins { bins, hi, offset: 0 }], sink: None }
    }

    /// One histogram per channel: `bins[c]` bins on `[0, hi[c]]` (`bins[c]` 0: none).
    #[cfg(test)]
    pub(crate) fn per_channel(bins: &[usize], hi: &[f32]) -> Self {
        HistogramReducer { channels: channel_bins(bins, hi), sink: None }
    }
}

impl<'s> HistogramReducer<'s> {
    /// `HistogramReducer::per_channel` histograms added into `sink` (channel `c`'s
    /// `bins[c]` counts into `sink[c]`) as the parts finish with them; the parts hold none.
    pub(crate) fn per_channel_into(bins: &[usize], hi: &[f32], sink: &'s Sink<'s>) -> Self {
        debug_assert_eq!(bins.len(), sink.len());
        HistogramReducer { channels: channel_bins(bins, hi), sink: Some(sink) }
    }
}

/// The histograms of channels of `bins[c]` bins on `[0, hi[c]]`, one after the other.
fn channel_bins(bins: &[usize], hi: &[f32]) -> Vec<ChannelBins> {
    let mut offset = 0;
    bins.iter()
        .zip(hi)
        .map(|(&bins, &hi)| {
            let c = ChannelBins { bins, hi, offset };
            offset += bins;
            c
        })
        .collect()
}

/// Counts of a range of channels (each channel's bins in turn), a u32 scratch for the channel
/// being filled, and the per-channel constants of the row kernel.
pub(crate) struct HistogramPart<'s> {
    first: usize,
    /// The channels' histograms, offsets relative to this part's counts.
    channels: Vec<ChannelBins>,
    /// The counts, then one slot that takes what is not counted. With a sink, only what is
    /// counted straight into u64 (short runs, all-zero ranges): allocated at the first such run,
    /// added into the sink by [`finish`](HistogramPart::finish).
    counts: Vec<u64>,
    /// Where the scratches are flushed to, when not into `counts`.
    sink: Option<&'s Sink<'s>>,
    scratch: Vec<u32>,
    scratch_channel: Option<usize>,
    scratch_values: u64,
    rows: RowConstants,
    /// The u16 counters of the row kernel (see [`RowConstants`]), flushed to `counts` before any
    /// could overflow; empty until rows come. Small counters keep a block's busy bins in L1.
    row_scratch: Vec<u16>,
    /// Rows counted into `row_scratch` since its last flush.
    row_scratch_rows: u64,
}

/// Values the u32 scratch takes before it is flushed (each counter stays below 2^32).
const SCRATCH_LIMIT: u64 = 1 << 31;

/// Scratch buffers kept for reuse: allocating and freeing them for every piece of every batch
/// costs page faults (the allocator returns large blocks to the system).
static SCRATCH_POOL: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());

/// Scratches the pool keeps at most.
const POOL_SIZE: usize = 64;

/// The u16 scratches of the row kernel kept for reuse (see [`SCRATCH_POOL`]).
static ROW_SCRATCH_POOL: Mutex<Vec<Vec<u16>>> = Mutex::new(Vec::new());

/// A zeroed u16 scratch of `len` counters.
fn take_row_scratch(len: usize) -> Vec<u16> {
    let mut pool = ROW_SCRATCH_POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match pool.iter().position(|s| s.len() == len) {
        Some(i) => pool.swap_remove(i),
        None => vec![0; len],
    }
}

/// The largest u16 scratch the pool keeps, in counters (640 KiB: a block of [`TILE_WIDTH`]
/// channels of up to 2048 bins, or a narrower one of a few thousand bins; those of wider
/// histograms, which may take megabytes each, are not kept).
const ROW_POOL_MAX_LEN: usize = 320 << 10;

/// Returns a zeroed u16 scratch to the pool.
fn give_back_row_scratch(scratch: Vec<u16>) {
    if scratch.is_empty() || scratch.len() > ROW_POOL_MAX_LEN {
        return;
    }
    let mut pool = ROW_SCRATCH_POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if pool.len() < POOL_SIZE {
        pool.push(scratch);
    }
}

/// A zeroed scratch of `len` counters.
fn take_scratch(len: usize) -> Vec<u32> {
    let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match pool.iter().position(|s| s.len() == len) {
        Some(i) => pool.swap_remove(i),
        None => vec![0; len],
    }
}

/// Returns a zeroed scratch to the pool.
fn give_back_scratch(scratch: Vec<u32>) {
    if scratch.is_empty() {
        return;
    }
    let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if pool.len() < POOL_SIZE {
        pool.push(scratch);
    }
}

/// The [`COPIES`] sub-histograms of a scratch of copies `stride` apart.
fn split_copies(scratch: &mut [u32], stride: usize) -> [&mut [u32]; COPIES] {
    let (a, rest) = scratch.split_at_mut(stride);
    let (b, rest) = rest.split_at_mut(stride);
    let (c, d) = rest.split_at_mut(stride);
    [a, b, c, &mut d[..stride]]
}

/// Runs `add` on the counters of the part's channel `j` (of `ch`): in the sink when there is one
/// (locked), else in the part's counts.
fn with_counters(
    sink: Option<&Sink<'_>>,
    counts: &mut [u64],
    first: usize,
    j: usize,
    ch: ChannelBins,
    add: impl FnOnce(&mut [u64]),
) {
    match sink {
        Some(sink) => {
            let mut dst = sink[first + j].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            add(&mut dst[..ch.bins]);
        }
        None => add(&mut counts[ch.offset..][..ch.bins]),
    }
}

impl HistogramPart<'_> {
    fn channel(&self, c: usize) -> ChannelBins {
        self.channels[c - self.first]
    }

    /// The counts that take what is counted straight into u64 (allocated when empty).
    fn direct_counts(&mut self) -> &mut [u64] {
        if self.counts.is_empty() {
            let total = self.channels.last().map_or(0, |c| c.offset + c.bins);
            self.counts = vec![0; total + 1];
        }
        &mut self.counts
    }

    fn flush(&mut self) {
        if self.row_scratch_rows > 0 {
            let stride = self.rows.stride;
            for (j, &ch) in self.channels.iter().enumerate() {
                // The slot past the channel's bins takes what [`count_tile_rows`] does not count.
                self.row_scratch[j * stride + ch.bins] = 0;
                if ch.bins == 0 {
                    continue;
                }
                let src = &mut self.row_scratch[j * stride..][..ch.bins];
                with_counters(self.sink, &mut self.counts, self.first, j, ch, |dst| {
                    for (d, s) in dst.iter_mut().zip(src.iter_mut()) {
                        *d += *s as u64;
                        *s = 0;
                    }
                });
            }
            // The slot of what is not counted, never read.
            self.row_scratch[self.rows.outside as usize] = 0;
            self.row_scratch_rows = 0;
        }
        if let Some(c) = self.scratch_channel.take() {
            let ch = self.channel(c);
            let stride = copy_stride(ch.bins);
            // Only the counters a value can reach (the bins and the slot of what is outside) are
            // ever non-zero: the copies are added in u32 (together they hold at most
            // SCRATCH_LIMIT < 2^32 values), the sum into the counts, and zeroed, in one pass.
            let [a, b, cc, d] = split_copies(&mut self.scratch, stride);
            let n = ch.bins + 1;
            let (a, b, cc, d) = (&mut a[..n], &mut b[..n], &mut cc[..n], &mut d[..n]);
            with_counters(self.sink, &mut self.counts, self.first, c - self.first, ch, |dst| {
                for (k, out) in dst.iter_mut().enumerate() {
                    *out += (a[k] + b[k] + cc[k] + d[k]) as u64;
                }
            });
            for copy in [a, b, cc, d] {
                copy.fill(0);
            }
            self.scratch_values = 0;
        }
    }

    /// Flushes the scratches and, with a sink, adds what was counted straight into u64 there:
    /// after this, the sink holds everything the part counted.
    pub(crate) fn finish(&mut self) {
        self.flush();
        if let Some(sink) = self.sink
            && !self.counts.is_empty()
        {
            for (j, &ch) in self.channels.iter().enumerate() {
                if ch.bins > 0 {
                    let src = &self.counts[ch.offset..][..ch.bins];
                    with_counters(Some(sink), &mut [], self.first, j, ch, |dst| {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    });
                }
            }
            self.counts = Vec::new();
        }
    }

    /// Counts `n` rows of one value per channel of the part, `stride` apart in `data`, with the
    /// row kernel; with `extremes` (a part over the same channels), their extremes too, from the
    /// same loop.
    fn count_rows(&mut self, data: &[f32], n: usize, stride: usize, mut extremes: Option<&mut ExtremesPart>) {
        let channels = self.channels.len();
        if self.scratch_channel.is_some() {
            self.flush();
        }
        if extremes.is_none() && self.channels.iter().all(|c| c.bins == 0) {
            return; // nothing to count (a recount of other channels)
        }
        if self.row_scratch.is_empty() {
            self.row_scratch = take_row_scratch(self.rows.scratch_len());
        }
        let tile = self.rows.narrow && channels == TILE_WIDTH;
        // Each counter takes at most one value per row: flush before it could overflow.
        let mut done = 0;
        while done < n {
            if self.row_scratch_rows >= ROW_SCRATCH_LIMIT {
                self.flush();
            }
            let take = (n - done).min((ROW_SCRATCH_LIMIT - self.row_scratch_rows) as usize);
            let piece = &data[done * stride..];
            match extremes.as_deref_mut() {
                None if tile => {
                    count_tile(piece, take, stride, &self.rows, &mut self.row_scratch, &mut [], &mut []);
                }
                None => count_rows(piece, take, stride, &self.rows, &mut self.row_scratch),
                Some(e) => {
                    let (counts, lo, up) = (&mut self.row_scratch, &mut e.min, &mut e.max);
                    let poison = if tile {
                        count_tile(piece, take, stride, &self.rows, counts, lo, up)
                    } else {
                        count_rows_and_extremes(piece, take, stride, &self.rows, counts, lo, up)
                    };
                    if poison == 0x7f80_0000 {
                        e.non_finite += (0..take)
                            .map(|i| {
                                piece[i * stride..][..channels]
                                    .iter()
                                    .map(|&v| min_max::non_finite(v) as u64)
                                    .sum::<u64>()
                            })
                            .sum::<u64>();
                    }
                }
            }
            self.row_scratch_rows += take as u64;
            done += take;
        }
    }

    /// The counts, channel after channel (`bins` of each); empty with a sink (where they are).
    pub(crate) fn into_counts(mut self) -> Vec<u64> {
        self.finish();
        if self.sink.is_some() {
            return Vec::new();
        }
        let mut counts = std::mem::take(&mut self.counts);
        counts.pop(); // the slot of what is not counted
        counts
    }
}

impl Drop for HistogramPart<'_> {
    fn drop(&mut self) {
        // Unflushed counts are lost with the part; the scratch must go back zeroed.
        if self.scratch_channel.is_some() {
            self.scratch.iter_mut().for_each(|s| *s = 0);
        }
        give_back_scratch(std::mem::take(&mut self.scratch));
        if self.row_scratch_rows > 0 {
            self.row_scratch.iter_mut().for_each(|s| *s = 0);
        }
        give_back_row_scratch(std::mem::take(&mut self.row_scratch));
    }
}

/// Runs shorter than this fraction of their channel's bins are counted straight into the u64
/// counts: filling and flushing a scratch would cost more than they do.
const DIRECT_RUN_PER_BIN: usize = 2;

impl HistogramReducer<'_> {
    /// Runs `count` on pieces of `x` (values of channel `c`) with the u32 scratch of `part`
    /// ready for them, flushing it to the u64 counts before it could overflow.
    fn count_into(&self, part: &mut HistogramPart, c: usize, x: &[f32], mut count: impl FnMut(&[f32], &mut [u32])) {
        let bins = part.channel(c).bins;
        for piece in x.chunks(SCRATCH_LIMIT as usize) {
            if part.scratch_channel != Some(c) || part.scratch_values + piece.len() as u64 > SCRATCH_LIMIT {
                part.flush();
                let len = COPIES * copy_stride(bins);
                if part.scratch.len() != len {
                    give_back_scratch(std::mem::replace(&mut part.scratch, take_scratch(len)));
                }
                part.scratch_channel = Some(c);
            }
            count(piece, &mut part.scratch);
            part.scratch_values += piece.len() as u64;
        }
    }

    /// Whether channel `c`'s run `x` is better counted without the scratch.
    fn direct(part: &HistogramPart, c: usize, x: &[f32]) -> bool {
        part.scratch_channel != Some(c) && x.len() * DIRECT_RUN_PER_BIN < part.channel(c).bins
    }
}

/// Counts `x` into `counts` (one channel's bins on `[0, hi]`, `hi > 0`) one value at a time.
fn count_direct(x: &[f32], hi: f32, counts: &mut [u64]) {
    let bins = counts.len();
    let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
    for &v in x {
        let b = bin_of(v, bins_f, top, hi, nb) as usize;
        if b < bins {
            counts[b] += 1;
        }
    }
}

/// What zeros count in a channel whose range is `[0, 0]`: bin 0 takes the zeros (SPEC §5).
fn count_zeros(x: &[f32]) -> u64 {
    x.iter().filter(|v| **v == 0.0).count() as u64
}

impl<'s> Reducer for HistogramReducer<'s> {
    type Part = HistogramPart<'s>;

    fn part(&self, first: usize, count: usize) -> HistogramPart<'s> {
        let specs = &self.channels[first..first + count];
        let base = specs.first().map_or(0, |c| c.offset);
        let channels: Vec<ChannelBins> = specs.iter().map(|c| ChannelBins { offset: c.offset - base, ..*c }).collect();
        let total: usize = channels.iter().map(|c| c.bins).sum();
        HistogramPart {
            first,
            rows: RowConstants::new(&channels),
            channels,
            // With a sink, counts are allocated only if something is counted straight into them.
            counts: if self.sink.is_some() { Vec::new() } else { vec![0; total + 1] },
            sink: self.sink,
            scratch: Vec::new(),
            scratch_channel: None,
            scratch_values: 0,
            row_scratch: Vec::new(),
            row_scratch_rows: 0,
        }
    }

    fn part_bytes(&self, count: usize) -> usize {
        let bins: usize = self.channels.iter().take(count).map(|c| c.bins).sum::<usize>().max(count);
        let most = self.channels.iter().map(|c| c.bins).max().unwrap_or(0);
        8 * bins + 24 * count + 4 * COPIES * copy_stride(most)
    }

    fn run(&self, part: &mut HistogramPart<'s>, c: usize, x: &[f32]) {
        let ch = part.channel(c);
        if ch.bins == 0 {
            return;
        }
        if ch.hi <= 0.0 {
            // hi == lo == 0: an all-zero range; zeros count in bin 0, anything else is outside.
            part.direct_counts()[ch.offset] += count_zeros(x);
            return;
        }
        if HistogramReducer::direct(part, c, x) {
            count_direct(x, ch.hi, &mut part.direct_counts()[ch.offset..][..ch.bins]);
            return;
        }
        self.count_into(part, c, x, |piece, scratch| accumulate(piece, ch.hi, ch.bins, scratch));
    }

    fn rows(&self, part: &mut HistogramPart<'s>, rows: &[f32], channels: usize) {
        let n = rows.len() / channels.max(1);
        part.count_rows(rows, n, channels, None);
    }

    fn columns(&self, part: &mut HistogramPart<'s>, data: &[f32], n: usize, width: usize, stride: usize) {
        debug_assert_eq!(width, part.channels.len());
        part.count_rows(data, n, stride, None);
    }

    fn column_block(&self, _channels: usize) -> Option<usize> {
        let most = self.channels.iter().map(|c| c.bins).max().unwrap_or(1).max(1);
        if 2 * TILE_WIDTH * most <= TILE_COUNTER_BYTES {
            return Some(TILE_WIDTH);
        }
        Some((BLOCK_COUNTER_BYTES / (2 * most)).clamp(LANES, 1024) / LANES * LANES)
    }

    fn column_group(&self) -> usize {
        COLUMN_GROUP
    }

    fn finish_part(&self, part: &mut HistogramPart<'s>) {
        // Into the sink from the task's thread (without a sink, the counts stay in the part).
        if self.sink.is_some() {
            part.finish();
        }
    }

    fn merge(&self, part: &mut HistogramPart<'s>, mut other: HistogramPart<'s>) {
        if self.sink.is_some() {
            // Both add into the sink: `other` now, `part` when it finishes.
            other.finish();
            return;
        }
        part.flush();
        other.flush();
        for (a, b) in part.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn concat(&self, mut parts: Vec<HistogramPart<'s>>) -> HistogramPart<'s> {
        let first = parts.first().map_or(0, |p| p.first);
        let count: usize = parts.iter().map(|p| p.channels.len()).sum();
        if self.sink.is_some() {
            // The parts' counts go to the sink; the whole is a part that holds nothing.
            parts.iter_mut().for_each(HistogramPart::finish);
            return self.part(first, count);
        }
        let total: usize = parts.iter().map(|p| p.counts.len() - 1).sum();
        let mut counts = Vec::with_capacity(total + 1);
        for p in parts {
            counts.extend(p.into_counts());
        }
        counts.push(0);
        let mut out = self.part(first, 0);
        out.first = first;
        out.channels = self.channels[first..first + count]
            .iter()
            .map(|c| ChannelBins { offset: c.offset - self.channels.get(first).map_or(0, |f| f.offset), ..*c })
            .collect();
        out.rows = RowConstants::new(&out.channels);
        out.counts = counts;
        out
    }
}

/// The per-channel constants of [`count_rows`], one entry per channel of a part.
///
/// The row kernel counts into a u32 scratch where channel `j`'s counters start at `j * stride`:
/// `stride` is the most bins of a channel rounded up to 1024 counters, plus 64, so that the same
/// bin of neighbouring channels is 256 bytes apart modulo 4 KiB (counters a multiple of 4 KiB
/// apart alias in the store buffer, and the increments of the channels of a row would wait on
/// each other).
struct RowConstants {
    bins_f: Vec<f32>,
    top: Vec<f32>,
    hi: Vec<f32>,
    nb: Vec<u32>,
    /// Where channel `j`'s counters start in the scratch: `j * stride`.
    offset: Vec<u32>,
    stride: usize,
    /// The slot of what is not counted (the scratch's last).
    outside: u32,
    /// Every channel with bins has `hi > 0` and `hi * bins` finite: [`bin_of_in_range`] applies.
    in_range: bool,
    /// Every channel's bins, and the slot past them, have u16 indices: [`count_tile_rows`] applies.
    narrow: bool,
}

impl RowConstants {
    fn new(channels: &[ChannelBins]) -> Self {
        let most = channels.iter().map(|c| c.bins).max().unwrap_or(0);
        let stride = most.div_ceil(1024) * 1024 + 64;
        RowConstants {
            bins_f: channels.iter().map(|c| c.bins as f32).collect(),
            top: channels.iter().map(|c| c.bins.saturating_sub(1) as f32).collect(),
            hi: channels.iter().map(|c| c.hi).collect(),
            nb: channels.iter().map(|c| c.bins as u32).collect(),
            offset: (0..channels.len()).map(|j| (j * stride) as u32).collect(),
            stride,
            outside: (channels.len() * stride) as u32,
            in_range: channels.iter().all(|c| c.bins == 0 || (c.hi > 0.0 && in_range(c.hi, c.bins))),
            narrow: most <= u16::MAX as usize,
        }
    }

    /// The length of the scratch.
    fn scratch_len(&self) -> usize {
        self.outside as usize + 1
    }
}

/// Rows the u16 counters of the row kernel take before they are flushed.
const ROW_SCRATCH_LIMIT: u64 = u16::MAX as u64;

/// Counter indices computed at a time in [`count_rows`] before the counters are bumped (the
/// indices must be in the cache, not in flight in the store buffer, when they are read back).
const ROW_BLOCK: usize = 1024;

/// How far ahead rows are prefetched in [`count_rows`], in bytes of the rows' values: rows of a
/// block of columns lie a page or more apart, where the hardware prefetchers stop.
const ROW_PREFETCH_BYTES: usize = 4096;

/// Counts `n` rows of `k.hi.len()` values, `stride` apart in `data` (value `j` of a row in
/// channel `j`), into `counts`: the counter indices of [`ROW_BLOCK`] values (whole rows, or runs
/// of one wide row) in one vectorised loop, then their increments. With `EXTREMES`, also folds
/// each value into `lo[j]` and `up[j]` (row after row, in order) and
/// returns the largest exponent field seen (`0x7f80_0000`: a NaN or an infinity was there).
#[inline(always)]
fn count_rows_generic<const EXTREMES: bool, const IN_RANGE: bool>(
    data: &[f32],
    n: usize,
    stride: usize,
    k: &RowConstants,
    counts: &mut [u16],
    lo: &mut [f32],
    up: &mut [f32],
) -> u32 {
    let channels = k.hi.len();
    // Every index bumped is below this length (see below): the bound, checked once.
    let counts = &mut counts[..k.scratch_len()];
    let width = channels.min(ROW_BLOCK);
    let ahead = (ROW_PREFETCH_BYTES / (4 * channels.max(1))).max(2);
    let mut idx = [0u32; ROW_BLOCK];
    let mut filled = 0;
    let mut poison = 0u32;
    for r in 0..n {
        let row = &data[r * stride..][..channels];
        if stride != channels
            && let Some(next) = data.get((r + ahead) * stride..)
        {
            prefetch(&next[..channels.min(next.len())]);
        }
        for first in (0..channels).step_by(width) {
            let m = width.min(channels - first);
            if filled + m > ROW_BLOCK {
                // SAFETY: every index stored in `idx` is below `counts.len()` (see below).
                unsafe { bump(&idx[..filled], counts) };
                filled = 0;
            }
            let v = &row[first..first + m];
            let slot = &mut idx[filled..filled + m];
            let (bins_f, top, hi) = (&k.bins_f[first..first + m], &k.top[first..first + m], &k.hi[first..first + m]);
            let (nb, offset) = (&k.nb[first..first + m], &k.offset[first..first + m]);
            if EXTREMES {
                let (lo, up) = (&mut lo[first..first + m], &mut up[first..first + m]);
                for j in 0..m {
                    lo[j] = min_max::min(lo[j], v[j]);
                    up[j] = min_max::max(up[j], v[j]);
                    poison = poison.max(v[j].to_bits() & 0x7f80_0000);
                }
            }
            for j in 0..m {
                let (v, hi) = (v[j], hi[j]);
                let b = if IN_RANGE {
                    // Every channel counted has `hi > 0` with `hi * bins` finite; one with no
                    // bins has `nb` 0, so whatever its `b`, its values go to the outside slot.
                    bin_of_in_range(v, bins_f[j], top[j], hi, nb[j])
                } else {
                    // A channel whose range is [0, 0] counts its zeros in bin 0 (SPEC §5).
                    let b = bin_of(v, bins_f[j], top[j], hi, nb[j]);
                    if hi > 0.0 {
                        b
                    } else if v == 0.0 {
                        0
                    } else {
                        nb[j]
                    }
                };
                // `offset[j] + b < (j + 1) * stride <= outside`: below `counts.len()`.
                slot[j] = if b < nb[j] { offset[j] + b } else { k.outside };
            }
            filled += m;
        }
    }
    // SAFETY: as above.
    unsafe { bump(&idx[..filled], counts) };
    poison
}

/// Adds one to each counter of `idx` (wrapping: the slot of what is not counted may take more
/// than a u16 holds between flushes; it is never read, and no other counter can).
///
/// # Safety
///
/// Every index of `idx` is below `counts.len()`.
#[inline(always)]
unsafe fn bump(idx: &[u32], counts: &mut [u16]) {
    for &i in idx {
        debug_assert!((i as usize) < counts.len());
        // SAFETY: the caller's contract. The bounds check this skips costs a tenth of the kernel.
        let c = unsafe { counts.get_unchecked_mut(i as usize) };
        *c = c.wrapping_add(1);
    }
}

/// Rows of a tile of [`count_tile_rows`]: their bins (u16 each) stay in L1 between its two
/// phases.
const TILE_ROWS: usize = 256;

/// Channels of a block counted by [`count_tile_rows`] (a multiple of [`LANES`]).
const TILE_WIDTH: usize = 128;

/// Counters of a tile's row: [`TILE_WIDTH`] and one cache line more, so that the column of a
/// channel, read in the second phase, spreads over every set of the L1 (rows of 256 bytes would
/// put the column's 256 lines in a sixteenth of them, which thrash).
const TILE_PITCH: usize = TILE_WIDTH + 32;

/// Rows ahead of the one being read that the first phase of [`count_tile_rows`] prefetches (each
/// in a new page, whose translation the prefetch waits for). Measured in one process against 8
/// (the row kernel's 4 KiB ahead): 16 and 32 about 4% less CPU time, the same as each other.
const TILE_AHEAD: usize = 16;

/// Channels whose bins the second phase of [`count_tile_rows`] counts together, row after row:
/// independent chains of increments, the tile read a few values at a time.
const TILE_CHANNELS: usize = 8;

/// [`count_rows_generic`] for a block of exactly `V * LANES` (= [`TILE_WIDTH`]) channels whose bins
/// and the slot past them have u16 indices ([`RowConstants::narrow`]), [`TILE_ROWS`] rows at a
/// time in two phases:
///
/// 1. the rows in order, each value's bin by the same rule as [`count_rows_generic`] (`nb[j]`,
///    the slot past the channel's bins, for a value not counted) into `tile`, the extremes
///    folded in row order as there;
/// 2. channel after channel ([`TILE_CHANNELS`] at a time), the bins of the tile counted into
///    the channel's own counters at `j * stride`: the busy counters of a few channels in L1 at a
///    time, instead of those of the whole block, value after value.
///
/// Measured in one process (CPU time of the KL observer's per-channel batch, 2^26 values, 1024
/// channels innermost, 2048 bins; `qcalib bench` data): about 20% less than the row kernel on
/// blocks of 32 channels; the two phases take about half each.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn count_tile_rows<const V: usize, const EXTREMES: bool, const IN_RANGE: bool>(
    data: &[f32],
    n: usize,
    stride: usize,
    k: &RowConstants,
    counts: &mut [u16],
    lo: &mut [f32],
    up: &mut [f32],
    tile: &mut [u16; TILE_ROWS * TILE_PITCH],
) -> u32 {
    let width = V * LANES;
    debug_assert!(k.hi.len() == width && k.narrow);
    let lanes =
        |src: &[f32]| -> [[f32; LANES]; V] { std::array::from_fn(|v| std::array::from_fn(|l| src[v * LANES + l])) };
    let (bins_f, top, hi) = (lanes(&k.bins_f), lanes(&k.top), lanes(&k.hi));
    let nb: [[u32; LANES]; V] = std::array::from_fn(|v| std::array::from_fn(|l| k.nb[v * LANES + l]));
    let (mut lo_r, mut up_r) = if EXTREMES { (lanes(lo), lanes(up)) } else { ([[0.0; LANES]; V], [[0.0; LANES]; V]) };
    let mut poison = [0u32; LANES];
    let ahead = TILE_AHEAD;
    // Every index bumped is channel `j`'s `j * stride` plus at most its `nb[j]` (its bins), below
    // `(j + 1) * stride`: below this length, checked once.
    let counts = &mut counts[..width * k.stride];
    let mut first = 0;
    while first < n {
        let rows = TILE_ROWS.min(n - first);
        for r in 0..rows {
            let row = &data[(first + r) * stride..][..width];
            if stride != width
                && let Some(next) = data.get((first + r + ahead) * stride..)
            {
                prefetch(&next[..width.min(next.len())]);
            }
            let out = &mut tile[r * TILE_PITCH..][..width];
            for (v, (x, slot)) in row.chunks_exact(LANES).zip(out.chunks_exact_mut(LANES)).enumerate() {
                for l in 0..LANES {
                    let x = x[l];
                    if EXTREMES {
                        lo_r[v][l] = min_max::min(lo_r[v][l], x);
                        up_r[v][l] = min_max::max(up_r[v][l], x);
                        poison[l] = poison[l].max(x.to_bits() & 0x7f80_0000);
                    }
                    // The bin rule of `count_rows_generic`, written out again: the two sharing one
                    // `#[inline(always)]` helper made this kernel 5-10% slower (measured in one
                    // process, `qcalib bench`, KL last axis), its code laid out differently.
                    let (h, nb) = (hi[v][l], nb[v][l]);
                    let b = if IN_RANGE {
                        bin_of_in_range(x, bins_f[v][l], top[v][l], h, nb)
                    } else {
                        // A channel whose range is [0, 0] counts its zeros in bin 0 (SPEC §5).
                        let b = bin_of(x, bins_f[v][l], top[v][l], h, nb);
                        if h > 0.0 {
                            b
                        } else if x == 0.0 {
                            0
                        } else {
                            nb
                        }
                    };
                    // At most `nb` (the slot of what is not counted), below 2^16 (`k.narrow`).
                    slot[l] = b.min(nb) as u16;
                }
            }
        }
        for j in (0..width).step_by(TILE_CHANNELS) {
            let base: [usize; TILE_CHANNELS] = std::array::from_fn(|q| (j + q) * k.stride);
            for r in 0..rows {
                let t = &tile[r * TILE_PITCH + j..][..TILE_CHANNELS];
                for q in 0..TILE_CHANNELS {
                    let i = base[q] + t[q] as usize;
                    debug_assert!(i < counts.len());
                    // SAFETY: the tile holds at most `nb[j + q] < stride` for channel `j + q`
                    // (written above), so `i < (j + q + 1) * stride <= counts.len()`. The bounds
                    // check this skips costs a tenth of the kernel.
                    let c = unsafe { counts.get_unchecked_mut(i) };
                    *c = c.wrapping_add(1);
                }
            }
        }
        first += rows;
    }
    if EXTREMES {
        for v in 0..V {
            lo[v * LANES..][..LANES].copy_from_slice(&lo_r[v]);
            up[v * LANES..][..LANES].copy_from_slice(&up_r[v]);
        }
    }
    poison.into_iter().max().unwrap_or(0)
}

/// [`count_tile_rows`] on a block of [`TILE_WIDTH`] channels, with or without the extremes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn count_tile_rows_of<const EXTREMES: bool>(
    data: &[f32],
    n: usize,
    stride: usize,
    k: &RowConstants,
    counts: &mut [u16],
    lo: &mut [f32],
    up: &mut [f32],
    tile: &mut [u16; TILE_ROWS * TILE_PITCH],
) -> u32 {
    const V: usize = TILE_WIDTH / LANES;
    if k.in_range {
        count_tile_rows::<V, EXTREMES, true>(data, n, stride, k, counts, lo, up, tile)
    } else {
        count_tile_rows::<V, EXTREMES, false>(data, n, stride, k, counts, lo, up, tile)
    }
}

multiversion! {
    /// [`count_tile_rows`] on a block of [`TILE_WIDTH`] channels, with the extremes when `lo`
    /// and `up` are not empty; returns the largest exponent field seen (0 without the extremes).
    fn count_tile(
        data: &[f32],
        n: usize,
        stride: usize,
        k: &RowConstants,
        counts: &mut [u16],
        lo: &mut [f32],
        up: &mut [f32],
    ) -> u32 {
        let mut tile = [0u16; TILE_ROWS * TILE_PITCH];
        if lo.is_empty() {
            count_tile_rows_of::<false>(data, n, stride, k, counts, lo, up, &mut tile)
        } else {
            count_tile_rows_of::<true>(data, n, stride, k, counts, lo, up, &mut tile)
        }
    }
}

multiversion! {
    /// [`count_rows_generic`] without the extremes.
    fn count_rows(data: &[f32], n: usize, stride: usize, k: &RowConstants, counts: &mut [u16]) {
        if k.in_range {
            count_rows_generic::<false, true>(data, n, stride, k, counts, &mut [], &mut []);
        } else {
            count_rows_generic::<false, false>(data, n, stride, k, counts, &mut [], &mut []);
        }
    }
}

multiversion! {
    /// [`count_rows_generic`] with the extremes.
    fn count_rows_and_extremes(
        data: &[f32],
        n: usize,
        stride: usize,
        k: &RowConstants,
        counts: &mut [u16],
        lo: &mut [f32],
        up: &mut [f32],
    ) -> u32 {
        if k.in_range {
            count_rows_generic::<true, true>(data, n, stride, k, counts, lo, up)
        } else {
            count_rows_generic::<true, false>(data, n, stride, k, counts, lo, up)
        }
    }
}

/// The extremes (min, max, non-finite count) and the histogram of `|x|` on `[0, hi]`, from one
/// loop over the data: for a histogram whose range is known before the batch.
pub(crate) struct ExtremesAndHistogram<'s>(pub HistogramReducer<'s>);

impl<'s> Reducer for ExtremesAndHistogram<'s> {
    type Part = (ExtremesPart, HistogramPart<'s>);

    fn part(&self, first: usize, count: usize) -> Self::Part {
        (ExtremesReducer.part(first, count), self.0.part(first, count))
    }

    fn part_bytes(&self, count: usize) -> usize {
        ExtremesReducer.part_bytes(count) + self.0.part_bytes(count)
    }

    fn run(&self, part: &mut Self::Part, c: usize, x: &[f32]) {
        let (extremes, histogram) = part;
        let ch = histogram.channel(c);
        if ch.bins == 0 || ch.hi <= 0.0 || HistogramReducer::direct(histogram, c, x) {
            ExtremesReducer.run(extremes, c, x);
            self.0.run(histogram, c, x);
            return;
        }
        self.0.count_into(histogram, c, x, |piece, scratch| {
            extremes.add(c, accumulate_with_extremes(piece, ch.hi, ch.bins, scratch));
        });
    }

    fn rows(&self, part: &mut Self::Part, rows: &[f32], channels: usize) {
        let n = rows.len() / channels.max(1);
        part.1.count_rows(rows, n, channels, Some(&mut part.0));
    }

    fn columns(&self, part: &mut Self::Part, data: &[f32], n: usize, width: usize, stride: usize) {
        debug_assert_eq!(width, part.1.channels.len());
        part.1.count_rows(data, n, stride, Some(&mut part.0));
    }

    fn column_block(&self, channels: usize) -> Option<usize> {
        self.0.column_block(channels)
    }

    fn column_group(&self) -> usize {
        self.0.column_group()
    }

    fn finish_part(&self, part: &mut Self::Part) {
        self.0.finish_part(&mut part.1);
    }

    fn merge(&self, part: &mut Self::Part, other: Self::Part) {
        ExtremesReducer.merge(&mut part.0, other.0);
        self.0.merge(&mut part.1, other.1);
    }

    fn concat(&self, parts: Vec<Self::Part>) -> Self::Part {
        let (a, b): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        (ExtremesReducer.concat(a), self.0.concat(b))
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
            let r = HistogramReducer::new(bins, hi);
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
        assert_eq!(bin_of(1.0e36, 2048.0, 2047.0, 3.0e38, 2048), 6);
    }

    #[test]
    fn zero_range_counts_zeros_in_bin_zero() {
        let r = HistogramReducer::new(4, 0.0);
        let mut p = r.part(0, 1);
        r.run(&mut p, 0, &[0.0, -0.0, 0.0]);
        assert_eq!(p.into_counts(), vec![3, 0, 0, 0]);
    }

    #[test]
    fn extremes_and_histogram_in_one_loop_equal_the_two_reducers() {
        for n in [0usize, 1, 255, 256, 257, 4096 + 17, 100_003] {
            let mut x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 3.0 - 0.5).collect();
            if n > 300 {
                x[3] = f32::NAN;
                x[290] = f32::INFINITY;
                x[n - 1] = 7.5; // outside the range
            }
            for (bins, hi) in [(2048, 3.0), (7, 2.5), (4, 0.0)] {
                let h = HistogramReducer::new(bins, hi);
                let both = ExtremesAndHistogram(HistogramReducer::new(bins, hi));
                let mut p = both.part(0, 1);
                both.run(&mut p, 0, &x);
                let mut e = ExtremesReducer.part(0, 1);
                ExtremesReducer.run(&mut e, 0, &x);
                let mut c = h.part(0, 1);
                h.run(&mut c, 0, &x);
                let (pe, ph) = p;
                assert_eq!((pe.min, pe.max, pe.non_finite), (e.min, e.max, e.non_finite), "n {n} bins {bins}");
                assert_eq!(ph.into_counts(), c.into_counts(), "n {n} bins {bins}");
            }
        }
    }

    #[test]
    fn blocks_of_columns_equal_each_channel_counted_alone() {
        use crate::engine::cpu::walk::reduce;
        use crate::tensor::HostLayout;
        // Channels innermost, more channels than a block: read in place (f32) and widened (f16).
        let (rows, channels, bins) = (301, 203, 2048);
        let mut x: Vec<f32> = (0..rows * channels).map(|i| ((i as f32) * 0.731).sin() * (1 + i % 7) as f32).collect();
        x[5 * channels + 17] = f32::NAN;
        x[200 * channels + 150] = f32::INFINITY;
        for r in 0..rows {
            x[r * channels + 3] = 0.0; // an all-zero channel
        }
        let hi: Vec<f32> = (0..channels).map(|c| if c == 3 { 0.0 } else { 1.0 + (c % 5) as f32 }).collect();
        let block = HistogramReducer::per_channel(&vec![bins; channels], &hi).column_block(channels);
        assert!(block.is_some_and(|b| b < channels));
        let both = ExtremesAndHistogram(HistogramReducer::per_channel(&vec![bins; channels], &hi));
        let only = HistogramReducer::per_channel(&vec![bins; channels], &hi);
        let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
        let widened: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
        let dense = |data| HostLayout::Dense { data, outer: rows, channels, inner: 1 };
        let cases = [
            (reduce(dense(&x[..]), &both), reduce(dense(&x[..]), &only), &x),
            (
                reduce(HostLayout::Dense { data: &x16[..], outer: rows, channels, inner: 1 }, &both),
                reduce(HostLayout::Dense { data: &x16[..], outer: rows, channels, inner: 1 }, &only),
                &widened,
            ),
        ];
        for ((e, h), alone, x) in cases {
            let (h, alone) = (h.into_counts(), alone.into_counts());
            assert_eq!(h, alone);
            let mut non_finite = 0;
            for c in 0..channels {
                let column: Vec<f32> = (0..rows).map(|r| x[r * channels + c]).collect();
                let finite: Vec<f32> = column.iter().copied().filter(|v| !v.is_nan()).collect();
                let want = if hi[c] > 0.0 {
                    reference(&finite, bins, hi[c])
                } else {
                    let mut z = vec![0; bins];
                    z[0] = column.iter().filter(|v| **v == 0.0).count() as u64;
                    z
                };
                assert!(h[c * bins..(c + 1) * bins] == want[..], "channel {c}");
                let ce = min_max::extremes(&column);
                assert_eq!(
                    (e.min[c].to_bits(), e.max[c].to_bits()),
                    (ce.min.to_bits(), ce.max.to_bits()),
                    "channel {c}"
                );
                non_finite += ce.non_finite;
            }
            assert_eq!(e.non_finite, non_finite);
        }
    }

    #[test]
    fn counts_added_into_a_sink_equal_the_counts_of_the_parts() {
        use crate::engine::cpu::{add_abs_histograms, walk::reduce};
        use crate::tensor::{HostLayout, TensorView};
        // Channels innermost by blocks and by whole rows; channels outermost in runs counted
        // through the scratch and in short runs counted straight into u64; channels without bins
        // and with an all-zero range.
        for (shape, axis) in [((301, 203), 1), ((3000, 5), 1), ((203, 301), 0), ((7, 3000), 0)] {
            let (a, b) = shape;
            let x: Vec<f32> = (0..a * b).map(|i| ((i as f32) * 0.731).sin() * (1 + i % 7) as f32).collect();
            let channels = if axis == 0 { a } else { b };
            let bins: Vec<usize> = (0..channels).map(|c| [2048, 0, 7, 300][c % 4]).collect();
            let hi: Vec<f32> = (0..channels).map(|c| if c % 5 == 3 { 0.0 } else { 1.0 + (c % 5) as f32 }).collect();
            let view = ndarray::ArrayView2::from_shape(shape, &x).unwrap().into_dyn();
            let held = reduce(HostLayout::new(&view, Some(axis)), &HistogramReducer::per_channel(&bins, &hi));
            let held = held.into_counts();
            assert_eq!(held.len(), bins.iter().sum::<usize>());
            // Added to what `out` holds, not written over it.
            let mut out: Vec<u64> = (0..held.len() as u64).collect();
            let e = add_abs_histograms(&TensorView::F32(view.clone()), axis, &bins, &hi, true, &mut out);
            let want: Vec<u64> = held.iter().enumerate().map(|(i, c)| c + i as u64).collect();
            assert!(out == want, "shape {shape:?} axis {axis}");
            assert_eq!(e.map(|e| e.min.len()), Some(channels));
            let mut alone = vec![0; held.len()];
            assert!(add_abs_histograms(&TensorView::F32(view), axis, &bins, &hi, false, &mut alone).is_none());
            assert!(alone == held, "shape {shape:?} axis {axis}");
        }
    }

    #[test]
    fn tiles_of_grouped_blocks_equal_each_channel_counted_alone() {
        use crate::engine::cpu::add_abs_histograms;
        use crate::tensor::TensorView;
        // Channels innermost, wide enough for blocks of TILE_WIDTH channels (and a narrower last
        // one), walked in groups of blocks through chunks of rows (one thread: the largest
        // groups), rows not a multiple of a tile: bins of every kind (none, few, the most), an
        // all-zero range, a range whose `hi * bins` overflows, values outside the range, NaN and
        // infinities, in f32 (read in place) and f16 (widened).
        let (rows, channels) = (700, 8 * TILE_WIDTH + 40);
        let mut x: Vec<f32> = (0..rows * channels).map(|i| ((i as f32) * 0.731).sin() * (1 + i % 7) as f32).collect();
        x[5 * channels + 17] = f32::NAN;
        x[600 * channels + 300] = f32::INFINITY;
        x[650 * channels + 1060] = f32::NEG_INFINITY;
        for r in 0..rows {
            x[r * channels + 3] = 0.0; // an all-zero channel
            x[r * channels + 200] *= 1e37; // a range near f32::MAX
        }
        let bins: Vec<usize> = (0..channels).map(|c| [2048, 0, 7, 300, 2048][c % 5]).collect();
        let hi: Vec<f32> = (0..channels)
            .map(|c| match c {
                3 => 0.0,
                200 => 3.0e38,
                _ => 1.0 + (c % 6) as f32,
            })
            .collect();
        assert!(!in_range(3.0e38, 2048));
        let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
        let widened: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        for (view, x) in [
            (TensorView::F32(ndarray::ArrayView2::from_shape((rows, channels), &x).unwrap().into_dyn()), &x),
            (TensorView::F16(ndarray::ArrayView2::from_shape((rows, channels), &x16).unwrap().into_dyn()), &widened),
        ] {
            let mut counts = vec![0; bins.iter().sum()];
            let e = one_thread.install(|| add_abs_histograms(&view, 1, &bins, &hi, true, &mut counts)).unwrap();
            let mut again = vec![0; counts.len()];
            assert!(add_abs_histograms(&view, 1, &bins, &hi, false, &mut again).is_none());
            assert!(again == counts);
            let mut at = 0;
            let mut non_finite = 0;
            for c in 0..channels {
                let column: Vec<f32> = (0..rows).map(|r| x[r * channels + c]).collect();
                let want = if bins[c] == 0 {
                    Vec::new()
                } else if hi[c] > 0.0 {
                    let r = HistogramReducer::new(bins[c], hi[c]);
                    let mut p = r.part(0, 1);
                    r.run(&mut p, 0, &column);
                    p.into_counts()
                } else {
                    let mut z = vec![0; bins[c]];
                    z[0] = column.iter().filter(|v| **v == 0.0).count() as u64;
                    z
                };
                assert!(counts[at..at + bins[c]] == want[..], "channel {c}");
                at += bins[c];
                let ce = min_max::extremes(&column);
                assert_eq!(
                    (e.min[c].to_bits(), e.max[c].to_bits()),
                    (ce.min.to_bits(), ce.max.to_bits()),
                    "channel {c}"
                );
                non_finite += ce.non_finite;
            }
            assert_eq!(e.non_finite, non_finite);
        }
    }

    #[test]
    fn the_rule_without_overflow_equals_the_full_rule_where_it_applies() {
        for (hi, bins) in [(3.0f32, 2048usize), (1e-30, 7), (1.6e35, 2048), (122.9, 2001), (3.4e38, 1)] {
            assert!(in_range(hi, bins));
            let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
            let e = (hi.to_bits() >> 23) as i32;
            let mut values: Vec<f32> = ((e - 30).max(1)..=(e + 2).min(254))
                .flat_map(|exp| (0..1u32 << 23).step_by(4099).map(move |m| f32::from_bits(((exp as u32) << 23) | m)))
                .collect();
            values.extend([0.0, -0.0, hi, -hi, f32::MAX, -f32::MAX, f32::NAN, f32::INFINITY, 1e-45]);
            for v in values {
                assert_eq!(
                    bin_of_in_range(v, bins_f, top, hi, nb),
                    bin_of(v, bins_f, top, hi, nb),
                    "v {v:e} hi {hi:e}"
                );
            }
        }
        assert!(!in_range(3.0e38, 2048));
    }
}
