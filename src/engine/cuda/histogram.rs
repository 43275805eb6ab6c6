//! Launches `kernels/histogram.cu`: the histogram of `|x|` with the bin rule of SPEC §5, per
//! tensor or one per channel (SPEC §8).

use cudarc::driver::{CudaSlice, CudaStream, CudaView};

use super::batch::{ChannelLayout, DeviceBatch, with_device_buf};
use super::context::Gpu;
use super::error::GpuError;
use super::extremes::{decode, rows_split};
use super::launch::{BLOCK_THREADS, KernelSpec, Launch, MAX_GRID_X, MAX_GRID_YZ, Param, inner_magic};
use super::read_back::read_back;
use crate::engine::Extremes;

use Param::{F32, F64, Ptr, U32, U64};

const SHARED: [&str; 3] = ["abs_hist_shared_f32", "abs_hist_shared_f16", "abs_hist_shared_bf16"];
const GLOBAL: [&str; 3] = ["abs_hist_global_f32", "abs_hist_global_f16", "abs_hist_global_bf16"];
const WITH_EXTREMES: [&str; 3] =
    ["abs_hist_extremes_shared_f32", "abs_hist_extremes_shared_f16", "abs_hist_extremes_shared_bf16"];
const PARAMS: &[Param] = &[Ptr, U64, U32, F32, F64, Ptr];
const WITH_EXTREMES_PARAMS: &[Param] = &[Ptr, U64, U32, F32, F64, Ptr, Ptr];
const ROWS_SHARED: [&str; 3] = ["abs_hists_rows_shared_f32", "abs_hists_rows_shared_f16", "abs_hists_rows_shared_bf16"];
const ROWS_GLOBAL: [&str; 3] = ["abs_hists_rows_global_f32", "abs_hists_rows_global_f16", "abs_hists_rows_global_bf16"];
const COLS: [&str; 3] = ["abs_hists_cols_f32", "abs_hists_cols_f16", "abs_hists_cols_bf16"];
const COLS_SHARED: [&str; 3] = ["abs_hists_cols_shared_f32", "abs_hists_cols_shared_f16", "abs_hists_cols_shared_bf16"];
const ROWS_PARAMS: &[Param] = &[Ptr, U64, U64, U64, U64, U32, Ptr, Ptr, Ptr, Ptr, U32, Ptr, Ptr];
const COLS_PARAMS: &[Param] = &[Ptr, U64, U64, Ptr, Ptr, Ptr, Ptr, U32, Ptr, Ptr];
const COLS_SHARED_PARAMS: &[Param] = &[Ptr, U64, U64, U32, U32, Ptr, Ptr, Ptr, Ptr, U32, Ptr, Ptr];

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
    KernelSpec { module: "histogram", name: ROWS_SHARED[0], params: ROWS_PARAMS },
    KernelSpec { module: "histogram", name: ROWS_SHARED[1], params: ROWS_PARAMS },
    KernelSpec { module: "histogram", name: ROWS_SHARED[2], params: ROWS_PARAMS },
    KernelSpec { module: "histogram", name: ROWS_GLOBAL[0], params: ROWS_PARAMS },
    KernelSpec { module: "histogram", name: ROWS_GLOBAL[1], params: ROWS_PARAMS },
    KernelSpec { module: "histogram", name: ROWS_GLOBAL[2], params: ROWS_PARAMS },
    KernelSpec { module: "histogram", name: COLS[0], params: COLS_PARAMS },
    KernelSpec { module: "histogram", name: COLS[1], params: COLS_PARAMS },
    KernelSpec { module: "histogram", name: COLS[2], params: COLS_PARAMS },
    KernelSpec { module: "histogram", name: COLS_SHARED[0], params: COLS_SHARED_PARAMS },
    KernelSpec { module: "histogram", name: COLS_SHARED[1], params: COLS_SHARED_PARAMS },
    KernelSpec { module: "histogram", name: COLS_SHARED[2], params: COLS_SHARED_PARAMS },
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

/// Per-channel histograms of `|x|` along the channels of `layout`: channel `c` gets `bins[c]`
/// bins on `[0, hi[c]]` (none when `bins[c]` is 0; `hi[c] <= 0` counts its zeros in bin 0), left
/// on the device, every channel's counts in turn. With `want_extremes`, also the per-channel
/// extremes of `x`, from the same pass.
pub(crate) fn abs_histograms_on_device(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    layout: ChannelLayout,
    bins: &[usize],
    hi: &[f32],
    want_extremes: bool,
) -> Result<(Option<Extremes>, CudaSlice<u64>), GpuError> {
    let c = layout.channels;
    if bins.len() as u64 != c || hi.len() as u64 != c {
        return Err(GpuError::Internal(format!("{} bin counts and {} ranges for {c} channels", bins.len(), hi.len())));
    }
    if let Some(&b) = bins.iter().find(|&&b| b > u32::MAX as usize) {
        return Err(GpuError::Internal(format!("{b} histogram bins")));
    }
    let mut offsets = Vec::with_capacity(bins.len());
    let mut total = 0usize;
    for &b in bins {
        offsets.push(total as u64);
        total = total.checked_add(b).ok_or_else(|| GpuError::TooLarge(format!("{c} channels' histograms")))?;
    }
    let stream = x.stream();
    // One counter at least: a buffer of none cannot be passed to a kernel.
    let mut hist = stream.alloc_zeros::<u64>(total.max(1))?;
    let mut ext = stream.alloc_zeros::<u32>(2 * c as usize + 2)?;
    let nbins: Vec<u32> = bins.iter().map(|&b| b as u32).collect();
    // f64(1 / hi): the kernels' division, as for one histogram.
    let inv_hi: Vec<f64> = hi.iter().map(|&h| if h > 0.0 { 1.0 / f64::from(h) } else { 0.0 }).collect();
    let p = ChannelParams {
        offsets: stream.clone_htod(&offsets)?,
        bins: stream.clone_htod(&nbins)?,
        hi: stream.clone_htod(hi)?,
        inv_hi: stream.clone_htod(&inv_hi)?,
        want_extremes: u32::from(want_extremes),
        max_bins: bins.iter().copied().max().unwrap_or(0),
    };
    with_device_buf!(&x.data, buf, dtype => {
        let view = buf.view().ok_or_else(|| GpuError::Internal("empty device view".into()))?;
        launch_per_channel(gpu, stream, &view, dtype, layout, &p, &mut hist, &mut ext)?;
    });
    let extremes = if want_extremes { Some(decode(&read_back(stream, &ext)?, c as usize)) } else { None };
    Ok((extremes, hist))
}

/// [`abs_histograms_on_device`], the counts added to `out` (every channel's counts in turn)
/// through the GPU's page-locked staging buffer. On an error, `out` may hold part of the counts.
pub(crate) fn add_abs_histograms(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    layout: ChannelLayout,
    bins: &[usize],
    hi: &[f32],
    want_extremes: bool,
    out: &mut [u64],
) -> Result<Option<Extremes>, GpuError> {
    let (extremes, hist) = abs_histograms_on_device(gpu, x, layout, bins, hi, want_extremes)?;
    gpu.staging.add_back(&gpu.ctx, x.stream(), &hist, out)?;
    Ok(extremes)
}

/// The per-channel arguments of the per-channel histogram kernels, on the device.
struct ChannelParams {
    offsets: CudaSlice<u64>,
    bins: CudaSlice<u32>,
    hi: CudaSlice<f32>,
    inv_hi: CudaSlice<f64>,
    want_extremes: u32,
    max_bins: usize,
}

impl ChannelParams {
    /// Pushes `offsets, bins, hi, inv_hi, want_extremes`, in the place every per-channel
    /// histogram kernel takes them.
    fn push<'a, 'l>(&'a self, launch: &'l mut Launch<'a>) -> &'l mut Launch<'a> {
        launch.slice(&self.offsets).slice(&self.bins).slice(&self.hi).slice(&self.inv_hi).u32(&self.want_extremes)
    }
}

#[allow(clippy::too_many_arguments)]
fn launch_per_channel<T>(
    gpu: &Gpu,
    stream: &CudaStream,
    x: &CudaView<'_, T>,
    dtype: usize,
    l: ChannelLayout,
    p: &ChannelParams,
    hist: &mut CudaSlice<u64>,
    ext: &mut CudaSlice<u32>,
) -> Result<(), GpuError> {
    let (outer, c, inner) = (l.outer, l.channels, l.inner);
    if c > 1 && inner == 1 {
        return launch_columns(gpu, stream, x, dtype, (outer, c), p, hist, ext);
    }
    if c > MAX_GRID_X {
        return Err(GpuError::TooLarge(format!("{c} channels (at most {MAX_GRID_X})")));
    }
    let (per_split, splits) = rows_split(l, ELEMS_PER_BLOCK, MAX_GRID_YZ)?;
    // A block's values: `per_split` elements (one run per channel) or runs of `inner`.
    let per_block = if outer == 1 { per_split } else { per_split.saturating_mul(inner) };
    let shared = p.max_bins <= MAX_SHARED_BINS && per_block <= MAX_ELEMS_PER_BLOCK;
    let (name, shared_bytes) =
        if shared { (ROWS_SHARED[dtype], p.max_bins as u32 * 4) } else { (ROWS_GLOBAL[dtype], 0) };
    let magic = inner_magic(inner);
    let mut launch = gpu.launch(stream, name)?;
    launch.view(x).u64(&outer).u64(&c).u64(&inner).u64(&per_split).u32(&magic);
    p.push(&mut launch).slice_mut(hist).slice_mut(ext).launch((c, splits, 1), shared_bytes)
}

/// Values a block of the channel-last shared-memory kernel counts per counter it clears and
/// flushes (at least), so that those costs stay small.
const COLS_VALUES_PER_COUNTER: u64 = 16;

/// The per-channel histograms of a channel-last `[rows, c]` tensor. Where the channels' counters
/// fit in shared memory (up to [`MAX_SHARED_BINS`] bins), a block counts `tile` channels there
/// (as many as 48 KiB of u32 counters hold, at most 256), `256 / tile` rows at a time, and adds
/// its counters to `hist` at the end: the increments of the hot bins stay on the multiprocessor.
/// Otherwise every value is one global atomic, 256 channels a block.
#[allow(clippy::too_many_arguments)]
fn launch_columns<T>(
    gpu: &Gpu,
    stream: &CudaStream,
    x: &CudaView<'_, T>,
    dtype: usize,
    (rows, c): (u64, u64),
    p: &ChannelParams,
    hist: &mut CudaSlice<u64>,
    ext: &mut CudaSlice<u32>,
) -> Result<(), GpuError> {
    let threads = u64::from(BLOCK_THREADS);
    if p.max_bins > MAX_SHARED_BINS {
        let tile = c.min(threads);
        let rows_per_step = threads / tile;
        let row_splits = (rows.div_ceil(rows_per_step * 64)).clamp(1, MAX_GRID_YZ);
        let mut launch = gpu.launch(stream, COLS[dtype])?;
        launch.view(x).u64(&rows).u64(&c);
        return p.push(&mut launch).slice_mut(hist).slice_mut(ext).launch((c.div_ceil(tile), row_splits, 1), 0);
    }
    let stride = p.max_bins.max(1) as u64;
    let tile = c.min(threads).min(MAX_SHARED_BINS as u64 / stride);
    let tiles = c.div_ceil(tile);
    if tiles > MAX_GRID_X {
        return Err(GpuError::TooLarge(format!("{c} channels of {stride} bins")));
    }
    // Enough values per block to amortise its counters, enough blocks for every multiprocessor
    // (while each block keeps a step of rows), and a block's rows under 2^30 (u32 counters).
    let rows_per_step = threads / tile;
    let rows_per_block = (COLS_VALUES_PER_COUNTER * stride).max(ELEMS_PER_BLOCK / tile);
    let busy = (2 * gpu.sms).div_ceil(tiles).min(rows.div_ceil(rows_per_step));
    let row_splits = rows.div_ceil(rows_per_block).max(busy).max(rows.div_ceil(MAX_ELEMS_PER_BLOCK)).max(1);
    if row_splits > MAX_GRID_YZ {
        return Err(GpuError::TooLarge(format!("{rows} rows of {c} channels")));
    }
    let (tile32, stride32) = (tile as u32, stride as u32);
    let mut launch = gpu.launch(stream, COLS_SHARED[dtype])?;
    launch.view(x).u64(&rows).u64(&c).u32(&tile32).u32(&stride32);
    p.push(&mut launch).slice_mut(hist).slice_mut(ext).launch((tiles, row_splits, 1), tile32 * stride32 * 4)
}
