//! Kernel launches and occupancy.

use std::ffi::{c_int, c_uint, c_void};

use cudarc::driver::sys::{CUfunction, CUresult, CUstream};

use super::{call, out};
use crate::device::driver;
use crate::device::launch::{self, Geometry};

/// Launches `f` on `h_stream`: the configuration and parameters are checked now (an error here
/// queues nothing), the kernel runs in stream order; a fault in it is reported by the next
/// synchronising call, and by every call after it.
///
/// # Safety
/// `kernel_params` must be NULL or hold one pointer per kernel parameter, each to that
/// parameter's bytes. `extra` must be NULL (softgpu takes parameters from `kernel_params` only).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    grid_dim_x: c_uint,
    grid_dim_y: c_uint,
    grid_dim_z: c_uint,
    block_dim_x: c_uint,
    block_dim_y: c_uint,
    block_dim_z: c_uint,
    shared_mem_bytes: c_uint,
    h_stream: CUstream,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    call(|| {
        let d = driver()?;
        let function = d.functions.get(f as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let (instance, stream) = d.stream(h_stream as usize)?;
        instance.check()?;
        if function.module.instance != instance.id {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE); // a function of another context
        }
        if !extra.is_null() {
            return Err(if kernel_params.is_null() {
                CUresult::CUDA_ERROR_NOT_SUPPORTED
            } else {
                CUresult::CUDA_ERROR_INVALID_VALUE
            });
        }
        let g = Geometry {
            grid: [grid_dim_x, grid_dim_y, grid_dim_z],
            block: [block_dim_x, block_dim_y, block_dim_z],
            dynamic_shared: shared_mem_bytes,
        };
        launch::check(&function, &g)?;
        // SAFETY: the caller's promise.
        let params = unsafe { launch::parameters(&function, kernel_params as *const *const u8) }?;
        instance.enqueue(&stream, launch::work(&d.memory, function, g, params));
        Ok(())
    })
}

/// A cooperative launch: as [`cuLaunchKernel`], after checking that every block of the grid
/// can be resident at once (which a cooperative grid needs).
///
/// # Safety
/// As [`cuLaunchKernel`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: CUfunction,
    grid_dim_x: c_uint,
    grid_dim_y: c_uint,
    grid_dim_z: c_uint,
    block_dim_x: c_uint,
    block_dim_y: c_uint,
    block_dim_z: c_uint,
    shared_mem_bytes: c_uint,
    h_stream: CUstream,
    kernel_params: *mut *mut c_void,
) -> CUresult {
    let fits = call(|| {
        let function = driver()?.functions.get(f as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let threads = block_dim_x.saturating_mul(block_dim_y).saturating_mul(block_dim_z);
        let resident = u64::from(function.max_active_blocks(threads, shared_mem_bytes))
            * crate::device::properties::MULTIPROCESSORS as u64;
        let blocks = u64::from(grid_dim_x) * u64::from(grid_dim_y) * u64::from(grid_dim_z);
        if blocks > resident { Err(CUresult::CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE) } else { Ok(()) }
    });
    if fits != CUresult::CUDA_SUCCESS {
        return fits;
    }
    // SAFETY: the caller's promise.
    unsafe {
        cuLaunchKernel(
            f,
            grid_dim_x,
            grid_dim_y,
            grid_dim_z,
            block_dim_x,
            block_dim_y,
            block_dim_z,
            shared_mem_bytes,
            h_stream,
            kernel_params,
            std::ptr::null_mut(),
        )
    }
}

/// Resident blocks per multiprocessor (threads, blocks and shared memory; not registers).
///
/// # Safety
/// `num_blocks` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    num_blocks: *mut c_int,
    func: CUfunction,
    block_size: c_int,
    dynamic_smem_size: usize,
) -> CUresult {
    // SAFETY: the caller's promise.
    unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(num_blocks, func, block_size, dynamic_smem_size, 0) }
}

/// As [`cuOccupancyMaxActiveBlocksPerMultiprocessor`] (the flags change nothing here).
///
/// # Safety
/// `num_blocks` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    num_blocks: *mut c_int,
    func: CUfunction,
    block_size: c_int,
    dynamic_smem_size: usize,
    _flags: c_uint,
) -> CUresult {
    call(|| {
        let function = driver()?.functions.get(func as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let threads = u32::try_from(block_size).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
        let shared = u32::try_from(dynamic_smem_size).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: the caller's promise.
        unsafe { out(num_blocks, function.max_active_blocks(threads, shared) as c_int) }
    })
}
