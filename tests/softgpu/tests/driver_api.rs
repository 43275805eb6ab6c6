//! The CUDA driver API of softgpu, called as cudarc calls it: devices, contexts, memory, streams
//! and events (ordering and asynchrony), modules and launch checks, error strings, and the
//! symbols it does not implement.

mod api_support;

use std::ffi::{CStr, c_char, c_void};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_support::*;
use cudarc::driver::sys::{CUdevice_attribute as A, CUfunction_attribute as F, CUresult, CUstream};
use softgpu::api::{context, device, error, event, launch, memory, module, not_supported, stream};
use softgpu::device::memory::POISON;

#[test]
fn devices_look_like_sm_90_and_say_what_they_are() {
    use_device(0);
    let mut n = 0;
    // SAFETY: out-pointers throughout.
    unsafe {
        ok(device::cuDeviceGetCount(&mut n));
        assert_eq!(n as usize, softgpu::device::properties::device_count().unwrap());
        let mut name = [0 as c_char; 64];
        ok(device::cuDeviceGetName(name.as_mut_ptr(), 64, 0));
        assert_eq!(CStr::from_ptr(name.as_ptr()).to_str().unwrap(), "softgpu (PTX interpreter)");
        let mut short = [0 as c_char; 8];
        ok(device::cuDeviceGetName(short.as_mut_ptr(), 8, 0));
        assert_eq!(CStr::from_ptr(short.as_ptr()).to_str().unwrap(), "softgpu", "cut to the buffer, NUL included");
        let attr = |a: A| {
            let mut v = 0;
            ok(device::cuDeviceGetAttribute(&mut v, a as i32, 0));
            v
        };
        assert_eq!(
            (
                attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
            ),
            (9, 0)
        );
        assert_eq!(attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), 132);
        assert_eq!(attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE), 32);
        assert_eq!(attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK), 1024);
        assert_eq!(attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), 227 * 1024);
        let mut v = 0;
        assert_eq!(
            device::cuDeviceGetAttribute(&mut v, A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH as i32, 0),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        assert_eq!(device::cuDeviceGetAttribute(&mut v, 16, n), CUresult::CUDA_ERROR_INVALID_DEVICE);
        let mut total = 0usize;
        ok(device::cuDeviceTotalMem_v2(&mut total, 0));
        assert_eq!(total, 80 << 30);
    }
}

#[test]
fn primary_contexts_are_retained_counted_and_current_per_thread() {
    let ctx = use_device(1);
    let mut current = std::ptr::null_mut();
    // SAFETY: out-pointers throughout.
    unsafe {
        ok(context::cuCtxGetCurrent(&mut current));
        assert_eq!(current, ctx);
        let mut dev = -1;
        ok(context::cuCtxGetDevice(&mut dev));
        assert_eq!(dev, 1);
        let (mut flags, mut active) = (0, 0);
        ok(context::cuDevicePrimaryCtxGetState(1, &mut flags, &mut active));
        assert_eq!(active, 1);
        std::thread::spawn(|| {
            let mut other = std::ptr::dangling_mut();
            ok(context::cuCtxGetCurrent(&mut other));
            assert!(other.is_null(), "a new thread has no current context");
            assert_eq!(context::cuCtxSynchronize(), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        })
        .join()
        .unwrap();
        assert_eq!(context::cuCtxSetCurrent(0x5 as _), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(context::cuDevicePrimaryCtxSetFlags_v2(1, 3), CUresult::CUDA_ERROR_INVALID_VALUE);
        ok(context::cuDevicePrimaryCtxSetFlags_v2(1, 4));
    }
}

#[test]
fn memory_is_poisoned_copied_filled_and_checked() {
    use_device(0);
    let a = alloc(64);
    assert_eq!(download::<u8>(a, 64), vec![POISON; 64], "new memory is not zeroed");
    let data: Vec<f32> = (0..16).map(|i| i as f32 * 0.5).collect();
    upload(a, &data);
    assert_eq!(download::<f32>(a, 16), data);
    let b = alloc(64);
    ok(memory::cuMemcpyDtoD_v2(b, a + 8, 32));
    assert_eq!(download::<f32>(b, 8), data[2..10]);
    ok(memory::cuMemsetD32_v2(b, 0x3f80_0000, 4));
    assert_eq!(download::<f32>(b, 5)[..4], [1.0; 4]);
    ok(memory::cuMemsetD8_v2(b + 1, 7, 2));
    assert_eq!(download::<u8>(b, 4), [0, 7, 7, 0x3f]);
    // Checked ranges: past the end, misaligned fills, unknown pointers, double frees.
    assert_eq!(memory::cuMemsetD8_v2(a + 60, 0, 5), CUresult::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(memory::cuMemsetD32_v2(a + 2, 0, 1), CUresult::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(memory::cuMemcpyDtoD_v2(b, a + 40, 32), CUresult::CUDA_ERROR_INVALID_VALUE);
    let mut host = [0u8; 8];
    // SAFETY: 8 bytes of `host`.
    assert_eq!(
        unsafe { memory::cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), 12345, 8) },
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    assert_eq!(memory::cuMemFree_v2(a + 4), CUresult::CUDA_ERROR_INVALID_VALUE, "not the start of an allocation");
    ok(memory::cuMemFree_v2(a));
    assert_eq!(memory::cuMemFree_v2(a), CUresult::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(memory::cuMemsetD8_v2(a, 0, 1), CUresult::CUDA_ERROR_INVALID_VALUE, "freed memory");
    let mut p = 0;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { memory::cuMemAlloc_v2(&mut p, 0) }, CUresult::CUDA_ERROR_INVALID_VALUE);
    let (mut free, mut total) = (0, 0);
    // SAFETY: two out-pointers.
    ok(unsafe { memory::cuMemGetInfo_v2(&mut free, &mut total) });
    assert!(free < total && total == 80 << 30);
    ok(memory::cuMemFree_v2(b));
}

#[test]
fn async_work_is_done_when_its_stream_or_event_is_synchronised() {
    static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    use_device(0);
    let s = new_stream(1);
    let (start, end) = (new_event(0), new_event(0));
    ok(event::cuEventRecord(start, s));
    host_step(s, &LOG, "slow", 150);
    ok(event::cuEventRecord(end, s));
    // An async copy from the host takes the bytes at the call: changing them after is harmless.
    let a = alloc(16);
    let mut data = [1u32, 2, 3, 4];
    // SAFETY: the array's bytes.
    ok(unsafe { memory::cuMemcpyHtoDAsync_v2(a, data.as_ptr().cast(), 16, s) });
    std::hint::black_box(&mut data)[0] = 99;
    assert_eq!(stream::cuStreamQuery(s), CUresult::CUDA_ERROR_NOT_READY, "the work runs after the call returns");
    assert_eq!(event::cuEventQuery(end), CUresult::CUDA_ERROR_NOT_READY);
    let mut ms = 0f32;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { event::cuEventElapsedTime_v2(&mut ms, start, end) }, CUresult::CUDA_ERROR_NOT_READY);
    ok(event::cuEventSynchronize(end));
    assert_eq!(*LOG.lock().unwrap(), ["slow"]);
    // SAFETY: one out-pointer.
    ok(unsafe { event::cuEventElapsedTime_v2(&mut ms, start, end) });
    assert!(ms >= 140.0, "{ms} ms");
    ok(stream::cuStreamSynchronize(s));
    ok(stream::cuStreamQuery(s));
    assert_eq!(download::<u32>(a, 4), [1, 2, 3, 4]);
    // An event made without timing has no elapsed time; one never recorded is done.
    let untimed = new_event(2);
    ok(event::cuEventQuery(untimed));
    ok(event::cuEventRecord(untimed, s));
    ok(event::cuEventSynchronize(untimed));
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { event::cuEventElapsedTime_v2(&mut ms, start, untimed) }, CUresult::CUDA_ERROR_INVALID_HANDLE);
    for e in [start, end, untimed] {
        ok(event::cuEventDestroy_v2(e));
    }
    assert_eq!(event::cuEventQuery(start), CUresult::CUDA_ERROR_INVALID_HANDLE);
    ok(stream::cuStreamDestroy_v2(s));
    assert_eq!(stream::cuStreamSynchronize(s), CUresult::CUDA_ERROR_INVALID_HANDLE);
    ok(memory::cuMemFree_v2(a));
}

#[test]
fn copies_into_pinned_memory_are_asynchronous_and_pinned_memory_is_freed_once() {
    static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    use_device(0);
    let s = new_stream(1);
    let a = alloc(16);
    upload(a, &[5u32, 6, 7, 8]);
    let mut pinned: *mut c_void = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    ok(unsafe { memory::cuMemHostAlloc(&mut pinned, 16, 0) });
    let pinned = pinned.cast::<u32>();
    // SAFETY: 16 bytes were allocated.
    let view = || unsafe { std::ptr::read_volatile(pinned.cast::<[u32; 4]>()) };
    assert_eq!(view(), [u32::MAX; 4], "new pinned memory is poisoned");
    // Behind a slow step, the copy into pinned memory returns before its bytes arrive.
    host_step(s, &LOG, "slow", 100);
    // SAFETY: the pinned buffer holds 16 bytes and outlives the stream's work.
    ok(unsafe { memory::cuMemcpyDtoHAsync_v2(pinned.cast(), a, 16, s) });
    assert_eq!(view(), [u32::MAX; 4]);
    assert_eq!(stream::cuStreamQuery(s), CUresult::CUDA_ERROR_NOT_READY);
    ok(stream::cuStreamSynchronize(s));
    assert_eq!(view(), [5, 6, 7, 8]);
    // Into pageable memory, the same call returns with the bytes there (unless
    // SOFTGPU_PAGEABLE_COPIES=async asks otherwise).
    if !memory::async_pageable_copies() {
        let mut host = [0u32; 4];
        host_step(s, &LOG, "slow", 50);
        // SAFETY: 16 bytes of `host`.
        ok(unsafe { memory::cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), a, 16, s) });
        assert_eq!(host, [5, 6, 7, 8]);
    }
    // Checked arguments: no size, unknown flags, pointers it did not hand out, double frees.
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    unsafe {
        assert_eq!(memory::cuMemHostAlloc(&mut p, 0, 0), CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(memory::cuMemHostAlloc(&mut p, 8, 0x8), CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: inside the allocation (never dereferenced).
    assert_eq!(memory::cuMemFreeHost(unsafe { pinned.add(1) }.cast()), CUresult::CUDA_ERROR_INVALID_VALUE);
    ok(memory::cuMemFreeHost(pinned.cast()));
    assert_eq!(memory::cuMemFreeHost(pinned.cast()), CUresult::CUDA_ERROR_INVALID_VALUE);
    ok(stream::cuStreamDestroy_v2(s));
    ok(memory::cuMemFree_v2(a));
}

#[test]
fn streams_wait_for_events_and_the_legacy_stream_for_blocking_streams() {
    static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    use_device(1);
    let (a, b, blocking) = (new_stream(1), new_stream(1), new_stream(0));
    let e = new_event(2);
    host_step(a, &LOG, "a: slow", 100);
    ok(event::cuEventRecord(e, a));
    ok(stream::cuStreamWaitEvent(b, e, 0));
    host_step(b, &LOG, "b: after the event", 0);
    host_step(b, &LOG, "b: unordered", 0);
    ok(stream::cuStreamSynchronize(b));
    assert_eq!(*LOG.lock().unwrap(), ["a: slow", "b: after the event", "b: unordered"]);
    LOG.lock().unwrap().clear();
    // The legacy stream (handle 0) waits for blocking streams, and they wait for it; a
    // non-blocking stream waits for neither.
    host_step(blocking, &LOG, "blocking", 100);
    host_step(std::ptr::null_mut(), &LOG, "legacy", 0);
    host_step(a, &LOG, "non-blocking", 0);
    host_step(blocking, &LOG, "blocking after legacy", 0);
    ok(context::cuCtxSynchronize());
    let log = LOG.lock().unwrap().clone();
    let at = |t| log.iter().position(|&x| x == t).unwrap();
    assert!(at("non-blocking") < at("blocking"), "{log:?}");
    assert!(at("blocking") < at("legacy") && at("legacy") < at("blocking after legacy"), "{log:?}");
    for s in [a, b, blocking] {
        ok(stream::cuStreamDestroy_v2(s));
    }
    assert_eq!(stream::cuStreamDestroy_v2(std::ptr::null_mut()), CUresult::CUDA_ERROR_INVALID_HANDLE);
}

#[test]
fn a_destroyed_stream_still_finishes_its_work() {
    static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    use_device(0);
    let s = new_stream(0);
    host_step(s, &LOG, "queued before destroy", 50);
    ok(stream::cuStreamDestroy_v2(s));
    ok(context::cuCtxSynchronize());
    let deadline = Instant::now() + Duration::from_secs(5);
    while LOG.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(*LOG.lock().unwrap(), ["queued before destroy"]);
}

#[test]
fn modules_load_from_ptx_text_only_and_refuse_what_the_interpreter_lacks() {
    use_device(0);
    let m = load(ADD_ONE_PTX).unwrap();
    let f = function(m, "add_one").unwrap();
    assert_eq!(function(m, "missing").unwrap_err(), CUresult::CUDA_ERROR_NOT_FOUND);
    assert_eq!(load(&ADD_ONE_PTX.replace("ret;", "trap;")).unwrap_err(), CUresult::CUDA_ERROR_INVALID_PTX);
    assert_eq!(load("\x7fELF\x02\x01\x01").unwrap_err(), CUresult::CUDA_ERROR_INVALID_IMAGE);
    let attr = |a: F| {
        let mut v = 0;
        // SAFETY: one out-pointer.
        ok(unsafe { module::cuFuncGetAttribute(&mut v, a as i32, f) });
        v
    };
    assert_eq!(attr(F::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK), 1024);
    assert_eq!(attr(F::CU_FUNC_ATTRIBUTE_PTX_VERSION), 90);
    assert_eq!(attr(F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), 48 * 1024);
    ok(module::cuFuncSetAttribute(f, F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as i32, 100 * 1024));
    assert_eq!(attr(F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), 100 * 1024);
    assert_eq!(
        module::cuFuncSetAttribute(f, F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as i32, 228 * 1024),
        CUresult::CUDA_ERROR_INVALID_VALUE
    );
    ok(module::cuModuleUnload(m));
    assert_eq!(module::cuModuleUnload(m), CUresult::CUDA_ERROR_INVALID_HANDLE);
}

#[test]
fn launches_are_checked_before_anything_runs() {
    use_device(0);
    let m = load(ADD_ONE_PTX).unwrap();
    let f = function(m, "add_one").unwrap();
    let s: CUstream = std::ptr::null_mut();
    let (mut ptr, mut n) = (alloc(16), 4u32);
    let mut params = [(&mut ptr as *mut u64).cast::<c_void>(), (&mut n as *mut u32).cast()];
    assert_eq!(launch(f, 1, 1025, 0, s, &mut params), CUresult::CUDA_ERROR_INVALID_VALUE, "1025 threads");
    assert_eq!(launch(f, 0, 32, 0, s, &mut params), CUresult::CUDA_ERROR_INVALID_VALUE, "an empty grid");
    assert_eq!(launch(f, 1, 32, 49 * 1024, s, &mut params), CUresult::CUDA_ERROR_INVALID_VALUE, "no opt-in");
    // SAFETY: no parameters where the kernel has two.
    let missing =
        unsafe { launch::cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, s, std::ptr::null_mut(), std::ptr::null_mut()) };
    assert_eq!(missing, CUresult::CUDA_ERROR_INVALID_VALUE);
    assert_eq!(launch(0x999 as _, 1, 32, 0, s, &mut params), CUresult::CUDA_ERROR_INVALID_HANDLE);
    ok(context::cuCtxSynchronize());
    assert_eq!(download::<u8>(ptr, 16), [POISON; 16], "nothing ran");
    let mut blocks = 0;
    // SAFETY: one out-pointer.
    ok(unsafe { launch::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut blocks, f, 256, 0) });
    assert_eq!(blocks, 8);
}

#[test]
fn error_names_and_strings_are_the_drivers() {
    let text = |f: unsafe extern "C" fn(u32, *mut *const c_char) -> CUresult, code: u32| {
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: one out-pointer.
        let r = unsafe { f(code, &mut p) };
        // SAFETY: a static string when not NULL.
        (r, (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()))
    };
    assert_eq!(text(error::cuGetErrorName, 700), (CUresult::CUDA_SUCCESS, Some("CUDA_ERROR_ILLEGAL_ADDRESS".into())));
    assert_eq!(
        text(error::cuGetErrorString, 700),
        (CUresult::CUDA_SUCCESS, Some("an illegal memory access was encountered".into()))
    );
    assert_eq!(text(error::cuGetErrorString, 214).1.as_deref(), Some("ecc uncorrectable"));
    assert_eq!(text(error::cuGetErrorName, 12345), (CUresult::CUDA_ERROR_INVALID_VALUE, None));
}

#[test]
fn every_other_symbol_of_the_bindings_exists_and_says_not_supported() {
    assert_eq!(not_supported::cuGraphCreate(), CUresult::CUDA_ERROR_NOT_SUPPORTED as u32);
    assert_eq!(not_supported::cuMemHostRegister_v2(), CUresult::CUDA_ERROR_NOT_SUPPORTED as u32);
    assert_eq!(not_supported::ncclSend(), cudarc::nccl::sys::ncclResult_t::ncclInvalidUsage as u32);
}
