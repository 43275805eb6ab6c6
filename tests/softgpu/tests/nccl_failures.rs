//! NCCL failures on softgpu are errors on every rank, never a hang: a rank that never joins, an
//! id whose hub is gone, a peer process that dies, a rank that never calls the collective, ranks
//! that call different collectives. A collective that fails breaks the communicator (its async
//! error) and leaves the stream's context with a sticky error, like a failed kernel; resetting
//! the primary context clears it. The tests take turns (each resets the contexts it breaks).

mod api_support;

use std::ffi::{CStr, c_void};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_support::*;
use cudarc::driver::sys::CUresult;
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t as T, ncclRedOp_t as Op, ncclResult_t, ncclUniqueId};
use softgpu::api::{context, memory, nccl as api, stream};

static TURN: Mutex<()> = Mutex::new(());

fn last_error() -> String {
    // SAFETY: a static string.
    unsafe { CStr::from_ptr(api::ncclGetLastError(std::ptr::null_mut())) }.to_string_lossy().into_owned()
}

/// A unique id whose ranks wait `timeout` for each other.
fn unique_id(timeout: Duration) -> ncclUniqueId {
    let id = softgpu::nccl::unique_id(timeout).unwrap();
    ncclUniqueId { internal: id.encode().map(|b| b as _) }
}

fn join(id: ncclUniqueId, rank: i32, nranks: i32) -> Result<ncclComm_t, ncclResult_t> {
    let mut comm: ncclComm_t = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    match unsafe { api::ncclCommInitRank(&mut comm, nranks, id, rank) } {
        ncclResult_t::ncclSuccess => Ok(comm),
        e => Err(e),
    }
}

/// Queues an all-reduce of `n` floats on a new stream of the current device; the stream's
/// synchronisation result and the time it took.
fn all_reduce(comm: ncclComm_t, n: usize) -> (CUresult, Duration) {
    let buf = alloc(4 * n);
    ok(memory::cuMemsetD32_v2(buf, 0, n));
    let mut s = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    ok(unsafe { stream::cuStreamCreate(&mut s, 1) });
    let start = Instant::now();
    let r = api::ncclAllReduce(
        buf as *const c_void,
        buf as *mut c_void,
        n,
        T::ncclFloat32 as u32,
        Op::ncclSum as u32,
        comm,
        s.cast(),
    );
    assert_eq!(r, ncclResult_t::ncclSuccess, "queued");
    (stream::cuStreamSynchronize(s), start.elapsed())
}

fn async_error(comm: ncclComm_t) -> ncclResult_t {
    let mut e = ncclResult_t::ncclSuccess;
    // SAFETY: one out-pointer.
    assert_eq!(unsafe { api::ncclCommGetAsyncError(comm, &mut e) }, ncclResult_t::ncclSuccess);
    e
}

/// Clears the sticky error of `device` by resetting its primary context.
fn reset(device: i32) {
    ok(context::cuDevicePrimaryCtxReset_v2(device));
    use_device(device);
    ok(context::cuCtxSynchronize());
}

#[test]
fn a_rank_that_never_joins_fails_the_others_after_the_timeout_and_the_id_dies_with_its_hub() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let id = unique_id(Duration::from_millis(400));
    let start = Instant::now();
    assert_eq!(join(id, 0, 2).unwrap_err(), ncclResult_t::ncclRemoteError);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(last_error().contains("rank(s) 1 of 2 did not join the communicator within 0.4 s"), "{}", last_error());
    // The hub has given up: a late rank cannot reach it (refused, or accepted by a listener on its
    // way out and closed at once).
    let late = join(id, 1, 2).unwrap_err();
    assert!(matches!(late, ncclResult_t::ncclSystemError | ncclResult_t::ncclRemoteError), "{late:?}");
    assert!(last_error().contains("hub"), "{}", last_error());
    let mut garbage = ncclUniqueId { internal: [7; 128] };
    garbage.internal[0] = 0;
    assert_eq!(join(garbage, 0, 1).unwrap_err(), ncclResult_t::ncclInvalidArgument);
    assert!(last_error().contains("not made by softgpu"), "{}", last_error());
}

/// The child of [`a_peer_process_that_dies_fails_the_collective_at_once`]: joins as rank 1, then
/// exits without a word.
#[test]
#[ignore = "run by a_peer_process_that_dies_fails_the_collective_at_once"]
fn nccl_dying_rank() {
    let Ok(hex) = std::env::var("SOFTGPU_TEST_NCCL_ID") else { return };
    let mut id = ncclUniqueId { internal: [0; 128] };
    for (i, c) in id.internal.iter_mut().enumerate() {
        *c = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap() as _;
    }
    use_device(0);
    let _comm = join(id, 1, 2).unwrap();
    std::process::exit(0);
}

#[test]
fn a_peer_process_that_dies_fails_the_collective_at_once() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let id = unique_id(Duration::from_secs(120));
    let hex: String = id.internal.iter().map(|&c| format!("{:02x}", c as u8)).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "nccl_dying_rank", "--ignored"])
        .env("SOFTGPU_TEST_NCCL_ID", &hex)
        .spawn()
        .unwrap();
    use_device(1);
    let comm = join(id, 0, 2).unwrap();
    assert!(child.wait().unwrap().success());
    let (r, took) = all_reduce(comm, 4);
    assert_eq!(r, CUresult::CUDA_ERROR_LAUNCH_FAILED, "the failed collective is the context's error");
    assert!(took < Duration::from_secs(10), "detected at once, not after the timeout: {took:?}");
    assert_eq!(async_error(comm), ncclResult_t::ncclRemoteError);
    assert!(last_error().contains("rank 1 is gone"), "{}", last_error());
    assert_eq!(context::cuCtxSynchronize(), CUresult::CUDA_ERROR_LAUNCH_FAILED, "sticky");
    assert_eq!(api::ncclCommAbort(comm), ncclResult_t::ncclSuccess);
    reset(1);
}

#[test]
fn a_rank_that_never_calls_the_collective_fails_the_others_after_the_timeout() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let id = unique_id(Duration::from_millis(500));
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        use_device(1);
        let comm = join(id, 1, 2).unwrap();
        let _ = wait.recv(); // alive, in the communicator, but never calling
        comm as usize
    });
    use_device(0);
    let comm = join(id, 0, 2).unwrap();
    let (r, took) = all_reduce(comm, 4);
    assert_eq!(r, CUresult::CUDA_ERROR_LAUNCH_FAILED);
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(10), "{took:?}");
    assert!(last_error().contains("all-reduce #0: rank(s) 1 did not join within 0.5 s"), "{}", last_error());
    assert_eq!(async_error(comm), ncclResult_t::ncclRemoteError);
    drop(done);
    let other = idle.join().unwrap() as ncclComm_t;
    assert_eq!(api::ncclCommDestroy(other), ncclResult_t::ncclSuccess);
    assert_eq!(api::ncclCommDestroy(comm), ncclResult_t::ncclSuccess);
    reset(0);
}

#[test]
fn ranks_that_call_different_collectives_fail_together() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let id = unique_id(Duration::from_secs(60));
    let results: Vec<(CUresult, ncclResult_t)> = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                s.spawn(move || {
                    use_device(rank);
                    let comm = join(id, rank, 2).unwrap();
                    let (r, _) = all_reduce(comm, 4 - rank as usize);
                    let e = async_error(comm);
                    assert_eq!(api::ncclCommDestroy(comm), ncclResult_t::ncclSuccess);
                    (r, e)
                })
            })
            .collect();
        ranks.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, vec![(CUresult::CUDA_ERROR_LAUNCH_FAILED, ncclResult_t::ncclRemoteError); 2]);
    assert!(
        last_error().contains("rank 0 reduces 4 elements of type 7 with op 0, rank 1 3 of type 7 with op 0"),
        "{}",
        last_error()
    );
    reset(0);
    reset(1);
}
