//! Device memory: allocation (synchronous and stream-ordered), free, information, fills and
//! copies; page-locked host memory (`cuMemHostAlloc`, `cuMemFreeHost`).
//!
//! Copies follow the driver's rules for pageable memory: a copy from the host takes the bytes
//! when called and writes them in stream order (the call may return before the device memory is
//! written); a copy to the host returns once the bytes are there (after the stream's earlier
//! work). Synchronous copies and fills run on the legacy default stream.
//!
//! An asynchronous copy to page-locked memory (`cuMemHostAlloc`) is asynchronous, as on the
//! driver: the call fills the destination with `0xff` bytes and returns, and the bytes arrive in
//! stream order (qcalib reads large per-channel histograms back through such a buffer).
//!
//! With `SOFTGPU_PAGEABLE_COPIES=async`, an asynchronous copy to the host
//! (`cuMemcpyDtoHAsync`) is asynchronous even into pageable memory, as the driver API allows a
//! reading of: the call fills the destination with `0xff` bytes and returns, and the bytes arrive
//! in stream order. A program that reads the result before it synchronises the stream then sees
//! garbage (NaN) rather than, by luck, the right values. The destination must stay allocated until
//! the stream is synchronised (a program that frees it earlier has the bug this mode looks for).

use std::ffi::{c_uchar, c_uint, c_ushort, c_void};
use std::sync::Arc;

use cudarc::driver::sys::{CUcontext, CUdeviceptr, CUresult, CUstream};

use super::{call, out};
use crate::device::context::Instance;
use crate::device::memory::POISON;
use crate::device::stream::Stream;
use crate::device::transfer::{self, DeviceRange, HostDestination};
use crate::device::{Driver, driver, properties};

/// Allocates `bytesize` bytes on the current context's device (filled with `0xff`).
///
/// # Safety
/// `dptr` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    call(|| {
        if dptr.is_null() || bytesize == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let d = driver()?;
        let instance = d.current_checked()?;
        let addr = d.memory.allocate(instance.device, bytesize as u64)?;
        // SAFETY: the caller's promise.
        unsafe { out(dptr, addr) }
    })
}

/// Allocates `bytesize` bytes on the stream's device, usable in stream order (softgpu allocates
/// at once). Zero bytes give a unique address of an empty allocation.
///
/// # Safety
/// `dptr` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, h_stream: CUstream) -> CUresult {
    call(|| {
        if dptr.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let d = driver()?;
        let (instance, _) = d.stream(h_stream as usize)?;
        instance.check()?;
        let addr = d.memory.allocate(instance.device, bytesize as u64)?;
        // SAFETY: the caller's promise.
        unsafe { out(dptr, addr) }
    })
}

/// Frees an allocation, after every stream of its device's context has finished the work
/// queued so far (the driver's `cuMemFree` synchronises too). 0 is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    call(|| {
        let d = driver()?;
        if dptr == 0 {
            return Ok(());
        }
        let a = d.memory.find(dptr, 0).filter(|a| a.base == dptr).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        if let Ok(instance) = d.context(a.device as i64)?.instance() {
            instance.synchronize();
        }
        d.memory.free(dptr)?;
        Ok(())
    })
}

/// Frees an allocation in stream order: once the stream's earlier work is done.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, h_stream: CUstream) -> CUresult {
    call(|| {
        let d = driver()?;
        let (instance, stream) = d.stream(h_stream as usize)?;
        instance.check()?;
        d.memory.find(dptr, 0).filter(|a| a.base == dptr).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let memory = &d.memory;
        instance.enqueue(
            &stream,
            Box::new(move || {
                // Freed already by a synchronous cuMemFree: the program's error, like a double free.
                let _ = memory.free(dptr);
                Ok(())
            }),
        );
        Ok(())
    })
}

/// Free and total memory of the current context's device.
///
/// # Safety
/// `free` and `total` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    call(|| {
        let d = driver()?;
        let instance = d.current_checked()?;
        let used = d.memory.used(instance.device);
        // SAFETY: the caller's promise.
        unsafe {
            out(free, properties::TOTAL_MEMORY.saturating_sub(used) as usize)?;
            out(total, properties::TOTAL_MEMORY as usize)
        }
    })
}

/// The range `addr .. addr + len` of one live allocation.
fn range(d: &Driver, addr: CUdeviceptr, len: usize) -> Result<DeviceRange, CUresult> {
    DeviceRange::new(&d.memory, addr, len as u64)
}

/// Queues a fill of `count` copies of `pattern` at `dst` on `stream` (`None`: the current
/// context's legacy stream, and the call waits for it).
fn memset(h_stream: Option<CUstream>, dst: CUdeviceptr, pattern: &[u8], count: usize) -> Result<(), CUresult> {
    let d = driver()?;
    if !dst.is_multiple_of(pattern.len() as u64) {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let (instance, stream) = target(d, h_stream)?;
    if count == 0 {
        return Ok(());
    }
    let bytes = count.checked_mul(pattern.len()).ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
    let dst = range(d, dst, bytes)?;
    let seq = instance.enqueue(&stream, transfer::fill(dst, pattern.to_vec()));
    if h_stream.is_none() {
        stream.wait_for(seq);
        instance.check()?;
    }
    Ok(())
}

/// The stream of an asynchronous call, or the legacy stream of the current context for a
/// synchronous one; checked for a sticky error.
fn target(d: &Driver, h_stream: Option<CUstream>) -> Result<(Arc<Instance>, Arc<Stream>), CUresult> {
    let (instance, stream) = match h_stream {
        Some(h) => d.stream(h as usize)?,
        None => {
            let instance = d.current()?;
            let legacy = instance.legacy.clone();
            (instance, legacy)
        }
    };
    instance.check()?;
    Ok((instance, stream))
}

/// Sets `n` bytes at `dst` to `uc`, on the legacy stream; returns when done.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, uc: c_uchar, n: usize) -> CUresult {
    call(|| memset(None, dst, &[uc], n))
}

/// Sets `n` bytes at `dst` to `uc` in stream order.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, uc: c_uchar, n: usize, h_stream: CUstream) -> CUresult {
    call(|| memset(Some(h_stream), dst, &[uc], n))
}

/// Sets `n` 16-bit words at `dst` (2-byte aligned) to `us`; returns when done.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, us: c_ushort, n: usize) -> CUresult {
    call(|| memset(None, dst, &us.to_le_bytes(), n))
}

/// Sets `n` 16-bit words at `dst` (2-byte aligned) to `us` in stream order.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, us: c_ushort, n: usize, h_stream: CUstream) -> CUresult {
    call(|| memset(Some(h_stream), dst, &us.to_le_bytes(), n))
}

/// Sets `n` 32-bit words at `dst` (4-byte aligned) to `ui`; returns when done.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, ui: c_uint, n: usize) -> CUresult {
    call(|| memset(None, dst, &ui.to_le_bytes(), n))
}

/// Sets `n` 32-bit words at `dst` (4-byte aligned) to `ui` in stream order.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, ui: c_uint, n: usize, h_stream: CUstream) -> CUresult {
    call(|| memset(Some(h_stream), dst, &ui.to_le_bytes(), n))
}

/// Host to device: the bytes are taken now and written in stream order.
///
/// # Safety
/// `src` must be valid for `n` bytes.
unsafe fn htod(h_stream: Option<CUstream>, dst: CUdeviceptr, src: *const c_void, n: usize) -> Result<(), CUresult> {
    let d = driver()?;
    let (instance, stream) = target(d, h_stream)?;
    if n == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let dst = range(d, dst, n)?;
    // SAFETY: the caller's promise.
    let data = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) }.to_vec();
    instance.enqueue(&stream, transfer::write(dst, data));
    Ok(())
}

/// Allocates `bytesize` bytes of page-locked host memory (filled with `0xff`). `flags` may hold
/// `CU_MEMHOSTALLOC_PORTABLE`, `_DEVICEMAP` and `_WRITECOMBINED` (all alike to softgpu).
///
/// # Safety
/// `pp` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, bytesize: usize, flags: c_uint) -> CUresult {
    call(|| {
        if pp.is_null() || bytesize == 0 || flags & !0x7 != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let d = driver()?;
        d.current_checked()?;
        let ptr = d.pinned.allocate(bytesize)?;
        // SAFETY: the caller's promise.
        unsafe { out(pp, ptr.cast::<c_void>()) }
    })
}

/// Frees what `cuMemHostAlloc` returned (`CUDA_ERROR_INVALID_VALUE` for any other pointer).
#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    call(|| driver()?.pinned.free(p as usize))
}

/// The variable that makes asynchronous copies to pageable host memory asynchronous.
pub const PAGEABLE_COPIES_VAR: &str = "SOFTGPU_PAGEABLE_COPIES";

/// Whether `SOFTGPU_PAGEABLE_COPIES=async` (read once).
pub fn async_pageable_copies() -> bool {
    static ASYNC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASYNC.get_or_init(|| std::env::var(PAGEABLE_COPIES_VAR).is_ok_and(|v| v == "async"))
}

/// Device to host: returns once the bytes are in `dst` (after the stream's earlier work), except
/// for an asynchronous copy into page-locked memory or with `SOFTGPU_PAGEABLE_COPIES=async` (see
/// the module's docs).
///
/// # Safety
/// `dst` must be valid for `n` bytes (until the stream is synchronised, for an asynchronous copy
/// that returns early).
unsafe fn dtoh(h_stream: Option<CUstream>, dst: *mut c_void, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    let d = driver()?;
    let (instance, stream) = target(d, h_stream)?;
    if n == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let src = range(d, src, n)?;
    let deferred = h_stream.is_some() && (async_pageable_copies() || d.pinned.contains(dst.cast(), n));
    if deferred {
        // SAFETY: the caller's promise of `n` bytes.
        unsafe { dst.cast::<u8>().write_bytes(POISON, n) };
    }
    // SAFETY: the caller's promise; the call waits below until the copy is done (or, deferred,
    // the caller keeps the memory until it synchronises the stream).
    let work = unsafe { transfer::read(src, HostDestination(dst.cast())) };
    let seq = instance.enqueue(&stream, work);
    if deferred {
        return Ok(());
    }
    stream.wait_for(seq);
    instance.check()
}

/// Device to device (on one device or between two: the address space is shared).
fn dtod(h_stream: Option<CUstream>, dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    let d = driver()?;
    let (instance, stream) = target(d, h_stream)?;
    if n == 0 {
        return Ok(());
    }
    let (src, dst) = (range(d, src, n)?, range(d, dst, n)?);
    let seq = instance.enqueue(&stream, transfer::copy(src, dst));
    if h_stream.is_none() {
        stream.wait_for(seq);
        instance.check()?;
    }
    Ok(())
}

/// Copies `byte_count` bytes from the host to the device.
///
/// # Safety
/// `src_host` must be valid for `byte_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    dst_device: CUdeviceptr,
    src_host: *const c_void,
    byte_count: usize,
) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| unsafe { htod(None, dst_device, src_host, byte_count) })
}

/// Copies `byte_count` bytes from the host to the device in stream order.
///
/// # Safety
/// `src_host` must be valid for `byte_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst_device: CUdeviceptr,
    src_host: *const c_void,
    byte_count: usize,
    h_stream: CUstream,
) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| unsafe { htod(Some(h_stream), dst_device, src_host, byte_count) })
}

/// Copies `byte_count` bytes from the device to the host.
///
/// # Safety
/// `dst_host` must be valid for `byte_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(
    dst_host: *mut c_void,
    src_device: CUdeviceptr,
    byte_count: usize,
) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| unsafe { dtoh(None, dst_host, src_device, byte_count) })
}

/// Copies `byte_count` bytes from the device to (pageable) host memory after the stream's
/// earlier work; returns once they are there.
///
/// # Safety
/// `dst_host` must be valid for `byte_count` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst_host: *mut c_void,
    src_device: CUdeviceptr,
    byte_count: usize,
    h_stream: CUstream,
) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| unsafe { dtoh(Some(h_stream), dst_host, src_device, byte_count) })
}

/// Copies `byte_count` bytes between device buffers; returns when done.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoD_v2(dst_device: CUdeviceptr, src_device: CUdeviceptr, byte_count: usize) -> CUresult {
    call(|| dtod(None, dst_device, src_device, byte_count))
}

/// Copies `byte_count` bytes between device buffers in stream order.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoDAsync_v2(
    dst_device: CUdeviceptr,
    src_device: CUdeviceptr,
    byte_count: usize,
    h_stream: CUstream,
) -> CUresult {
    call(|| dtod(Some(h_stream), dst_device, src_device, byte_count))
}

/// Copies between devices; returns when done.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyPeer(
    dst_device: CUdeviceptr,
    _dst_context: CUcontext,
    src_device: CUdeviceptr,
    _src_context: CUcontext,
    byte_count: usize,
) -> CUresult {
    call(|| dtod(None, dst_device, src_device, byte_count))
}

/// Copies between devices in stream order.
#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyPeerAsync(
    dst_device: CUdeviceptr,
    _dst_context: CUcontext,
    src_device: CUdeviceptr,
    _src_context: CUcontext,
    byte_count: usize,
    h_stream: CUstream,
) -> CUresult {
    call(|| dtod(Some(h_stream), dst_device, src_device, byte_count))
}
