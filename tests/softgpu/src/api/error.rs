//! `cuGetErrorName` and `cuGetErrorString`: static strings, available without `cuInit`.

use std::ffi::{CStr, c_char};
use std::sync::OnceLock;

use cudarc::driver::sys::CUresult;

use super::out;
use crate::device::RESULTS;

/// The description of every code: the driver's own words for the common ones, else the name
/// in plain words.
fn descriptions() -> &'static [(u32, std::ffi::CString)] {
    static TEXTS: OnceLock<Vec<(u32, std::ffi::CString)>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        RESULTS
            .iter()
            .map(|&(code, name)| {
                let text = match code {
                    0 => "no error".to_string(),
                    1 => "invalid argument".into(),
                    2 => "out of memory".into(),
                    3 => "initialization error".into(),
                    100 => "no CUDA-capable device is detected".into(),
                    101 => "invalid device ordinal".into(),
                    200 => "device kernel image is invalid".into(),
                    201 => "invalid device context".into(),
                    218 => "a PTX JIT compilation failed".into(),
                    301 => "file not found".into(),
                    400 => "invalid resource handle".into(),
                    500 => "named symbol not found".into(),
                    600 => "device not ready".into(),
                    700 => "an illegal memory access was encountered".into(),
                    701 => "too many resources requested for launch".into(),
                    709 => "context is destroyed".into(),
                    715 => "an illegal instruction was encountered".into(),
                    716 => "misaligned address".into(),
                    719 => "unspecified launch failure".into(),
                    720 => "too many blocks in cooperative launch".into(),
                    801 => "operation not supported".into(),
                    999 => "unknown error".into(),
                    _ => {
                        let name = name.to_string_lossy();
                        name.trim_start_matches("CUDA_ERROR_").replace('_', " ").to_lowercase()
                    }
                };
                (code, std::ffi::CString::new(text).unwrap_or_default())
            })
            .collect()
    })
}

/// The name of `error` (`CUDA_ERROR_ILLEGAL_ADDRESS`); `CUDA_ERROR_INVALID_VALUE` (and NULL) for
/// a code that does not exist.
///
/// # Safety
/// `p_str` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: u32, p_str: *mut *const c_char) -> CUresult {
    let name = RESULTS.iter().find(|&&(c, _)| c == error).map(|&(_, n): &(u32, &CStr)| n.as_ptr());
    // SAFETY: the caller's promise.
    let written = unsafe { out(p_str, name.unwrap_or(std::ptr::null())) };
    match (written, name) {
        (Err(e), _) => e,
        (Ok(()), Some(_)) => CUresult::CUDA_SUCCESS,
        (Ok(()), None) => CUresult::CUDA_ERROR_INVALID_VALUE,
    }
}

/// The description of `error` ("an illegal memory access was encountered");
/// `CUDA_ERROR_INVALID_VALUE` (and NULL) for a code that does not exist.
///
/// # Safety
/// `p_str` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: u32, p_str: *mut *const c_char) -> CUresult {
    let text = descriptions().iter().find(|(c, _)| *c == error).map(|(_, t)| t.as_ptr());
    // SAFETY: the caller's promise.
    let written = unsafe { out(p_str, text.unwrap_or(std::ptr::null())) };
    match (written, text) {
        (Err(e), _) => e,
        (Ok(()), Some(_)) => CUresult::CUDA_SUCCESS,
        (Ok(()), None) => CUresult::CUDA_ERROR_INVALID_VALUE,
    }
}
