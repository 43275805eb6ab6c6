//! Primary contexts and the calling thread's current context.

use std::ffi::{c_int, c_uint};

use cudarc::driver::sys::{CUcontext, CUdevice, CUresult};

use super::{call, context_device, context_handle, out};
use crate::device::{context, driver};

/// Retains the primary context of `dev` (starting it when it was not).
///
/// # Safety
/// `pctx` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    call(|| {
        if pctx.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        driver()?.context(i64::from(dev))?.retain()?;
        // SAFETY: the caller's promise.
        unsafe { out(pctx, context_handle(dev as usize) as CUcontext) }
    })
}

/// Releases the primary context of `dev`; the last release destroys it (its memory, streams,
/// events and modules), after its work is done.
#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    call(|| {
        let d = driver()?;
        if let Some(ended) = d.context(i64::from(dev))?.release()? {
            d.tear_down(&ended);
        }
        Ok(())
    })
}

/// Destroys the primary context's state now; it starts afresh on the next use.
#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult {
    call(|| {
        let d = driver()?;
        if let Some(ended) = d.context(i64::from(dev))?.reset()? {
            d.tear_down(&ended);
        }
        Ok(())
    })
}

/// Sets the primary context's flags (scheduling hints: softgpu records them).
#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult {
    call(|| driver()?.context(i64::from(dev))?.set_flags(flags))
}

/// The primary context's flags and whether it is active.
///
/// # Safety
/// `flags` and `active` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CUresult {
    call(|| {
        let (f, a) = driver()?.context(i64::from(dev))?.state();
        // SAFETY: the caller's promise.
        unsafe {
            out(flags, f)?;
            out(active, c_int::from(a))
        }
    })
}

/// Binds `ctx` to the calling thread (NULL: unbinds the current context).
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    call(|| {
        let d = driver()?;
        if ctx.is_null() {
            context::set_current(None);
            return Ok(());
        }
        let device = context_device(ctx as usize)?;
        d.context(device as i64).map_err(|_| CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        context::set_current(Some(device));
        Ok(())
    })
}

/// The calling thread's current context (NULL when there is none).
///
/// # Safety
/// `pctx` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    call(|| {
        driver()?;
        let handle = context::current().map_or(std::ptr::null_mut(), |d| context_handle(d) as CUcontext);
        // SAFETY: the caller's promise.
        unsafe { out(pctx, handle) }
    })
}

/// Pushes `ctx` on the calling thread's context stack.
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult {
    call(|| {
        let d = driver()?;
        let device = context_device(ctx as usize)?;
        d.context(device as i64).map_err(|_| CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        context::push_current(device);
        Ok(())
    })
}

/// Pops the calling thread's current context.
///
/// # Safety
/// `pctx` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    call(|| {
        driver()?;
        let device = context::pop_current().ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        if !pctx.is_null() {
            // SAFETY: the caller's promise.
            unsafe { out(pctx, context_handle(device) as CUcontext)? };
        }
        Ok(())
    })
}

/// The device of the current context.
///
/// # Safety
/// `device` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    call(|| {
        let instance = driver()?.current()?;
        // SAFETY: the caller's promise.
        unsafe { out(device, instance.device as CUdevice) }
    })
}

/// Waits for all work of the current context; its sticky error, if a fault happened.
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    call(|| {
        let instance = driver()?.current()?;
        instance.synchronize();
        instance.check()
    })
}

/// The current context's flags.
///
/// # Safety
/// `flags` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    call(|| {
        let d = driver()?;
        let instance = d.current()?;
        let (f, _) = d.context(instance.device as i64)?.state();
        // SAFETY: the caller's promise.
        unsafe { out(flags, f) }
    })
}

/// Sets the current context's flags.
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetFlags(flags: c_uint) -> CUresult {
    call(|| {
        let d = driver()?;
        let instance = d.current_checked()?;
        d.context(instance.device as i64)?.set_flags(flags)
    })
}

/// A limit of the current context.
///
/// # Safety
/// `pvalue` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetLimit(pvalue: *mut usize, limit: c_int) -> CUresult {
    call(|| {
        let value = driver()?.current_checked()?.limit(limit)?;
        // SAFETY: the caller's promise.
        unsafe { out(pvalue, value) }
    })
}

/// Sets a limit of the current context (recorded; nothing in softgpu depends on it).
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetLimit(limit: c_int, value: usize) -> CUresult {
    call(|| driver()?.current_checked()?.set_limit(limit, value))
}

/// The current context's cache configuration hint.
///
/// # Safety
/// `pconfig` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCacheConfig(pconfig: *mut c_uint) -> CUresult {
    call(|| {
        let config = driver()?.current_checked()?.cache_config();
        // SAFETY: the caller's promise.
        unsafe { out(pconfig, config) }
    })
}

/// Sets the current context's cache configuration hint.
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSetCacheConfig(config: c_uint) -> CUresult {
    call(|| driver()?.current_checked()?.set_cache_config(config))
}

/// The stream priorities: 0 (least) to -5 (greatest), as on sm_90. softgpu runs every stream on
/// its own thread; priorities change nothing.
///
/// # Safety
/// `least` and `greatest` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> CUresult {
    call(|| {
        driver()?.current()?;
        // SAFETY: the caller's promise (either may be NULL).
        unsafe {
            if !least.is_null() {
                out(least, 0)?;
            }
            if !greatest.is_null() {
                out(greatest, -5)?;
            }
        }
        Ok(())
    })
}
