//! Copies and fills of device memory, as stream work. Every range is checked against the
//! memory table when the work is queued (an invalid range is `CUDA_ERROR_INVALID_VALUE` at the
//! call, as in the driver), and the work holds its allocations, so that they outlive it.

use std::sync::Arc;

use cudarc::driver::sys::CUresult;

use super::memory::{Allocation, MemoryTable};
use super::stream::Work;

/// A range of device memory, checked: its allocation and address.
#[derive(Clone, Debug)]
pub struct DeviceRange {
    allocation: Arc<Allocation>,
    addr: u64,
    len: u64,
}

impl DeviceRange {
    /// `addr .. addr + len`, when it lies in one live allocation.
    pub fn new(memory: &MemoryTable, addr: u64, len: u64) -> Result<DeviceRange, CUresult> {
        let allocation = memory.find(addr, len).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        Ok(DeviceRange { allocation, addr, len })
    }

    /// The device the memory is on.
    pub fn device(&self) -> usize {
        self.allocation.device
    }

    /// The host address of the first byte.
    pub fn host(&self) -> *mut u8 {
        self.allocation.host(self.addr)
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Host memory that a queued copy writes to, which the caller keeps valid until the copy is done.
#[derive(Clone, Copy, Debug)]
pub struct HostDestination(pub *mut u8);

// SAFETY: the caller of `read` keeps the memory valid and unused until the work is done.
unsafe impl Send for HostDestination {}

/// Writes `data` (copied from the host when the call was made) to `dst`.
pub fn write(dst: DeviceRange, data: Vec<u8>) -> Work {
    Box::new(move || {
        // SAFETY: `dst` holds its allocation; `data` has `dst.len` bytes (checked by the caller).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.host(), data.len().min(dst.len as usize)) };
        Ok(())
    })
}

/// Copies `src` to the host memory at `dst`.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes until the work is done.
pub unsafe fn read(src: DeviceRange, dst: HostDestination) -> Work {
    Box::new(move || {
        let dst = dst;
        // SAFETY: the caller's promise, and `src` holds its allocation.
        unsafe { std::ptr::copy(src.host(), dst.0, src.len as usize) };
        Ok(())
    })
}

/// Copies `src` to `dst` (of the same length; they may overlap).
pub fn copy(src: DeviceRange, dst: DeviceRange) -> Work {
    Box::new(move || {
        // SAFETY: both hold their allocations; the lengths were checked by the caller.
        unsafe { std::ptr::copy(src.host(), dst.host(), src.len.min(dst.len) as usize) };
        Ok(())
    })
}

/// Fills `dst` with copies of `pattern` (1, 2 or 4 bytes; `dst.len()` a multiple of its length).
pub fn fill(dst: DeviceRange, pattern: Vec<u8>) -> Work {
    Box::new(move || {
        let n = dst.len as usize;
        if pattern.iter().all(|&b| b == pattern[0]) {
            // SAFETY: `dst` holds its allocation of at least `n` bytes.
            unsafe { dst.host().write_bytes(pattern[0], n) };
        } else {
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts_mut(dst.host(), n) };
            for chunk in bytes.chunks_mut(pattern.len()) {
                chunk.copy_from_slice(&pattern[..chunk.len()]);
            }
        }
        Ok(())
    })
}
