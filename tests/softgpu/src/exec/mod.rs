//! Running a decoded kernel over a grid: blocks in parallel over the host's cores, the 32 lanes
//! of a warp together, and every check of [`FaultKind`] on every access.
//!
//! # Semantics
//!
//! Each instruction follows NVIDIA's PTX ISA (version 9), instruction by instruction; the file
//! of each family says where the ISA leaves a choice and what softgpu does:
//!
//! - `int`: wrapping arithmetic; `mul.hi`, `mul.wide`; shifts clamp their amount to the width;
//!   `div` and `rem` by zero (which the ISA leaves "unspecified, machine-specific") give all
//!   ones, as NVIDIA GPUs are reported to.
//! - `float`: IEEE binary32/binary64 with round-to-nearest-even; `.ftz` flushes subnormal
//!   `.f32` inputs and results to zeros of the same sign; `.sat` clamps to [0, 1] with NaN to
//!   +0; NaN results are the canonical NaN (`0x7fffffff` for `.f32`, as CUDA documents;
//!   `0x7fffffffffffffff` for `.f64`, where the ISA does not say); `min`/`max` return the
//!   non-NaN operand and order -0 below +0; `abs.f64`/`neg.f64` pass NaN through unchanged.
//!   `rcp.approx.ftz.f64` follows the ISA's description exactly: the reciprocal of the high 32
//!   bits of the operand, rounded to 20 fraction bits (the low word of the result is zero).
//!   No other `.approx` instruction is implemented.
//! - `convert`: every `cvt` rounding mode; float-to-integer conversions clamp to the
//!   destination's range, and NaN gives 0, or `1 << (bits - 1)` when the source is `.f64` or
//!   the destination has 64 bits (the ISA's rule).
//! - `memory`: global accesses through the driver's [`GlobalMemory`] with host atomics (blocks
//!   run in parallel), shared memory per block, the parameter buffer.
//! - `warp`: the 32 lanes run together; each lane has its own program counter and the lanes
//!   with the lowest one run first, so divergent branches run one side, then the other, and
//!   reconverge where the program counters meet.
//! - `block`: the warps of a block run in turn until each waits at a barrier or exits;
//!   `bar.sync` then completes (see [`FaultKind::BarrierDivergence`] for when it may not).
//!
//! # Checks a real GPU does not make
//!
//! Each stops the launch with a [`Fault`] naming the kernel, the PTX line, the block and the
//! thread: a global access outside every live allocation, a shared access outside the block's
//! shared memory, a misaligned access, a read of shared memory the block never wrote, a
//! `bar.sync` not every thread reaches, a `shfl.sync` whose mask is wrong, and a launch the
//! kernel cannot take.
//!
//! # What softgpu cannot check
//!
//! - Timing: blocks run in any order, a warp runs until it waits, and nothing measures time.
//! - The memory model beyond barriers and atomics: a data race between blocks (or between warps
//!   of a block without a barrier) is not detected, and plain accesses are never reordered,
//!   so a kernel missing a fence can pass here and fail on hardware. Fences (`membar`,
//!   `fence`) are not implemented at all. `ld.global.nc` of data the kernel itself writes
//!   (undefined on hardware) reads the current value here.
//! - The driver's compilation of PTX to machine code (ptxas): its bugs, register pressure,
//!   spills and launch failures for lack of registers.
//! - Hardware limits other than those of [`run`]'s launch checks (registers per block,
//!   occupancy), and what the hardware does for undefined behaviour (it is an error here).
//! - Registers read before they are written: they hold `0xDEADBEEFDEADBEEF` in the first block
//!   a host thread runs and whatever the previous block left after that, not a fault.
//! - `bra.uni` that diverges (undefined): it is run as `bra`.
//! - Forward progress: a warp spinning on a value another lane of the same warp must write
//!   (possible with independent thread scheduling) never ends, as lanes run lowest PC first;
//!   and a kernel that loops forever hangs the launch, as on hardware (there is no watchdog).
//!
//! # Speed
//!
//! The PTX is decoded once per module; each instruction then runs as one loop over the 32
//! lanes of a warp, and blocks run in parallel on rayon's threads (one worker per thread,
//! each reusing its register files and shared memory from block to block). On qcalib's
//! kernels this is several hundred million lane-instructions per second per host core
//! (`cargo run -p softgpu --release --example throughput`).

mod block;
mod compare;
mod convert;
mod float;
mod grid;
mod int;
mod lanes;
mod memory;
mod shuffle;
pub(crate) mod softfloat;
mod warp;

use crate::ptx::Kernel;

/// The most shared memory (static and dynamic) a block may have: 227 KiB, the opt-in maximum of
/// sm_90. The default of 48 KiB of dynamic shared memory and its opt-in attribute are the
/// driver's to check.
pub const MAX_SHARED_BYTES_PER_BLOCK: usize = 227 * 1024;

/// The largest grid: x, y, z.
pub const MAX_GRID: [u32; 3] = [(1 << 31) - 1, 65_535, 65_535];

/// The largest block: x, y, z (and at most 1024 threads in all).
pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];

/// A live allocation of global memory: its device range and where its bytes are on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The device address of its first byte.
    pub base: u64,
    /// Its length in bytes.
    pub len: u64,
    /// The host address of its first byte.
    pub host: *mut u8,
}

/// Global memory as the device sees it: the driver's table of live allocations.
///
/// The interpreter reads and writes the host bytes with atomic operations of the access's size
/// (blocks run in parallel), so the host address of every device address `a` must be aligned as
/// `a` is, modulo 16; and the memory must stay allocated while [`run`] runs.
pub trait GlobalMemory: Sync {
    /// The host address of the `len` bytes at device address `addr`, when they lie wholly inside
    /// one live allocation; `None` otherwise (the access is then an illegal address).
    fn resolve(&self, addr: u64, len: u64) -> Option<*mut u8>;

    /// The live allocation that contains `addr`, if the driver can tell. The interpreter keeps
    /// the last one it got per worker and checks accesses inside it without calling
    /// [`GlobalMemory::resolve`]: implementing this makes launches faster, never different.
    fn allocation(&self, addr: u64) -> Option<Allocation> {
        let _ = addr;
        None
    }
}

/// One launch: the kernel, its geometry and its arguments.
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    /// The kernel.
    pub kernel: &'a Kernel,
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes (after the kernel's static shared memory).
    pub dynamic_shared_bytes: u32,
    /// One byte slice per kernel parameter, of exactly that parameter's size.
    pub params: &'a [&'a [u8]],
}

/// What stopped a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A global access outside every live allocation, or a shared access outside the block's
    /// shared memory (`CUDA_ERROR_ILLEGAL_ADDRESS`).
    IllegalAddress,
    /// An access not aligned to its size (`CUDA_ERROR_MISALIGNED_ADDRESS`).
    MisalignedAddress,
    /// A read of shared memory that no thread of the block wrote (`CUDA_ERROR_ILLEGAL_ADDRESS`:
    /// a real GPU would return garbage). Atomics read what they modify, so they count as reads.
    UninitializedShared,
    /// A `bar.sync` that not every live thread of the block reaches (`CUDA_ERROR_ILLEGAL_INSTRUCTION`).
    ///
    /// `bar.sync` is `barrier.sync.aligned`: the PTX ISA requires every thread of the block to
    /// execute the same barrier instruction. So a barrier completes when every thread of the
    /// block waits at it, and it is this fault when, with every thread of the block either
    /// exited or waiting, some thread has exited (it will never arrive) or the threads wait at
    /// different `bar.sync` instructions. (A block whose threads all exit, having passed the
    /// same barriers, is fine.)
    BarrierDivergence,
    /// A `shfl.sync` whose mask misses a lane that takes part, or names an exited one
    /// (`CUDA_ERROR_ILLEGAL_INSTRUCTION`).
    ///
    /// Precisely: a lane executing `shfl.sync` must be in its own `membermask`, every lane
    /// executing it must pass the same `membermask`, every lane named must be a thread of the
    /// block that has not exited, and every lane a value is read from must be in the mask. The
    /// lanes wait for each other at the instruction (as the ISA says); if a named lane can never
    /// arrive (its warp has no other lane left to run), that is this fault too.
    ShuffleMask,
    /// A launch the kernel cannot take: the wrong parameters, too many threads, too much shared
    /// memory (`CUDA_ERROR_INVALID_VALUE`; reported before anything runs).
    InvalidLaunch,
}

/// A fault: what, where in the PTX, and which block and thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What went wrong.
    pub kind: FaultKind,
    /// The kernel.
    pub kernel: String,
    /// The line of the PTX text of the faulting instruction (0 for [`FaultKind::InvalidLaunch`]).
    pub ptx_line: usize,
    /// The block, x y z.
    pub block: [u32; 3],
    /// The thread within the block, x y z.
    pub thread: [u32; 3],
    /// The details: the address, the access size, the instruction.
    pub detail: String,
}

impl Fault {
    /// The `CUresult` a real driver would report for this fault.
    pub fn cuda_error(&self) -> u32 {
        match self.kind {
            FaultKind::IllegalAddress | FaultKind::UninitializedShared => 700, // CUDA_ERROR_ILLEGAL_ADDRESS
            FaultKind::MisalignedAddress => 716,                               // CUDA_ERROR_MISALIGNED_ADDRESS
            FaultKind::BarrierDivergence | FaultKind::ShuffleMask => 715,      // CUDA_ERROR_ILLEGAL_INSTRUCTION
            FaultKind::InvalidLaunch => 1,                                     // CUDA_ERROR_INVALID_VALUE
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [bx, by, bz] = self.block;
        let [tx, ty, tz] = self.thread;
        write!(
            f,
            "softgpu: {:?} in kernel `{}` at PTX line {}, block ({bx}, {by}, {bz}) thread ({tx}, {ty}, {tz}): {}",
            self.kind, self.kernel, self.ptx_line, self.detail
        )
    }
}

impl std::error::Error for Fault {}

/// What a launch executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Blocks run.
    pub blocks: u64,
    /// Instructions issued to a warp (once for all its lanes that take part).
    pub warp_instructions: u64,
    /// Instructions issued, counted once per lane that takes part (guarded-off lanes included).
    pub lane_instructions: u64,
}

/// Runs `launch` to completion over `memory`, or to the first fault.
///
/// When several blocks fault, the fault of the lowest block (x fastest, then y, then z) is
/// returned; blocks after it may not have run.
pub fn run(launch: &Launch<'_>, memory: &dyn GlobalMemory) -> Result<(), Fault> {
    grid::run(launch, memory).map(|_| ())
}

/// [`run`], returning what was executed.
pub fn run_with_stats(launch: &Launch<'_>, memory: &dyn GlobalMemory) -> Result<RunStats, Fault> {
    grid::run(launch, memory)
}
