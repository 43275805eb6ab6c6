//! NCCL on softgpu: ranks as threads and as processes meet through the unique id and all-reduce
//! f32 and u64 with sum, min and max, in rank order (every rank gets the same bits); groups,
//! communicator queries, the version and the error strings.

mod api_support;

use std::ffi::{CStr, c_void};
use std::process::Command;

use api_support::*;
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t as T, ncclRedOp_t as Op, ncclResult_t, ncclUniqueId};
use softgpu::api::nccl as api;

#[track_caller]
fn nccl_ok(r: ncclResult_t) {
    assert_eq!(r, ncclResult_t::ncclSuccess, "{}", last_error());
}

fn last_error() -> String {
    // SAFETY: a static string.
    unsafe { CStr::from_ptr(api::ncclGetLastError(std::ptr::null_mut())) }.to_string_lossy().into_owned()
}

fn unique_id() -> ncclUniqueId {
    let mut id = ncclUniqueId { internal: [0; 128] };
    // SAFETY: one out-pointer.
    nccl_ok(unsafe { api::ncclGetUniqueId(&mut id) });
    id
}

fn join(id: ncclUniqueId, rank: i32, nranks: i32) -> ncclComm_t {
    let mut comm: ncclComm_t = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    nccl_ok(unsafe { api::ncclCommInitRank(&mut comm, nranks, id, rank) });
    comm
}

/// All-reduces `values` (f32 or u64 as `dtype`) on rank's device in place; the result.
fn all_reduce<V: Copy + Default>(comm: ncclComm_t, values: &[V], dtype: T, op: Op) -> Vec<V> {
    let bytes = std::mem::size_of_val(values);
    let buf = alloc(bytes.max(1));
    let s = new_stream(1);
    // SAFETY: the slice's bytes (an async copy on the collective's stream: a synchronous one runs
    // on the legacy stream, which a non-blocking stream does not wait for).
    ok(unsafe { softgpu::api::memory::cuMemcpyHtoDAsync_v2(buf, values.as_ptr().cast(), bytes, s) });
    nccl_ok(api::ncclAllReduce(
        buf as *const c_void,
        buf as *mut c_void,
        values.len(),
        dtype as u32,
        op as u32,
        comm,
        s.cast(),
    ));
    let mut out = vec![V::default(); values.len()];
    // SAFETY: the vector's bytes; the copy is done when the call returns (pageable memory).
    ok(unsafe { softgpu::api::memory::cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), buf, bytes, s) });
    // Stream-ordered: cuMemFree would wait for the whole device, where another rank's stream may
    // wait in a collective for this rank's next one (a deadlock on a real GPU too).
    ok(softgpu::api::memory::cuMemFreeAsync(buf, s));
    ok(softgpu::api::stream::cuStreamDestroy_v2(s));
    out
}

/// What every rank contributes and what it must get back.
fn rank_values(rank: usize) -> (Vec<f32>, Vec<u64>) {
    let r = rank as f32;
    (vec![[1.0, 1e8, -1e8][rank % 3], r - 1.5, 0.25 * r, -r], vec![rank as u64 + 1, u64::MAX - rank as u64, 1 << rank])
}

/// The reductions a rank runs, as bytes (so that ranks compare bit for bit).
fn rank_work(comm: ncclComm_t, rank: usize) -> Vec<u8> {
    let (f, u) = rank_values(rank);
    let mut out = Vec::new();
    for op in [Op::ncclSum, Op::ncclMin, Op::ncclMax] {
        out.extend(all_reduce(comm, &f, T::ncclFloat32, op).iter().flat_map(|v| v.to_le_bytes()));
        out.extend(all_reduce(comm, &u, T::ncclUint64, op).iter().flat_map(|v| v.to_le_bytes()));
    }
    out
}

/// The same reductions on the host, in rank order.
fn expected(nranks: usize) -> Vec<u8> {
    let ranks: Vec<(Vec<f32>, Vec<u64>)> = (0..nranks).map(rank_values).collect();
    let mut out = Vec::new();
    for op in 0..3 {
        let f = |a: f32, b: f32| [a + b, a.min(b), a.max(b)][op];
        let u = |a: u64, b: u64| [a.wrapping_add(b), a.min(b), a.max(b)][op];
        let fr = ranks
            .iter()
            .skip(1)
            .fold(ranks[0].0.clone(), |acc, r| acc.iter().zip(&r.0).map(|(&a, &b)| f(a, b)).collect());
        let ur = ranks
            .iter()
            .skip(1)
            .fold(ranks[0].1.clone(), |acc, r| acc.iter().zip(&r.1).map(|(&a, &b)| u(a, b)).collect());
        out.extend(fr.iter().flat_map(|v| v.to_le_bytes()));
        out.extend(ur.iter().flat_map(|v| v.to_le_bytes()));
    }
    out
}

#[test]
fn three_ranks_as_threads_reduce_in_rank_order() {
    let id = unique_id();
    let results: Vec<Vec<u8>> = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..3)
            .map(|rank| {
                s.spawn(move || {
                    use_device(rank as i32 % 2);
                    let comm = join(id, rank as i32, 3);
                    let (mut n, mut r, mut d) = (0, 0, 0);
                    // SAFETY: out-pointers.
                    unsafe {
                        nccl_ok(api::ncclCommCount(comm, &mut n));
                        nccl_ok(api::ncclCommUserRank(comm, &mut r));
                        nccl_ok(api::ncclCommCuDevice(comm, &mut d));
                    }
                    assert_eq!((n, r, d), (3, rank as i32, rank as i32 % 2));
                    let out = rank_work(comm, rank);
                    let mut e = ncclResult_t::ncclInternalError;
                    // SAFETY: one out-pointer.
                    nccl_ok(unsafe { api::ncclCommGetAsyncError(comm, &mut e) });
                    assert_eq!(e, ncclResult_t::ncclSuccess);
                    nccl_ok(api::ncclCommDestroy(comm));
                    out
                })
            })
            .collect();
        ranks.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = expected(3);
    for (rank, got) in results.iter().enumerate() {
        assert_eq!(got, &want, "rank {rank}");
    }
    // (1 + 1e8) - 1e8 = 0 in rank order; another order would give 1.
    assert_eq!(&want[..4], 0f32.to_le_bytes());
}

#[test]
fn ranks_in_a_group_join_at_group_end() {
    let id = unique_id();
    use_device(0);
    let mut comms: [ncclComm_t; 2] = [std::ptr::null_mut(); 2];
    nccl_ok(api::ncclGroupStart());
    for (rank, c) in comms.iter_mut().enumerate() {
        // SAFETY: one out-pointer.
        nccl_ok(unsafe { api::ncclCommInitRank(c, 2, id, rank as i32) });
    }
    nccl_ok(api::ncclGroupEnd());
    assert_eq!(api::ncclGroupEnd(), ncclResult_t::ncclInvalidUsage, "no group is open");
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .enumerate()
            .map(|(rank, &c)| {
                let c = c as usize;
                s.spawn(move || {
                    use_device(0);
                    all_reduce(c as ncclComm_t, &[rank as f32 + 1.0], T::ncclFloat32, Op::ncclSum)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, [[3.0], [3.0]]);
    for c in comms {
        nccl_ok(api::ncclCommDestroy(c));
    }
}

/// The child of [`two_ranks_as_processes_agree`]: rank 1 of the id in `SOFTGPU_TEST_NCCL_ID`,
/// its results in hex on stdout.
#[test]
#[ignore = "run by two_ranks_as_processes_agree"]
fn nccl_child_rank() {
    let Ok(hex) = std::env::var("SOFTGPU_TEST_NCCL_ID") else { return };
    let mut id = ncclUniqueId { internal: [0; 128] };
    for (i, c) in id.internal.iter_mut().enumerate() {
        *c = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap() as _;
    }
    use_device(1);
    let comm = join(id, 1, 2);
    let out = rank_work(comm, 1);
    nccl_ok(api::ncclCommDestroy(comm));
    println!("RESULT {}", out.iter().map(|b| format!("{b:02x}")).collect::<String>());
}

#[test]
fn two_ranks_as_processes_agree() {
    let id = unique_id();
    let hex: String = id.internal.iter().map(|&c| format!("{:02x}", c as u8)).collect();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "nccl_child_rank", "--ignored", "--nocapture"])
        .env("SOFTGPU_TEST_NCCL_ID", &hex)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use_device(0);
    let comm = join(id, 0, 2);
    let mine = rank_work(comm, 0);
    nccl_ok(api::ncclCommDestroy(comm));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let theirs = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("the child's result");
    let theirs: Vec<u8> =
        (0..theirs.len() / 2).map(|i| u8::from_str_radix(&theirs[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert_eq!(mine, expected(2));
    assert_eq!(theirs, mine);
}

#[test]
fn version_errors_and_unsupported_types() {
    let mut v = 0;
    // SAFETY: one out-pointer.
    nccl_ok(unsafe { api::ncclGetVersion(&mut v) });
    assert_eq!(v, 23000);
    // SAFETY: static strings.
    let text =
        |r: ncclResult_t| unsafe { CStr::from_ptr(api::ncclGetErrorString(r as u32)) }.to_str().unwrap().to_string();
    assert_eq!(text(ncclResult_t::ncclSuccess), "no error");
    assert!(text(ncclResult_t::ncclRemoteError).contains("remote process exited"));
    let id = unique_id();
    use_device(0);
    let comm = join(id, 0, 1);
    let buf = alloc(16);
    let s = new_stream(1);
    let r = api::ncclAllReduce(buf as _, buf as _, 4, T::ncclFloat16 as u32, Op::ncclSum as u32, comm, s.cast());
    assert_eq!(r, ncclResult_t::ncclInvalidArgument);
    assert!(last_error().contains("not ncclDataType_t 6"), "{}", last_error());
    let r = api::ncclAllReduce(buf as _, buf as _, 5, T::ncclFloat32 as u32, Op::ncclSum as u32, comm, s.cast());
    assert_eq!(r, ncclResult_t::ncclInvalidArgument, "20 bytes of a 16-byte buffer");
    assert_eq!(all_reduce(comm, &[2.5f32, -1.0], T::ncclFloat32, Op::ncclMax), [2.5, -1.0], "one rank: the identity");
    nccl_ok(api::ncclCommDestroy(comm));
    assert_eq!(api::ncclCommDestroy(comm), ncclResult_t::ncclInvalidArgument);
}
