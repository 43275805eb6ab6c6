//! The CPU engine: rayon across cores, vectorised loops within a core.

mod fake_quant;
mod histogram;
mod min_max;
mod select;
mod select_rows;
mod select_runs;
pub(crate) mod simd;
mod walk;
pub(crate) mod widen;

use rayon::prelude::*;

use crate::engine::Extremes;
use crate::search::percentile::first_bin_reaching;
use crate::tensor::{Element, HostLayout, TensorView, with_view};

use fake_quant::FakeQuantReducer;
use histogram::{ExtremesAndHistogram, HistogramReducer, Sink};
use min_max::ExtremesReducer;
use walk::reduce;

/// Per-channel min, max and non-finite count of a host tensor (`axis = None`: per-tensor).
pub(crate) fn extremes(x: &TensorView<'_>, axis: Option<usize>) -> Extremes {
    let part = with_view!(x, v => reduce(HostLayout::new(v, axis), &ExtremesReducer));
    Extremes { min: part.min, max: part.max, non_finite: part.non_finite }
}

/// The histogram of `|x|` over the whole tensor, `bins` bins on `[0, hi]` (SPEC §5).
pub(crate) fn abs_histogram(x: &TensorView<'_>, bins: usize, hi: f32) -> Vec<u64> {
    let r = HistogramReducer::new(bins, hi);
    with_view!(x, v => reduce(HostLayout::new(v, None), &r)).into_counts()
}

/// Histograms of `|x|` per channel along `axis`: channel `c` gets `bins[c]` bins on
/// `[0, hi[c]]` (none when `bins[c]` is 0); the counts of every channel in turn.
pub(crate) fn abs_histograms(x: &TensorView<'_>, axis: usize, bins: &[usize], hi: &[f32]) -> Vec<u64> {
    let mut out = vec![0; bins.iter().sum()];
    add_histograms(x, axis, bins, hi, &histogram::sink(bins, &mut out));
    out
}

/// Adds [`abs_histograms`] into `out` (which holds `bins.iter().sum()` counters, channel after
/// channel); with `extremes`, also returns the per-channel extremes, from the same pass. Each
/// part of the work adds its counts into `out` when it is done with a channel: no vector of
/// all the counts is allocated and assembled per batch.
pub(crate) fn add_abs_histograms(
    x: &TensorView<'_>,
    axis: usize,
    bins: &[usize],
    hi: &[f32],
    extremes: bool,
    out: &mut [u64],
) -> Option<Extremes> {
    let sink = histogram::sink(bins, out);
    if extremes {
        Some(extremes_and_add_histograms(x, axis, bins, hi, &sink))
    } else {
        add_histograms(x, axis, bins, hi, &sink);
        None
    }
}

/// Adds the per-channel histograms of `|x|` along `axis` into `sink`.
fn add_histograms<'s>(x: &TensorView<'_>, axis: usize, bins: &[usize], hi: &[f32], sink: &'s Sink<'s>) {
    let r = HistogramReducer::per_channel_into(bins, hi, sink);
    with_view!(x, v => reduce(HostLayout::new(v, Some(axis)), &r)).finish();
}

/// [`add_histograms`] and the per-channel extremes, in one pass.
fn extremes_and_add_histograms<'s>(
    x: &TensorView<'_>,
    axis: usize,
    bins: &[usize],
    hi: &[f32],
    sink: &'s Sink<'s>,
) -> Extremes {
    let r = ExtremesAndHistogram(HistogramReducer::per_channel_into(bins, hi, sink));
    let (e, mut h) = with_view!(x, v => reduce(HostLayout::new(v, Some(axis)), &r));
    h.finish();
    Extremes { min: e.min, max: e.max, non_finite: e.non_finite }
}

/// The extremes and the histogram of `|x|` on `[0, hi]` in one pass over the tensor.
pub(crate) fn extremes_and_abs_histogram(x: &TensorView<'_>, bins: usize, hi: f32) -> (Extremes, Vec<u64>) {
    let r = ExtremesAndHistogram(HistogramReducer::new(bins, hi));
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

/// The per-channel extremes along `axis` and, when they are finite, for each channel and each
/// target count the first bin of the channel's histogram of `|x|` on `[0, max |x|]` (of that
/// channel) whose cumulative count reaches it (`bins` when none does): `[channel][target]`.
/// Empty when the tensor holds NaN or infinity.
pub(crate) fn extremes_and_percentile_bins_per_channel(
    x: &TensorView<'_>,
    axis: usize,
    bins: usize,
    targets: &[f32],
) -> (Extremes, Vec<usize>) {
    let by_channel = with_view!(x, v => match HostLayout::new(v, Some(axis)) {
        // Channels that are one contiguous run each (channels outermost): every channel as a
        // tensor of its own, by selection where it applies.
        HostLayout::Dense { data, outer: 1, channels, inner } if channels > 1 && inner >= select::MIN_ELEMENTS => {
            Some(percentile_bins_of_runs(data, channels, inner, bins, targets))
        }
        // Channels innermost (rows of one value per channel): by selection with a bracket per
        // channel, in one pass over the rows.
        HostLayout::Dense { data, outer, channels, inner: 1 } if channels > 1 && outer >= select_rows::MIN_ROWS => {
            select_rows::extremes_and_percentile_bins_of_rows(data, outer, channels, bins, targets).map(|(e, found)| {
                (Extremes { min: e.min, max: e.max, non_finite: e.non_finite }, found)
            })
        }
        _ => None,
    });
    if let Some(found) = by_channel {
        return found;
    }
    let e = extremes(x, Some(axis));
    if e.non_finite > 0 {
        return (e, Vec::new());
    }
    let channels = e.min.len();
    // Channels of fewer values than bins: each channel's values gathered and selected from costs
    // less than a histogram per channel.
    if x.len() / channels.max(1) < bins {
        let found = with_view!(x, v => bins_by_gathering(v, axis, &e, bins, targets));
        return (e, found);
    }
    let hi: Vec<f32> = (0..channels).map(|c| e.abs_max(c)).collect();
    let hist = abs_histograms(x, axis, &vec![bins; channels], &hi);
    let found = hist.chunks_exact(bins).flat_map(|h| targets.iter().map(|&t| first_bin_reaching(h, t))).collect();
    (e, found)
}

/// The percentile bins of every channel along `axis` (finite, with the extremes `e`), each
/// channel's `|x|` gathered and selected from ([`select::bins_of_all_values`]).
fn bins_by_gathering<T: Element>(
    v: &ndarray::ArrayViewD<'_, T>,
    axis: usize,
    e: &Extremes,
    bins: usize,
    targets: &[f32],
) -> Vec<usize> {
    let per_channel: Vec<Vec<usize>> = (0..e.min.len())
        .into_par_iter()
        .map(|c| {
            let mut values: Vec<u32> =
                v.index_axis(ndarray::Axis(axis), c).iter().map(|x| select::abs_bits(x.to_f32())).collect();
            select::bins_of_all_values(&mut values, e.abs_max(c), bins, targets)
        })
        .collect();
    per_channel.concat()
}

/// [`extremes_and_percentile_bins_per_channel`] of `channels` channels that are consecutive runs
/// of `inner` values of `data`: each channel as a tensor of its own, by selection where it
/// applies ([`select_runs`] for f32 runs of at most [`select_runs::MAX_RUN`] values, else
/// [`select`]), else by its histogram.
fn percentile_bins_of_runs<T: Element>(
    data: &[T],
    channels: usize,
    inner: usize,
    bins: usize,
    targets: &[f32],
) -> (Extremes, Vec<usize>) {
    let data = &data[..channels * inner];
    let per_channel: Vec<(min_max::Extremes, Option<Vec<usize>>)> = match T::as_f32(data) {
        Some(x) if inner <= select_runs::MAX_RUN => {
            select_runs::extremes_and_percentile_bins_of_runs(x, channels, inner, bins, targets)
        }
        _ => data
            .par_chunks(inner)
            .map(|run| {
                let (part, found) =
                    select::extremes_and_percentile_bins(&ndarray::ArrayView1::from(run).into_dyn(), bins, targets);
                (min_max::Extremes { min: part.min[0], max: part.max[0], non_finite: part.non_finite }, found)
            })
            .collect(),
    };
    let mut e = Extremes { min: Vec::with_capacity(channels), max: Vec::with_capacity(channels), non_finite: 0 };
    for (ce, _) in &per_channel {
        e.min.push(ce.min);
        e.max.push(ce.max);
        e.non_finite += ce.non_finite;
    }
    if e.non_finite > 0 {
        return (e, Vec::new());
    }
    // The channels the selection left: their histograms.
    let found: Vec<Vec<usize>> = per_channel
        .into_par_iter()
        .zip(data.par_chunks(inner))
        .map(|((ce, found), run)| {
            found.unwrap_or_else(|| {
                let range = if -ce.min > ce.max { -ce.min } else { ce.max };
                let layout = HostLayout::Dense { data: run, outer: 1, channels: 1, inner: run.len() };
                let hist = reduce(layout, &HistogramReducer::new(bins, range)).into_counts();
                targets.iter().map(|&t| first_bin_reaching(&hist, t)).collect()
            })
        })
        .collect();
    (e, found.concat())
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
