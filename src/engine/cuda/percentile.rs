//! Launches `kernels/percentile.cu`: the first bin of a device histogram whose cumulative count
//! reaches each target (PercentileObserver, MixObserver), so only the bin indices come back.

use cudarc::driver::CudaSlice;

use super::batch::DeviceBatch;
use super::context::Gpu;
use super::error::GpuError;
use super::histogram::abs_histogram_on_device;
use super::launch::{KernelSpec, Param};
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
    let stream = x.stream();
    let mut first = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(MAX_TARGETS) {
        let t = stream.clone_htod(chunk)?;
        let mut out: CudaSlice<u32> = stream.alloc_zeros(chunk.len())?;
        let (nbins, ntargets) = (bins as u32, chunk.len() as u32);
        gpu.launch(stream, FIRST_BINS)?
            .slice(&hist)
            .u32(&nbins)
            .slice(&t)
            .u32(&ntargets)
            .slice_mut(&mut out)
            .launch((1, 1, 1), 0)?;
        first.extend(read_back(stream, &out)?.into_iter().map(|b| b as usize));
    }
    Ok(first)
}
