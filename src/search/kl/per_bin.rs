//! The candidates `i <= nq` of the KL search, where every non-empty source bin is a level of its
//! own, in a few table reads each instead of a pass over their bins.
//!
//! With `B` the count below the cut, `P` the total and `1e-10` the floor added to `q`, the term
//! of a non-empty bin `j < i - 1` is `(h/P) ln((h/P) / (h/B + 1e-10))`, which is exactly
//! `(h/P) (ln(B/P) - ln(1 + a/h))` with `a = 1e-10 B`. So the candidate's divergence is
//!
//! ```text
//! (C ln(B/P) - F) / P + (the term of the last bin, which also takes the outliers)
//! F = sum over the non-empty bins j < i - 1 of h ln(1 + a/h)
//! ```
//!
//! with `C` the count of bins `< i - 1`. `F` is at most `a` per bin, a small correction, but the
//! direct formula carries it and so must we:
//!
//! - bins with a large count (`a/h <= 1/64` for every candidate) add the series
//!   `a S0 - a² S1/2 + a³ S2/3 - …` of [`TERMS`] terms, `Sm` the prefix sums of `1/h^m` over
//!   them (compensated), truncated far below rounding (`64^-8 / 9 < 2^-51`);
//! - the others, whose counts are small (below `64e-10 P`, so none when `P < 1.5e8` and at most 63
//!   distinct counts when `P < 1e10`), are grouped by count: `sum over the distinct counts v of
//!   (bins holding v) v ln(1 + a/v)`, the multiplicities kept up to date while a run of
//!   candidates is swept in order.

use rayon::prelude::*;

use super::{Counts, Q_FLOOR, Run, two_sum};
use crate::search::ln::ln_1p;

/// Terms of the series of `h ln(1 + a/h)` in `a/h`.
const TERMS: usize = 8;

/// A bin is large when its count is at least this many times `1e-10 P` (then `a/h <= 1/64`).
const LARGE: f64 = 64.0;

/// Candidates swept in order by one task (at least; a histogram has at most 64 runs).
const MIN_RUN: usize = 256;

/// The divergences of the candidates `first ..= last` (`last <= nq`, `last <= h.len()`).
pub(super) fn divergences(counts: &Counts, first: usize, last: usize, run: Run) -> Vec<f64> {
    let tables = Tables::new(counts, last);
    if run == Run::InOrder {
        return tables.sweep(counts, first, last);
    }
    let n = last + 1 - first;
    let per_task = n.div_ceil(64).max(MIN_RUN);
    let runs: Vec<Vec<f64>> = (first..=last)
        .step_by(per_task)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| tables.sweep(counts, start, (start + per_task - 1).min(last)))
        .collect();
    runs.concat()
}

/// Prefix tables over the bins `0 .. last` (the bins below some candidate's last bin).
struct Tables {
    /// At every bound `j`: the number of large non-empty bins below it, then `S1 ..= S7`, the sums
    /// of `1/h^m` over them (side by side: one candidate reads one entry).
    series: Vec<[f64; TERMS]>,
    /// The distinct counts of the small non-empty bins, ascending.
    values: Vec<f64>,
    /// Per bin: 1 + the index of its count in `values`, or 0 (an empty or a large bin).
    value_of: Vec<u32>,
}

impl Tables {
    fn new(counts: &Counts, last: usize) -> Tables {
        let h = &counts.h[..last];
        let a_max = Q_FLOOR * counts.total as f64;
        let large = |v: u64| v as f64 >= LARGE * a_max;
        let mut small: Vec<u64> = h.iter().copied().filter(|&v| v > 0 && !large(v)).collect();
        small.sort_unstable();
        small.dedup();
        let value_of = h
            .iter()
            .map(|&v| if v > 0 && !large(v) { small.binary_search(&v).map_or(0, |k| k as u32 + 1) } else { 0 })
            .collect();
        let mut series = Vec::with_capacity(last + 1);
        let (mut sum, mut err) = ([0f64; TERMS], [0f64; TERMS]);
        series.push([0f64; TERMS]);
        for &v in h {
            if v > 0 && large(v) {
                let inv = 1.0 / v as f64;
                let mut power = 1.0;
                for m in 0..TERMS {
                    let (s, e) = two_sum(sum[m], power);
                    sum[m] = s;
                    err[m] += e;
                    power *= inv;
                }
            }
            series.push(std::array::from_fn(|m| sum[m] + err[m]));
        }
        Tables { series, values: small.iter().map(|&v| v as f64).collect(), value_of }
    }

    /// The candidates `start ..= end` in order, the multiplicities of the small counts below
    /// each candidate's last bin kept up to date (exact integers in f64).
    fn sweep(&self, counts: &Counts, start: usize, end: usize) -> Vec<f64> {
        let mut multiplicity = vec![0f64; self.values.len()];
        let add = |multiplicity: &mut [f64], j: usize| {
            if let Some(k) = self.value_of[j].checked_sub(1) {
                multiplicity[k as usize] += 1.0;
            }
        };
        for j in 0..start - 1 {
            add(&mut multiplicity, j);
        }
        let mut out = Vec::with_capacity(end + 1 - start);
        for i in start..=end {
            out.push(self.divergence(counts, i, &multiplicity));
            add(&mut multiplicity, i - 1);
        }
        out
    }

    /// Candidate `i`, with `multiplicity` counting the small bins below `i - 1`.
    fn divergence(&self, counts: &Counts, i: usize, multiplicity: &[f64]) -> f64 {
        let below = counts.count[i];
        if below == 0 {
            return f64::INFINITY;
        }
        let b = below as f64;
        let outliers = (counts.total - below) as f64;
        let a = Q_FLOOR * b;
        // Large bins: a S0 - a² S1/2 + … in Horner's form.
        let s = &self.series[i - 1];
        let mut t = s[TERMS - 1] / TERMS as f64;
        for m in (1..TERMS - 1).rev() {
            t = s[m] / (m + 1) as f64 - a * t;
        }
        let large = a * (s[0] - a * t);
        let small = small_terms(&self.values, multiplicity, a);
        // ln(B/P) = -ln(1 + outliers/B), exact to rounding however close B is to P.
        let body = (counts.count[i - 1] as f64 * -ln_1p(outliers / b) - (large + small)) / counts.total as f64;
        body + counts.last_bin_term(i, counts.h[i - 1] as f64 / b)
    }
}

/// `sum over k of multiplicity[k] * v ln(1 + a/v)` with `v = values[k]`, in lanes of a fixed order.
fn small_terms(values: &[f64], multiplicity: &[f64], a: f64) -> f64 {
    const L: usize = 4;
    let mut acc = [0f64; L];
    for (k, (&v, &m)) in values.iter().zip(multiplicity).enumerate() {
        acc[k % L] += m * (v * ln_1p(a / v));
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}
