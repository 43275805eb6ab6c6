//! Launches `kernels/kl.cu`: the KL threshold search of SPEC §4 on a histogram (every candidate
//! in parallel, the window sums and the tie rule on the device; one index comes back).

use super::context::Gpu;
use super::error::GpuError;
use super::launch::{KernelSpec, MAX_GRID_X, Param};
use super::read_back::read_back;
use crate::search::kl::{EDGE_OFFSET, START_BIN, WINDOW};

use Param::{Ptr, U64};

const PREFIX: &str = "kl_prefix";
const DIVERGENCES: &str = "kl_divergences";
const BEST_WINDOW: &str = "kl_best_window";

/// The kernels of `kernels/kl.cu`.
pub(crate) const KERNELS: &[KernelSpec] = &[
    KernelSpec { module: "kl", name: PREFIX, params: &[Ptr, U64, Ptr, Ptr, Ptr, Ptr] },
    KernelSpec { module: "kl", name: DIVERGENCES, params: &[Ptr, U64, U64, Ptr, Ptr, Ptr, Ptr, Ptr] },
    KernelSpec { module: "kl", name: BEST_WINDOW, params: &[Ptr, U64, Ptr] },
];

/// [`crate::search::kl::threshold_index`] on the GPU: the index into the edges, `k* + 132`, or
/// `None` when no window sum is finite.
pub(crate) fn threshold_index(gpu: &Gpu, hist: &[u64], nq: u64) -> Result<Option<usize>, GpuError> {
    // The cases without a search, exactly as the CPU's: too few bins for a window (SPEC §4: the
    // `len - 127` divergences must hold one window of 9 and the two left out after it), or no
    // counts.
    let len = hist.len();
    if len < START_BIN + WINDOW + 1 {
        return Ok(None);
    }
    let total = hist[1..].iter().try_fold(hist[1], |t, &h| t.checked_add(h));
    if matches!(total, Some(0) | None) {
        return Ok(None); // no counts, or more than u64 holds (no defined divergence, as on the CPU)
    }
    let candidates = (len - START_BIN + 1) as u64;
    if candidates > MAX_GRID_X {
        return Err(GpuError::TooLarge(format!("{len} histogram bins")));
    }
    let stream = &gpu.stream;
    let l = len as u64;
    let h = stream.clone_htod(hist)?;
    let mut count = stream.alloc_zeros::<u64>(len + 1)?;
    let mut nonzero = stream.alloc_zeros::<u64>(len + 1)?;
    let mut hlnh = stream.alloc_zeros::<f64>(len + 1)?;
    let mut hlnh_err = stream.alloc_zeros::<f64>(len + 1)?;
    gpu.launch(stream, PREFIX)?
        .slice(&h)
        .u64(&l)
        .slice_mut(&mut count)
        .slice_mut(&mut nonzero)
        .slice_mut(&mut hlnh)
        .slice_mut(&mut hlnh_err)
        .launch((1, 1, 1), 0)?;
    let mut div = stream.alloc_zeros::<f64>(candidates as usize)?;
    gpu.launch(stream, DIVERGENCES)?
        .slice(&h)
        .u64(&l)
        .u64(&nq)
        .slice(&count)
        .slice(&nonzero)
        .slice(&hlnh)
        .slice(&hlnh_err)
        .slice_mut(&mut div)
        .launch((candidates, 1, 1), 0)?;
    let mut best = stream.alloc_zeros::<i64>(1)?;
    gpu.launch(stream, BEST_WINDOW)?.slice(&div).u64(&candidates).slice_mut(&mut best).launch((1, 1, 1), 0)?;
    let best = read_back(stream, &best)?;
    Ok(best.first().and_then(|&k| usize::try_from(k).ok()).map(|k| k + EDGE_OFFSET))
}
