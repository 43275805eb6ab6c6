//! Launches `kernels/extremes.cu`: min, max and the non-finite count per tensor or channel.

use cudarc::driver::CudaView;

use super::batch::{ChannelLayout, DeviceBatch, with_device_buf};
use super::context::Gpu;
use super::error::GpuError;
use super::launch::{BLOCK_THREADS, KernelSpec, MAX_GRID_X, MAX_GRID_YZ, Param, inner_magic, split};
use super::read_back::read_back;
use crate::engine::Extremes;

use Param::{Ptr, U32, U64};

const ROWS: [&str; 3] = ["extremes_rows_f32", "extremes_rows_f16", "extremes_rows_bf16"];
const COLS: [&str; 3] = ["extremes_cols_f32", "extremes_cols_f16", "extremes_cols_bf16"];
const ROWS_PARAMS: &[Param] = &[Ptr, U64, U64, U64, U64, U32, Ptr];
const COLS_PARAMS: &[Param] = &[Ptr, U64, U64, Ptr];

/// The kernels of `kernels/extremes.cu`.
pub(crate) const KERNELS: &[KernelSpec] = &[
    KernelSpec { module: "extremes", name: ROWS[0], params: ROWS_PARAMS },
    KernelSpec { module: "extremes", name: ROWS[1], params: ROWS_PARAMS },
    KernelSpec { module: "extremes", name: ROWS[2], params: ROWS_PARAMS },
    KernelSpec { module: "extremes", name: COLS[0], params: COLS_PARAMS },
    KernelSpec { module: "extremes", name: COLS[1], params: COLS_PARAMS },
    KernelSpec { module: "extremes", name: COLS[2], params: COLS_PARAMS },
];

/// Elements a block aims to read.
const ELEMS_PER_BLOCK: u64 = 16 * 1024;

/// The extremes of `x` per channel of `layout` (one channel: per tensor).
pub(crate) fn extremes(gpu: &Gpu, x: &DeviceBatch<'_>, layout: ChannelLayout) -> Result<Extremes, GpuError> {
    let stream = x.stream();
    let c = layout.channels;
    let words = usize::try_from(2 * c + 2).map_err(|_| GpuError::TooLarge(format!("{c} channels")))?;
    let mut out = stream.alloc_zeros::<u32>(words)?;
    with_device_buf!(&x.data, buf, dtype => {
        let view = buf.view().ok_or_else(|| GpuError::Internal("empty device view".into()))?;
        launch(gpu, stream, &view, dtype, layout, &mut out)?;
    });
    Ok(decode(&read_back(stream, &out)?, c as usize))
}

/// The extremes of `c` channels from the words the kernels leave (see `kernels/extremes.cu`).
pub(crate) fn decode(words: &[u32], c: usize) -> Extremes {
    let non_finite = u64::from(words[2 * c]) | (u64::from(words[2 * c + 1]) << 32);
    Extremes {
        min: words[..c].iter().map(|&w| ord_to_f32(!w)).collect(),
        max: words[c..2 * c].iter().map(|&w| ord_to_f32(w)).collect(),
        non_finite,
    }
}

fn launch<T>(
    gpu: &Gpu,
    stream: &cudarc::driver::CudaStream,
    x: &CudaView<'_, T>,
    dtype: usize,
    l: ChannelLayout,
    out: &mut cudarc::driver::CudaSlice<u32>,
) -> Result<(), GpuError> {
    let (outer, c, inner) = (l.outer, l.channels, l.inner);
    if c > 1 && inner == 1 {
        // Channel-last: a block takes `tile` channels and `256 / tile` rows at a time.
        let tile = c.min(u64::from(BLOCK_THREADS));
        let rows_per_step = u64::from(BLOCK_THREADS) / tile;
        let tiles = c.div_ceil(tile);
        let row_splits = (outer.div_ceil(rows_per_step * 64)).clamp(1, MAX_GRID_YZ);
        return gpu
            .launch(stream, COLS[dtype])?
            .view(x)
            .u64(&outer)
            .u64(&c)
            .slice_mut(out)
            .launch((tiles, row_splits, 1), 0);
    }
    if c > MAX_GRID_X {
        return Err(GpuError::TooLarge(format!("{c} channels (at most {MAX_GRID_X})")));
    }
    let (per_split, splits) = rows_split(l, ELEMS_PER_BLOCK, MAX_GRID_YZ)?;
    let magic = inner_magic(inner);
    gpu.launch(stream, ROWS[dtype])?
        .view(x)
        .u64(&outer)
        .u64(&c)
        .u64(&inner)
        .u64(&per_split)
        .u32(&magic)
        .slice_mut(out)
        .launch((c, splits, 1), 0)
}

/// How a rows kernel cuts each channel: `(per_split, splits)` in the units of
/// `for_each_in_channel` (elements when `outer == 1`, runs otherwise), aiming at
/// `elems_per_block` elements a block, with at most `max_splits` splits.
pub(crate) fn rows_split(l: ChannelLayout, elems_per_block: u64, max_splits: u64) -> Result<(u64, u64), GpuError> {
    let planned = if l.outer == 1 {
        split(l.inner, elems_per_block, max_splits, u64::MAX)
    } else {
        split(l.outer, (elems_per_block / l.inner.max(1)).max(1), max_splits, u64::MAX)
    };
    planned.ok_or_else(|| GpuError::Internal(format!("no split of {l:?}")))
}

/// The inverse of the kernels' `f2ord`.
fn ord_to_f32(u: u32) -> f32 {
    f32::from_bits(if u & 0x8000_0000 != 0 { u & 0x7fff_ffff } else { !u })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels' f2ord.
    fn f2ord(f: f32) -> u32 {
        let u = f.to_bits();
        if u & 0x8000_0000 != 0 { !u } else { u | 0x8000_0000 }
    }

    #[test]
    fn ordered_integers_round_trip_and_keep_the_order() {
        let values = [f32::NEG_INFINITY, -3.4e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 2.5, 3.4e38, f32::INFINITY];
        for w in values.windows(2) {
            assert!(f2ord(w[0]) < f2ord(w[1]), "{} {}", w[0], w[1]);
        }
        for v in values {
            assert_eq!(ord_to_f32(f2ord(v)).to_bits(), v.to_bits());
            assert_eq!(ord_to_f32(!!f2ord(v)).to_bits(), v.to_bits());
        }
        // An empty accumulator (+inf, -inf) stores the smallest words, below every value.
        assert!(!f2ord(f32::INFINITY) < !f2ord(f32::MAX));
        assert!(f2ord(f32::NEG_INFINITY) < f2ord(-f32::MAX));
    }

    #[test]
    fn rows_splits_respect_the_kernel_limits() {
        let l = |outer, channels, inner| ChannelLayout { outer, channels, inner };
        assert_eq!(rows_split(l(1, 1, 100), 16384, 65535).unwrap(), (16384, 1));
        assert_eq!(rows_split(l(1, 1, 1 << 20), 16384, 65535).unwrap(), (16384, 64));
        assert_eq!(rows_split(l(1000, 3, 5), 16384, 65535).unwrap(), (3276, 1));
        assert_eq!(rows_split(l(1000, 3, 100_000), 16384, 65535).unwrap(), (1, 1000));
        let (per, splits) = rows_split(l(1 << 40, 2, 200), 16384, 65535).unwrap();
        assert!(splits <= 65535 && per * splits >= 1 << 40 && per * (splits - 1) < 1 << 40);
    }
}
