//! The KL-divergence threshold search of SPEC §4 (KLObserver).
//!
//! The plugin evaluates every candidate with a Python loop over all its bins, which is
//! quadratic in the number of bins. Here the candidates run in parallel, and each costs far less
//! than its bins:
//!
//! - a candidate with more source bins than quantized levels (`i > nq`) sums its
//!   levels from prefix sums over the bins (exact integer prefix sums for the counts, compensated
//!   ones for `h ln h`): one logarithm per level instead of one per bin;
//! - a candidate with `i <= nq`, where every non-empty bin is a level of its own,
//!   costs a few prefix-table reads: its divergence is a closed form in the counts below and
//!   above the cut, plus `sum h ln(1 + 1e-10 B / h)` over its bins, a series in prefix sums of
//!   `1/h^m` for the bins with large counts and a sum over the few distinct small counts.
//!
//! The divergences agree with the direct formula of SPEC to rounding (the tests compare them on
//! many histograms), and the tie rule of the window sums makes the choice independent of that
//! rounding.

mod levels;
mod per_bin;

use rayon::prelude::*;

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

/// How the candidates of one search run: in parallel (one histogram), or in order on the calling
/// thread (many histograms, which run in parallel instead). The same divergences either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Parallel,
    InOrder,
}

/// [`threshold_index`] of every histogram in `hists` (one per channel), the channels in
/// parallel.
///
/// ```
/// use qcalib::search::kl::{threshold_index, threshold_indices};
/// let a: Vec<u64> = (0..512).map(|b| (1e6 * (-(b as f64 / 60.0).powi(2)).exp()) as u64).collect();
/// let b: Vec<u64> = (0..300).map(|b| 1000 / (b + 1)).collect();
/// let found = threshold_indices(&[&a, &b, &[]], 128);
/// assert_eq!(found, vec![threshold_index(&a, 128), threshold_index(&b, 128), None]);
/// ```
pub fn threshold_indices(hists: &[&[u64]], nq: u64) -> Vec<Option<usize>> {
    hists.par_iter().map(|h| best_window(&divergences_run(h, nq, Run::InOrder)).map(|k| k + EDGE_OFFSET)).collect()
}

/// The divergence of every candidate `i = 128 ..= hist.len()` (SPEC §4 step 2); `+inf` where it
/// is undefined (no counts below the cut). Empty when the histogram has fewer than 128 bins, no
/// counts, or counts that add up to more than `u64::MAX`.
///
/// ```
/// use qcalib::search::kl::divergences;
/// let hist: Vec<u64> = (0..300).map(|b| 1000 / (b + 1)).collect();
/// let div = divergences(&hist, 128);
/// assert_eq!(div.len(), 300 - 128 + 1);
/// assert!(div.iter().all(|d| d.is_finite()));
/// ```
pub fn divergences(hist: &[u64], nq: u64) -> Vec<f64> {
    divergences_run(hist, nq, Run::Parallel)
}

/// [`divergences`], the candidates run as `run` says.
fn divergences_run(hist: &[u64], nq: u64, run: Run) -> Vec<f64> {
    let Some(counts) = Counts::new(hist) else { return Vec::new() };
    let len = hist.len();
    // Candidates up to `nq` have one level per bin; the others have `nq` levels of several bins.
    let last_per_bin = usize::try_from(nq).map_or(len, |nq| nq.min(len));
    let mut div = Vec::with_capacity(len + 1 - START_BIN);
    if last_per_bin >= START_BIN {
        div.extend(per_bin::divergences(&counts, START_BIN, last_per_bin, run));
    }
    let first_levels = (last_per_bin + 1).max(START_BIN);
    if first_levels <= len {
        // `nq < len` here, so `nq` fits a usize.
        div.extend(levels::divergences(&counts, first_levels, nq as usize, run));
    }
    div
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

/// The histogram as the search sees it, with exact prefix counts.
struct Counts {
    /// The counts, `h[0]` replaced by `h[1]` (SPEC §4 step 1).
    h: Vec<u64>,
    /// `count[j]` = the sum of `h[..j]` (exact).
    count: Vec<u64>,
    /// The total count `P`.
    total: u64,
}

impl Counts {
    /// `None` when there are fewer than [`START_BIN`] bins, no counts, or more than `u64` holds
    /// (never from a real tensor: such histograms have no defined divergence).
    fn new(hist: &[u64]) -> Option<Counts> {
        if hist.len() < 2 || hist.len() < START_BIN {
            return None;
        }
        let mut h = hist.to_vec();
        h[0] = h[1];
        let mut count = Vec::with_capacity(h.len() + 1);
        count.push(0u64);
        let mut sum = 0u64;
        for &v in &h {
            sum = sum.checked_add(v)?;
            count.push(sum);
        }
        (sum > 0).then_some(Counts { h, count, total: sum })
    }

    /// The term of the last source bin `i - 1`, which also takes the outliers (the counts of the
    /// bins `>= i`); `q_of_level` is the normalised Q of its level.
    fn last_bin_term(&self, i: usize, q_of_level: f64) -> f64 {
        let last = self.h[i - 1];
        let outliers = (self.total - self.count[i]) as f64;
        let p = (last as f64 + outliers) / self.total as f64;
        if p > 0.0 {
            let q = if last > 0 { q_of_level } else { 0.0 } + Q_FLOOR;
            p * (p / q).ln()
        } else {
            0.0
        }
    }
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
        assert_eq!(threshold_index(&hist, 1 << 31), None);
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
        assert_eq!(threshold_index(&hist, 32768), None);
    }

    #[test]
    fn both_kinds_of_candidate_in_one_histogram() {
        // nq = 200: candidates 128..=200 per bin, 201..=300 with levels.
        let hist: Vec<u64> = (0..300u64).map(|b| 5000 / (b + 1) + b % 3).collect();
        let div = divergences(&hist, 200);
        assert_eq!(div.len(), 300 - 128 + 1);
        assert!(div.iter().all(|d| d.is_finite()));
    }
}
