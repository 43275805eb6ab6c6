//! The candidates `i > nq` of the KL search: `nq` levels of one or more source bins each.
//!
//! With `P` the total count, `B` the count below the cut and `q = h / (members B)` the Q of a
//! level of count `h` with `members` non-empty bins, the levels below the last one add
//!
//! ```text
//! sum over their bins of h ln h  -  (their count) ln P  -  sum over the levels of h ln(q + 1e-10)
//! ```
//!
//! The first two are prefix sums at the last level's bound (`h ln h` compensated); only the third
//! needs each level, whose count and number of non-empty bins are differences of prefix sums at
//! its bounds: one logarithm per level instead of one per bin, in a vectorised loop over blocks
//! of levels.

use rayon::prelude::*;

use super::{Counts, Q_FLOOR, Run, two_sum};
use crate::engine::cpu::simd::multiversion;
use crate::search::ln::ln;

/// The divergences of the candidates `first ..= counts.h.len()`, all with `nq < first` levels.
pub(super) fn divergences(counts: &Counts, first: usize, nq: usize, run: Run) -> Vec<f64> {
    let prefix = Prefix::new(counts);
    let candidates = first..=counts.h.len();
    match run {
        Run::Parallel => candidates
            .into_par_iter()
            .map_init(Levels::default, |levels, i| candidate_levels(&prefix, i, nq, levels))
            .collect(),
        Run::InOrder => {
            let mut levels = Levels::default();
            candidates.map(|i| candidate_levels(&prefix, i, nq, &mut levels)).collect()
        }
    }
}

/// Levels whose sums are gathered at a time before their terms are evaluated in one vectorised
/// loop (the block stays in L1).
const BLOCK: usize = 256;

/// Lanes of [`level_sums`] (one AVX-512 register of f64); [`BLOCK`] is a multiple of it.
const LEVEL_LANES: usize = 8;

/// One block of levels, laid out for a vectorised pass (reused across candidates): the bounds,
/// and the prefix sums `[count, non-empty bins]` at each.
struct Levels {
    bounds: [u32; BLOCK + 16],
    count: [f64; BLOCK + 1],
    members: [f64; BLOCK + 1],
}

impl Default for Levels {
    fn default() -> Self {
        Levels { bounds: [0; BLOCK + 16], count: [0.0; BLOCK + 1], members: [0.0; BLOCK + 1] }
    }
}

/// Prefix sums over the histogram.
struct Prefix<'a> {
    counts: &'a Counts,
    /// `nonzero[j]` = number of non-empty bins in `h[..j]`.
    nonzero: Vec<u64>,
    /// `[count, nonzero]` at every bound as f64, side by side (exact below 2^53).
    table: Vec<[f64; 2]>,
    /// `sum h ln h` over `h[..j]`, compensated: `hlnh[j] + hlnh_err[j]`.
    hlnh: Vec<f64>,
    hlnh_err: Vec<f64>,
    /// `ln P` of the total count `P`.
    ln_total: f64,
}

impl Prefix<'_> {
    fn new(counts: &Counts) -> Prefix<'_> {
        let h = &counts.h;
        let n = h.len();
        let mut nonzero = vec![0u64; n + 1];
        let (mut hlnh, mut hlnh_err) = (vec![0f64; n + 1], vec![0f64; n + 1]);
        for j in 0..n {
            nonzero[j + 1] = nonzero[j] + (h[j] > 0) as u64;
            let g = if h[j] > 0 { h[j] as f64 * ln(h[j] as f64) } else { 0.0 };
            let (s, e) = two_sum(hlnh[j], g);
            hlnh[j + 1] = s;
            hlnh_err[j + 1] = hlnh_err[j] + e;
        }
        let table = (0..=n).map(|j| [counts.count[j] as f64, nonzero[j] as f64]).collect();
        Prefix { counts, nonzero, table, hlnh, hlnh_err, ln_total: (counts.total as f64).ln() }
    }

    /// `sum h ln h` over bins `a..b`.
    fn hlnh_range(&self, a: usize, b: usize) -> f64 {
        (self.hlnh[b] - self.hlnh[a]) + (self.hlnh_err[b] - self.hlnh_err[a])
    }

    /// Candidate `i` with `nq < i` levels: level `m` holds bins `ceil(m * i/nq) .. ceil((m+1) * i/nq)`.
    #[inline(always)]
    fn divergence_levels(&self, i: usize, nq: usize, lv: &mut Levels) -> f64 {
        let count = &self.counts.count;
        let below = count[i];
        if below == 0 {
            return f64::INFINITY;
        }
        let below = below as f64;
        let step = i as f64 / nq as f64;
        let bound = |m: usize| (m as f64 * step).ceil() as usize;
        // Every level but the last (levels 0 ..= nq - 2), a block at a time: its member bins are
        // all below the last bin.
        let (mut level_logs, mut level_logs_err) = (0.0, 0.0);
        let mut first = 0;
        while first < nq - 1 {
            let n = (nq - 1 - first).min(BLOCK);
            // The bounds (vectorised), the prefix sums at them (scalar loads: gathers are slower
            // than loads on some CPUs), then the levels' terms (vectorised).
            let base = first as f64;
            for (k0, chunk) in lv.bounds[..(n + 1).next_multiple_of(16)].chunks_exact_mut(16).enumerate() {
                // Bounds past the block's end are computed and never read (a fixed trip count
                // vectorises).
                for (k, b) in chunk.iter_mut().enumerate() {
                    *b = ((base + (16 * k0 + k) as f64) * step).ceil() as u32;
                }
            }
            let table = &self.table[..=i];
            for k in 0..=n {
                // Bounds are at most `i` (a saturated conversion included): clamped, not checked.
                let [c, m] = table[(lv.bounds[k] as usize).min(i)];
                lv.count[k] = c;
                lv.members[k] = m;
            }
            // Empty levels up to a whole number of vector lanes (each adds exactly 0 to the lane
            // the tail would have added it to): no scalar tail of logarithms.
            let padded = n.next_multiple_of(LEVEL_LANES);
            let (c, m) = (lv.count[n], lv.members[n]);
            lv.count[n + 1..=padded].fill(c);
            lv.members[n + 1..=padded].fill(m);
            let (s, e) = two_sum(level_logs, level_sums(&lv.count[..=padded], &lv.members[..=padded], below));
            level_logs = s;
            level_logs_err += e;
            first += n;
        }
        let b0 = bound(nq - 1);
        // Compensated: the three sums are large next to the divergence.
        let (g, g_err) = two_sum(self.hlnh[b0], -(count[b0] as f64) * self.ln_total);
        let body = (g - level_logs) + (g_err + self.hlnh_err[b0] - level_logs_err);
        // The last level, whose last bin (the candidate's last) also takes the outliers.
        let members = self.nonzero[i] - self.nonzero[b0];
        let q_last = if members > 0 { (count[i] - count[b0]) as f64 / members as f64 / below } else { 0.0 };
        let h = (count[i - 1] - count[b0]) as f64;
        let last_level =
            if h > 0.0 { self.hlnh_range(b0, i - 1) - h * (self.ln_total + ln(q_last + Q_FLOOR)) } else { 0.0 };
        (body + last_level) / self.counts.total as f64 + self.counts.last_bin_term(i, q_last)
    }
}

multiversion! {
    /// The divergence of candidate `i` with `nq < i` levels, compiled for the CPU's vectors.
    fn candidate_levels(p: &Prefix<'_>, i: usize, nq: usize, lv: &mut Levels) -> f64 {
        p.divergence_levels(i, nq, lv)
    }
}

/// `sum over levels of h ln(h / (members below) + floor)`, where level `k` has the count
/// `count[k + 1] - count[k]` and `members[k + 1] - members[k]` non-empty bins (prefix sums at its
/// bounds); in lanes of a fixed order. A level without member bins has `h = 0` and adds nothing
/// (its quotient, 0/0, is computed and discarded so that the loop has no branch).
#[inline(always)]
fn level_sums(count: &[f64], members: &[f64], below: f64) -> f64 {
    const L: usize = LEVEL_LANES;
    #[inline(always)]
    fn term(lo: f64, hi: f64, m_lo: f64, m_hi: f64, below: f64) -> f64 {
        let h = hi - lo;
        let q = h / ((m_hi - m_lo) * below) + Q_FLOOR;
        let arg = if h > 0.0 { q } else { 1.0 };
        h * ln(arg)
    }
    let n = count.len() - 1;
    let mut acc = [0f64; L];
    let full = n - n % L;
    for k0 in (0..full).step_by(L) {
        let (c, m) = (&count[k0..k0 + L + 1], &members[k0..k0 + L + 1]);
        for j in 0..L {
            acc[j] += term(c[j], c[j + 1], m[j], m[j + 1], below);
        }
    }
    for k in full..n {
        acc[k - full] += term(count[k], count[k + 1], members[k], members[k + 1], below);
    }
    acc.iter().sum()
}
