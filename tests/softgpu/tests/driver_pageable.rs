//! Copies to pageable host memory: by default `cuMemcpyDtoHAsync` returns once the bytes are
//! there (the driver's documented behaviour for pageable memory); with
//! `SOFTGPU_PAGEABLE_COPIES=async` it returns at once, the destination filled with `0xff`, and
//! the bytes arrive in stream order, so that a program reading before it synchronises sees
//! garbage. (The variable is read once per process: the async case runs in a child.)

mod api_support;

use std::process::Command;
use std::sync::Mutex;

use api_support::*;
use softgpu::api::{memory, stream};

/// Queues a slow step and a copy of 4 floats to the host on a new stream; what the host buffer
/// holds when the copy call returns, then after the stream is synchronised.
fn copy_behind_slow_work() -> (Vec<f32>, Vec<f32>) {
    static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    use_device(0);
    let buf = alloc(16);
    upload(buf, &[1.0f32, 2.0, 3.0, 4.0]);
    let s = new_stream(0);
    host_step(s, &LOG, "slow", 200);
    let mut host = vec![0f32; 4];
    // SAFETY: the vector's 16 bytes, kept until the stream is synchronised below.
    ok(unsafe { memory::cuMemcpyDtoHAsync_v2(host.as_mut_ptr().cast(), buf, 16, s) });
    let at_return = host.clone();
    ok(stream::cuStreamSynchronize(s));
    (at_return, host)
}

#[test]
#[ignore = "run by copies_to_pageable_memory"]
fn pageable_child() {
    if std::env::var_os("SOFTGPU_TEST_PAGEABLE").is_none() {
        return;
    }
    let (at_return, after) = copy_behind_slow_work();
    assert!(at_return.iter().all(|v| v.to_bits() == u32::MAX), "poison at return: {at_return:?}");
    assert_eq!(after, [1.0, 2.0, 3.0, 4.0]);
    println!("CHILD DONE");
}

#[test]
fn copies_to_pageable_memory() {
    let (at_return, after) = copy_behind_slow_work();
    assert_eq!(at_return, [1.0, 2.0, 3.0, 4.0], "by default the copy is done when the call returns");
    assert_eq!(after, at_return);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "pageable_child", "--ignored", "--nocapture"])
        .env("SOFTGPU_TEST_PAGEABLE", "1")
        .env("SOFTGPU_PAGEABLE_COPIES", "async")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD DONE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
