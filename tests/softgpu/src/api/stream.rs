//! Streams: create, destroy, synchronise, query, wait for an event, host functions.

use std::ffi::{c_int, c_uint, c_void};

use cudarc::driver::sys::{CUdevice, CUevent, CUresult, CUstream};

use super::{call, out};
use crate::device::driver;

/// A new stream in the current context (`CU_STREAM_NON_BLOCKING` or 0).
///
/// # Safety
/// `ph_stream` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(ph_stream: *mut CUstream, flags: c_uint) -> CUresult {
    // SAFETY: the caller's promise.
    unsafe { cuStreamCreateWithPriority(ph_stream, flags, 0) }
}

/// A new stream with a priority (recorded; softgpu runs every stream on its own thread).
///
/// # Safety
/// `ph_stream` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ph_stream: *mut CUstream,
    flags: c_uint,
    priority: c_int,
) -> CUresult {
    call(|| {
        if ph_stream.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let d = driver()?;
        let stream = d.current_checked()?.create_stream(flags, priority.clamp(-5, 0))?;
        // SAFETY: the caller's promise.
        unsafe { out(ph_stream, d.streams.insert(stream) as CUstream) }
    })
}

/// Destroys a stream: it returns at once, and the stream's queued work still runs.
#[unsafe(no_mangle)]
pub extern "C" fn cuStreamDestroy_v2(h_stream: CUstream) -> CUresult {
    call(|| {
        let d = driver()?;
        let (instance, stream) = d.stream(h_stream as usize)?;
        if crate::device::context::is_default_stream(h_stream as usize) {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        d.streams.remove(h_stream as usize);
        instance.destroy_stream(&stream);
        Ok(())
    })
}

/// Waits for the stream's work; the context's sticky error, if a fault happened.
#[unsafe(no_mangle)]
pub extern "C" fn cuStreamSynchronize(h_stream: CUstream) -> CUresult {
    call(|| {
        let (instance, stream) = driver()?.stream(h_stream as usize)?;
        stream.synchronize();
        instance.check()
    })
}

/// `CUDA_SUCCESS` when the stream's work is done, `CUDA_ERROR_NOT_READY` while it is not.
#[unsafe(no_mangle)]
pub extern "C" fn cuStreamQuery(h_stream: CUstream) -> CUresult {
    call(|| {
        let (instance, stream) = driver()?.stream(h_stream as usize)?;
        instance.check()?;
        if stream.idle() { Ok(()) } else { Err(CUresult::CUDA_ERROR_NOT_READY) }
    })
}

/// Makes the stream's later work wait until the event's last record is done (no wait for an
/// event never recorded).
#[unsafe(no_mangle)]
pub extern "C" fn cuStreamWaitEvent(h_stream: CUstream, h_event: CUevent, flags: c_uint) -> CUresult {
    call(|| {
        let d = driver()?;
        let (instance, stream) = d.stream(h_stream as usize)?;
        instance.check()?;
        let event = d.events.get(h_event as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        if flags & !0x1 != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if let Some((other, seq)) = event.point() {
            instance.enqueue(
                &stream,
                Box::new(move || {
                    other.wait_for(seq);
                    Ok(())
                }),
            );
        }
        Ok(())
    })
}

/// The stream's creation flags.
///
/// # Safety
/// `flags` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags(h_stream: CUstream, flags: *mut c_uint) -> CUresult {
    call(|| {
        let (_, stream) = driver()?.stream(h_stream as usize)?;
        // SAFETY: the caller's promise.
        unsafe { out(flags, stream.flags) }
    })
}

/// The stream's priority.
///
/// # Safety
/// `priority` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetPriority(h_stream: CUstream, priority: *mut c_int) -> CUresult {
    call(|| {
        let (_, stream) = driver()?.stream(h_stream as usize)?;
        // SAFETY: the caller's promise.
        unsafe { out(priority, stream.priority) }
    })
}

/// The stream's device.
///
/// # Safety
/// `device` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetDevice(h_stream: CUstream, device: *mut CUdevice) -> CUresult {
    call(|| {
        let (_, stream) = driver()?.stream(h_stream as usize)?;
        // SAFETY: the caller's promise.
        unsafe { out(device, stream.device as CUdevice) }
    })
}

/// Whether the stream is capturing a graph: never (softgpu has no graphs).
///
/// # Safety
/// `capture_status` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(h_stream: CUstream, capture_status: *mut c_uint) -> CUresult {
    call(|| {
        driver()?.stream(h_stream as usize)?;
        // SAFETY: the caller's promise (CU_STREAM_CAPTURE_STATUS_NONE).
        unsafe { out(capture_status, 0) }
    })
}

/// A host function to call in stream order, on the stream's thread.
#[derive(Clone, Copy)]
struct HostCall(unsafe extern "C" fn(*mut c_void), *mut c_void);

// SAFETY: the caller of cuLaunchHostFunc hands the function and its data to the driver's thread,
// as CUDA does.
unsafe impl Send for HostCall {}

/// Calls `func(user_data)` once the stream's earlier work is done.
#[unsafe(no_mangle)]
pub extern "C" fn cuLaunchHostFunc(
    h_stream: CUstream,
    func: Option<unsafe extern "C" fn(*mut c_void)>,
    user_data: *mut c_void,
) -> CUresult {
    call(|| {
        let (instance, stream) = driver()?.stream(h_stream as usize)?;
        instance.check()?;
        let f = func.ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let host = HostCall(f, user_data);
        instance.enqueue(
            &stream,
            Box::new(move || {
                let host = host;
                // SAFETY: the caller of cuLaunchHostFunc promised a function callable with its data.
                unsafe { (host.0)(host.1) };
                Ok(())
            }),
        );
        Ok(())
    })
}
