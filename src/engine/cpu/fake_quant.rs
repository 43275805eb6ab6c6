//! Sums of squared fake-quantization errors for many candidate scales in one pass over the data.

use super::simd::{LANES, multiversion};
use super::walk::Reducer;
use crate::arith::fake_quant;

/// Values scored against every candidate before moving on (they stay in L1).
const BLOCK: usize = 2048;

multiversion! {
    /// `sum((fq(x, s) - x)^2)` in f64, lane-parallel in a fixed order.
    fn sq_err_sum(x: &[f32], s: f32, qmin: f32, qmax: f32) -> f64 {
        let mut acc = [0f64; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for ch in &mut chunks {
            for j in 0..LANES {
                let d = (fake_quant(ch[j], s, qmin, qmax) - ch[j]) as f64;
                acc[j] += d * d;
            }
        }
        for (j, &v) in chunks.remainder().iter().enumerate() {
            let d = (fake_quant(v, s, qmin, qmax) - v) as f64;
            acc[j] += d * d;
        }
        // A fixed pairwise order.
        let mut w = LANES;
        while w > 1 {
            w /= 2;
            for j in 0..w {
                acc[j] += acc[j + w];
            }
        }
        acc[0]
    }
}

multiversion! {
    /// For rows of `err.len()` values (value `j` in channel `j`), adds the squared error of every
    /// value under its channel's scale `s[j]` into `err[j]`.
    fn sq_err_rows(rows: &[f32], s: &[f32], qmin: f32, qmax: f32, err: &mut [f64]) {
        let channels = err.len();
        for row in rows.chunks_exact(channels) {
            for ((e, &v), &sc) in err.iter_mut().zip(row).zip(s) {
                let d = (fake_quant(v, sc, qmin, qmax) - v) as f64;
                *e += d * d;
            }
        }
    }
}

/// Squared fake-quantization errors of `k` candidate scales per channel.
pub(crate) struct FakeQuantReducer<'s> {
    /// Candidate scales, `k` rows of `channels` (candidate-major).
    pub scales: &'s [f32],
    /// Candidates per channel.
    pub k: usize,
    /// Channels.
    pub channels: usize,
    /// Lower clamp.
    pub qmin: f32,
    /// Upper clamp.
    pub qmax: f32,
}

/// Error sums of a range of channels, candidate-major: `err[kk * count + (c - first)]`.
pub(crate) struct FakeQuantPart {
    first: usize,
    count: usize,
    pub err: Vec<f64>,
}

impl Reducer for FakeQuantReducer<'_> {
    type Part = FakeQuantPart;

    fn part(&self, first: usize, count: usize) -> FakeQuantPart {
        FakeQuantPart { first, count, err: vec![0.0; self.k * count] }
    }

    fn part_bytes(&self, count: usize) -> usize {
        8 * self.k * count + 32
    }

    fn run(&self, part: &mut FakeQuantPart, c: usize, x: &[f32]) {
        let i = c - part.first;
        for block in x.chunks(BLOCK) {
            for kk in 0..self.k {
                let s = self.scales[kk * self.channels + c];
                part.err[kk * part.count + i] += sq_err_sum(block, s, self.qmin, self.qmax);
            }
        }
    }

    fn rows(&self, part: &mut FakeQuantPart, rows: &[f32], channels: usize) {
        for kk in 0..self.k {
            let s = &self.scales[kk * channels..][..channels];
            let err = &mut part.err[kk * channels..][..channels];
            sq_err_rows(rows, s, self.qmin, self.qmax, err);
        }
    }

    fn merge(&self, part: &mut FakeQuantPart, other: FakeQuantPart) {
        for (a, b) in part.err.iter_mut().zip(other.err) {
            *a += b;
        }
    }

    fn concat(&self, parts: Vec<FakeQuantPart>) -> FakeQuantPart {
        let first = parts.first().map_or(0, |p| p.first);
        let count: usize = parts.iter().map(|p| p.count).sum();
        let mut out = self.part(first, count);
        let mut offset = 0;
        for p in parts {
            for kk in 0..self.k {
                out.err[kk * count + offset..][..p.count].copy_from_slice(&p.err[kk * p.count..][..p.count]);
            }
            offset += p.count;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::fake_quant_sq_err;

    #[test]
    fn sums_match_a_plain_loop() {
        let x: Vec<f32> = (0..5003).map(|i| ((i as f32) * 0.71).cos() * 2.5).collect();
        for s in [0.01f32, 0.02, 0.5] {
            let want: f64 = x.iter().map(|&v| fake_quant_sq_err(v, s, -128.0, 127.0)).sum();
            let got = sq_err_sum(&x, s, -128.0, 127.0);
            assert!((got - want).abs() <= 1e-12 * want, "s {s}: {got} vs {want}");
        }
    }
}
