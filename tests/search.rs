//! The searches of `qcalib::search` against the plain reference of `common::reference`.

mod common;

use common::reference::kl_divergence;
use qcalib::search::kl::{START_BIN, TIE_RTOL, WINDOW, divergences, threshold_index};

/// A small deterministic generator (the histograms must be the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A decaying histogram with noise and, optionally, empty bins.
fn lcg_hist(n: usize, seed: u64, zeros: bool) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|b| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = (s >> 40) % 50;
            let base = (2e5 * (-(b as f64) / (n as f64 / 6.0)).exp()) as u64;
            if zeros && (s >> 20).is_multiple_of(7) { 0 } else { base + noise }
        })
        .collect()
}

/// Histograms of every shape the search must handle, `n` bins each.
fn histograms(n: usize, seed: u64) -> Vec<(&'static str, Vec<u64>)> {
    let mut rng = Lcg(seed);
    let mut out = vec![("decaying", lcg_hist(n, seed, false)), ("decaying with gaps", lcg_hist(n, seed + 1, true))];
    // A bell over the first tenth of the bins and one outlier in the last (a widened window).
    let bell: Vec<u64> = (0..n)
        .map(|b| {
            let x = b as f64 / (n as f64 / 10.0);
            (3e5 * (-x * x).exp()) as u64 + u64::from(b % 97 == 0 && b < n / 5)
        })
        .collect();
    let mut widened = bell.clone();
    widened[n - 1] += 1;
    out.push(("bell, outlier in the last bin", widened));
    // Sparse: a few spikes in empty space.
    out.push(("sparse", (0..n).map(|_| if rng.below(23) == 0 { 1 + rng.below(1000) } else { 0 }).collect()));
    // Tiny counts: 0, 1, 2.
    out.push(("tiny", (0..n).map(|_| rng.below(3)).collect()));
    // Huge counts (a total near 2^58: every bin's count is far above 1e10), and huge next to
    // small ones (counts of every magnitude, grouped by value and by series).
    out.push(("huge", (0..n).map(|_| (1 << 48) + rng.below(1 << 40)).collect()));
    out.push(("huge and tiny", (0..n).map(|b| if b % 3 == 0 { rng.below(1 << 50) } else { rng.below(5) }).collect()));
    out.push(("every magnitude", (0..n).map(|_| 1u64 << rng.below(52)).collect()));
    // Long tails of small counts under a total of about 1e10 (small counts near 1e-10 B).
    out.push((
        "tail of small counts",
        (0..n).map(|b| if b < n / 8 { 1e9 as u64 / (b as u64 + 1) } else { rng.below(40) }).collect(),
    ));
    // All the mass in the top bins; a single non-empty bin.
    let mut top = vec![0u64; n];
    top[n - 2] = 5;
    top[n - 1] = 7;
    out.push(("top bins only", top));
    let mut single = vec![0u64; n];
    single[n / 3] = 12345;
    out.push(("one bin", single));
    out
}

/// Checks every candidate (or every `every`-th, and the last ones) against the direct formula,
/// and the chosen window against the reference's window sums.
fn check(name: &str, hist: &[u64], nq: u64, every: usize) {
    let fast = divergences(hist, nq);
    let n = hist.len();
    assert_eq!(fast.len(), n + 1 - START_BIN, "{name}");
    let sampled: Vec<usize> =
        (0..fast.len()).filter(|&k| every == 1 || k % every == 0 || k + 2 * WINDOW >= fast.len()).collect();
    for &k in &sampled {
        let want = kl_divergence(hist, k + START_BIN, nq);
        let d = fast[k];
        if want.is_infinite() {
            assert_eq!(d, want, "{name}, {n} bins, nq {nq}, i {}", k + START_BIN);
            continue;
        }
        // Rounding only: the direct formula's own error is about 1e-16 per unit of probability.
        assert!(
            (d - want).abs() <= 1e-13 + 1e-11 * want.abs(),
            "{name}, {n} bins, nq {nq}, i {}: {d:e} vs {want:e} (difference {:e})",
            k + START_BIN,
            d - want
        );
    }
    if every != 1 {
        return;
    }
    // The window chosen from the reference's divergences, with the tie rule: wherever no window
    // sum lies within rounding of the edge of the tie band, both must choose the same.
    let want: Vec<f64> = (START_BIN..=n).map(|i| kl_divergence(hist, i, nq)).collect();
    let sums = |div: &[f64]| -> Vec<f64> {
        if div.len() < WINDOW + 2 {
            return Vec::new();
        }
        (0..=div.len() - WINDOW - 2).map(|k| div[k..k + WINDOW].iter().sum()).collect()
    };
    let (s_fast, s_want) = (sums(&fast), sums(&want));
    let min = s_want.iter().copied().fold(f64::INFINITY, f64::min);
    let got = threshold_index(hist, nq);
    if !min.is_finite() {
        assert_eq!(got, None, "{name}");
        return;
    }
    let band = TIE_RTOL * min.abs();
    let noise = s_fast.iter().zip(&s_want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let near_edge = s_want.iter().any(|&s| ((s - min).abs() - band).abs() <= 2.0 * noise);
    if !near_edge {
        let k = s_want.iter().rposition(|&s| (s - min).abs() <= band).map(|k| k + 132);
        assert_eq!(got, k, "{name}, {n} bins, nq {nq}");
    }
}

/// The fast evaluation of every candidate equals SPEC §4's literal formula to rounding, with
/// levels (qint8, qint4, quint4), with one bin per level (qint16, qint32) and with both (nq
/// between 128 and the bin count), on histograms of every shape: decaying, sparse, tiny counts,
/// huge counts, counts of every magnitude, all the mass at the top.
#[test]
fn kl_divergences_match_the_direct_formula() {
    for (n, nq, seed) in [
        (256, 128, 1),
        (512, 128, 2),
        (300, 8, 3),
        (260, 16, 4),
        (257, 32768, 5),
        (700, 32768, 6),
        (1500, 1 << 31, 7),
        (400, 200, 8),
    ] {
        for (name, hist) in histograms(n, seed) {
            check(name, &hist, nq, 1);
        }
    }
}

/// A qint16 window widened past `nq = 32768` bins: both kinds of candidate, sampled.
#[test]
fn kl_divergences_of_a_widened_qint16_window_match_the_direct_formula() {
    for (name, hist) in histograms(32768 + 200, 9) {
        check(name, &hist, 32768, 331);
    }
}
