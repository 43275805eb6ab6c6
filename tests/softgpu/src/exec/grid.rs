//! A launch: its checks, its parameter buffer, and its blocks spread over the host's cores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::block::Worker;
use super::{Fault, FaultKind, GlobalMemory, Launch, MAX_BLOCK, MAX_GRID, MAX_SHARED_BYTES_PER_BLOCK, RunStats};

/// The most bytes of registers a block may need in the interpreter (a 64-bit slot per declared
/// register and thread); nvcc's kernels need a few MiB at most.
const MAX_REGISTER_FILE_BYTES: u64 = 256 << 20;

/// What every block of a launch shares.
pub(crate) struct Plan<'a> {
    pub launch: &'a Launch<'a>,
    pub memory: &'a dyn GlobalMemory,
    /// The parameters, laid out as the kernel reads them.
    pub params: Vec<u8>,
    pub threads_per_block: u32,
    /// Static and dynamic shared memory of one block.
    pub shared_bytes: usize,
}

fn invalid(launch: &Launch<'_>, detail: String) -> Fault {
    Fault {
        kind: FaultKind::InvalidLaunch,
        kernel: launch.kernel.name().to_string(),
        ptx_line: 0,
        block: [0; 3],
        thread: [0; 3],
        detail,
    }
}

/// Checks that the kernel can take `launch` and lays out its parameters.
fn plan<'a>(launch: &'a Launch<'a>, memory: &'a dyn GlobalMemory) -> Result<Plan<'a>, Fault> {
    let k = launch.kernel;
    if launch.params.len() != k.params.len() {
        return Err(invalid(
            launch,
            format!("{} parameters passed, the kernel takes {}", launch.params.len(), k.params.len()),
        ));
    }
    let mut params = vec![0u8; k.param_bytes];
    for (i, (p, info)) in launch.params.iter().zip(&k.params).enumerate() {
        if p.len() != info.size {
            return Err(invalid(
                launch,
                format!("parameter {i} has {} bytes, the kernel takes {}", p.len(), info.size),
            ));
        }
        let at = k.param_offsets[i];
        params[at..at + p.len()].copy_from_slice(p);
    }
    for (axis, (&g, &max)) in launch.grid.iter().zip(&MAX_GRID).enumerate() {
        if g == 0 || g > max {
            return Err(invalid(launch, format!("grid dimension {axis} is {g} (1 to {max})")));
        }
    }
    for (axis, (&b, &max)) in launch.block.iter().zip(&MAX_BLOCK).enumerate() {
        if b == 0 || b > max {
            return Err(invalid(launch, format!("block dimension {axis} is {b} (1 to {max})")));
        }
    }
    let threads = launch.block.iter().map(|&b| u64::from(b)).product::<u64>();
    if threads > u64::from(k.max_threads_per_block) {
        return Err(invalid(
            launch,
            format!("{threads} threads per block, the kernel takes at most {}", k.max_threads_per_block),
        ));
    }
    if let Some(req) = k.reqntid
        && req != launch.block
    {
        return Err(invalid(launch, format!("block {:?}, the kernel requires {req:?} (.reqntid)", launch.block)));
    }
    // The interpreter's register file of a block: a 64-bit slot per register and thread.
    let register_bytes = u64::from(k.value_regs) * 8 * threads.div_ceil(32) * 32;
    if register_bytes > MAX_REGISTER_FILE_BYTES {
        return Err(invalid(
            launch,
            format!(
                "{} registers x {threads} threads need {register_bytes} bytes of registers (at most \
                 {MAX_REGISTER_FILE_BYTES}): too many resources requested for launch",
                k.value_regs
            ),
        ));
    }
    let shared = k.dynamic_shared_offset + launch.dynamic_shared_bytes as usize;
    let total = k.static_shared_bytes + launch.dynamic_shared_bytes as usize;
    if total > MAX_SHARED_BYTES_PER_BLOCK {
        return Err(invalid(
            launch,
            format!("{total} bytes of shared memory per block (at most {MAX_SHARED_BYTES_PER_BLOCK})"),
        ));
    }
    Ok(Plan { launch, memory, params, threads_per_block: threads as u32, shared_bytes: shared })
}

/// Runs every block of `launch`.
pub(crate) fn run(launch: &Launch<'_>, memory: &dyn GlobalMemory) -> Result<RunStats, Fault> {
    let plan = plan(launch, memory)?;
    let [gx, gy, gz] = launch.grid.map(u64::from);
    let blocks = gx * gy * gz;
    let workers = (rayon::current_num_threads() as u64).clamp(1, blocks) as usize;
    let next = AtomicU64::new(0);
    // The lowest faulting block so far: blocks after it need not run.
    let stop = AtomicU64::new(u64::MAX);
    let faults = Mutex::new(Vec::<(u64, Fault)>::new());
    let totals = Mutex::new(RunStats::default());
    let work = || {
        let mut worker = Worker::new(&plan);
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= blocks || b > stop.load(Ordering::Relaxed) {
                break;
            }
            let index = [(b % gx) as u32, ((b / gx) % gy) as u32, (b / (gx * gy)) as u32];
            if let Err(f) = worker.run_block(index) {
                stop.fetch_min(b, Ordering::Relaxed);
                if let Ok(mut list) = faults.lock() {
                    list.push((b, f));
                }
            }
        }
        if let Ok(mut t) = totals.lock() {
            t.blocks += worker.env.stats.blocks;
            t.warp_instructions += worker.env.stats.warp_instructions;
            t.lane_instructions += worker.env.stats.lane_instructions;
        }
    };
    if workers == 1 {
        work();
    } else {
        rayon::scope(|s| {
            for _ in 0..workers {
                s.spawn(|_| work());
            }
        });
    }
    let mut faults = faults.into_inner().unwrap_or_else(|e| e.into_inner());
    faults.sort_by_key(|(b, _)| *b);
    if let Some((_, f)) = faults.into_iter().next() {
        return Err(f);
    }
    Ok(totals.into_inner().unwrap_or_else(|e| e.into_inner()))
}
