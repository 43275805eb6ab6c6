//! Percentile clipping on a histogram of `|x|` (SPEC §4, PercentileObserver and MixObserver).

/// The first bin whose cumulative count is `>= target`, compared exactly as real numbers;
/// `counts.len()` when no bin reaches it.
///
/// ```
/// use qcalib::search::percentile::first_bin_reaching;
/// assert_eq!(first_bin_reaching(&[5, 0, 3, 2], 5.0), 0);
/// assert_eq!(first_bin_reaching(&[5, 0, 3, 2], 5.5), 2);
/// assert_eq!(first_bin_reaching(&[5, 0, 3, 2], 10.5), 4);
/// assert_eq!(first_bin_reaching(&[u64::MAX, u64::MAX], f32::MAX), 2); // no overflow
/// ```
pub fn first_bin_reaching(counts: &[u64], target: f32) -> usize {
    let target = target as f64;
    let mut cum: u64 = 0;
    for (i, &c) in counts.iter().enumerate() {
        cum = cum.saturating_add(c);
        // Exact: cumulative counts of real tensors stay far below 2^53.
        if cum as f64 >= target {
            return i;
        }
    }
    counts.len()
}

/// Which value decides [`first_bin_reaching`] when the histogram counts all `n` values of the
/// tensor.
///
/// The bin of SPEC §5 never decreases as `|v|` grows, so the cumulative count of bin `i` reaches
/// an integer `k` exactly when the `k`-th smallest `|v|` falls in a bin `<= i`. The first bin
/// reaching `target` is therefore the bin of one order statistic of `|x|`: no histogram is
/// needed, only that value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecidingRank {
    /// `target <= 0`: bin 0 reaches it whatever it holds.
    FirstBin,
    /// The bin of the `k`-th smallest `|v|` (1-based, `k <= n`).
    Rank(u64),
    /// `target > n`: no bin reaches it ([`first_bin_reaching`] gives the bin count).
    NoBin,
}

/// The [`DecidingRank`] of `target` among `n` values.
///
/// ```
/// use qcalib::search::percentile::{DecidingRank, deciding_rank};
/// assert_eq!(deciding_rank(0.0, 10), DecidingRank::FirstBin);
/// assert_eq!(deciding_rank(5.0, 10), DecidingRank::Rank(5));
/// assert_eq!(deciding_rank(5.5, 10), DecidingRank::Rank(6));
/// assert_eq!(deciding_rank(10.5, 10), DecidingRank::NoBin);
/// assert_eq!(deciding_rank(f32::NAN, 10), DecidingRank::NoBin); // as first_bin_reaching: no bin
/// assert_eq!(deciding_rank(-1.0, 0), DecidingRank::FirstBin);
/// ```
pub fn deciding_rank(target: f32, n: u64) -> DecidingRank {
    // The same comparison as `first_bin_reaching`: an integer count `c` reaches `target` when
    // `c as f64 >= target as f64`, that is when `c >= ceil(target)`.
    let target = target as f64;
    if target.is_nan() || target > n as f64 {
        return DecidingRank::NoBin;
    }
    if target <= 0.0 {
        return DecidingRank::FirstBin;
    }
    DecidingRank::Rank(target.ceil() as u64)
}

/// The target count of the PercentileObserver: `f32(percentile / 100 * numel)`, the product in
/// f64.
pub fn percentile_target(percentile: f64, numel: usize) -> f32 {
    (percentile / 100.0 * numel as f64) as f32
}

/// The target count of a MixObserver fraction: `f32(f32(fraction) * f32(numel))`.
pub fn fraction_target(fraction: f64, numel: usize) -> f32 {
    fraction as f32 * numel as f32
}

/// The centre of bin `i` of `bins` bins on `[0, range]`: `f32(f32(i + 0.5) * f32(range / bins))`.
///
/// ```
/// use qcalib::search::percentile::bin_centre;
/// assert_eq!(bin_centre(0, 4.0, 4), 0.5);
/// assert_eq!(bin_centre(3, 4.0, 4), 3.5);
/// ```
pub fn bin_centre(i: usize, range: f32, bins: usize) -> f32 {
    let centre = (i as f64 + 0.5) as f32;
    centre * (range / bins as f32)
}

/// Clips `(mn, mx)` to `[-clip, clip]` without making a one-sided range two-sided:
/// `mn' = -clip if -clip > mn else mn`, `mx' = clip if clip < mx else mx`.
///
/// ```
/// use qcalib::search::percentile::clip_range;
/// assert_eq!(clip_range(-3.0, 5.0, 2.0), (-2.0, 2.0));
/// assert_eq!(clip_range(0.5, 5.0, 2.0), (0.5, 2.0)); // post-ReLU stays one-sided
/// ```
pub fn clip_range(mn: f32, mx: f32, clip: f32) -> (f32, f32) {
    let lo = if -clip > mn { -clip } else { mn };
    let hi = if clip < mx { clip } else { mx };
    (lo, hi)
}
