//! A fault in a kernel: the launch returns at once, the next synchronising call reports it, and
//! from then on every call of the context reports it (sticky, as on a real GPU), with the
//! kernel, the PTX line, the block and the thread on stderr. Other devices are unaffected, and
//! resetting the primary context clears the error. (The faulting process is a child: its stderr
//! is read.)

mod api_support;

use std::ffi::c_void;
use std::process::Command;

use api_support::*;
use cudarc::driver::sys::CUresult;
use softgpu::api::{context, memory, stream};

const FAULT: CUresult = CUresult::CUDA_ERROR_ILLEGAL_ADDRESS;

/// Runs `add_one` over `n` floats of a buffer of `len` floats on the current device.
fn add_one(len: usize, n: u32) -> (CUresult, u64) {
    let f = function(load(ADD_ONE_PTX).unwrap(), "add_one").unwrap();
    let mut buf = alloc(4 * len);
    ok(memory::cuMemsetD32_v2(buf, 0, len));
    let mut count = n;
    let mut params = [(&mut buf as *mut u64).cast::<c_void>(), (&mut count as *mut u32).cast()];
    (launch(f, n.div_ceil(128), 128, 0, std::ptr::null_mut(), &mut params), buf)
}

#[test]
#[ignore = "run by a_fault_is_sticky_and_reported"]
fn faulting_child() {
    if std::env::var_os("SOFTGPU_TEST_FAULT").is_none() {
        return;
    }
    use_device(0);
    let (r, buf) = add_one(256, 256);
    ok(r);
    ok(context::cuCtxSynchronize());
    assert_eq!(download::<f32>(buf, 256), vec![1.0; 256], "the kernel ran");
    // 300 threads over 256 floats: thread 0 of block 2 reads the first float past the end.
    let (r, _) = add_one(256, 300);
    assert_eq!(r, CUresult::CUDA_SUCCESS, "a fault shows at the next synchronisation, not at the launch");
    assert_eq!(context::cuCtxSynchronize(), FAULT);
    // Sticky: every later call of the context.
    let mut p = 0;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { memory::cuMemAlloc_v2(&mut p, 16) }, FAULT);
    assert_eq!(memory::cuMemsetD8_v2(buf, 0, 4), FAULT);
    let mut host = [0u8; 4];
    // SAFETY: 4 bytes of `host`.
    assert_eq!(unsafe { memory::cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), buf, 4) }, FAULT);
    assert_eq!(stream::cuStreamSynchronize(std::ptr::null_mut()), FAULT);
    assert_eq!(context::cuCtxSynchronize(), FAULT);
    // Another device is unaffected.
    use_device(1);
    let (r, b) = add_one(8, 8);
    ok(r);
    ok(context::cuCtxSynchronize());
    assert_eq!(download::<f32>(b, 8), vec![1.0; 8]);
    // Resetting the primary context clears the error (and everything in it).
    ok(context::cuDevicePrimaryCtxReset_v2(0));
    use_device(0);
    ok(context::cuCtxSynchronize());
    assert_eq!(memory::cuMemsetD8_v2(buf, 0, 4), CUresult::CUDA_ERROR_INVALID_VALUE, "its memory is gone");
    let (r, b) = add_one(4, 4);
    ok(r);
    ok(context::cuCtxSynchronize());
    assert_eq!(download::<f32>(b, 4), vec![1.0; 4]);
    println!("CHILD DONE");
}

#[test]
fn a_fault_is_sticky_and_reported() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "faulting_child", "--ignored", "--nocapture"])
        .env("SOFTGPU_TEST_FAULT", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("CHILD DONE"), "{stdout}\n{stderr}");
    let line = ADD_ONE_PTX.lines().position(|l| l.contains("ld.global.f32")).unwrap() + 1;
    let report =
        format!("softgpu: IllegalAddress in kernel `add_one` at PTX line {line}, block (2, 0, 0) thread (0, 0, 0)");
    assert!(stderr.contains(&report), "expected {report:?} in:\n{stderr}");
}
