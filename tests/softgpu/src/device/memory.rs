//! Device memory: the table of live allocations of every device, in one address space (as with
//! unified addressing), and what the interpreter sees of it ([`exec::GlobalMemory`]).
//!
//! - Addresses are synthetic, above every host address (from 2^48, a 2^40 window per device),
//!   aligned to 256 bytes, handed out once and never reused, with a gap of [`GUARD`] bytes after
//!   each allocation: an access just past the end of a buffer, or into a freed one, touches no
//!   live allocation and is reported, where a real GPU would silently read a neighbour.
//! - New memory is filled with `0xff` bytes (NaN as f32 and f64, the largest integers), not
//!   zeros, so that a kernel or a host that reads memory nobody wrote sees obvious garbage.
//! - Each allocation is host memory aligned to 256 bytes, so the host address of a device
//!   address has the same alignment.

use std::alloc::{Layout, alloc, dealloc};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use cudarc::driver::sys::CUresult;

use super::properties::TOTAL_MEMORY;
use crate::exec::{self, GlobalMemory};

/// The first device address of device 0.
pub const BASE: u64 = 1 << 48;

/// The address window of one device.
pub const DEVICE_WINDOW: u64 = 1 << 40;

/// Alignment of every allocation.
pub const ALIGN: u64 = 256;

/// Unused addresses after every allocation.
pub const GUARD: u64 = 64 * 1024;

/// The byte new memory is filled with.
pub const POISON: u8 = 0xff;

/// One live allocation: `len` bytes of host memory standing for device addresses
/// `base .. base + len`.
#[derive(Debug)]
pub struct Allocation {
    /// The device address of the first byte.
    pub base: u64,
    /// The size in bytes.
    pub len: u64,
    /// The device it belongs to.
    pub device: usize,
    ptr: NonNull<u8>,
}

// SAFETY: the allocation is plain bytes owned by this value; device code and copies write it
// through raw pointers, as a GPU's memory is written by many agents at once.
unsafe impl Send for Allocation {}
// SAFETY: as above.
unsafe impl Sync for Allocation {}

impl Allocation {
    fn layout(len: u64) -> Option<Layout> {
        Layout::from_size_align(usize::try_from(len).ok()?.max(1), ALIGN as usize).ok()
    }

    /// The host address of device address `addr` (which must lie in this allocation).
    pub fn host(&self, addr: u64) -> *mut u8 {
        debug_assert!(addr >= self.base && addr <= self.base + self.len);
        // SAFETY: `addr - base <= len`, inside (or one past) the allocation.
        unsafe { self.ptr.as_ptr().add((addr - self.base) as usize) }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if let Some(layout) = Allocation::layout(self.len) {
            // SAFETY: allocated in `MemoryTable::allocate` with this layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Every live allocation of every device.
#[derive(Debug, Default)]
pub struct MemoryTable {
    live: RwLock<BTreeMap<u64, Arc<Allocation>>>,
    /// Per device: the next free address (offset in its window) and the bytes in use.
    devices: Mutex<BTreeMap<usize, (u64, u64)>>,
}

impl MemoryTable {
    /// Allocates `len` bytes on `device` (filled with [`POISON`]); its device address.
    /// `CUDA_ERROR_OUT_OF_MEMORY` beyond the device's memory or the host's.
    pub fn allocate(&self, device: usize, len: u64) -> Result<u64, CUresult> {
        let oom = CUresult::CUDA_ERROR_OUT_OF_MEMORY;
        let layout = Allocation::layout(len).ok_or(oom)?;
        let base = {
            let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
            let (next, used) = devices.entry(device).or_insert((0, 0));
            if *used + len > TOTAL_MEMORY {
                return Err(oom);
            }
            let span = len.div_ceil(ALIGN) * ALIGN + GUARD;
            if *next + span > DEVICE_WINDOW {
                return Err(oom); // 1 TiB of addresses handed out: never in a test
            }
            let base = BASE + device as u64 * DEVICE_WINDOW + *next;
            *next += span;
            *used += len;
            base
        };
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc(layout) }).ok_or_else(|| {
            self.release(device, len);
            oom
        })?;
        // SAFETY: `len` bytes were just allocated.
        unsafe { ptr.as_ptr().write_bytes(POISON, len as usize) };
        let a = Arc::new(Allocation { base, len, device, ptr });
        self.live.write().unwrap_or_else(PoisonError::into_inner).insert(base, a);
        Ok(base)
    }

    fn release(&self, device: usize, len: u64) {
        if let Some((_, used)) = self.devices.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&device) {
            *used -= len;
        }
    }

    /// Frees the allocation that starts at `base` (the memory itself goes when the last user,
    /// e.g. a kernel still running, lets go of it). `CUDA_ERROR_INVALID_VALUE` when no
    /// allocation starts there.
    pub fn free(&self, base: u64) -> Result<Arc<Allocation>, CUresult> {
        let a = self
            .live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&base)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        self.release(a.device, a.len);
        Ok(a)
    }

    /// The allocation holding all of `addr .. addr + len`, if one does.
    pub fn find(&self, addr: u64, len: u64) -> Option<Arc<Allocation>> {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        let (_, a) = live.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (end <= a.base + a.len).then(|| a.clone())
    }

    /// Bytes in use on `device`.
    pub fn used(&self, device: usize) -> u64 {
        self.devices.lock().unwrap_or_else(PoisonError::into_inner).get(&device).map_or(0, |&(_, used)| used)
    }

    /// Frees every allocation of `device` (its primary context is gone).
    pub fn free_device(&self, device: usize) {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        live.retain(|_, a| a.device != device);
        if let Some((_, used)) = self.devices.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&device) {
            *used = 0;
        }
    }

    /// The live allocations now, for one kernel: lookups without a lock, and every allocation
    /// kept alive until the kernel is done with it.
    pub fn snapshot(&self) -> Snapshot {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        Snapshot { allocations: live.values().cloned().collect() }
    }
}

/// The allocations live when a kernel started, sorted by address.
#[derive(Debug)]
pub struct Snapshot {
    allocations: Vec<Arc<Allocation>>,
}

impl Snapshot {
    /// The allocation that starts at or before `addr` (the only one that may contain it).
    fn at(&self, addr: u64) -> Option<&Arc<Allocation>> {
        let i = self.allocations.partition_point(|a| a.base <= addr).checked_sub(1)?;
        Some(&self.allocations[i])
    }
}

impl GlobalMemory for Snapshot {
    fn resolve(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let a = self.at(addr)?;
        let end = addr.checked_add(len)?;
        (end <= a.base + a.len).then(|| a.host(addr))
    }

    fn allocation(&self, addr: u64) -> Option<exec::Allocation> {
        let a = self.at(addr)?;
        (addr < a.base + a.len).then(|| exec::Allocation { base: a.base, len: a.len, host: a.host(a.base) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_poisoned_separated_and_never_reused() {
        let m = MemoryTable::default();
        let a = m.allocate(0, 10).unwrap();
        let b = m.allocate(0, 300).unwrap();
        let c = m.allocate(1, 4).unwrap();
        assert_eq!(a % ALIGN, 0);
        assert!(b >= a + 10 + GUARD && b % ALIGN == 0);
        assert!(c >= BASE + DEVICE_WINDOW);
        assert_eq!(m.used(0), 310);
        let s = m.snapshot();
        let p = s.resolve(a, 10).unwrap();
        assert_eq!(p as usize % ALIGN as usize, 0);
        // SAFETY: 10 bytes of a live allocation.
        assert_eq!(unsafe { std::slice::from_raw_parts(p, 10) }, &[POISON; 10]);
        assert!(s.resolve(a + 6, 4).is_some());
        assert!(s.resolve(a + 7, 4).is_none(), "one byte past the end");
        assert!(s.resolve(a - 1, 1).is_none());
        assert!(s.resolve(a + 10, 1).is_none());
        assert!(s.resolve(u64::MAX, 2).is_none());
        let whole = s.allocation(a + 9).unwrap();
        assert_eq!((whole.base, whole.len, whole.host), (a, 10, p));
        assert!(s.allocation(a + 10).is_none());
        m.free(a).unwrap();
        assert_eq!(m.free(a).unwrap_err(), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert!(m.find(a, 1).is_none() && m.find(b + 299, 1).is_some() && m.find(b + 299, 2).is_none());
        assert!(s.resolve(a, 10).is_some(), "a snapshot keeps its allocations");
        let d = m.allocate(0, 10).unwrap();
        assert!(d > b, "addresses are never reused");
        assert_eq!(m.allocate(0, TOTAL_MEMORY).unwrap_err(), CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        m.free_device(0);
        assert_eq!(m.used(0), 0);
        assert!(m.find(b, 1).is_none() && m.find(c, 4).is_some());
    }
}
