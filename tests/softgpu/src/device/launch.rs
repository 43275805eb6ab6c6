//! Kernel launches: the checks the driver makes when a launch is called (grid, block, shared
//! memory, parameters), then the run on the stream, through the interpreter.

use std::sync::Arc;

use cudarc::driver::sys::CUresult;

use super::memory::MemoryTable;
use super::module::Function;
use super::properties::{MAX_BLOCK_DIM, MAX_GRID_DIM, MAX_THREADS_PER_BLOCK, OPTIN_SHARED_PER_BLOCK};
use super::stats;
use super::stream::{Failure, Work};
use crate::exec::{self, FaultKind};

/// The geometry of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks, x y z.
    pub grid: [u32; 3],
    /// Threads per block, x y z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block.
    pub dynamic_shared: u32,
}

/// What the driver checks before a launch: an error at the call, nothing queued.
pub fn check(function: &Function, g: &Geometry) -> Result<(), CUresult> {
    let invalid = CUresult::CUDA_ERROR_INVALID_VALUE;
    for i in 0..3 {
        if g.grid[i] == 0 || g.block[i] == 0 || g.grid[i] > MAX_GRID_DIM[i] || g.block[i] > MAX_BLOCK_DIM[i] {
            return Err(invalid);
        }
    }
    if function.kernel.required_block().is_some_and(|req| req != g.block) {
        return Err(invalid); // `.reqntid`
    }
    let threads = u64::from(g.block[0]) * u64::from(g.block[1]) * u64::from(g.block[2]);
    if threads > u64::from(MAX_THREADS_PER_BLOCK) {
        return Err(invalid);
    }
    if threads > u64::from(function.kernel.max_threads_per_block()) {
        return Err(CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    }
    let static_shared = function.kernel.static_shared_bytes() as u64;
    if g.dynamic_shared > function.max_dynamic_shared()
        || static_shared + u64::from(g.dynamic_shared) > u64::from(OPTIN_SHARED_PER_BLOCK)
    {
        return Err(invalid);
    }
    Ok(())
}

/// The parameter bytes of a launch from `kernelParams`: one pointer per parameter, each to
/// exactly that parameter's bytes.
///
/// # Safety
/// `params` must be NULL or point to one valid pointer per kernel parameter, each to as many
/// bytes as the parameter's size.
pub unsafe fn parameters(function: &Function, params: *const *const u8) -> Result<Vec<Vec<u8>>, CUresult> {
    let info = function.kernel.params();
    if info.is_empty() {
        return Ok(Vec::new());
    }
    if params.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let mut out = Vec::with_capacity(info.len());
    for (i, p) in info.iter().enumerate() {
        // SAFETY: the caller's promise: one pointer per parameter.
        let ptr = unsafe { *params.add(i) };
        if ptr.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller's promise: `size` bytes behind each pointer.
        out.push(unsafe { std::slice::from_raw_parts(ptr, p.size) }.to_vec());
    }
    Ok(out)
}

/// The work of one launch: runs the kernel over the memory live when it starts; a fault is the
/// context's sticky error.
pub fn work(memory: &'static MemoryTable, function: Arc<Function>, g: Geometry, params: Vec<Vec<u8>>) -> Work {
    Box::new(move || {
        let snapshot = memory.snapshot();
        let slices: Vec<&[u8]> = params.iter().map(Vec::as_slice).collect();
        let launch = exec::Launch {
            kernel: &function.kernel,
            grid: g.grid,
            block: g.block,
            dynamic_shared_bytes: g.dynamic_shared,
            params: &slices,
        };
        let start = std::time::Instant::now();
        let outcome = exec::run_with_stats(&launch, &snapshot);
        if let Ok(run) = &outcome {
            stats::record(run, start.elapsed());
        }
        outcome.map(|_| ()).map_err(|fault| {
            let code = match fault.kind {
                // Checked at the call; reaching the interpreter, it is a failed launch.
                FaultKind::InvalidLaunch => CUresult::CUDA_ERROR_LAUNCH_FAILED,
                _ => super::result_from_code(fault.cuda_error()),
            };
            Failure { code, message: fault.to_string() }
        })
    })
}
