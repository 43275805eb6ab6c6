//! The group of ranks on GPUs that all-reduce through NCCL (cudarc's `nccl` feature, loaded at
//! run time).
//!
//! cudarc's `Comm` may not leave the thread that made it (`!Send`) and panics in `Drop` on an
//! error, so each rank has a worker thread that owns its CUDA context, stream and communicator
//! and serves the all-reduces sent to it over a channel; the caller waits for the answer at most
//! the timeout. A CPU group of the same ranks (a [`TcpGroup`](super::TcpGroup) between
//! processes, a [`ThreadGroup`](super::ThreadGroup) between threads) carries the unique id,
//! agrees on each collective before it goes to NCCL, and names the rank that is missing.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cudarc::driver::{CudaContext, CudaStream, DeviceRepr};
use cudarc::nccl::{Comm, Id, NcclType};

use super::contribution::{CollectiveShape, Contribution, PlainCollectives, Reduced, name_ranks, reduce_with};
use super::nccl_probe::{NcclInfo, nccl_error_text, probe_nccl};
use super::thread::ThreadGroup;
use super::{ProcessGroup, ReduceOp};
use crate::error::{Error, Result};

/// The NCCL unique id: 128 bytes, carried as 16 words.
const ID_WORDS: usize = 16;

/// One rank of a group that all-reduces on its GPU through NCCL: the statistics (small host
/// arrays) are uploaded, reduced in place on the device on the rank's own stream, and downloaded.
///
/// One rank per GPU: in separate processes (the usual case, with a [`TcpGroup`](super::TcpGroup)
/// as the CPU group) or as threads ([`NcclGroup::threads`]). NCCL before 2.30 refuses two ranks
/// on one GPU; 2.30 and later accept it with `NCCL_MULTI_RANK_GPU_ENABLE=1`.
///
/// Each collective first agrees through the CPU group on what is reduced (so that a rank that
/// is gone or calls something else is an error naming it, on every rank, rather than a hang in
/// NCCL), then runs on the GPU; an all-reduce that does not finish within the timeout breaks the
/// group. On a machine without the CUDA driver, a GPU or `libnccl.so`, [`NcclGroup::new`] is an
/// error that says what is missing, on every rank.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use qcalib::sync::{NcclGroup, ProcessGroup, ReduceOp, SingleRank};
/// match NcclGroup::new(Arc::new(SingleRank), 0, Duration::from_secs(60)) {
///     Ok(group) => {
///         let mut x = [1.0f32, -2.0];
///         group.all_reduce_f32(&mut x, ReduceOp::Max)?; // one rank: the identity, on the GPU
///         assert_eq!(x, [1.0, -2.0]);
///     }
///     Err(e) => assert!(e.to_string().contains("NCCL")), // no GPU or no NCCL here
/// }
/// # Ok::<(), qcalib::Error>(())
/// ```
pub struct NcclGroup {
    cpu: Arc<dyn ProcessGroup>,
    ordinal: usize,
    timeout: Duration,
    info: NcclInfo,
    state: Mutex<State>,
}

struct State {
    jobs: mpsc::Sender<Job>,
    completed: u64,
    broken: Option<String>,
}

/// An all-reduce for the worker, with where to send its result.
enum Job {
    F32(Vec<f32>, ReduceOp, mpsc::Sender<Result<Vec<f32>, String>>),
    U64(Vec<u64>, ReduceOp, mpsc::Sender<Result<Vec<u64>, String>>),
}

impl NcclGroup {
    /// Joins the NCCL communicator of the ranks of `cpu` on the GPU `cuda:ordinal` (usually
    /// `LOCAL_RANK`). Every rank of `cpu` must call it; it fails on every rank, naming the ranks
    /// where NCCL cannot run, when one of them cannot.
    pub fn new(cpu: Arc<dyn ProcessGroup>, ordinal: usize, timeout: Duration) -> Result<NcclGroup> {
        let (rank, world) = (cpu.rank(), cpu.world_size());
        // 1. Every rank probes; rank 0 also makes the unique id. One all-reduce tells every rank
        //    who failed, and carries the id (the other ranks add zeros).
        let local = probe_nccl(ordinal)
            .and_then(|info| if rank == 0 { unique_id().map(|id| (info, Some(id))) } else { Ok((info, None)) });
        let mut words = vec![0u64; world + ID_WORDS];
        match &local {
            Err(_) => words[rank] = 1,
            Ok((_, Some(id))) => words[world..].copy_from_slice(&id_to_words(id)),
            Ok((_, None)) => {}
        }
        cpu.all_reduce_u64(&mut words, ReduceOp::Sum)?;
        let failed: Vec<usize> = (0..world).filter(|&r| words[r] != 0).collect();
        let info = match local {
            Ok((info, _)) if failed.is_empty() => info,
            Ok(_) => {
                return Err(Error::Sync(format!(
                    "NCCL was asked for, but it cannot run on {} (see the error there)",
                    name_ranks(&failed)
                )));
            }
            Err(e) => {
                let others: Vec<usize> = failed.into_iter().filter(|&r| r != rank).collect();
                let others =
                    if others.is_empty() { String::new() } else { format!(" (and on {})", name_ranks(&others)) };
                let why = match e {
                    Error::Sync(why) => why,
                    e => e.to_string(),
                };
                return Err(Error::Sync(format!("NCCL was asked for, but on rank {rank}: {why}{others}")));
            }
        };
        let id = id_from_words(&words[world..]);

        // 2. The worker joins the communicator (NCCL waits there for every rank).
        let (jobs, queue) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("qcalib-nccl-rank{rank}"))
            .spawn(move || serve(ordinal, rank, world, id, &ready_tx, queue));
        let started = match spawned {
            Err(e) => Err(format!("could not start the NCCL worker thread: {e}")),
            Ok(_) => match ready.recv_timeout(timeout / 2) {
                Ok(result) => result,
                Err(RecvTimeoutError::Timeout) => {
                    Err(format!("joining the NCCL communicator took more than {:.1} s", (timeout / 2).as_secs_f64()))
                }
                Err(RecvTimeoutError::Disconnected) => Err("the NCCL worker thread ended".into()),
            },
        };

        // 3. Every rank learns whose communicator failed.
        let mut flags = vec![0u64; world];
        if started.is_err() {
            flags[rank] = 1;
        }
        cpu.all_reduce_u64(&mut flags, ReduceOp::Sum)?;
        let failed: Vec<usize> = (0..world).filter(|&r| flags[r] != 0).collect();
        match started {
            Err(why) => Err(Error::Sync(format!("NCCL on cuda:{ordinal}, rank {rank}: {why}"))),
            Ok(()) if !failed.is_empty() => Err(Error::Sync(format!(
                "the NCCL communicator could not be set up on {} (see the error there)",
                name_ranks(&failed)
            ))),
            Ok(()) => Ok(NcclGroup {
                cpu,
                ordinal,
                timeout,
                info,
                state: Mutex::new(State { jobs, completed: 0, broken: None }),
            }),
        }
    }

    /// A group of one rank per entry of `ordinals`, as threads of this process (each rank on
    /// the GPU `cuda:ordinals[rank]`).
    pub fn threads(ordinals: &[usize], timeout: Duration) -> Result<Vec<NcclGroup>> {
        let ranks = ThreadGroup::with_timeout(ordinals.len(), timeout)?;
        let results: Vec<Result<NcclGroup>> = std::thread::scope(|s| {
            let workers: Vec<_> = ranks
                .into_iter()
                .zip(ordinals)
                .map(|(cpu, &ordinal)| s.spawn(move || NcclGroup::new(Arc::new(cpu), ordinal, timeout)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(Error::Sync("an NCCL rank's thread panicked".into()))))
                .collect()
        });
        results.into_iter().collect()
    }

    /// What the probe found on this rank's machine (NCCL's version among others).
    pub fn info(&self) -> NcclInfo {
        self.info
    }

    /// The GPU of this rank.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// One collective: agree on it through the CPU group (unless the caller has: `agreed`), then
    /// all-reduce on the GPU.
    fn all_reduce<T: Copy>(
        &self,
        data: &mut [T],
        op: ReduceOp,
        floats: bool,
        agreed: bool,
        job: impl FnOnce(Vec<T>, mpsc::Sender<Result<Vec<T>, String>>) -> Job,
    ) -> Result<()> {
        let mut state = self.lock();
        if let Some(why) = &state.broken {
            return Err(broken(why));
        }
        let seq = state.completed;
        let agree = || if agreed { Ok(()) } else { self.agree(seq, CollectiveShape { floats, op, len: data.len() }) };
        let result = agree().and_then(|()| {
            if data.is_empty() {
                return Ok(());
            }
            let (reply, answer) = mpsc::channel();
            state.jobs.send(job(data.to_vec(), reply)).map_err(|_| self.failed(seq, "its worker thread has ended"))?;
            match answer.recv_timeout(self.timeout) {
                Ok(Ok(v)) if v.len() == data.len() => {
                    data.copy_from_slice(&v);
                    Ok(())
                }
                Ok(Ok(_)) => Err(self.failed(seq, "the device returned an array of another length")),
                Ok(Err(why)) => Err(self.failed(seq, &why)),
                Err(RecvTimeoutError::Timeout) => Err(self.failed(
                    seq,
                    &format!("it did not finish within {:.1} s (a rank stopped during it)", self.timeout.as_secs_f64()),
                )),
                Err(RecvTimeoutError::Disconnected) => Err(self.failed(seq, "its worker thread ended")),
            }
        });
        match &result {
            Ok(()) => state.completed += 1,
            Err(e) => state.broken = Some(e.to_string()),
        }
        result
    }

    /// Every rank checks, through the CPU group, that all ranks are here and call the same
    /// collective (the same on every rank: each sees the largest and the smallest shape).
    fn agree(&self, seq: u64, shape: CollectiveShape) -> Result<()> {
        let word = shape.to_word();
        let mut seen = [word, !word];
        self.cpu.all_reduce_u64(&mut seen, ReduceOp::Max)?;
        if seen[0] != word || !seen[1] != word {
            return Err(Error::Sync(format!(
                "the ranks called different collectives at NCCL collective #{seq} (rank {}: {shape}); every rank \
                 must run the same observers with the same settings on the same tensors",
                self.cpu.rank()
            )));
        }
        Ok(())
    }

    fn failed(&self, seq: u64, why: &str) -> Error {
        Error::Sync(format!("NCCL all-reduce #{seq} on cuda:{}, rank {}: {why}", self.ordinal, self.cpu.rank()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The error of a collective on a group that an earlier failure broke.
fn broken(why: &str) -> Error {
    Error::Sync(format!("the NCCL group is broken by an earlier failure: {why}"))
}

/// Rank 0's unique id (cudarc panics if a symbol is missing: caught).
fn unique_id() -> Result<Id> {
    catch_unwind(Id::new)
        .map_err(|_| Error::Sync("NCCL panicked while making the unique id".into()))?
        .map_err(|e| Error::Sync(format!("ncclGetUniqueId failed: {}", nccl_error_text(&e))))
}

fn id_to_words(id: &Id) -> [u64; ID_WORDS] {
    let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
    let mut words = [0u64; ID_WORDS];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
    }
    words
}

fn id_from_words(words: &[u64]) -> Id {
    let mut internal = [0 as std::ffi::c_char; 128];
    for (i, b) in words.iter().flat_map(|w| w.to_le_bytes()).take(128).enumerate() {
        internal[i] = b as std::ffi::c_char;
    }
    Id::uninit(internal)
}

/// The worker of one rank: makes the context, stream and communicator on this thread, reports
/// on `ready`, then serves all-reduces until the group is dropped.
fn serve(
    ordinal: usize,
    rank: usize,
    world: usize,
    id: Id,
    ready: &mpsc::Sender<Result<(), String>>,
    jobs: mpsc::Receiver<Job>,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let cuda = |e: cudarc::driver::DriverError| format!("cuda:{ordinal}: {e}");
        let ctx = CudaContext::new(ordinal).map_err(cuda)?;
        let stream = ctx.new_stream().map_err(cuda)?;
        ctx.bind_to_thread().map_err(cuda)?;
        let comm = Comm::from_rank(stream.clone(), rank, world, id)
            .map_err(|e| format!("ncclCommInitRank failed: {}", nccl_error_text(&e)))?;
        let _ = ready.send(Ok(()));
        for job in jobs {
            match job {
                Job::F32(data, op, reply) => {
                    let _ = reply.send(reduce_on_device(&comm, &stream, &data, op));
                }
                Job::U64(data, op, reply) => {
                    let _ = reply.send(reduce_on_device(&comm, &stream, &data, op));
                }
            }
        }
        Ok(())
    }));
    let _ = ready.send(outcome.unwrap_or_else(|_| Err("the NCCL worker panicked".into())));
}

/// Upload, all-reduce in place on the rank's stream, download (which waits for the stream).
fn reduce_on_device<T: NcclType + DeviceRepr>(
    comm: &Comm,
    stream: &Arc<CudaStream>,
    data: &[T],
    op: ReduceOp,
) -> Result<Vec<T>, String> {
    let op = match op {
        ReduceOp::Min => cudarc::nccl::ReduceOp::Min,
        ReduceOp::Max => cudarc::nccl::ReduceOp::Max,
        ReduceOp::Sum => cudarc::nccl::ReduceOp::Sum,
    };
    let mut buf = stream.clone_htod(data).map_err(|e| format!("upload: {e}"))?;
    comm.all_reduce_in_place(&mut buf, &op).map_err(|e| format!("ncclAllReduce: {}", nccl_error_text(&e)))?;
    crate::engine::cuda::read_back(stream, &buf).map_err(|e| format!("download: {e}"))
}

impl fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcclGroup")
            .field("rank", &self.cpu.rank())
            .field("world_size", &self.cpu.world_size())
            .field("ordinal", &self.ordinal)
            .field("nccl_version", &self.info.nccl_version)
            .finish()
    }
}

impl ProcessGroup for NcclGroup {
    fn rank(&self) -> usize {
        self.cpu.rank()
    }

    fn world_size(&self) -> usize {
        self.cpu.world_size()
    }

    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> Result<()> {
        self.all_reduce(data, op, true, false, |v, reply| Job::F32(v, op, reply))
    }

    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> Result<()> {
        self.all_reduce_u64_on_device(data, op, false)
    }

    /// One collective on the CPU group (the lengths, each rank's verdict on its values, and that
    /// every rank is here), then two NCCL all-reduces that need no agreement of their own: the
    /// minimums and maximums, and the sums with the gathered words. One round trip through the
    /// store per bucket instead of one per collective.
    fn all_reduce_bucket(&self, parts: &[Contribution]) -> Result<Vec<Reduced>> {
        // A broken group fails before the collective on the CPU group, as a plain all-reduce does.
        if let Some(why) = &self.lock().broken {
            return Err(broken(why));
        }
        let collectives = PlainCollectives {
            header_max: &|h| self.cpu.all_reduce_u64(h, ReduceOp::Max),
            extremes_max: &|e| {
                self.all_reduce(e, ReduceOp::Max, true, true, |v, reply| Job::F32(v, ReduceOp::Max, reply))
            },
            words_sum: &|w| self.all_reduce_u64_on_device(w, ReduceOp::Sum, true),
        };
        reduce_with(self.rank(), self.world_size(), parts, &collectives)
    }
}

impl NcclGroup {
    /// [`ProcessGroup::all_reduce_u64`] on the GPU; `agreed` as in [`NcclGroup::all_reduce`].
    fn all_reduce_u64_on_device(&self, data: &mut [u64], op: ReduceOp, agreed: bool) -> Result<()> {
        if op != ReduceOp::Sum {
            return self.all_reduce(data, op, false, agreed, |v, reply| Job::U64(v, op, reply));
        }
        // NCCL's sum wraps at 2^64. Sum the high and the low 32-bit halves instead (neither sum
        // can wrap with fewer than 2^32 ranks) and refuse a total that does not fit, as the CPU
        // groups do: every rank sees the same sums, so every rank fails together.
        let mut halves: Vec<u64> = data.iter().map(|&v| v >> 32).chain(data.iter().map(|&v| v & 0xffff_ffff)).collect();
        self.all_reduce(&mut halves, op, false, agreed, |v, reply| Job::U64(v, op, reply))?;
        let (high, low) = halves.split_at(data.len());
        for (i, d) in data.iter_mut().enumerate() {
            let total = (u128::from(high[i]) << 32) + u128::from(low[i]);
            *d = u64::try_from(total).map_err(|_| {
                Error::Sync(format!(
                    "NCCL all-reduce on cuda:{}, rank {}: a u64 sum overflows (element {i})",
                    self.ordinal,
                    self.cpu.rank()
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unique_id_survives_the_trip_as_words() {
        let mut internal = [0 as std::ffi::c_char; 128];
        for (i, c) in internal.iter_mut().enumerate() {
            *c = (i as u8).wrapping_mul(37) as std::ffi::c_char;
        }
        let id = Id::uninit(internal);
        assert_eq!(id_from_words(&id_to_words(&id)).internal(), &internal);
    }
}
