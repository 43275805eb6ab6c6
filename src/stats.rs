//! The statistics the observers are built from, on any engine and for host or device tensors
//! ([`Input`]): for custom calibration methods, and to time the engines' passes on their own.
//!
//! ```
//! use qcalib::{stats, Device, QuantDType, QuantRange};
//! let x = vec![0.5f32, -1.0, 0.25, 2.0];
//! let e = stats::extremes(&(&x).into(), None, Device::Cpu)?;
//! assert_eq!((e.min[0], e.max[0], e.non_finite), (-1.0, 2.0, 0));
//! let h = stats::abs_histogram(&(&x).into(), 4, 2.0, Device::Cpu)?;
//! assert_eq!(h, vec![1, 1, 1, 1]);
//! let r = QuantRange::resolve(QuantDType::QInt8, None, None)?;
//! let err = stats::fake_quant_errors(&(&x).into(), None, &[2.0 / 127.5, 1.0 / 127.5], 2, &r, Device::Cpu)?;
//! assert!(err[1] > err[0]); // the smaller scale clips 2.0
//! # Ok::<(), qcalib::Error>(())
//! ```

use crate::dtype::QuantRange;
use crate::engine::{Device, Engine, Extremes};
use crate::error::{Error, Result};
use crate::input::Input;

/// Min, max and the count of non-finite values of `x`, per channel along `axis` (`None`: one
/// for the whole tensor).
pub fn extremes(x: &Input<'_>, axis: Option<usize>, device: Device) -> Result<Extremes> {
    check_axis(x, axis)?;
    let engine = Engine::new(device)?;
    engine.extremes(&engine.load(x)?, axis)
}

/// The histogram of `|x|` in `bins` bins on `[0, hi]` with the bin rule of SPEC §5 (values
/// above `hi`, and NaN, are not counted; `hi = 0` counts the zeros in bin 0).
pub fn abs_histogram(x: &Input<'_>, bins: usize, hi: f32, device: Device) -> Result<Vec<u64>> {
    if bins == 0 || bins > crate::MAX_BINS {
        return Err(Error::config("bins", format!("{bins} is outside 1..={}", crate::MAX_BINS)));
    }
    if !(hi >= 0.0 && hi.is_finite()) {
        return Err(Error::config("hi", format!("{hi} is not a finite, non-negative range")));
    }
    let engine = Engine::new(device)?;
    engine.abs_histogram(&engine.load(x)?, bins, hi)
}

/// Sums of squared fake-quantization errors `sum (fq(x, s) - x)^2` (in f64) of `k` candidate
/// scales per channel: `scales` and the result are `[k][channels]`, candidate-major.
pub fn fake_quant_errors(
    x: &Input<'_>,
    axis: Option<usize>,
    scales: &[f32],
    k: usize,
    range: &QuantRange,
    device: Device,
) -> Result<Vec<f64>> {
    check_axis(x, axis)?;
    let channels = axis.map_or(1, |a| x.shape()[a]);
    if k.checked_mul(channels) != Some(scales.len()) {
        return Err(Error::config(
            "scales",
            format!("{} scales for {k} candidates x {channels} channels", scales.len()),
        ));
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::config("scales", format!("{s} is not a positive, finite scale")));
    }
    let engine = Engine::new(device)?;
    engine.fake_quant_errors(&engine.load(x)?, axis, scales, k, range.min_f32(), range.max_f32())
}

fn check_axis(x: &Input<'_>, axis: Option<usize>) -> Result<()> {
    match axis {
        Some(a) if a >= x.ndim() => Err(Error::ChannelAxis { ch_axis: a as isize, ndim: x.ndim() }),
        _ => Ok(()),
    }
}

/// The KL threshold search of SPEC §4 on a histogram, on `device`: the edge index `k* + 132`,
/// or `None` when no window sum is finite (see [`search::kl::threshold_index`](crate::search::kl::threshold_index),
/// which is the CPU engine's).
pub fn kl_threshold_index(hist: &[u64], levels: u64, device: Device) -> Result<Option<usize>> {
    Engine::new(device)?.kl_threshold_index(hist, levels)
}

/// [`kl_threshold_index`] of every histogram of `hists` (one per channel of a per-channel KL
/// observer, SPEC §8), on `device`: the CPU engine searches the channels in parallel, the CUDA
/// engine all of them in three launches (see [`search::kl::threshold_indices`](crate::search::kl::threshold_indices)).
///
/// ```
/// use qcalib::{stats, Device};
/// let a: Vec<u64> = (0..512).map(|b| (1e6 * (-(b as f64 / 60.0).powi(2)).exp()) as u64).collect();
/// let found = stats::kl_threshold_indices(&[&a, &[]], 128, Device::Cpu)?;
/// assert_eq!(found, vec![stats::kl_threshold_index(&a, 128, Device::Cpu)?, None]);
/// # Ok::<(), qcalib::Error>(())
/// ```
pub fn kl_threshold_indices(hists: &[&[u64]], levels: u64, device: Device) -> Result<Vec<Option<usize>>> {
    Engine::new(device)?.kl_threshold_indices(hists, levels)
}
