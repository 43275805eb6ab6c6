//! The CPU engine: rayon across cores, vectorised loops within a core.

mod fake_quant;
mod histogram;
mod min_max;
mod select;
pub(crate) mod simd;
mod walk;
pub(crate) mod widen;

use crate::engine::Extremes;
use crate::search::percentile::first_bin_reaching;
use crate::tensor::{HostLayout, TensorView, with_view};

use fake_quant::FakeQuantReducer;
use histogram::{ExtremesAndHistogram, HistogramReducer};
use min_max::ExtremesReducer;
use walk::reduce;

/// Per-channel min, max and non-finite count of a host tensor (`axis = None`: per-tensor).
pub(crate) fn extremes(x: &TensorView<'_>, axis: Option<usize>) -> Extremes {
    let part = with_view!(x, v => reduce(HostLayout::new(v, axis), &ExtremesReducer));
    Extremes { min: part.min, max: part.max, non_finite: part.non_finite }
}

/// The histogram of `|x|` over the whole tensor, `bins` bins on `[0, hi]` (SPEC §5).
pub(crate) fn abs_histogram(x: &TensorView<'_>, bins: usize, hi: f32) -> Vec<u64> {
    let r = HistogramReducer { bins, hi };
    with_view!(x, v => reduce(HostLayout::new(v, None), &r)).into_counts()
}

/// The extremes and the histogram of `|x|` on `[0, hi]` in one pass over the tensor.
pub(crate) fn extremes_and_abs_histogram(x: &TensorView<'_>, bins: usize, hi: f32) -> (Extremes, Vec<u64>) {
    let r = ExtremesAndHistogram(HistogramReducer { bins, hi });
    let (e, h) = with_view!(x, v => reduce(HostLayout::new(v, None), &r));
    (Extremes { min: e.min, max: e.max, non_finite: e.non_finite }, h.into_counts())
}

/// The extremes (per tensor) and, when they are finite, for each target count the first bin of
/// the histogram of `|x|` on `[0, max |x|]` whose cumulative count reaches it (`bins` when none
/// does). Found by selection in the pass that finds the extremes when it can (see [`select`]),
/// else by counting the histogram in a second pass; the bins are empty when the tensor holds NaN
/// or infinity.
pub(crate) fn extremes_and_percentile_bins(x: &TensorView<'_>, bins: usize, targets: &[f32]) -> (Extremes, Vec<usize>) {
    let (part, found) = with_view!(x, v => select::extremes_and_percentile_bins(v, bins, targets));
    let e = Extremes { min: part.min, max: part.max, non_finite: part.non_finite };
    if let Some(found) = found {
        return (e, found);
    }
    if e.non_finite > 0 {
        return (e, Vec::new());
    }
    let hist = abs_histogram(x, bins, e.abs_max(0));
    let found = targets.iter().map(|&t| first_bin_reaching(&hist, t)).collect();
    (e, found)
}

/// Sums of squared fake-quantization errors, `[k][channels]`, for the candidate scales
/// `scales` (`[k][channels]`).
pub(crate) fn fake_quant_errors(
    x: &TensorView<'_>,
    axis: Option<usize>,
    scales: &[f32],
    k: usize,
    qmin: f32,
    qmax: f32,
) -> Vec<f64> {
    let channels = axis.map_or(1, |a| x.shape()[a]);
    let r = FakeQuantReducer::new(scales, k, channels, qmin, qmax);
    with_view!(x, v => reduce(HostLayout::new(v, axis), &r)).err
}
