//! The searches of `qcalib::search` against the plain reference of `common::reference`.

mod common;

use common::reference::kl_divergence;
use qcalib::search::kl::{START_BIN, divergences};

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

/// The prefix-sum evaluation of every candidate equals SPEC §4's literal formula to rounding,
/// with levels (qint8, qint4, quint4) and with one bin per level (qint16).
#[test]
fn kl_divergences_match_the_direct_formula() {
    for (n, nq, zeros) in [(256, 128, false), (512, 128, true), (300, 8, true), (260, 16, false), (257, 32768, true)] {
        let hist = lcg_hist(n, n as u64 + nq, zeros);
        let fast = divergences(&hist, nq);
        assert_eq!(fast.len(), n + 1 - START_BIN);
        for (k, &d) in fast.iter().enumerate() {
            let want = kl_divergence(&hist, k + START_BIN, nq);
            assert!((d - want).abs() <= 1e-11 * want.abs().max(1e-3), "n {n} nq {nq} i {}: {d} vs {want}", k + 128);
        }
    }
}
