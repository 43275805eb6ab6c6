//! Running a decoded kernel over a grid: blocks in parallel over the host's cores, the 32 lanes
//! of a warp together, and every check of [`FaultKind`] on every access.

use crate::ptx::Kernel;

/// Global memory as the device sees it: the driver's table of live allocations.
pub trait GlobalMemory: Sync {
    /// The host address of the `len` bytes at device address `addr`, when they lie wholly inside
    /// one live allocation; `None` otherwise (the access is then an illegal address).
    fn resolve(&self, addr: u64, len: u64) -> Option<*mut u8>;
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
    /// a real GPU would return garbage).
    UninitializedShared,
    /// A `bar.sync` that not every live thread of the block reaches (`CUDA_ERROR_ILLEGAL_INSTRUCTION`).
    BarrierDivergence,
    /// A `shfl.sync` whose mask misses a lane that takes part, or names an exited one
    /// (`CUDA_ERROR_ILLEGAL_INSTRUCTION`).
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

/// Runs `launch` to completion over `memory`, or to the first fault.
pub fn run(launch: &Launch<'_>, memory: &dyn GlobalMemory) -> Result<(), Fault> {
    let _ = memory;
    Err(Fault {
        kind: FaultKind::InvalidLaunch,
        kernel: launch.kernel.name().to_string(),
        ptx_line: 0,
        block: [0; 3],
        thread: [0; 3],
        detail: "the interpreter is not written yet".into(),
    })
}
