//! Devices: count, handle, name, attributes, memory, UUID.

use std::ffi::{c_char, c_int};

use cudarc::driver::sys::{CUdevice, CUresult, CUuuid};

use super::{call, out};
use crate::device::{driver, properties};

/// The device `ordinal`.
///
/// # Safety
/// `device` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    call(|| {
        driver()?.context(i64::from(ordinal))?;
        // SAFETY: the caller's promise.
        unsafe { out(device, ordinal) }
    })
}

/// The number of devices (`SOFTGPU_DEVICES`).
///
/// # Safety
/// `count` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| unsafe { out(count, driver()?.contexts.len() as c_int) })
}

/// The device's name, `softgpu (PTX interpreter)`, NUL-terminated and cut to `len` bytes.
///
/// # Safety
/// `name` must be NULL or valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    call(|| {
        driver()?.context(i64::from(dev))?;
        let len = usize::try_from(len).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
        if name.is_null() || len == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let text = properties::DEVICE_NAME.as_bytes();
        let n = text.len().min(len - 1);
        // SAFETY: the caller's promise of `len` bytes; `n + 1 <= len`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), name.cast::<u8>(), n);
            name.add(n).write(0);
        }
        Ok(())
    })
}

/// A device attribute; `CUDA_ERROR_NOT_SUPPORTED` for one softgpu does not model.
///
/// # Safety
/// `pi` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(pi: *mut c_int, attrib: c_int, dev: CUdevice) -> CUresult {
    call(|| {
        driver()?.context(i64::from(dev))?;
        let value = properties::attribute(attrib, dev as usize).ok_or(CUresult::CUDA_ERROR_NOT_SUPPORTED)?;
        // SAFETY: the caller's promise.
        unsafe { out(pi, value) }
    })
}

/// The device's memory: 80 GiB.
///
/// # Safety
/// `bytes` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    call(|| {
        driver()?.context(i64::from(dev))?;
        // SAFETY: the caller's promise.
        unsafe { out(bytes, properties::TOTAL_MEMORY as usize) }
    })
}

/// The device's UUID (`softgpu-` and the ordinal).
///
/// # Safety
/// `uuid` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, dev: CUdevice) -> CUresult {
    call(|| {
        driver()?.context(i64::from(dev))?;
        let bytes = properties::uuid(dev as usize).map(|b| b as c_char);
        // SAFETY: the caller's promise.
        unsafe { out(uuid, CUuuid { bytes }) }
    })
}
