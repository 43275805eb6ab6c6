//! Whether NCCL can run on this machine (the CUDA driver, the GPU, `libnccl`), found out
//! without a panic, and NCCL's errors as text.
//!
//! cudarc loads the CUDA driver and NCCL at their first use and panics when a library or a
//! symbol is missing: the CUDA side is the engine's probe ([`cuda_status`]), NCCL's library is
//! looked for with `is_culib_present` before any call, and the whole probe runs under
//! `catch_unwind` as a second net.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::nccl::result::{NcclError, get_nccl_version};
use cudarc::nccl::sys as nccl_sys;

use crate::engine::cuda::{CudaStatus, cuda_status};
use crate::error::{Error, Result};

/// The CUDA driver version qcalib's bindings (cudarc's `cuda-13000`) need: the CUDA engine's
/// [`MIN_DRIVER_VERSION`](crate::MIN_DRIVER_VERSION).
pub const DRIVER_NEEDED: i32 = crate::engine::cuda::MIN_DRIVER_VERSION;

/// What [`probe_nccl`] found on a machine where NCCL can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NcclInfo {
    /// The CUDA driver's version, e.g. 13000 for 13.0.
    pub driver_version: i32,
    /// The number of CUDA devices.
    pub devices: usize,
    /// NCCL's version code, e.g. 22803 for 2.28.3 (`major * 10000 + minor * 100 + patch`).
    pub nccl_version: i32,
}

impl NcclInfo {
    /// NCCL's version as `(major, minor, patch)`.
    pub fn nccl_semver(&self) -> (i32, i32, i32) {
        let v = self.nccl_version;
        (v / 10000, v / 100 % 100, v % 100)
    }
}

/// Whether NCCL can run on the GPU `cuda:ordinal`: an [`Error::Sync`] saying what is missing
/// (the driver, a device, the ordinal, `libnccl.so`) when it cannot. Never panics.
///
/// ```
/// // On a machine without a GPU or without NCCL this is an error that says what is missing.
/// match qcalib::sync::probe_nccl(0) {
///     Ok(info) => assert!(info.devices >= 1 && info.nccl_version > 0),
///     Err(e) => assert!(e.to_string().contains("NCCL")),
/// }
/// ```
pub fn probe_nccl(ordinal: usize) -> Result<NcclInfo> {
    catch_unwind(AssertUnwindSafe(|| probe(ordinal)))
        .unwrap_or_else(|_| Err("cudarc panicked while probing the CUDA driver and NCCL".to_string()))
        .map_err(|why| Error::Sync(format!("NCCL cannot run on cuda:{ordinal}: {why}")))
}

fn probe(ordinal: usize) -> Result<NcclInfo, String> {
    // The CUDA side is the engine's probe (run once per process, never panics).
    let (devices, driver_version) = match cuda_status() {
        CudaStatus::Ready { devices, driver_version, .. } => (devices, driver_version),
        CudaStatus::NoDriver => {
            return Err("the CUDA driver library (libcuda.so) was not found: this machine has no NVIDIA driver".into());
        }
        status => return Err(status.to_string()),
    };
    if ordinal >= devices {
        return Err(format!("there is no cuda:{ordinal}: this machine has {devices} CUDA device(s)"));
    }
    // SAFETY: only dlopen()s each candidate library name and closes it again.
    if !unsafe { nccl_sys::is_culib_present() } {
        return Err("libnccl.so was not found on the library path (cudarc looks for libnccl.so, not libnccl.so.2: \
             `source scripts/nccl-env.sh` links a Python venv's libnccl.so.2 as libnccl.so)"
            .into());
    }
    let nccl_version = get_nccl_version().map_err(|e| nccl_error_text(&e))?;
    Ok(NcclInfo { driver_version, devices, nccl_version })
}

/// An NCCL error as text: its code, NCCL's description of the code, and NCCL's last message.
/// Only for errors NCCL returned (the library is loaded then); an NCCL too old to have
/// `ncclGetLastError` (cudarc panics on a missing symbol) gives the code alone.
pub(crate) fn nccl_error_text(e: &NcclError) -> String {
    let text = |p: *const std::ffi::c_char| {
        // SAFETY: non-NULL pointers from NCCL point to static NUL-terminated strings.
        if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() }
    };
    // SAFETY: both return pointers to static strings, or NULL; ncclGetLastError's communicator
    // argument is unused ("can be set to NULL" in NCCL's documentation).
    let code = catch_unwind(|| text(unsafe { nccl_sys::ncclGetErrorString(e.0) })).unwrap_or_default();
    let last = catch_unwind(|| text(unsafe { nccl_sys::ncclGetLastError(std::ptr::null_mut()) })).unwrap_or_default();
    if last.is_empty() { format!("{:?} ({code})", e.0) } else { format!("{:?} ({code}): {last}", e.0) }
}
