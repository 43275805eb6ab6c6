//! Launches `kernels/percentile.cu`: the first bin of a device histogram whose cumulative count
//! reaches each target (PercentileObserver, MixObserver), per tensor or for every channel's
//! histogram at once (one block each), so only the bin indices come back.

use cudarc::driver::CudaSlice;

use super::batch::{ChannelLayout, DeviceBatch};
use super::context::Gpu;
use super::error::GpuError;
use super::histogram::{abs_histogram_on_device, abs_histograms_on_device};
use super::launch::{KernelSpec, MAX_GRID_X, Param};
use super::read_back::read_back;

use Param::{Ptr, U32};

const FIRST_BINS: &str = "first_bins_reaching";

/// The kernels of `kernels/percentile.cu`.
pub(crate) const KERNELS: &[KernelSpec] =
    &[KernelSpec { module: "percentile", name: FIRST_BINS, params: &[Ptr, U32, Ptr, U32, Ptr] }];

/// Targets one launch takes (`PERCENTILE_MAX_TARGETS`).
const MAX_TARGETS: usize = 32;

/// For each target count, the first bin of the histogram of `|x|` (`bins` bins on `[0, hi]`)
/// whose cumulative count is `>= target`; `bins` when none is.
pub(crate) fn percentile_bins(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    bins: usize,
    hi: f32,
    targets: &[f32],
) -> Result<Vec<usize>, GpuError> {
    let hist = abs_histogram_on_device(gpu, x, bins, hi)?;
    first_bins(gpu, x, &hist, 1, bins, targets)
}

/// For each channel `c` of `layout` and each target count, the first bin of the channel's
/// histogram of `|x|` (`bins` bins on `[0, hi[c]]`) whose cumulative count is `>= target`
/// (`bins` when none is): `[channel][target]`.
pub(crate) fn percentile_bins_per_channel(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    layout: ChannelLayout,
    bins: usize,
    hi: &[f32],
    targets: &[f32],
) -> Result<Vec<usize>, GpuError> {
    let channels = layout.channels as usize;
    let (_, hist) = abs_histograms_on_device(gpu, x, layout, &vec![bins; channels], hi, false)?;
    first_bins(gpu, x, &hist, channels, bins, targets)
}

/// The first bins reaching `targets` of `count` histograms of `bins` bins each, one after
/// another in `hist`: `[histogram][target]`.
fn first_bins(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    hist: &CudaSlice<u64>,
    count: usize,
    bins: usize,
    targets: &[f32],
) -> Result<Vec<usize>, GpuError> {
    if bins == 0 || bins > u32::MAX as usize || count as u64 > MAX_GRID_X {
        return Err(GpuError::Internal(format!("{count} histograms of {bins} bins")));
    }
    let stream = x.stream();
    let mut first = vec![0usize; count * targets.len()];
    let mut done = 0;
    for chunk in targets.chunks(MAX_TARGETS) {
        let t = stream.clone_htod(chunk)?;
        let mut out: CudaSlice<u32> = stream.alloc_zeros(count * chunk.len())?;
        let (nbins, ntargets) = (bins as u32, chunk.len() as u32);
        gpu.launch(stream, FIRST_BINS)?
            .slice(hist)
            .u32(&nbins)
            .slice(&t)
            .u32(&ntargets)
            .slice_mut(&mut out)
            .launch((count as u64, 1, 1), 0)?;
        // `[histogram][target of the chunk]` into `[histogram][target]`.
        for (h, found) in read_back(stream, &out)?.chunks_exact(chunk.len()).enumerate() {
            let row = &mut first[h * targets.len() + done..][..chunk.len()];
            for (dst, &b) in row.iter_mut().zip(found) {
                *dst = b as usize;
            }
        }
        done += chunk.len();
    }
    Ok(first)
}
