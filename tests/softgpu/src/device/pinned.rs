//! Page-locked ("pinned") host memory: `cuMemHostAlloc` and `cuMemFreeHost`.
//!
//! Ordinary host memory to softgpu, with one difference the driver makes too: an asynchronous
//! copy into it (`cuMemcpyDtoHAsync`) returns before the bytes are there, whatever
//! `SOFTGPU_PAGEABLE_COPIES` says. The table remembers every live allocation, so that a copy can
//! tell whether its destination lies inside one, and `cuMemFreeHost` refuses a pointer it did not
//! hand out.

use std::alloc::{Layout, alloc, dealloc};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use cudarc::driver::sys::CUresult;

use super::memory::POISON;

/// The alignment of a pinned allocation (a page, as the driver gives).
const ALIGN: usize = 4096;

/// Every live pinned allocation: its address and length.
#[derive(Debug, Default)]
pub struct PinnedTable {
    live: Mutex<BTreeMap<usize, usize>>,
}

impl PinnedTable {
    /// Allocates `len` bytes (filled with [`POISON`]); `CUDA_ERROR_OUT_OF_MEMORY` when the host
    /// has none.
    pub fn allocate(&self, len: usize) -> Result<*mut u8, CUresult> {
        let layout = Layout::from_size_align(len.max(1), ALIGN).map_err(|_| CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc(layout) };
        if ptr.is_null() {
            return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: just allocated with `len` bytes at least.
        unsafe { ptr.write_bytes(POISON, len) };
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(ptr as usize, len);
        Ok(ptr)
    }

    /// Frees the allocation at `address` (what [`allocate`](Self::allocate) returned);
    /// `CUDA_ERROR_INVALID_VALUE` for any other address.
    pub fn free(&self, address: usize) -> Result<(), CUresult> {
        let len = self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&address);
        let len = len.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let layout = Layout::from_size_align(len.max(1), ALIGN).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: allocated in `allocate` with this layout, and no longer in the table.
        unsafe { dealloc(address as *mut u8, layout) };
        Ok(())
    }

    /// Whether the `n` bytes at `ptr` lie inside one live pinned allocation.
    pub fn contains(&self, ptr: *const u8, n: usize) -> bool {
        let at = ptr as usize;
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.range(..=at)
            .next_back()
            .is_some_and(|(&base, &len)| at.checked_add(n).is_some_and(|end| end <= base + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_found_by_any_range_inside_them_and_freed_once() {
        let t = PinnedTable::default();
        let p = t.allocate(100).unwrap();
        assert_eq!(p as usize % ALIGN, 0);
        // SAFETY: 100 bytes were allocated.
        assert_eq!(unsafe { *p.add(99) }, POISON);
        assert!(t.contains(p, 100));
        // SAFETY: inside the allocation.
        assert!(t.contains(unsafe { p.add(40) }, 60));
        assert!(!t.contains(unsafe { p.add(40) }, 61));
        assert!(!t.contains(std::ptr::null(), 1));
        assert_eq!(t.free(p as usize + 1), Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert_eq!(t.free(p as usize), Ok(()));
        assert_eq!(t.free(p as usize), Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert!(!t.contains(p, 1));
    }
}
