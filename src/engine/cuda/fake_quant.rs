//! Launches `kernels/fake_quant.cu`: the sums of squared fake-quantization errors of many
//! candidate scales, per tensor or channel, in f64 and in an order fixed by the tensor's shape.

use cudarc::driver::{CudaSlice, CudaStream, CudaView};

use super::batch::{ChannelLayout, DeviceBatch, with_device_buf};
use super::context::Gpu;
use super::error::GpuError;
use super::extremes::rows_split;
use super::launch::{BLOCK_THREADS, KernelSpec, MAX_GRID_X, MAX_GRID_YZ, Param, inner_magic, split};
use super::read_back::read_back;

use Param::{F32, Ptr, U32, U64};

const ROWS: [&str; 3] = ["fq_err_rows_f32", "fq_err_rows_f16", "fq_err_rows_bf16"];
const COLS: [&str; 3] = ["fq_err_cols_f32", "fq_err_cols_f16", "fq_err_cols_bf16"];
const SUM_SPLITS: &str = "fq_sum_splits";
const ROWS_PARAMS: &[Param] = &[Ptr, U64, U64, U64, U64, U32, Ptr, Ptr, U64, F32, F32, Ptr];
const COLS_PARAMS: &[Param] = &[Ptr, U64, U64, Ptr, Ptr, U64, F32, F32, Ptr];

/// The kernels of `kernels/fake_quant.cu`.
pub(crate) const KERNELS: &[KernelSpec] = &[
    KernelSpec { module: "fake_quant", name: ROWS[0], params: ROWS_PARAMS },
    KernelSpec { module: "fake_quant", name: ROWS[1], params: ROWS_PARAMS },
    KernelSpec { module: "fake_quant", name: ROWS[2], params: ROWS_PARAMS },
    KernelSpec { module: "fake_quant", name: COLS[0], params: COLS_PARAMS },
    KernelSpec { module: "fake_quant", name: COLS[1], params: COLS_PARAMS },
    KernelSpec { module: "fake_quant", name: COLS[2], params: COLS_PARAMS },
    KernelSpec { module: "fake_quant", name: SUM_SPLITS, params: &[Ptr, U64, U64, Ptr] },
];

/// Candidates a block scores (`FQ_GROUP` in `kernels/fake_quant.cu`).
const GROUP: u64 = 16;

/// Elements a block aims to score.
const ELEMS_PER_BLOCK: u64 = 8 * 1024;

/// The most bytes of f64 partial sums (`splits * k * channels`) a launch may take.
const PARTIAL_BUDGET_BYTES: u64 = 64 << 20;

/// Sums of squared fake-quantization errors, `[k][channels]`, of the candidate scales `scales`
/// (`[k][channels]`, every scale > 0) for the channels of `layout`.
pub(crate) fn fake_quant_errors(
    gpu: &Gpu,
    x: &DeviceBatch<'_>,
    layout: ChannelLayout,
    scales: &[f32],
    k: usize,
    qmin: f32,
    qmax: f32,
) -> Result<Vec<f64>, GpuError> {
    let channels = layout.channels;
    let count = (k as u64).checked_mul(channels).filter(|&c| c == scales.len() as u64);
    let Some(count) = count.filter(|&c| c > 0) else {
        return Err(GpuError::Internal(format!("{} scales for {k} candidates x {channels} channels", scales.len())));
    };
    let stream = x.stream();
    // f64(1 / s): the kernel's division (see kernels/fake_quant.cu).
    let inv: Vec<f64> = scales.iter().map(|&s| 1.0 / f64::from(s)).collect();
    let scales_dev = stream.clone_htod(scales)?;
    let inv_dev = stream.clone_htod(&inv)?;
    let groups = (k as u64).div_ceil(GROUP);
    if groups > MAX_GRID_YZ {
        return Err(GpuError::TooLarge(format!("{k} candidates")));
    }
    let max_splits = (PARTIAL_BUDGET_BYTES / (8 * count)).clamp(1, MAX_GRID_YZ);
    let plan = Plan::new(layout, max_splits)?;
    let mut partial = stream.alloc_zeros::<f64>(usize::try_from(plan.splits * count).map_err(|_| too_large(count))?)?;
    let k64 = k as u64;
    with_device_buf!(&x.data, buf, dtype => {
        let view = buf.view().ok_or_else(|| GpuError::Internal("empty device view".into()))?;
        launch(gpu, stream, &view, dtype, layout, &plan, (&scales_dev, &inv_dev), k64, groups, (qmin, qmax), &mut partial)?;
    });
    if plan.splits == 1 {
        return Ok(read_back(stream, &partial)?);
    }
    let mut out = stream.alloc_zeros::<f64>(count as usize)?;
    let blocks = count.div_ceil(u64::from(BLOCK_THREADS));
    gpu.launch(stream, SUM_SPLITS)?
        .slice(&partial)
        .u64(&plan.splits)
        .u64(&count)
        .slice_mut(&mut out)
        .launch((blocks, 1, 1), 0)?;
    Ok(read_back(stream, &out)?)
}

fn too_large(count: u64) -> GpuError {
    GpuError::TooLarge(format!("{count} error sums"))
}

/// How the grid cuts the data: `splits` block rows of `per_split` units (rows kernel), or of
/// rows (columns kernel). Depends only on the shape, so the sums do too.
struct Plan {
    columns: bool,
    per_split: u64,
    splits: u64,
}

impl Plan {
    fn new(l: ChannelLayout, max_splits: u64) -> Result<Plan, GpuError> {
        if l.channels > 1 && l.inner == 1 {
            let tile = l.channels.min(u64::from(BLOCK_THREADS));
            let rows_per_step = u64::from(BLOCK_THREADS) / tile;
            let target_rows = (ELEMS_PER_BLOCK / u64::from(BLOCK_THREADS)) * rows_per_step;
            let (_, splits) = split(l.outer, target_rows, max_splits, u64::MAX)
                .ok_or_else(|| GpuError::TooLarge(format!("{l:?}")))?;
            return Ok(Plan { columns: true, per_split: 0, splits });
        }
        if l.channels > MAX_GRID_X {
            return Err(GpuError::TooLarge(format!("{} channels (at most {MAX_GRID_X})", l.channels)));
        }
        let (per_split, splits) = rows_split(l, ELEMS_PER_BLOCK, max_splits)?;
        Ok(Plan { columns: false, per_split, splits })
    }
}

#[allow(clippy::too_many_arguments)]
fn launch<T>(
    gpu: &Gpu,
    stream: &CudaStream,
    x: &CudaView<'_, T>,
    dtype: usize,
    l: ChannelLayout,
    plan: &Plan,
    (scales, inv): (&CudaSlice<f32>, &CudaSlice<f64>),
    k: u64,
    groups: u64,
    (qmin, qmax): (f32, f32),
    partial: &mut CudaSlice<f64>,
) -> Result<(), GpuError> {
    let (outer, c, inner) = (l.outer, l.channels, l.inner);
    if plan.columns {
        let tiles = c.div_ceil(c.min(u64::from(BLOCK_THREADS)));
        return gpu
            .launch(stream, COLS[dtype])?
            .view(x)
            .u64(&outer)
            .u64(&c)
            .slice(scales)
            .slice(inv)
            .u64(&k)
            .f32(&qmin)
            .f32(&qmax)
            .slice_mut(partial)
            .launch((tiles, plan.splits, groups), 0);
    }
    let magic = inner_magic(inner);
    gpu.launch(stream, ROWS[dtype])?
        .view(x)
        .u64(&outer)
        .u64(&c)
        .u64(&inner)
        .u64(&plan.per_split)
        .u32(&magic)
        .slice(scales)
        .slice(inv)
        .u64(&k)
        .f32(&qmin)
        .f32(&qmax)
        .slice_mut(partial)
        .launch((c, plan.splits, groups), 0)
}
