//! Launches `kernels/kl.cu`: the KL threshold search of SPEC §4 on a batch of histograms (one per
//! channel, SPEC §8; or one per tensor): every candidate of every histogram in parallel, the
//! window sums and the tie rule on the device; one index per histogram comes back. As on the CPU
//! (`search::kl`), a candidate with more bins than levels sums its `nq` levels from prefix tables
//! (one warp each), and when `nq > 128` (qint16) the candidates with a level per bin take the
//! closed form of `search::kl::per_bin` (one thread each): a qint16 search costs
//! `O(L · (L - nq))`, not `O(L²)`.

use super::context::Gpu;
use super::error::GpuError;
use super::launch::{BLOCK_THREADS, KernelSpec, MAX_GRID_X, Param};
use super::read_back::read_back;
use crate::search::kl::{EDGE_OFFSET, START_BIN, WINDOW};

use Param::{Ptr, U64};

const PREFIX: &str = "kl_prefix";
const SERIES: &str = "kl_series";
const DIVERGENCES: &str = "kl_divergences";
const DIVERGENCES_PER_BIN: &str = "kl_divergences_per_bin";
const BEST_WINDOW: &str = "kl_best_window";

/// The kernels of `kernels/kl.cu`.
pub(crate) const KERNELS: &[KernelSpec] = &[
    KernelSpec { module: "kl", name: PREFIX, params: &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr] },
    KernelSpec { module: "kl", name: SERIES, params: &[Ptr, Ptr, Ptr, Ptr, Ptr, Ptr] },
    KernelSpec { module: "kl", name: DIVERGENCES, params: &[Ptr, Ptr, Ptr, U64, U64, U64, Ptr, Ptr, Ptr, Ptr, Ptr] },
    KernelSpec { module: "kl", name: DIVERGENCES_PER_BIN, params: &[Ptr, Ptr, Ptr, U64, U64, Ptr, Ptr, Ptr, Ptr, Ptr] },
    KernelSpec { module: "kl", name: BEST_WINDOW, params: &[Ptr, Ptr, Ptr] },
];

/// [`crate::search::kl::threshold_index`] on the GPU: the index into the edges, `k* + 132`, or
/// `None` when no window sum is finite.
pub(crate) fn threshold_index(gpu: &Gpu, hist: &[u64], nq: u64) -> Result<Option<usize>, GpuError> {
    Ok(threshold_indices(gpu, &[hist], nq)?.first().copied().flatten())
}

/// The most bins searched by one group of launches: its buffers on the device (the histograms,
/// four prefix tables, the divergences, and for the closed form the series (8 doubles per bin)
/// and the small bins' tables) then take at most about 512 MiB, whatever the number of channels
/// (SPEC §8 allows 2^27 counters). The unit tests use groups of 1024 bins, so that their batches
/// are cut into several groups.
const GROUP_BINS: u64 = if cfg!(test) { 1 << 10 } else { 1 << 22 };

/// Terms of the closed form's series (`KL_TERMS` in `kernels/kl.cu`).
const TERMS: usize = 8;

/// Warps per block of `kl_divergences` (one candidate each).
const WARPS_PER_BLOCK: u64 = BLOCK_THREADS as u64 / 32;

/// [`crate::search::kl::threshold_indices`] on the GPU: [`threshold_index`] of every histogram
/// of `hists`, searched together (three to five launches per group of up to [`GROUP_BINS`] bins).
pub(crate) fn threshold_indices(gpu: &Gpu, hists: &[&[u64]], nq: u64) -> Result<Vec<Option<usize>>, GpuError> {
    let mut found = vec![None; hists.len()];
    // The histograms searched: those with a window (SPEC §4: the `len - 127` divergences must
    // hold one window of 9 and the two left out after it) and counts that a u64 holds, as on the
    // CPU; the others have no threshold.
    let searched: Vec<usize> = (0..hists.len())
        .filter(|&s| {
            let h = hists[s];
            h.len() > START_BIN + WINDOW && {
                let total = h[1..].iter().try_fold(h[1], |t, &v| t.checked_add(v));
                !matches!(total, Some(0) | None)
            }
        })
        .collect();
    let mut group: Vec<usize> = Vec::new();
    let mut group_bins = 0u64;
    for (n, &s) in searched.iter().enumerate() {
        group.push(s);
        group_bins += hists[s].len() as u64;
        let next = searched.get(n + 1).map_or(u64::MAX, |&t| hists[t].len() as u64);
        if group_bins.saturating_add(next) > GROUP_BINS {
            for (&s, k) in group.iter().zip(search_group(gpu, hists, &group, nq)?) {
                found[s] = k;
            }
            group.clear();
            group_bins = 0;
        }
    }
    Ok(found)
}

/// The thresholds of the histograms `hists[s]` for `s` in `group` (each with a search).
fn search_group(gpu: &Gpu, hists: &[&[u64]], group: &[usize], nq: u64) -> Result<Vec<Option<usize>>, GpuError> {
    // Histogram s at offsets[s] in the concatenation, its divergences at div_offsets[s].
    let (mut offsets, mut div_offsets) = (vec![0u64], vec![0u64]);
    for &s in group {
        let len = hists[s].len() as u64;
        offsets.push(offsets[offsets.len() - 1] + len);
        div_offsets.push(div_offsets[div_offsets.len() - 1] + len - START_BIN as u64 + 1);
    }
    let (bins, candidates) = (offsets[group.len()], div_offsets[group.len()]);
    let warp_blocks = candidates.div_ceil(WARPS_PER_BLOCK);
    if warp_blocks > MAX_GRID_X || group.len() as u64 > MAX_GRID_X {
        return Err(GpuError::TooLarge(format!("{bins} histogram bins in {} histograms", group.len())));
    }
    let concatenated: Vec<u64> = group.iter().flat_map(|&s| hists[s].iter().copied()).collect();
    let count = group.len() as u64;
    let stream = &gpu.stream;
    let h = stream.clone_htod(&concatenated)?;
    let offsets_dev = stream.clone_htod(&offsets)?;
    let div_offsets_dev = stream.clone_htod(&div_offsets)?;
    // The prefix tables: L + 1 entries per histogram.
    let table = bins as usize + group.len();
    let mut prefix_count = stream.alloc_zeros::<u64>(table)?;
    let mut nonzero = stream.alloc_zeros::<u64>(table)?;
    let mut hlnh = stream.alloc_zeros::<f64>(table)?;
    let mut hlnh_err = stream.alloc_zeros::<f64>(table)?;
    gpu.launch(stream, PREFIX)?
        .slice(&h)
        .slice(&offsets_dev)
        .slice_mut(&mut prefix_count)
        .slice_mut(&mut nonzero)
        .slice_mut(&mut hlnh)
        .slice_mut(&mut hlnh_err)
        .launch((count, 1, 1), 0)?;
    let mut div = stream.alloc_zeros::<f64>(candidates as usize)?;
    // More than one candidate with a level per bin (qint16): those by the closed form.
    let closed = nq > START_BIN as u64;
    // Its tables live until the read-back below, which waits for every launch.
    let mut closed_tables = None;
    if closed {
        let (series, small_below, small_bins) = closed_tables.insert((
            stream.alloc_zeros::<f64>(table * TERMS)?,
            stream.alloc_zeros::<u64>(table)?,
            stream.alloc_zeros::<u64>(bins as usize)?,
        ));
        gpu.launch(stream, SERIES)?
            .slice(&h)
            .slice(&offsets_dev)
            .slice(&prefix_count)
            .slice_mut(series)
            .slice_mut(small_below)
            .slice_mut(small_bins)
            .launch((count, 1, 1), 0)?;
        gpu.launch(stream, DIVERGENCES_PER_BIN)?
            .slice(&h)
            .slice(&offsets_dev)
            .slice(&div_offsets_dev)
            .u64(&count)
            .u64(&nq)
            .slice(&prefix_count)
            .slice(series)
            .slice(small_below)
            .slice(small_bins)
            .slice_mut(&mut div)
            .launch((candidates.div_ceil(BLOCK_THREADS as u64), 1, 1), 0)?;
    }
    let closed_flag = u64::from(closed);
    gpu.launch(stream, DIVERGENCES)?
        .slice(&h)
        .slice(&offsets_dev)
        .slice(&div_offsets_dev)
        .u64(&count)
        .u64(&nq)
        .u64(&closed_flag)
        .slice(&prefix_count)
        .slice(&nonzero)
        .slice(&hlnh)
        .slice(&hlnh_err)
        .slice_mut(&mut div)
        .launch((warp_blocks, 1, 1), 0)?;
    let mut best = stream.alloc_zeros::<i64>(group.len())?;
    gpu.launch(stream, BEST_WINDOW)?
        .slice(&div)
        .slice(&div_offsets_dev)
        .slice_mut(&mut best)
        .launch((count, 1, 1), 0)?;
    let best = read_back(stream, &best)?;
    drop(closed_tables);
    Ok(best.into_iter().map(|k| usize::try_from(k).ok().map(|k| k + EDGE_OFFSET)).collect())
}
