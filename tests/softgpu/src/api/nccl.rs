//! The exported NCCL functions (`nccl*`): unique id, communicators, all-reduce, groups, errors.
//! See [`crate::nccl`] for how the ranks meet and reduce.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use cudarc::driver::sys::CUresult;
use cudarc::nccl::sys::{ncclComm_t, ncclConfig_t, ncclResult_t, ncclUniqueId};

use crate::device::stream::Failure;
use crate::device::transfer::DeviceRange;
use crate::device::{self, context};
use crate::nccl::comm::Comm;
use crate::nccl::error::{self, NcclError};
use crate::nccl::unique_id::{ID_BYTES, UniqueId};
use crate::nccl::{self, VERSION_CODE, comms, reduce};

/// Runs the body of an NCCL function: its error code (the message becomes the last error, and
/// is printed when `NCCL_DEBUG` is set), or `ncclSuccess`.
fn call(body: impl FnOnce() -> Result<(), NcclError>) -> ncclResult_t {
    let result = catch_unwind(AssertUnwindSafe(body))
        .unwrap_or_else(|_| Err(NcclError::new(ncclResult_t::ncclInternalError, "softgpu NCCL: a call panicked")));
    match result {
        Ok(()) => ncclResult_t::ncclSuccess,
        Err(e) => {
            if std::env::var_os("NCCL_DEBUG").is_some() {
                eprintln!("NCCL WARN {}", e.message);
            }
            error::set_last_error(e.message);
            e.code
        }
    }
}

fn comm(handle: ncclComm_t) -> Result<Arc<Comm>, NcclError> {
    comms().get(handle as usize).ok_or_else(|| NcclError::argument("softgpu NCCL: an invalid communicator"))
}

/// The NCCL version: 2.30.0.
///
/// # Safety
/// `version` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclGetVersion(version: *mut c_int) -> ncclResult_t {
    call(|| {
        if version.is_null() {
            return Err(NcclError::argument("ncclGetVersion: version is NULL"));
        }
        // SAFETY: the caller's promise.
        unsafe { version.write_unaligned(VERSION_CODE) };
        Ok(())
    })
}

/// A new unique id: starts the communicator's hub in this process.
///
/// # Safety
/// `unique_id` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclGetUniqueId(unique_id: *mut ncclUniqueId) -> ncclResult_t {
    call(|| {
        if unique_id.is_null() {
            return Err(NcclError::argument("ncclGetUniqueId: uniqueId is NULL"));
        }
        let timeout = nccl::timeout_from_env().map_err(|e| NcclError::argument(format!("softgpu NCCL: {e}")))?;
        let id = nccl::unique_id(timeout)
            .map_err(|e| NcclError::system(format!("softgpu NCCL: cannot listen on a loopback port: {e}")))?;
        let internal = id.encode().map(|b| b as c_char);
        // SAFETY: the caller's promise.
        unsafe { unique_id.write_unaligned(ncclUniqueId { internal }) };
        Ok(())
    })
}

/// A join running in the background (started inside a group).
type Join = JoinHandle<Result<(), NcclError>>;

thread_local! {
    /// `ncclGroupStart` depth, and the joins started inside the group.
    static GROUP: RefCell<(u32, Vec<Join>)> = const { RefCell::new((0, Vec::new())) };
}

fn in_group() -> bool {
    GROUP.with(|g| g.borrow().0 > 0)
}

/// Joins a communicator as `rank` of `nranks` on the calling thread's current device: blocks
/// until every rank has joined, or, inside a group, finishes at `ncclGroupEnd`.
fn init_rank(out: *mut ncclComm_t, nranks: c_int, id: &ncclUniqueId, rank: c_int) -> Result<(), NcclError> {
    if out.is_null() {
        return Err(NcclError::argument("ncclCommInitRank: comm is NULL"));
    }
    let nranks = usize::try_from(nranks).ok().filter(|&n| n >= 1);
    let Some(nranks) = nranks else { return Err(NcclError::argument("ncclCommInitRank: nranks must be at least 1")) };
    let rank = usize::try_from(rank).ok().filter(|&r| r < nranks);
    let Some(rank) = rank else {
        return Err(NcclError::argument(format!("ncclCommInitRank: rank must be in 0..{nranks}")));
    };
    let bytes: [u8; ID_BYTES] = id.internal.map(|c| c as u8);
    let id = UniqueId::decode(&bytes).map_err(|e| NcclError::argument(format!("softgpu NCCL: {e}")))?;
    let device = context::current().unwrap_or(0);
    let comm = Arc::new(Comm::new(id, rank, nranks, device));
    if in_group() {
        let joining = comm.clone();
        let handle = std::thread::Builder::new()
            .name(format!("softgpu-nccl-join-rank{rank}"))
            .spawn(move || joining.join())
            .map_err(|e| NcclError::system(format!("softgpu NCCL: {e}")))?;
        GROUP.with(|g| g.borrow_mut().1.push(handle));
    } else {
        comm.join()?;
    }
    // SAFETY: checked non-NULL; the caller's promise of a valid pointer.
    unsafe { out.write_unaligned(comms().insert(comm) as ncclComm_t) };
    Ok(())
}

/// Joins a communicator as `rank` of `nranks` on the calling thread's current device: blocks until
/// every rank has joined (or fails after the id's timeout), or, inside a group, finishes at
/// `ncclGroupEnd`.
///
/// # Safety
/// `comm` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommInitRank(
    comm: *mut ncclComm_t,
    nranks: c_int,
    comm_id: ncclUniqueId,
    rank: c_int,
) -> ncclResult_t {
    call(|| init_rank(comm, nranks, &comm_id, rank))
}

/// As [`ncclCommInitRank`]; the configuration is ignored (a non-blocking communicator is
/// joined before the call returns, which NCCL allows).
///
/// # Safety
/// `comm` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommInitRankConfig(
    comm: *mut ncclComm_t,
    nranks: c_int,
    comm_id: ncclUniqueId,
    rank: c_int,
    _config: *mut ncclConfig_t,
) -> ncclResult_t {
    call(|| init_rank(comm, nranks, &comm_id, rank))
}

/// One communicator per device of `devlist` (or devices 0..ndev), in this process.
///
/// # Safety
/// `comms_out` must be valid for `ndev` writes; `devlist` NULL or valid for `ndev` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommInitAll(
    comms_out: *mut ncclComm_t,
    ndev: c_int,
    devlist: *const c_int,
) -> ncclResult_t {
    call(|| {
        let n = usize::try_from(ndev)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| NcclError::argument("ncclCommInitAll: ndev < 1"))?;
        if comms_out.is_null() {
            return Err(NcclError::argument("ncclCommInitAll: comms is NULL"));
        }
        let timeout = nccl::timeout_from_env().map_err(|e| NcclError::argument(format!("softgpu NCCL: {e}")))?;
        let id = nccl::unique_id(timeout).map_err(|e| NcclError::system(format!("softgpu NCCL: {e}")))?;
        let devices: Vec<usize> = (0..n)
            // SAFETY: the caller's promise of `ndev` entries.
            .map(|i| if devlist.is_null() { i } else { unsafe { *devlist.add(i) }.max(0) as usize })
            .collect();
        let ranks: Vec<Arc<Comm>> =
            devices.iter().enumerate().map(|(r, &d)| Arc::new(Comm::new(id, r, n, d))).collect();
        let joins: Vec<_> = ranks
            .iter()
            .map(|c| {
                let c = c.clone();
                std::thread::spawn(move || c.join())
            })
            .collect();
        for j in joins {
            j.join().unwrap_or_else(|_| Err(NcclError::system("softgpu NCCL: a join panicked")))?;
        }
        for (r, c) in ranks.into_iter().enumerate() {
            // SAFETY: the caller's promise of `ndev` entries.
            unsafe { comms_out.add(r).write_unaligned(comms().insert(c) as ncclComm_t) };
        }
        Ok(())
    })
}

/// Starts a group: communicators joined inside it finish joining at `ncclGroupEnd`.
#[unsafe(no_mangle)]
pub extern "C" fn ncclGroupStart() -> ncclResult_t {
    call(|| {
        GROUP.with(|g| g.borrow_mut().0 += 1);
        Ok(())
    })
}

/// Ends a group; the outermost end waits for the joins started in it (the first error).
#[unsafe(no_mangle)]
pub extern "C" fn ncclGroupEnd() -> ncclResult_t {
    call(|| {
        let joins = GROUP.with(|g| {
            let mut g = g.borrow_mut();
            if g.0 == 0 {
                return Err(NcclError::usage("ncclGroupEnd without ncclGroupStart"));
            }
            g.0 -= 1;
            Ok(if g.0 == 0 { std::mem::take(&mut g.1) } else { Vec::new() })
        })?;
        let mut first = Ok(());
        for j in joins {
            let r = j.join().unwrap_or_else(|_| Err(NcclError::system("softgpu NCCL: a join panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

/// Leaves the communicator once its queued collectives are done.
#[unsafe(no_mangle)]
pub extern "C" fn ncclCommDestroy(comm: ncclComm_t) -> ncclResult_t {
    call(|| {
        comms().remove(comm as usize).ok_or_else(|| NcclError::argument("ncclCommDestroy: an invalid communicator"))?;
        Ok(())
    })
}

/// Leaves the communicator now: a collective waiting for the others fails at once.
#[unsafe(no_mangle)]
pub extern "C" fn ncclCommAbort(comm: ncclComm_t) -> ncclResult_t {
    call(|| {
        let c = comms()
            .remove(comm as usize)
            .ok_or_else(|| NcclError::argument("ncclCommAbort: an invalid communicator"))?;
        c.abort();
        Ok(())
    })
}

/// Nothing to flush: collectives complete in stream order.
#[unsafe(no_mangle)]
pub extern "C" fn ncclCommFinalize(comm: ncclComm_t) -> ncclResult_t {
    call(|| self::comm(comm).map(|_| ()))
}

/// The communicator's asynchronous error: `ncclSuccess`, `ncclInProgress` while joining, or
/// the error of a failed collective.
///
/// # Safety
/// `async_error` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommGetAsyncError(comm: ncclComm_t, async_error: *mut ncclResult_t) -> ncclResult_t {
    call(|| {
        let c = self::comm(comm)?;
        if async_error.is_null() {
            return Err(NcclError::argument("ncclCommGetAsyncError: asyncError is NULL"));
        }
        // SAFETY: the caller's promise.
        unsafe { async_error.write_unaligned(c.async_error()) };
        Ok(())
    })
}

/// Writes one `c_int` of the communicator.
fn comm_int(comm: ncclComm_t, out: *mut c_int, what: impl FnOnce(&Comm) -> usize) -> ncclResult_t {
    call(|| {
        let c = self::comm(comm)?;
        if out.is_null() {
            return Err(NcclError::argument("softgpu NCCL: a NULL out-pointer"));
        }
        // SAFETY: the caller's promise.
        unsafe { out.write_unaligned(what(&c) as c_int) };
        Ok(())
    })
}

/// The number of ranks.
///
/// # Safety
/// `count` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommCount(comm: ncclComm_t, count: *mut c_int) -> ncclResult_t {
    comm_int(comm, count, |c| c.nranks)
}

/// The rank's device.
///
/// # Safety
/// `device` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommCuDevice(comm: ncclComm_t, device: *mut c_int) -> ncclResult_t {
    comm_int(comm, device, |c| c.device)
}

/// The rank.
///
/// # Safety
/// `rank` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ncclCommUserRank(comm: ncclComm_t, rank: *mut c_int) -> ncclResult_t {
    comm_int(comm, rank, |c| c.rank)
}

/// All-reduces `count` elements of `sendbuff` into `recvbuff` (may be the same) on every rank,
/// in stream order. softgpu reduces the integer types, f32 and f64 with sum, product, min and
/// max.
#[unsafe(no_mangle)]
pub extern "C" fn ncclAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: u32,
    op: u32,
    comm: ncclComm_t,
    stream: *mut c_void,
) -> ncclResult_t {
    call(|| {
        let c = self::comm(comm)?;
        let cuda = |e: CUresult| NcclError::new(ncclResult_t::ncclUnhandledCudaError, format!("softgpu NCCL: {e:?}"));
        let d = device::driver().map_err(cuda)?;
        let (instance, s) = d.stream(stream as usize).map_err(cuda)?;
        instance.check().map_err(cuda)?;
        if s.device != c.device {
            return Err(NcclError::argument(format!(
                "softgpu NCCL: rank {} is on device {}, the stream on device {}",
                c.rank, c.device, s.device
            )));
        }
        let size = reduce::element_size(datatype).ok_or_else(|| {
            NcclError::argument(format!(
                "softgpu NCCL reduces the integer types, f32 and f64; not ncclDataType_t {datatype}"
            ))
        })?;
        if !reduce::supported_op(op) {
            return Err(NcclError::argument(format!("softgpu NCCL reduces with sum, prod, min and max; not op {op}")));
        }
        let bytes = count.checked_mul(size).ok_or_else(|| NcclError::argument("ncclAllReduce: count overflows"))?;
        let ranges = if bytes == 0 {
            None
        } else {
            let src = DeviceRange::new(&d.memory, sendbuff as u64, bytes as u64);
            let dst = DeviceRange::new(&d.memory, recvbuff as u64, bytes as u64);
            let bad = |_| NcclError::argument("ncclAllReduce: a buffer is not device memory of that size");
            Some((src.map_err(bad)?, dst.map_err(bad)?))
        };
        let seq = c.next_seq();
        instance.enqueue(
            &s,
            Box::new(move || {
                let data = match &ranges {
                    // SAFETY: the range holds its allocation of `bytes` bytes.
                    Some((src, _)) => unsafe { std::slice::from_raw_parts(src.host(), bytes) }.to_vec(),
                    None => Vec::new(),
                };
                match c.all_reduce(seq, datatype, op, count as u64, data) {
                    Ok(out) => {
                        if let Some((_, dst)) = &ranges {
                            // SAFETY: as above; `out` has `bytes` bytes (checked by the comm).
                            unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), dst.host(), bytes) };
                        }
                        Ok(())
                    }
                    Err(e) => {
                        error::set_last_error(e.message.clone());
                        Err(Failure { code: CUresult::CUDA_ERROR_LAUNCH_FAILED, message: e.message })
                    }
                }
            }),
        );
        Ok(())
    })
}

/// NCCL's description of `result`.
#[unsafe(no_mangle)]
pub extern "C" fn ncclGetErrorString(result: u32) -> *const c_char {
    error::error_string(result).as_ptr()
}

/// The last error message (the communicator argument is unused, as in NCCL).
#[unsafe(no_mangle)]
pub extern "C" fn ncclGetLastError(_comm: ncclComm_t) -> *const c_char {
    error::last_error()
}
