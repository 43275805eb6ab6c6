//! Histograms of `|x|` with the exact bin rule of SPEC §5.

use std::sync::Mutex;

use super::simd::multiversion;
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

/// Values whose bins are computed at a time, before the counts are bumped.
const BLOCK: usize = 256;

/// Interleaved sub-histograms: consecutive values bump different copies, so runs of values in
/// the same bin (the common case: activations crowd a few bins) do not wait on each other.
pub(crate) const COPIES: usize = 8;

/// Counters from one copy to the next: room for `bins + 1`, rounded so that the copies start
/// 512 bytes apart modulo 4 KiB (the same bin of two copies must not alias in the store buffer).
fn copy_stride(bins: usize) -> usize {
    (bins + 1).div_ceil(1024) * 1024 + 128
}

multiversion! {
    /// Adds the histogram of `|x|` on `[0, hi]` into [`COPIES`] interleaved sub-histograms of
    /// [`copy_stride`] counters each (counter `bins` takes the values outside the range).
    fn accumulate(x: &[f32], hi: f32, bins: usize, sub: &mut [u32]) {
        let (bins_f, top, nb) = (bins as f32, (bins - 1) as f32, bins as u32);
        // Value i of a block goes to copy i % COPIES. The bins are computed for a whole block in
        // one vectorised loop, and counted in a second, scalar one (fusing them would scalarise
        // the first).
        let stride = copy_stride(bins);
        let offset: [u32; BLOCK] = std::array::from_fn(|i| ((i % COPIES) * stride) as u32);
        let mut idx = [0u32; BLOCK];
        for block in x.chunks(BLOCK) {
            for ((slot, &v), &off) in idx.iter_mut().zip(block).zip(&offset) {
                *slot = bin_of(v, bins_f, top, hi, nb) + off;
            }
            for &j in &idx[..block.len()] {
                sub[j as usize] += 1;
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

/// Scratch buffers kept for reuse: allocating and freeing them for every piece of every batch
/// costs page faults (the allocator returns large blocks to the system).
static SCRATCH_POOL: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());

/// Scratches the pool keeps at most.
const POOL_SIZE: usize = 64;

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

impl HistogramPart {
    fn flush(&mut self) {
        if let Some(c) = self.scratch_channel.take() {
            let stride = copy_stride(self.bins);
            let dst = &mut self.counts[(c - self.first) * self.bins..][..self.bins];
            for copy in self.scratch.chunks_exact(stride) {
                for (d, &s) in dst.iter_mut().zip(copy) {
                    *d += s as u64;
                }
            }
            self.scratch.iter_mut().for_each(|s| *s = 0);
            self.scratch_values = 0;
        }
    }

    /// The counts, `bins` per channel.
    pub(crate) fn into_counts(mut self) -> Vec<u64> {
        self.flush();
        std::mem::take(&mut self.counts)
    }
}

impl Drop for HistogramPart {
    fn drop(&mut self) {
        // Unflushed counts are lost with the part; the scratch must go back zeroed.
        if self.scratch_channel.is_some() {
            self.scratch.iter_mut().for_each(|s| *s = 0);
        }
        give_back_scratch(std::mem::take(&mut self.scratch));
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
        8 * count * self.bins + 4 * COPIES * copy_stride(self.bins)
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
                    part.scratch = take_scratch(COPIES * copy_stride(self.bins));
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
        for (a, b) in part.counts.iter_mut().zip(&other.counts) {
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
        assert_eq!(bin_of(1.0e36, 2048.0, 2047.0, 3.0e38, 2048), 6);
    }

    #[test]
    fn zero_range_counts_zeros_in_bin_zero() {
        let r = HistogramReducer { bins: 4, hi: 0.0 };
        let mut p = r.part(0, 1);
        r.run(&mut p, 0, &[0.0, -0.0, 0.0]);
        assert_eq!(p.into_counts(), vec![3, 0, 0, 0]);
    }
}
