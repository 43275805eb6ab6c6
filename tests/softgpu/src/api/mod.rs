//! The exported C functions of the CUDA driver API (`cu*`) and of NCCL (`nccl*`): argument
//! checks, error codes, the calling thread's context; the work itself is in [`crate::device`]
//! and [`crate::nccl`]. They are public so that softgpu's own tests call them as a C program
//! would, with the types of cudarc's bindings.
//!
//! Every function catches panics (a panic must not unwind into C) and reports them as
//! `CUDA_ERROR_UNKNOWN`. Every function except `cuInit`, `cuDriverGetVersion` and the error
//! strings returns `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`, and every function that works on
//! a context returns its sticky error after a fault.

pub mod context;
pub mod device;
pub mod error;
pub mod event;
pub mod init;
pub mod launch;
pub mod memory;
pub mod module;
pub mod nccl;
pub mod not_supported;
pub mod stream;

use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::driver::sys::CUresult;

/// Runs the body of an API function: its error, or `CUDA_SUCCESS`; a panic is
/// `CUDA_ERROR_UNKNOWN` (printed).
pub(crate) fn call(body: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUresult::CUDA_SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => {
            eprintln!("softgpu: internal error: a driver call panicked");
            CUresult::CUDA_ERROR_UNKNOWN
        }
    }
}

/// Writes `value` to the out-parameter `ptr`: `CUDA_ERROR_INVALID_VALUE` when it is NULL.
///
/// # Safety
/// `ptr` must be NULL or valid for a write of `T`.
pub(crate) unsafe fn out<T>(ptr: *mut T, value: T) -> Result<(), CUresult> {
    if ptr.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: the caller's promise; the pointer may be unaligned when it comes from C.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// The handle of the primary context of `device` (what `CUcontext` values softgpu hands out).
pub(crate) fn context_handle(device: usize) -> usize {
    (device + 1) << 8 | 0xc7
}

/// The device of a context handle: `CUDA_ERROR_INVALID_CONTEXT` for anything else.
pub(crate) fn context_device(handle: usize) -> Result<usize, CUresult> {
    if handle & 0xff == 0xc7 && handle >> 8 >= 1 {
        Ok((handle >> 8) - 1)
    } else {
        Err(CUresult::CUDA_ERROR_INVALID_CONTEXT)
    }
}
