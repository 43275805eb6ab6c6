//! Results back to the host: a copy into a new (pageable) vector, then a synchronisation of the
//! stream before anything reads it. cudarc queues the copy with `cuMemcpyDtoHAsync`; the driver
//! documents when such a copy may return before the data has arrived, and those rules differ by
//! memory kind and driver, so the stream is synchronised explicitly: the vector is complete when
//! this returns, whatever the driver does.

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DeviceRepr, DriverError};

/// `src` as a host vector, complete (the stream synchronised after the copy).
pub(crate) fn read_back<T: DeviceRepr, S: DevicePtr<T>>(
    stream: &Arc<CudaStream>,
    src: &S,
) -> Result<Vec<T>, DriverError> {
    let values = stream.clone_dtoh(src)?;
    stream.synchronize()?;
    Ok(values)
}
