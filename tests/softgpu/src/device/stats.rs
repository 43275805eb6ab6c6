//! What the interpreter ran, counted over the process: launches, blocks, instructions and the
//! time the kernels took. With `SOFTGPU_STATS=<file>`, a JSON line of the totals is appended to
//! the file when the process exits (how the README's throughput figures were measured).

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::exec::RunStats;

/// The variable naming the file the totals are appended to.
pub const STATS_VAR: &str = "SOFTGPU_STATS";

static LAUNCHES: AtomicU64 = AtomicU64::new(0);
static BLOCKS: AtomicU64 = AtomicU64::new(0);
static WARP_INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);
static LANE_INSTRUCTIONS: AtomicU64 = AtomicU64::new(0);
static KERNEL_NANOS: AtomicU64 = AtomicU64::new(0);

/// The totals so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Kernels run (to the end or to a fault).
    pub launches: u64,
    /// Blocks run.
    pub blocks: u64,
    /// Instructions issued to a warp.
    pub warp_instructions: u64,
    /// Instructions per lane (what one thread of a real GPU executes).
    pub lane_instructions: u64,
    /// Wall time inside the interpreter.
    pub kernel_time: Duration,
}

/// Adds one launch.
pub fn record(run: &RunStats, took: Duration) {
    register_report();
    LAUNCHES.fetch_add(1, Ordering::Relaxed);
    BLOCKS.fetch_add(run.blocks, Ordering::Relaxed);
    WARP_INSTRUCTIONS.fetch_add(run.warp_instructions, Ordering::Relaxed);
    LANE_INSTRUCTIONS.fetch_add(run.lane_instructions, Ordering::Relaxed);
    KERNEL_NANOS.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
}

/// The totals of this process so far.
pub fn totals() -> Totals {
    Totals {
        launches: LAUNCHES.load(Ordering::Relaxed),
        blocks: BLOCKS.load(Ordering::Relaxed),
        warp_instructions: WARP_INSTRUCTIONS.load(Ordering::Relaxed),
        lane_instructions: LANE_INSTRUCTIONS.load(Ordering::Relaxed),
        kernel_time: Duration::from_nanos(KERNEL_NANOS.load(Ordering::Relaxed)),
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

fn register_report() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(STATS_VAR).is_some() {
            // SAFETY: C's atexit with a function that takes and returns nothing.
            unsafe { atexit(report) };
        }
    });
}

extern "C" fn report() {
    let Some(path) = std::env::var_os(STATS_VAR) else { return };
    let t = totals();
    let line = format!(
        "{{\"pid\": {}, \"launches\": {}, \"blocks\": {}, \"warp_instructions\": {}, \"lane_instructions\": {}, \
         \"kernel_seconds\": {:.6}}}\n",
        std::process::id(),
        t.launches,
        t.blocks,
        t.warp_instructions,
        t.lane_instructions,
        t.kernel_time.as_secs_f64()
    );
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}
