//! `cuInit` and `cuDriverGetVersion`.

use std::ffi::{c_int, c_uint};

use cudarc::driver::sys::CUresult;

use super::{call, out};
use crate::device::{self, properties::DRIVER_VERSION};

/// Starts the driver. `flags` must be 0.
#[unsafe(no_mangle)]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    call(|| {
        if flags != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        device::init().map(|_| ())
    })
}

/// The CUDA version of the driver: 13000. Needs no `cuInit`.
///
/// # Safety
/// `driver_version` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(driver_version: *mut c_int) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| unsafe { out(driver_version, DRIVER_VERSION) })
}
