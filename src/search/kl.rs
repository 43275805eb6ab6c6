//! The KL-divergence threshold search of SPEC §4 (KLObserver).
//!
//! The plugin evaluates every candidate with a Python loop over all its bins, which is
//! quadratic in the number of bins. Here the candidates run in parallel, and the levels of a
//! candidate are summed with prefix sums over the bins (exact integer prefix sums for the counts,
//! compensated ones for `h ln h`), so a candidate costs one logarithm per level instead of one per
//! bin. The divergences agree with the direct formula to rounding (the tests compare them), and
//! the tie rule of the window sums makes the choice independent of that rounding.

use rayon::prelude::*;

use super::ln::ln;
use crate::engine::cpu::simd::multiversion;

/// The first candidate: the histogram cut after bin 128.
pub const START_BIN: usize = 128;
/// Divergences per window sum.
pub const WINDOW: usize = 9;
/// The edge of the threshold is `k* + EDGE_OFFSET` (the centre of the best window).
pub const EDGE_OFFSET: usize = 132;
/// Window sums within this relative distance of the smallest count as tied; the last one wins.
pub const TIE_RTOL: f64 = 1e-9;
/// Added to the normalised Q distribution (not renormalised).
const Q_FLOOR: f64 = 1e-10;

/// The index into the histogram's edges of the KL threshold, `k* + 132`, for the histogram
/// `hist` and `nq` quantized levels; `None` when no window sum is finite (the histogram has
/// fewer than 138 bins, is empty, holds all its mass in its top bins, or its counts add up to more
/// than `u64::MAX`).
///
/// ```
/// use qcalib::search::kl::threshold_index;
/// // A bell shape over 512 bins: the threshold lands well inside the histogram.
/// let hist: Vec<u64> = (0..512).map(|b| (1e6 * (-(b as f64 / 60.0).powi(2)).exp()) as u64).collect();
/// let t = threshold_index(&hist, 128).unwrap();
/// assert!(t > 132 && t < 512);
/// ```
pub fn threshold_index(hist: &[u64], nq: u64) -> Option<usize> {
    let div = divergences(hist, nq);
    best_window(&div).map(|k| k + EDGE_OFFSET)
}

/// The divergence of every candidate `i = 128 ..= hist.len()` (SPEC §4 step 2); `+inf` where it
/// is undefined (no counts below the cut).
pub fn divergences(hist: &[u64], nq: u64) -> Vec<f64> {
    let Some(prefix) = Prefix::new(hist) else { return Vec::new() };
    (START_BIN..=hist.len())
        .into_par_iter()
        .map_init(Levels::default, |levels, i| {
            if nq >= i as u64 {
                prefix.divergence_per_bin(i)
            } else {
                candidate_levels(&prefix, i, nq as usize, levels)
            }
        })
        .collect()
}

/// One candidate's level boundaries and the sums over its levels, laid out for a vectorised pass
/// (reused across candidates).
#[derive(Default)]
struct Levels {
    /// Level `m` holds bins `bounds[m] .. bounds[m + 1]`.
    bounds: Vec<usize>,
    /// Per level: the count, the number of non-empty bins, and `sum h ln h`.
    count: Vec<f64>,
    members: Vec<f64>,
    hlnh: Vec<f64>,
}

/// The largest `k` whose window sum `div[k] + … + div[k + 8]` is within [`TIE_RTOL`] of the
/// smallest, over `k = 0 ..= div.len() - 11` (the last two divergences are in no window).
pub fn best_window(div: &[f64]) -> Option<usize> {
    if div.len() < WINDOW + 2 {
        return None;
    }
    let sums: Vec<f64> = (0..=div.len() - WINDOW - 2).map(|k| div[k..k + WINDOW].iter().sum()).collect();
    let min = sums.iter().copied().fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return None;
    }
    sums.iter().rposition(|&s| (s - min).abs() <= TIE_RTOL * min.abs())
}

/// Prefix sums over the histogram, with `h[0]` replaced by `h[1]`.
struct Prefix {
    /// The counts, `h[0] = h[1]`.
    h: Vec<u64>,
    /// The same as f64.
    hf: Vec<f64>,
    /// `count[j]` = sum of `h[..j]` (exact).
    count: Vec<u64>,
    /// `nonzero[j]` = number of non-empty bins in `h[..j]`.
    nonzero: Vec<u64>,
    /// `[count, nonzero, hlnh, hlnh_err]` at every bound as f64, side by side: a level's sums
    /// come from two entries (the counts are exact below 2^53).
    table: Vec<[f64; 4]>,
    /// `sum h ln h` over `h[..j]`, compensated: `hlnh[j] + hlnh_err[j]`.
    hlnh: Vec<f64>,
    hlnh_err: Vec<f64>,
    /// The total count `P` and `ln P`.
    total: f64,
    ln_total: f64,
}

impl Prefix {
    fn new(hist: &[u64]) -> Option<Prefix> {
        if hist.len() < 2 || hist.len() < START_BIN {
            return None;
        }
        let mut h = hist.to_vec();
        h[0] = h[1];
        let n = h.len();
        let (mut count, mut nonzero) = (vec![0u64; n + 1], vec![0u64; n + 1]);
        let (mut hlnh, mut hlnh_err) = (vec![0f64; n + 1], vec![0f64; n + 1]);
        for j in 0..n {
            // Counts past u64 (never from a real tensor) have no defined divergence.
            count[j + 1] = count[j].checked_add(h[j])?;
            nonzero[j + 1] = nonzero[j] + (h[j] > 0) as u64;
            let g = if h[j] > 0 { h[j] as f64 * (h[j] as f64).ln() } else { 0.0 };
            let (s, e) = two_sum(hlnh[j], g);
            hlnh[j + 1] = s;
            hlnh_err[j + 1] = hlnh_err[j] + e;
        }
        let total = count[n] as f64;
        if total == 0.0 {
            return None;
        }
        let hf = h.iter().map(|&c| c as f64).collect();
        let table = (0..=n).map(|j| [count[j] as f64, nonzero[j] as f64, hlnh[j], hlnh_err[j]]).collect();
        Some(Prefix { h, hf, count, nonzero, table, hlnh, hlnh_err, total, ln_total: total.ln() })
    }

    /// `sum h ln h` over bins `a..b`.
    fn hlnh_range(&self, a: usize, b: usize) -> f64 {
        (self.hlnh[b] - self.hlnh[a]) + (self.hlnh_err[b] - self.hlnh_err[a])
    }

    /// The term of the last source bin `i - 1`, which also takes the outliers.
    fn last_bin_term(&self, i: usize, q_of_level: f64) -> f64 {
        let last = self.h[i - 1];
        let outliers = (self.count[self.h.len()] - self.count[i]) as f64;
        let p = (last as f64 + outliers) / self.total;
        if p > 0.0 {
            let q = if last > 0 { q_of_level } else { 0.0 } + Q_FLOOR;
            p * (p / q).ln()
        } else {
            0.0
        }
    }

    /// Candidate `i` with `nq < i` levels: level `m` holds bins `ceil(m * i/nq) .. ceil((m+1) * i/nq)`.
    #[inline(always)]
    fn divergence_levels(&self, i: usize, nq: usize, lv: &mut Levels) -> f64 {
        let below = self.count[i];
        if below == 0 {
            return f64::INFINITY;
        }
        let below = below as f64;
        let step = i as f64 / nq as f64;
        lv.bounds.clear();
        lv.bounds.extend((0..nq).map(|m| (m as f64 * step).ceil() as usize));
        lv.bounds.push(i);
        // Every level but the last (levels 0 ..= nq - 2), vectorised: its member bins are all
        // below the last bin. The sums of a level are differences of the prefix sums at its bounds.
        for v in [&mut lv.count, &mut lv.members, &mut lv.hlnh] {
            v.resize(nq - 1, 0.0);
        }
        let sums = lv.count.iter_mut().zip(lv.members.iter_mut()).zip(lv.hlnh.iter_mut());
        for (((count, members), hlnh), pair) in sums.zip(lv.bounds[..nq].windows(2)) {
            let (a, b) = (self.table[pair[0]], self.table[pair[1]]);
            *count = b[0] - a[0];
            *members = b[1] - a[1];
            *hlnh = (b[2] - a[2]) + (b[3] - a[3]);
        }
        let body = level_sums(&lv.count, &lv.members, &lv.hlnh, below, self.ln_total);
        // The last level, whose last bin (the candidate's last) also takes the outliers.
        let b0 = lv.bounds[nq - 1];
        let members = self.nonzero[i] - self.nonzero[b0];
        let q_last = if members > 0 { (self.count[i] - self.count[b0]) as f64 / members as f64 / below } else { 0.0 };
        let h = (self.count[i - 1] - self.count[b0]) as f64;
        let last_level =
            if h > 0.0 { self.hlnh_range(b0, i - 1) - h * (self.ln_total + ln(q_last + Q_FLOOR)) } else { 0.0 };
        (body + last_level) / self.total + self.last_bin_term(i, q_last)
    }

    /// Candidate `i` with `nq >= i`: every source bin is a level of its own.
    fn divergence_per_bin(&self, i: usize) -> f64 {
        let below = self.count[i];
        if below == 0 {
            return f64::INFINITY;
        }
        let below = below as f64;
        let last = self.h[i - 1] as f64;
        bin_terms(&self.hf[..i - 1], self.total, below) + self.last_bin_term(i, last / below)
    }
}

multiversion! {
    /// `sum p ln(p / q)` over the non-empty bins `h` with `p = h / total`, `q = h / below + floor`,
    /// in lanes of a fixed order.
    fn bin_terms(h: &[f64], total: f64, below: f64) -> f64 {
        const L: usize = 8;
        let mut acc = [0f64; L];
        #[inline(always)]
        fn term(h: f64, total: f64, below: f64) -> f64 {
            let p = h / total;
            let q = h / below + Q_FLOOR;
            // An empty bin contributes nothing: its logarithm is of 1.
            let ratio = if h > 0.0 { p / q } else { 1.0 };
            p * ln(ratio)
        }
        let mut chunks = h.chunks_exact(L);
        for ch in &mut chunks {
            for j in 0..L {
                acc[j] += term(ch[j], total, below);
            }
        }
        for (j, &v) in chunks.remainder().iter().enumerate() {
            acc[j] += term(v, total, below);
        }
        acc.iter().sum()
    }
}

multiversion! {
    /// The divergence of candidate `i` with `nq < i` levels, compiled for the CPU's vectors.
    fn candidate_levels(p: &Prefix, i: usize, nq: usize, lv: &mut Levels) -> f64 {
        p.divergence_levels(i, nq, lv)
    }
}

/// `sum over levels m of g - h (ln P + ln(q + floor))` for the levels' counts `h`, numbers of
/// non-empty bins and `sum h ln h` (`g`), with `q = h / members / below`; in lanes of a fixed
/// order. Written as plain zipped loops over slices so that they vectorise.
#[inline(always)]
fn level_sums(h: &[f64], members: &[f64], g: &[f64], below: f64, ln_total: f64) -> f64 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let mut hs = h.chunks_exact(L);
    let mut ms = members.chunks_exact(L);
    let mut gs = g.chunks_exact(L);
    for ((h, m), g) in (&mut hs).zip(&mut ms).zip(&mut gs) {
        for j in 0..L {
            acc[j] += level_term(h[j], m[j], g[j], below, ln_total);
        }
    }
    for (j, ((h, m), g)) in hs.remainder().iter().zip(ms.remainder()).zip(gs.remainder()).enumerate() {
        acc[j] += level_term(*h, *m, *g, below, ln_total);
    }
    acc.iter().sum()
}

/// One level's `g - h (ln P + ln(h / members / below + floor))`; a level without member bins
/// has `h = g = 0` and adds nothing (the quotient, 0/0 there, is computed and discarded so that
/// the loop has no branch).
#[inline(always)]
fn level_term(h: f64, members: f64, g: f64, below: f64, ln_total: f64) -> f64 {
    let q = h / members / below + Q_FLOOR;
    let arg = if h > 0.0 { q } else { 1.0 };
    g - h * (ln_total + ln(arg))
}

/// Knuth's error-free sum: `a + b = s + e` exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_past_u64_have_no_threshold() {
        let mut hist: Vec<u64> = (0..512u64).map(|b| 1000 + 7 * (b % 13)).collect();
        hist[300] = u64::MAX;
        assert_eq!(threshold_index(&hist, 128), None);
    }

    #[test]
    fn the_last_of_tied_windows_wins() {
        let mut div = vec![1.0; 20];
        div[3] = 0.0; // windows 0..=3 hold it
        assert_eq!(best_window(&div), Some(3));
        assert_eq!(best_window(&[1.0; 10]), None);
        assert_eq!(best_window(&[f64::INFINITY; 20]), None);
    }

    #[test]
    fn mass_only_in_the_top_bins_has_no_finite_window() {
        let mut hist = vec![0u64; 256];
        hist[255] = 1000;
        assert_eq!(threshold_index(&hist, 128), None);
    }
}
