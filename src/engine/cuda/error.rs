//! How failures of the CUDA engine become [`Error::Device`] messages.

use cudarc::driver::DriverError;

use crate::error::Error;

/// A failure inside the CUDA engine, before it is given the device's name.
#[derive(Debug)]
pub(crate) enum GpuError {
    /// A call into the driver failed.
    Driver(DriverError),
    /// A tensor too large for a kernel's indexing.
    TooLarge(String),
    /// A bug in qcalib's launch code (a wrong argument list, an impossible size).
    Internal(String),
}

impl From<DriverError> for GpuError {
    fn from(e: DriverError) -> Self {
        GpuError::Driver(e)
    }
}

/// Driver errors after which the context is unusable for the rest of the process (a kernel
/// fault, a lost or failed device).
const STICKY: &[u32] = &[
    214, // ECC_UNCORRECTABLE
    700, // ILLEGAL_ADDRESS
    702, // LAUNCH_TIMEOUT
    709, // CONTEXT_IS_DESTROYED
    714, // HARDWARE_STACK_ERROR
    715, // ILLEGAL_INSTRUCTION
    716, // MISALIGNED_ADDRESS
    717, // INVALID_ADDRESS_SPACE
    718, // INVALID_PC
    719, // LAUNCH_FAILED
    999, // UNKNOWN
    46,  // DEVICE_UNAVAILABLE
];

/// Whether `e` leaves the context unusable.
pub(crate) fn is_sticky(e: &DriverError) -> bool {
    STICKY.contains(&(e.0 as u32))
}

/// `CUDA_ERROR_X: description`, from the driver (which is loaded: only called once a context
/// exists).
pub(crate) fn describe(e: &DriverError) -> String {
    let name =
        e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("CUresult {}", e.0 as u32));
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let hint = match e.0 as u32 {
        2 => " (the GPU is out of memory)",
        222 => " (the driver is older than the PTX: the kernels need a CUDA 13.0 driver or newer)",
        209 | 218 => " (the driver could not compile the kernels' PTX for this GPU)",
        _ => "",
    };
    format!("{name}: {text}{hint}")
}

/// The [`Error`] for a failure of `what` on `cuda:<ordinal>`.
pub(crate) fn to_error(ordinal: usize, what: &str, e: GpuError) -> Error {
    match e {
        GpuError::TooLarge(m) => Error::TooLarge(format!("cuda:{ordinal}: {what}: {m}")),
        e => Error::Device(message(ordinal, what, &e)),
    }
}

/// The text of [`to_error`]'s [`Error::Device`].
pub(crate) fn message(ordinal: usize, what: &str, e: &GpuError) -> String {
    match e {
        GpuError::Driver(e) => format!("cuda:{ordinal}: {what} failed: {}", describe(e)),
        GpuError::TooLarge(m) => format!("cuda:{ordinal}: {what}: {m}"),
        GpuError::Internal(m) => format!("cuda:{ordinal}: {what}: internal error in qcalib: {m}"),
    }
}
