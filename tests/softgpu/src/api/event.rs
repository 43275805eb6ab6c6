//! Events: create, record, synchronise, query, elapsed time, destroy.

use std::ffi::c_uint;

use cudarc::driver::sys::{CUevent, CUresult, CUstream};

use super::{call, out};
use crate::device::driver;
use crate::device::event::Event;

/// `CU_EVENT_DEFAULT | CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS`.
const KNOWN_FLAGS: u32 = 0x1 | 0x2 | 0x4;

/// A new event in the current context.
///
/// # Safety
/// `ph_event` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(ph_event: *mut CUevent, flags: c_uint) -> CUresult {
    call(|| {
        if ph_event.is_null() || flags & !KNOWN_FLAGS != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        if flags & 0x4 != 0 {
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED); // interprocess events
        }
        let d = driver()?;
        let instance = d.current_checked()?;
        // SAFETY: the caller's promise.
        unsafe { out(ph_event, d.events.insert(Event::new(flags, instance.id)) as CUevent) }
    })
}

/// Records the work queued on `h_stream` so far.
#[unsafe(no_mangle)]
pub extern "C" fn cuEventRecord(h_event: CUevent, h_stream: CUstream) -> CUresult {
    call(|| {
        let d = driver()?;
        let event = d.events.get(h_event as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let (instance, stream) = d.stream(h_stream as usize)?;
        instance.check()?;
        if instance.id != event.instance {
            return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
        }
        event.record(&stream, |work| instance.enqueue(&stream, work));
        Ok(())
    })
}

/// Waits until the event's last record is done.
#[unsafe(no_mangle)]
pub extern "C" fn cuEventSynchronize(h_event: CUevent) -> CUresult {
    call(|| {
        let d = driver()?;
        let event = d.events.get(h_event as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        event.synchronize();
        d.current().map_or(Ok(()), |i| i.check())
    })
}

/// `CUDA_SUCCESS` when the event's last record is done (or it was never recorded),
/// `CUDA_ERROR_NOT_READY` while it is not.
#[unsafe(no_mangle)]
pub extern "C" fn cuEventQuery(h_event: CUevent) -> CUresult {
    call(|| {
        let d = driver()?;
        let event = d.events.get(h_event as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        d.current().map_or(Ok(()), |i| i.check())?;
        if event.done() { Ok(()) } else { Err(CUresult::CUDA_ERROR_NOT_READY) }
    })
}

/// Milliseconds between two recorded events (host time: meaningless for a GPU).
///
/// # Safety
/// `ms` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, h_start: CUevent, h_end: CUevent) -> CUresult {
    call(|| {
        let d = driver()?;
        let start = d.events.get(h_start as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let end = d.events.get(h_end as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        d.current().map_or(Ok(()), |i| i.check())?;
        let value = start.elapsed_ms(&end)?;
        // SAFETY: the caller's promise.
        unsafe { out(ms, value) }
    })
}

/// Destroys an event (a record in flight still completes).
#[unsafe(no_mangle)]
pub extern "C" fn cuEventDestroy_v2(h_event: CUevent) -> CUresult {
    call(|| {
        driver()?.events.remove(h_event as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        Ok(())
    })
}
