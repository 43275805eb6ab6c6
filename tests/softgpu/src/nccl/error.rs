//! NCCL's result codes, its error strings, and the last error message (`ncclGetLastError`).

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_char};
use std::sync::{Mutex, PoisonError};

use cudarc::nccl::sys::ncclResult_t;

/// An NCCL failure: the code and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NcclError {
    /// The result code.
    pub code: ncclResult_t,
    /// What happened (also `ncclGetLastError`).
    pub message: String,
}

impl NcclError {
    /// An error with `code` and `message`.
    pub fn new(code: ncclResult_t, message: impl Into<String>) -> NcclError {
        NcclError { code, message: message.into() }
    }

    /// `ncclInvalidArgument`.
    pub fn argument(message: impl Into<String>) -> NcclError {
        NcclError::new(ncclResult_t::ncclInvalidArgument, message)
    }

    /// `ncclInvalidUsage`.
    pub fn usage(message: impl Into<String>) -> NcclError {
        NcclError::new(ncclResult_t::ncclInvalidUsage, message)
    }

    /// `ncclSystemError` (a socket failed).
    pub fn system(message: impl Into<String>) -> NcclError {
        NcclError::new(ncclResult_t::ncclSystemError, message)
    }

    /// `ncclRemoteError` (a peer is gone or failed).
    pub fn remote(message: impl Into<String>) -> NcclError {
        NcclError::new(ncclResult_t::ncclRemoteError, message)
    }

    /// `ncclTimeout`.
    pub fn timeout(message: impl Into<String>) -> NcclError {
        NcclError::new(ncclResult_t::ncclTimeout, message)
    }
}

impl std::fmt::Display for NcclError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Every message ever set, kept so that the pointers `ncclGetLastError` returned stay valid.
static MESSAGES: Mutex<Option<HashSet<&'static CStr>>> = Mutex::new(None);

/// The last error message (what `ncclGetLastError` returns).
static LAST: Mutex<Option<&'static CStr>> = Mutex::new(None);

/// Makes `message` the last error (a process-wide one, as NCCL's).
pub fn set_last_error(message: String) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let mut all = MESSAGES.lock().unwrap_or_else(PoisonError::into_inner);
    let all = all.get_or_insert_with(HashSet::new);
    let kept: &'static CStr = match all.get(c.as_c_str()) {
        Some(k) => k,
        None => {
            let k: &'static CStr = Box::leak(c.into_boxed_c_str());
            all.insert(k);
            k
        }
    };
    *LAST.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
}

/// The last error message, or an empty string.
pub fn last_error() -> *const c_char {
    LAST.lock().unwrap_or_else(PoisonError::into_inner).map_or(c"".as_ptr(), CStr::as_ptr)
}

/// NCCL's description of `code`.
pub fn error_string(code: u32) -> &'static CStr {
    match code {
        0 => c"no error",
        1 => c"unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
        2 => c"unhandled system error (run with NCCL_DEBUG=INFO for details)",
        3 => c"internal error - please report this issue to the NCCL developers",
        4 => c"invalid argument (run with NCCL_DEBUG=WARN for details)",
        5 => c"invalid usage (run with NCCL_DEBUG=WARN for details)",
        6 => c"remote process exited or there was a network error",
        7 => c"NCCL operation in progress",
        8 => c"NCCL operation timed out",
        _ => c"unknown result code",
    }
}
