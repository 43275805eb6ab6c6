//! Is there a usable CUDA driver and GPU? Asked once per process, without ever panicking:
//! cudarc panics when the driver library or one of its symbols is missing, so the library is
//! looked for first, its version checked, and the whole probe runs under `catch_unwind` as a
//! second net.

use std::ffi::c_int;
use std::fmt;
use std::sync::OnceLock;

use cudarc::driver::{CudaContext, result, sys};

/// The oldest driver the engine runs on: cudarc's bindings are CUDA 13.0's, and nvcc 13.0's PTX
/// (ISA 9.0) needs a 13.0 driver.
pub const MIN_DRIVER_VERSION: i32 = 13_000;

/// What the CUDA probe found (see [`cuda_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaStatus {
    /// No CUDA driver library (`libcuda.so.1`, `nvcuda.dll`) could be loaded.
    NoDriver,
    /// The driver is older than [`MIN_DRIVER_VERSION`].
    DriverTooOld {
        /// The driver's CUDA version, e.g. `12040` for 12.4.
        found: i32,
        /// [`MIN_DRIVER_VERSION`].
        needed: i32,
    },
    /// The driver works but sees no GPU.
    NoDevice,
    /// The driver failed (its message).
    Failed(String),
    /// The CUDA engine can run.
    Ready {
        /// The number of GPUs.
        devices: usize,
        /// The driver's CUDA version, e.g. `13000` for 13.0.
        driver_version: i32,
        /// The name of GPU 0, e.g. `NVIDIA H100 80GB HBM3`; `softgpu (PTX interpreter)` for the
        /// software GPU of qcalib's tests (see [`CudaStatus::is_softgpu`]).
        name: String,
    },
}

/// The start of the device name of softgpu, the software GPU of qcalib's tests
/// (`tests/softgpu`, `scripts/softgpu-env.sh`).
const SOFTGPU_NAME_PREFIX: &str = "softgpu";

impl CudaStatus {
    /// Whether the "GPU" is softgpu, the PTX interpreter of qcalib's tests: results are checked
    /// in software, timings say nothing about a GPU.
    ///
    /// ```
    /// let status = qcalib::cuda_status();
    /// if status.is_softgpu() {
    ///     println!("{status}: timings mean nothing here");
    /// }
    /// ```
    pub fn is_softgpu(&self) -> bool {
        matches!(self, CudaStatus::Ready { name, .. } if name.starts_with(SOFTGPU_NAME_PREFIX))
    }
}

impl fmt::Display for CudaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = |v: i32| format!("{}.{}", v / 1000, (v % 1000) / 10);
        match self {
            CudaStatus::NoDriver => f.write_str("no CUDA driver: the library libcuda could not be loaded"),
            CudaStatus::DriverTooOld { found, needed } => write!(
                f,
                "the CUDA driver supports CUDA {}, qcalib's kernels need {} or newer",
                version(*found),
                version(*needed)
            ),
            CudaStatus::NoDevice => f.write_str("the CUDA driver sees no GPU"),
            CudaStatus::Failed(m) => write!(f, "the CUDA driver failed: {m}"),
            CudaStatus::Ready { devices, driver_version, name } => {
                write!(f, "{devices} GPU(s) ({name}), CUDA driver {}", version(*driver_version))
            }
        }
    }
}

/// Whether this process can run the CUDA engine: probed on the first call, then remembered.
/// Never panics, whatever the machine has.
///
/// ```
/// let status = qcalib::cuda_status();
/// println!("CUDA: {status}");
/// ```
pub fn cuda_status() -> CudaStatus {
    static STATUS: OnceLock<CudaStatus> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            std::panic::catch_unwind(probe)
                .unwrap_or_else(|_| CudaStatus::Failed("the CUDA driver library panicked while probing".into()))
        })
        .clone()
}

fn probe() -> CudaStatus {
    // SAFETY: only dlopen()s each candidate library name and closes it again.
    if !unsafe { sys::is_culib_present() } {
        return CudaStatus::NoDriver;
    }
    let mut version: c_int = 0;
    // SAFETY: writes one int; needs no cuInit. The library is present (checked above).
    if let Err(e) = unsafe { sys::cuDriverGetVersion(&mut version) }.result() {
        return CudaStatus::Failed(super::error::describe(&e));
    }
    if version < MIN_DRIVER_VERSION {
        return CudaStatus::DriverTooOld { found: version, needed: MIN_DRIVER_VERSION };
    }
    // No context is made here (a context retained on GPU 0 costs memory and time there).
    let name = |n| {
        result::device::get(0)
            .and_then(result::device::get_name)
            .map(|name| CudaStatus::Ready { devices: n as usize, driver_version: version, name })
            .unwrap_or_else(|e| CudaStatus::Failed(super::error::describe(&e)))
    };
    match CudaContext::device_count() {
        Ok(n) if n > 0 => name(n),
        Ok(_) => CudaStatus::NoDevice,
        Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NO_DEVICE => CudaStatus::NoDevice,
        Err(e) => CudaStatus::Failed(super::error::describe(&e)),
    }
}
