//! Before `cuInit`: only the version and the error strings answer; everything else is
//! `CUDA_ERROR_NOT_INITIALIZED`. (A test binary of its own: the driver starts once per process.)

use cudarc::driver::sys::CUresult;
use softgpu::api::{context, device, init, memory};

#[test]
fn before_cu_init_only_the_version_answers() {
    let mut version = 0;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { init::cuDriverGetVersion(&mut version) }, CUresult::CUDA_SUCCESS);
    assert_eq!(version, 13000);
    let mut n = 0;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { device::cuDeviceGetCount(&mut n) }, CUresult::CUDA_ERROR_NOT_INITIALIZED);
    let mut p = 0u64;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { memory::cuMemAlloc_v2(&mut p, 16) }, CUresult::CUDA_ERROR_NOT_INITIALIZED);
    assert_eq!(context::cuCtxSynchronize(), CUresult::CUDA_ERROR_NOT_INITIALIZED);
    assert_eq!(init::cuInit(1), CUresult::CUDA_ERROR_INVALID_VALUE, "flags must be 0");
    assert_eq!(init::cuInit(0), CUresult::CUDA_SUCCESS);
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { device::cuDeviceGetCount(&mut n) }, CUresult::CUDA_SUCCESS);
    assert!(n >= 1);
    assert_eq!(context::cuCtxSynchronize(), CUresult::CUDA_ERROR_INVALID_CONTEXT, "no current context yet");
}
