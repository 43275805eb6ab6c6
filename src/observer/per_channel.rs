//! What the per-channel Percentile, KL and Mix observers share (SPEC §8, an extension): the
//! channels of a batch, and the limit on the counters of their histograms.

use crate::config::QuantConfig;
use crate::error::{Error, Result};

/// The most histogram counters the histograms of a per-channel Percentile, KL (after widening) or
/// Mix observer may hold together: channels × bins (SPEC §8). A batch that would need more is
/// refused, and the observer keeps its state; it almost always means a wrong `ch_axis`.
pub const MAX_CHANNEL_COUNTERS: usize = 1 << 27;

/// The channel count of a batch of `shape` along `axis` (1 for `None`, per tensor) and the
/// number of values of each channel (`N` of the `[C, N]` view of SPEC §3).
pub(crate) fn channels_and_values(shape: &[usize], axis: Option<usize>) -> (usize, usize) {
    let numel: usize = shape.iter().product();
    match axis {
        None => (1, numel),
        Some(a) => {
            let c = shape[a];
            (c, numel.checked_div(c).unwrap_or(0))
        }
    }
}

/// An [`Error::TooLarge`] naming `ch_axis` and the channel count when `counters` (the
/// histograms' counters over all `channels`) exceed [`MAX_CHANNEL_COUNTERS`].
pub(crate) fn check_counters(
    observer: &str,
    quant: &QuantConfig,
    shape: &[usize],
    channels: usize,
    counters: usize,
) -> Result<()> {
    if counters <= MAX_CHANNEL_COUNTERS {
        return Ok(());
    }
    Err(Error::TooLarge(format!(
        "per-channel {observer} over {channels} channels (ch_axis {} of a {shape:?} tensor) would hold {counters} \
         histogram counters, more than {MAX_CHANNEL_COUNTERS} (2^27); is ch_axis the channel axis?",
        quant.ch_axis
    )))
}
