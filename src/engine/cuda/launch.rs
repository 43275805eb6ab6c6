//! Thin safe wrappers around cudarc's kernel launch: every kernel has a [`KernelSpec`] (its
//! module, name and parameter types), a test checks each spec against the `.entry` of the PTX,
//! and a [`Launch`] records the type of every argument pushed and refuses to launch when they
//! differ from the spec. So an argument of the wrong type or in the wrong place is an error,
//! never a kernel reading garbage.

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, CudaView, LaunchArgs, LaunchConfig, PushKernelArg};

use super::error::GpuError;

/// Threads per block of every kernel (`BLOCK_THREADS` in `kernels/common.cuh`).
pub(crate) const BLOCK_THREADS: u32 = 256;

/// The most blocks along the y and z axes of a grid.
pub(crate) const MAX_GRID_YZ: u64 = 65_535;

/// The most blocks along the x axis of a grid.
pub(crate) const MAX_GRID_X: u64 = (1 << 31) - 1;

/// The type of a kernel parameter, as the C signature has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    /// A device pointer (`const T*`, `T*`).
    Ptr,
    /// `unsigned long long`.
    U64,
    /// `unsigned int`.
    U32,
    /// `float`.
    F32,
    /// `double`.
    F64,
}

impl Param {
    /// The PTX parameter type (what the tests compare with the `.entry` of the PTX).
    #[cfg(test)]
    pub(crate) fn ptx_type(self) -> &'static str {
        match self {
            Param::Ptr | Param::U64 => ".u64",
            Param::U32 => ".u32",
            Param::F32 => ".f32",
            Param::F64 => ".f64",
        }
    }
}

/// One kernel entry point.
#[derive(Debug)]
pub(crate) struct KernelSpec {
    /// The kernel file (`kernels/<module>.cu`).
    pub module: &'static str,
    /// The `extern "C"` name.
    pub name: &'static str,
    /// The parameters, in order.
    pub params: &'static [Param],
}

/// A kernel loaded into a context, with its spec.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub spec: &'static KernelSpec,
    pub function: CudaFunction,
}

/// The arguments of one launch of `kernel` on `stream`, checked against its spec.
pub(crate) struct Launch<'a> {
    args: LaunchArgs<'a>,
    kernel: &'a Kernel,
    pushed: Vec<Param>,
}

impl<'a> Launch<'a> {
    /// A launch of `kernel` on `stream`.
    pub(crate) fn new(stream: &'a CudaStream, kernel: &'a Kernel) -> Self {
        Launch { args: stream.launch_builder(&kernel.function), kernel, pushed: Vec::new() }
    }

    /// A device buffer the kernel reads.
    pub(crate) fn view<T>(&mut self, x: &'a CudaView<'_, T>) -> &mut Self {
        self.args.arg(x);
        self.pushed.push(Param::Ptr);
        self
    }

    /// A device buffer the kernel reads.
    pub(crate) fn slice<T>(&mut self, x: &'a CudaSlice<T>) -> &mut Self {
        self.args.arg(x);
        self.pushed.push(Param::Ptr);
        self
    }

    /// A device buffer the kernel writes.
    pub(crate) fn slice_mut<T>(&mut self, x: &'a mut CudaSlice<T>) -> &mut Self {
        self.args.arg(x);
        self.pushed.push(Param::Ptr);
        self
    }

    /// An `unsigned long long`.
    pub(crate) fn u64(&mut self, v: &'a u64) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::U64);
        self
    }

    /// An `unsigned int`.
    pub(crate) fn u32(&mut self, v: &'a u32) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::U32);
        self
    }

    /// A `float`.
    pub(crate) fn f32(&mut self, v: &'a f32) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::F32);
        self
    }

    /// A `double`.
    pub(crate) fn f64(&mut self, v: &'a f64) -> &mut Self {
        self.args.arg(v);
        self.pushed.push(Param::F64);
        self
    }

    /// Queues the kernel on the stream with `grid` blocks of [`BLOCK_THREADS`] threads and
    /// `shared_bytes` of dynamic shared memory. Faults inside the kernel surface at the next
    /// synchronising call (the copy of its results).
    pub(crate) fn launch(&mut self, grid: (u64, u64, u64), shared_bytes: u32) -> Result<(), GpuError> {
        let spec = self.kernel.spec;
        if self.pushed != spec.params {
            return Err(GpuError::Internal(format!(
                "kernel {} takes {:?}, the launcher passed {:?}",
                spec.name, spec.params, self.pushed
            )));
        }
        let (x, y, z) = grid;
        if x == 0 || y == 0 || z == 0 || x > MAX_GRID_X || y > MAX_GRID_YZ || z > MAX_GRID_YZ {
            return Err(GpuError::Internal(format!("kernel {}: grid {grid:?} is out of range", spec.name)));
        }
        let cfg = LaunchConfig {
            grid_dim: (x as u32, y as u32, z as u32),
            block_dim: (BLOCK_THREADS, 1, 1),
            shared_mem_bytes: shared_bytes,
        };
        // SAFETY: the arguments match the kernel's parameters in number, order and type (checked
        // just above against the spec; the spec is checked against the PTX's `.entry` by the
        // tests), every buffer outlives the launch (the borrows in `LaunchArgs`), and the
        // kernels read and write only inside the lengths their launchers pass.
        unsafe { self.args.launch(cfg) }?;
        Ok(())
    }
}

/// How a dimension of `units` is cut into pieces of `per` units: `(per, pieces)`, aiming at
/// `target` units a piece, with at most `max_pieces` pieces and at most `max_per` units a piece.
/// Depends on nothing but its arguments (the sums of the fake-quant kernels are deterministic
/// because their grid is).
pub(crate) fn split(units: u64, target: u64, max_pieces: u64, max_per: u64) -> Option<(u64, u64)> {
    let units = units.max(1);
    let per = units.div_ceil(max_pieces.max(1)).max(target.max(1)).min(max_per.max(1));
    let pieces = units.div_ceil(per);
    (pieces <= max_pieces.max(1)).then_some((per, pieces))
}

/// `ceil(2^32 / inner)` for `2 <= inner < 256` (the kernels' division by `inner` as a
/// multiply-high), else 0 (unused).
pub(crate) fn inner_magic(inner: u64) -> u32 {
    if (2..u64::from(BLOCK_THREADS)).contains(&inner) { (1u64 << 32).div_ceil(inner) as u32 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_units_within_the_limits() {
        for units in [1u64, 2, 255, 256, 1 << 20, (1 << 20) + 3, 1 << 40] {
            for (target, max_pieces, max_per) in
                [(1u64, 65_535u64, u64::MAX), (8192, 4096, u64::MAX), (64, 65_535, 1 << 24)]
            {
                let Some((per, pieces)) = split(units, target, max_pieces, max_per) else {
                    assert!(units.div_ceil(max_per) > max_pieces, "{units} {target} {max_pieces} {max_per}");
                    continue;
                };
                assert!(per >= 1 && per <= max_per && pieces >= 1 && pieces <= max_pieces);
                assert!(per * pieces >= units && per * (pieces - 1) < units, "{units}: {per} x {pieces}");
            }
        }
        assert_eq!(split(0, 10, 5, 100), Some((10, 1)));
        assert_eq!(split(100, 10, 5, 100), Some((20, 5)));
        assert_eq!(split(1000, 1, 5, 100), None);
    }

    #[test]
    fn the_magic_number_divides_the_thread_indices() {
        for inner in 2..256u64 {
            let m = inner_magic(inner) as u64;
            for k in 0..=u64::from(BLOCK_THREADS) {
                assert_eq!((k * m) >> 32, k / inner, "k {k} inner {inner}");
            }
        }
        assert_eq!(inner_magic(1), 0);
        assert_eq!(inner_magic(256), 0);
    }
}
