//! Whether NCCL can run on this machine (the CUDA driver, the GPU, `libnccl`), found out
//! without a panic, and NCCL's errors as text.
//!
//! cudarc loads the CUDA driver and NCCL at their first use and panics when a library or a
//! symbol is missing, so every call into them is preceded by `is_culib_present` probes and the
//! whole probe runs under `catch_unwind` as a second net.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::driver::{CudaContext, sys as driver_sys};
use cudarc::nccl::result::{NcclError, get_nccl_version};
use cudarc::nccl::sys as nccl_sys;

use crate::error::{Error, Result};

/// The CUDA driver version qcalib's bindings (cudarc's `cuda-13000`) need.
pub const DRIVER_NEEDED: i32 = 13000;

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
    // SAFETY: only dlopen()s each candidate library name and closes it again.
    if !unsafe { driver_sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) was not found: this machine has no NVIDIA driver".into());
    }
    let mut driver_version: std::ffi::c_int = 0;
    // SAFETY: the library is present; cuDriverGetVersion writes one int and needs no cuInit.
    unsafe { driver_sys::cuDriverGetVersion(&mut driver_version) }
        .result()
        .map_err(|e| format!("cuDriverGetVersion failed: {e}"))?;
    if driver_version < DRIVER_NEEDED {
        return Err(format!(
            "the CUDA driver supports CUDA {}.{}, older than the {}.{} qcalib is built for",
            driver_version / 1000,
            driver_version % 1000 / 10,
            DRIVER_NEEDED / 1000,
            DRIVER_NEEDED % 1000 / 10
        ));
    }
    let devices = match CudaContext::device_count() {
        Ok(n) => usize::try_from(n).unwrap_or(0),
        Err(e) if e.0 == driver_sys::CUresult::CUDA_ERROR_NO_DEVICE => 0,
        Err(e) => return Err(format!("the CUDA driver failed to start: {e}")),
    };
    if devices == 0 {
        return Err("the CUDA driver sees no device".into());
    }
    if ordinal >= devices {
        return Err(format!("there is no cuda:{ordinal}: this machine has {devices} CUDA device(s)"));
    }
    // SAFETY: as above, for NCCL's candidate names.
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
