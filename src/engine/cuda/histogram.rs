//! Launches `kernels/histogram.cu`: the histogram of `|x|` with the bin rule of SPEC §5.

use cudarc::driver::{CudaSlice, CudaStream, CudaView};

use super::batch::{DeviceBatch, with_device_buf};
use super::context::Gpu;
use super::error::GpuError;
use super::extremes::decode;
use super::launch::{BLOCK_THREADS, KernelSpec, MAX_GRID_X, Param};
use super::read_back::read_back;
use crate::engine::Extremes;

use Param::{F32, F64, Ptr, U32, U64};

const SHARED: [&str; 3] = ["abs_hist_shared_f32", "abs_hist_shared_f16", "abs_hist_shared_bf16"];
const GLOBAL: [&str; 3] = ["abs_hist_global_f32", "abs_hist_global_f16", "abs_hist_global_bf16"];
const WITH_EXTREMES: [&str; 3] =
    ["abs_hist_extremes_shared_f32", "abs_hist_extremes_shared_f16", "abs_hist_extremes_shared_bf16"];
const PARAMS: &[Param] = &[Ptr, U64, U32, F32, F64, Ptr];
const WITH_EXTREMES_PARAMS: &[Param] = &[Ptr, U64, U32, F32, F64, Ptr, Ptr];

/// The kernels of `kernels/histogram.cu`.
pub(crate) const KERNELS: &[KernelSpec] = &[
    KernelSpec { module: "histogram", name: SHARED[0], params: PARAMS },
    KernelSpec { module: "histogram", name: SHARED[1], params: PARAMS },
    KernelSpec { module: "histogram", name: SHARED[2], params: PARAMS },
    KernelSpec { module: "histogram", name: GLOBAL[0], params: PARAMS },
    KernelSpec { module: "histogram", name: GLOBAL[1], params: PARAMS },
    KernelSpec { module: "histogram", name: GLOBAL[2], params: PARAMS },
    KernelSpec { module: "histogram", name: WITH_EXTREMES[0], params: WITH_EXTREMES_PARAMS },
    KernelSpec { module: "histogram", name: WITH_EXTREMES[1], params: WITH_EXTREMES_PARAMS },
    KernelSpec { module: "histogram", name: WITH_EXTREMES[2], params: WITH_EXTREMES_PARAMS },
];

/// The most bins counted in shared memory (48 KiB of u32, the limit without opting in).
pub(crate) const MAX_SHARED_BINS: usize = 48 * 1024 / 4;

/// Values a block aims to count.
const ELEMS_PER_BLOCK: u64 = 64 * 1024;

/// The most values one block is given (far below 2^32: its u32 counters cannot overflow).
const MAX_ELEMS_PER_BLOCK: u64 = 1 << 30;

/// The histogram of `|x|`, `bins` bins on `[0, hi]` (`hi <= 0`: zeros in bin 0), left on the
/// device in a zero-initialised buffer of `bins` u64.
pub(crate) fn abs_histogram_on_device(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    bins: usize,
    hi: f32,
) -> Result<CudaSlice<u64>, GpuError> {
    let stream = x.stream();
    if bins == 0 || bins > u32::MAX as usize {
        return Err(GpuError::Internal(format!("{bins} histogram bins")));
    }
    let mut hist = stream.alloc_zeros::<u64>(bins)?;
    with_device_buf!(&x.data, buf, dtype => {
        let view = buf.view().ok_or_else(|| GpuError::Internal("empty device view".into()))?;
        launch(gpu, stream, &view, dtype, bins as u32, hi, &mut hist)?;
    });
    Ok(hist)
}

/// The extremes of `x` (per tensor) and the histogram of `|x|` on `[0, hi]` (`hi > 0`) from one
/// pass over the data, for up to [`MAX_SHARED_BINS`] bins; `None` for more (two passes then).
pub(crate) fn extremes_and_abs_histogram(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    bins: usize,
    hi: f32,
) -> Result<Option<(Extremes, Vec<u64>)>, GpuError> {
    let positive = hi > 0.0; // false for NaN too
    if bins == 0 || bins > MAX_SHARED_BINS || !positive {
        return Ok(None);
    }
    let stream = x.stream();
    let mut hist = stream.alloc_zeros::<u64>(bins)?;
    let mut ext = stream.alloc_zeros::<u32>(4)?;
    with_device_buf!(&x.data, buf, dtype => {
        let view = buf.view().ok_or_else(|| GpuError::Internal("empty device view".into()))?;
        let (blocks, inv_hi) = plan(gpu, view.len() as u64, hi)?;
        let n = view.len() as u64;
        let bins = bins as u32;
        gpu.launch(stream, WITH_EXTREMES[dtype])?
            .view(&view)
            .u64(&n)
            .u32(&bins)
            .f32(&hi)
            .f64(&inv_hi)
            .slice_mut(&mut hist)
            .slice_mut(&mut ext)
            .launch((blocks, 1, 1), bins * 4)?;
    });
    let extremes = decode(&read_back(stream, &ext)?, 1);
    Ok(Some((extremes, read_back(stream, &hist)?)))
}

/// The grid of a histogram kernel over `n` values, and `f64(1 / hi)` (the kernels' division,
/// see `kernels/histogram.cu`).
fn plan(gpu: &Gpu, n: u64, hi: f32) -> Result<(u64, f64), GpuError> {
    let blocks = n.div_ceil(ELEMS_PER_BLOCK).clamp(1, 8 * gpu.sms).max(n.div_ceil(MAX_ELEMS_PER_BLOCK)).min(MAX_GRID_X);
    // A thread takes at most ceil(n / threads) values, plus up to 8 of a last 16-byte load and
    // one each of the head and the tail: a block stays far below 2^32 values.
    if (n.div_ceil(blocks * u64::from(BLOCK_THREADS)) + 10) * u64::from(BLOCK_THREADS) > 2 * MAX_ELEMS_PER_BLOCK {
        return Err(GpuError::TooLarge(format!("{n} elements")));
    }
    Ok((blocks, if hi > 0.0 { 1.0 / f64::from(hi) } else { 0.0 }))
}

fn launch<T>(
    gpu: &Gpu,
    stream: &CudaStream,
    x: &CudaView<'_, T>,
    dtype: usize,
    bins: u32,
    hi: f32,
    hist: &mut CudaSlice<u64>,
) -> Result<(), GpuError> {
    let n = x.len() as u64;
    let (blocks, inv_hi) = plan(gpu, n, hi)?;
    let (name, shared) =
        if (bins as usize) <= MAX_SHARED_BINS { (SHARED[dtype], bins * 4) } else { (GLOBAL[dtype], 0) };
    gpu.launch(stream, name)?
        .view(x)
        .u64(&n)
        .u32(&bins)
        .f32(&hi)
        .f64(&inv_hi)
        .slice_mut(hist)
        .launch((blocks, 1, 1), shared)
}
