//! The group of ranks in separate processes, on one machine or several, that exchange their
//! statistics through a TCP store speaking PyTorch's protocol: rank 0's own
//! [`StoreServer`], or the store a `torchrun` agent serves.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::contribution::{Array, Outcome, Payload, name_ranks, reduce_in_rank_order};
use super::heartbeat::{DEAD_AFTER, Heartbeat, Watch};
use super::limits::CHUNK_LEN;
use super::protocol::{Message, query};
use super::rendezvous::{Rendezvous, StoreRole};
use super::store::TcpStore;
use super::store_server::StoreServer;
use super::{Contribution, ProcessGroup, ReduceOp, Reduced};
use crate::error::{Error, Result};

/// How long one wait for the store may last before the waiting rank looks at the others'
/// heartbeats.
const SLICE: Duration = Duration::from_secs(1);

/// The first byte of piece 0 of a rank's part: what follows.
const DATA: u8 = 0;
/// The rank stopped after a failure: the reason follows (UTF-8).
const FAILED: u8 = 1;
/// The rank finished its run: no more collectives come from it.
const FINISHED: u8 = 2;

/// The longest reason a rank writes when it stops (longer ones are cut).
const MAX_REASON: usize = 4096;

/// One rank of a group of processes (`torchrun`-style, see [`Rendezvous`]). The ranks meet in a
/// [`TcpStore`]: the store a `torchrun` agent serves (`TORCHELASTIC_USE_AGENT_STORE=True`; every
/// rank is its client, and qcalib's keys go under `/worker/attempt_{TORCHELASTIC_RESTART_COUNT}/qcalib/`),
/// or else the [`StoreServer`] rank 0 serves on `MASTER_PORT`. Each collective is an exchange
/// through it: each rank sets its part under a key of the collective, waits for the other
/// ranks' keys, and combines all parts in rank order (so that every rank computes identical
/// results).
///
/// The keys, as a Python `TCPStore` client names them, under the store's prefix (none, or
/// `/worker/attempt_{N}` for torchrun's store, as Python's `PrefixStore` joins them):
///
/// | key | value | written by |
/// |---|---|---|
/// | `qcalib/runs/{rank}` | the number of qcalib runs this rank has finished on this store (a counter) | each rank, at its end |
/// | `qcalib/{run}/claim/{rank}` | a counter: 1, or more when two processes have the same `RANK` | each rank, at its start |
/// | `qcalib/{run}/alive/{rank}` | the rank's heartbeat (a counter, +1 a second) | each rank's heartbeat thread |
/// | `qcalib/{run}/join/{rank}` | the rank's `WORLD_SIZE` (decimal) | each rank, when it joins |
/// | `qcalib/{run}/ar/{seq}/{rank}/{piece}` | the rank's part of collective `seq`, in pieces of at most 4 MiB; or, in piece 0, why the rank stopped | each rank; deleted by it two collectives later |
/// | `qcalib/{run}/end/{rank}` | empty: the rank is done with the store | each rank, at its end |
///
/// `{run}` is the value of `qcalib/runs/{rank}` when the run starts (0 for the first), so that a
/// second qcalib run on the same store (a worker script that calls qcalib twice) meets the
/// other ranks' second run, not the keys of the first.
///
/// Joining waits until every rank has come; a rank missing after the timeout makes the others
/// fail with an error naming it. During the run, a rank whose process ends (a kill, a crash) is
/// named within seconds (its heartbeat stops), one whose group broke at once (it says why in the
/// store), one that stops answering after the timeout. After a failed collective the group is
/// broken: later collectives fail at once. Dropping the group on rank 0 waits (at most the
/// timeout) until the other ranks have finished with its store.
///
/// ```no_run
/// use std::sync::Arc;
/// use qcalib::sync::{ProcessGroup, Rendezvous, SingleRank};
/// let group: Arc<dyn ProcessGroup> = match Rendezvous::from_env()? {
///     Some(rv) => Arc::new(rv.connect()?), // RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set
///     None => Arc::new(SingleRank),
/// };
/// # Ok::<(), qcalib::Error>(())
/// ```
pub struct TcpGroup {
    rank: usize,
    world: usize,
    timeout: Duration,
    store: TcpStore,
    /// `qcalib/{run}/`.
    ns: String,
    progress: Mutex<Progress>,
    /// The ranks whose heartbeat was seen to stop: their process is gone.
    gone: Mutex<Vec<usize>>,
    heartbeat: Option<Heartbeat>,
    /// Rank 0's store; dropped last.
    server: Option<StoreServer>,
}

#[derive(Default)]
struct Progress {
    /// Collectives completed.
    completed: u64,
    /// The collective whose part this rank has set (it may not have completed).
    entered: Option<u64>,
    /// The number of pieces of each of this rank's parts still in the store: `(seq, pieces)`.
    stored: Vec<(u64, usize)>,
    broken: Option<String>,
}

/// Why a wait for other ranks' keys failed.
enum WaitFailure {
    /// These ranks had not written their keys when the timeout passed.
    TimedOut(Vec<usize>),
    /// This rank's heartbeat stopped: its process is gone.
    Lost(usize),
    /// The store failed.
    Store(Error),
}

impl Rendezvous {
    /// Joins the group: see [`TcpGroup`].
    pub fn connect(&self) -> Result<TcpGroup> {
        TcpGroup::connect(self)
    }
}

impl TcpGroup {
    /// Joins the group described by `rv` (see [`Rendezvous::connect`]).
    pub fn connect(rv: &Rendezvous) -> Result<TcpGroup> {
        let (rank, world, timeout) = (rv.rank, rv.world_size, rv.timeout);
        let (server, addr, label) = match (&rv.store, rank) {
            (StoreRole::RankZero, 0) => {
                let bind = rv.bind_addr()?;
                let server = StoreServer::serve(bind).map_err(|e| {
                    Error::Sync(format!(
                        "rank 0 could not serve the store on {bind}: {e} (MASTER_PORT in use? Under torchrun, whose \
                         agent serves a store there, qcalib uses that store when TORCHELASTIC_USE_AGENT_STORE=True)"
                    ))
                })?;
                let local = server.local_addr();
                let reach = match local.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => {
                        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
                    }
                    IpAddr::V6(ip) if ip.is_unspecified() => {
                        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), local.port())
                    }
                    _ => local,
                };
                (Some(server), reach.to_string(), format!("the store of rank 0 at {}", rv.store_addr()))
            }
            (StoreRole::RankZero, _) => (None, rv.store_addr(), format!("the store of rank 0 at {}", rv.store_addr())),
            (StoreRole::Agent { .. }, _) => (None, rv.store_addr(), format!("torchrun's store at {}", rv.store_addr())),
        };
        let open = || -> Result<TcpStore> {
            let store = TcpStore::connect(&addr, timeout).map_err(|e| {
                Error::Sync(format!(
                    "rank {rank} could not reach {label}: {e} (is it running, with the same MASTER_ADDR and MASTER_PORT?)"
                ))
            })?;
            let store = store.with_label(label.clone());
            Ok(match &rv.store {
                StoreRole::Agent { restart_count } => store.with_prefix(&format!("/worker/attempt_{restart_count}")),
                StoreRole::RankZero => store,
            })
        };
        let store = open()?;
        let run = store.add(&format!("qcalib/runs/{rank}"), 0)?;
        let ns = format!("qcalib/{run}/");
        let claims = store.add(&format!("{ns}claim/{rank}"), 1)?;
        if claims > 1 {
            return Err(Error::Sync(format!(
                "rank {rank} has already joined: two processes were started with RANK={rank} (or an earlier qcalib run \
                 on the same store was killed before it finished)"
            )));
        }
        let heartbeat = Heartbeat::start(open()?, format!("{ns}alive/{rank}"))?;
        let group = TcpGroup {
            rank,
            world,
            timeout,
            store,
            ns,
            progress: Mutex::new(Progress::default()),
            gone: Mutex::new(Vec::new()),
            heartbeat: Some(heartbeat),
            server,
        };
        group.join().inspect_err(|e| group.lock().broken = Some(e.to_string()))?;
        Ok(group)
    }

    /// The store, for exchanges of other data between the ranks.
    pub fn store(&self) -> &TcpStore {
        &self.store
    }

    /// The key `{ns}{rest}` (without the store's prefix).
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.ns)
    }

    /// Waits until every rank has come, and checks that all were started with the same
    /// `WORLD_SIZE`.
    fn join(&self) -> Result<()> {
        self.store.set(&self.key(&format!("join/{}", self.rank)), self.world.to_string().as_bytes())?;
        let keys: Vec<(usize, String)> = (0..self.world).map(|r| (r, self.key(&format!("join/{r}")))).collect();
        self.await_keys(&keys).map_err(|w| match w {
            WaitFailure::TimedOut(missing) => Error::Sync(format!(
                "{} did not join within {:.1} s (not started, or started with another MASTER_ADDR, MASTER_PORT or \
                 WORLD_SIZE)",
                name_ranks(&missing),
                self.timeout.as_secs_f64()
            )),
            WaitFailure::Lost(r) => Error::Sync(self.lost_message(r)),
            WaitFailure::Store(e) => e,
        })?;
        let values = self.get_bounded(&keys, |_| 32)?;
        for (r, v) in values.iter().enumerate() {
            let theirs = String::from_utf8_lossy(v);
            if theirs != self.world.to_string() {
                return Err(Error::Sync(format!(
                    "rank {r} was started with WORLD_SIZE={theirs}, this rank (rank {}) with WORLD_SIZE={}",
                    self.rank, self.world
                )));
            }
        }
        Ok(())
    }

    /// The other ranks that have come (set their join key), less those known to be gone.
    fn ranks_that_came(&self) -> Result<Vec<usize>> {
        let gone = self.gone.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut came = Vec::new();
        for r in (0..self.world).filter(|&r| r != self.rank && !gone.contains(&r)) {
            if self.store.check(&[&self.key(&format!("join/{r}"))])? {
                came.push(r);
            }
        }
        Ok(came)
    }

    /// The error text for a rank whose heartbeat stopped.
    fn lost_message(&self, rank: usize) -> String {
        format!(
            "{} left: its heartbeat in the store stopped for {} s (its process exited, failed or was killed)",
            name_ranks(&[rank]),
            DEAD_AFTER.as_secs()
        )
    }

    /// Waits until every key of `keys` (with the rank that writes it) is set: at most the
    /// timeout, and no longer once a rank's heartbeat has stopped.
    fn await_keys(&self, keys: &[(usize, String)]) -> Result<(), WaitFailure> {
        let deadline = Instant::now() + self.timeout;
        let mut watch = Watch::default();
        let mut missing: Vec<(usize, Vec<u8>)> = keys.iter().map(|(r, k)| (*r, self.store.wire_key(k))).collect();
        loop {
            let now = Instant::now();
            let slice = SLICE.min(deadline.saturating_duration_since(now));
            let wire: Vec<Vec<u8>> = missing.iter().map(|(_, k)| k.clone()).collect();
            if self.store.wait_wire(&wire, slice).map_err(WaitFailure::Store)? {
                return Ok(());
            }
            // Which keys are still missing, and are their ranks alive?
            let mut still = Vec::new();
            for (r, k) in missing {
                let mut s = self.store.session().map_err(WaitFailure::Store)?;
                s.send(&Message::query(query::CHECK).keys(&[&k])).map_err(WaitFailure::Store)?;
                if s.read_u8().map_err(WaitFailure::Store)? != super::protocol::READY {
                    still.push((r, k));
                }
            }
            missing = still;
            if missing.is_empty() {
                return Ok(());
            }
            let mut ranks: Vec<usize> = missing.iter().map(|(r, _)| *r).collect();
            ranks.dedup();
            let now = Instant::now();
            for &r in &ranks {
                let beats = self.store.add(&self.key(&format!("alive/{r}")), 0).map_err(WaitFailure::Store)?;
                if watch.stopped(r, beats, now) {
                    self.gone.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    return Err(WaitFailure::Lost(r));
                }
            }
            if now >= deadline {
                return Err(WaitFailure::TimedOut(ranks));
            }
        }
    }

    /// The values of `keys` (set: the caller has waited), each at most `max(index)` bytes: a
    /// longer one is an error naming the rank that wrote it (and is not kept in memory).
    fn get_bounded(&self, keys: &[(usize, String)], max: impl Fn(usize) -> usize) -> Result<Vec<Vec<u8>>> {
        let wire: Vec<Vec<u8>> = keys.iter().map(|(_, k)| self.store.wire_key(k)).collect();
        let mut s = self.store.session()?;
        s.send(&Message::query(query::MULTI_GET).keys(&wire))?;
        let mut values = Vec::with_capacity(keys.len());
        let mut oversized = None;
        for (i, (r, k)) in keys.iter().enumerate() {
            match s.read_peer_value(max(i))? {
                Ok(v) => values.push(v),
                Err(len) => {
                    oversized.get_or_insert((*r, k.clone(), len, max(i)));
                    values.push(Vec::new());
                }
            }
        }
        match oversized {
            None => Ok(values),
            Some((r, k, len, max)) => Err(Error::Sync(format!(
                "rank {r} wrote {len} bytes under {k}, where at most {max} can belong there; the ranks do not run the \
                 same collectives, or something else writes qcalib's keys in this store"
            ))),
        }
    }

    fn all_reduce(&self, part: Payload) -> Result<Outcome> {
        let mut progress = self.lock();
        if let Some(why) = &progress.broken {
            return Err(Error::Sync(format!("the group is broken by an earlier failure: {why}")));
        }
        let seq = progress.completed;
        match self.exchange(&mut progress, seq, &part) {
            Ok(result) => {
                progress.completed += 1;
                Ok(result)
            }
            Err(e) => {
                progress.broken = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The key of piece `i` of `rank`'s part of collective `seq`.
    fn piece_key(&self, seq: u64, rank: usize, i: usize) -> String {
        self.key(&format!("ar/{seq}/{rank}/{i}"))
    }

    /// Collective `seq`: set this rank's part, wait for the others', combine in rank order.
    fn exchange(&self, progress: &mut Progress, seq: u64, part: &Payload) -> Result<Outcome> {
        let mut bytes = Vec::with_capacity(1 + part.encoded_len());
        bytes.push(DATA);
        bytes.extend(part.to_bytes());
        let pieces: Vec<&[u8]> = bytes.chunks(CHUNK_LEN).collect();

        // Set our pieces, and forget our part of collective `seq - 2` (every rank has completed
        // `seq - 1`, so has read it), in one write.
        let keys: Vec<Vec<u8>> =
            (0..pieces.len()).map(|i| self.store.wire_key(&self.piece_key(seq, self.rank, i))).collect();
        let mut m = Message::query(query::MULTI_SET).u64(pieces.len() as u64);
        for (k, p) in keys.iter().zip(&pieces) {
            m = m.bytes(k).bytes(p);
        }
        let forget: Vec<(u64, usize)> = progress.stored.iter().copied().filter(|&(s, _)| s + 2 <= seq).collect();
        let mut deletes = 0;
        for &(s, n) in &forget {
            for i in 0..n {
                m.0.extend(
                    Message::query(query::DELETE_KEY).bytes(&self.store.wire_key(&self.piece_key(s, self.rank, i))).0,
                );
                deletes += 1;
            }
        }
        {
            let mut s = self.store.session()?;
            s.send(&m)?;
            for _ in 0..deletes {
                s.read_i64()?;
            }
        }
        progress.entered = Some(seq);
        progress.stored.retain(|&(s, _)| s + 2 > seq);
        progress.stored.push((seq, pieces.len()));

        // Piece 0 of every other rank first: it says whether that rank stopped instead.
        let others: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        let firsts: Vec<(usize, String)> = others.iter().map(|&r| (r, self.piece_key(seq, r, 0))).collect();
        self.await_keys(&firsts).map_err(|w| self.wait_error(w, seq))?;
        let first_len = pieces[0].len();
        let heads = self.get_bounded(&firsts, |_| first_len.max(1 + MAX_REASON))?;
        let mut received: Vec<Vec<u8>> = Vec::with_capacity(others.len());
        for (head, &r) in heads.into_iter().zip(&others) {
            match head.first() {
                Some(&DATA) => received.push(head),
                Some(&FAILED) => {
                    return Err(Error::Sync(format!("rank {r} stopped: {}", String::from_utf8_lossy(&head[1..]))));
                }
                Some(&FINISHED) => {
                    return Err(Error::Sync(format!(
                        "rank {r} finished after {seq} collective(s) while this rank (rank {}) runs collective #{seq}: \
                         the ranks ran different numbers of collectives (every rank must run the same observers on \
                         the same number of steps)",
                        self.rank
                    )));
                }
                _ => return Err(Error::Sync(format!("rank {r} wrote a malformed part for collective #{seq}"))),
            }
        }
        // The other pieces, when the part is larger than one.
        if pieces.len() > 1 {
            let rest: Vec<(usize, String)> = others
                .iter()
                .flat_map(|&r| (1..pieces.len()).map(move |i| (r, i)))
                .map(|(r, i)| (r, self.piece_key(seq, r, i)))
                .collect();
            if received.iter().any(|h| h.len() != first_len) {
                let r = others[received.iter().position(|h| h.len() != first_len).unwrap_or(0)];
                return Err(self.mismatch(seq, r, part, "a part of another size"));
            }
            self.await_keys(&rest).map_err(|w| self.wait_error(w, seq))?;
            let tails = self.get_bounded(&rest, |i| pieces[1 + i % (pieces.len() - 1)].len())?;
            for (k, tail) in tails.into_iter().enumerate() {
                received[k / (pieces.len() - 1)].extend(tail);
            }
        }
        let mut theirs = Vec::with_capacity(others.len());
        for (bytes, &r) in received.iter().zip(&others) {
            theirs.push(Payload::from_bytes(&bytes[1..], part).map_err(|what| self.mismatch(seq, r, part, &what))?);
        }
        let mut parts: Vec<&Payload> = theirs.iter().collect();
        parts.insert(self.rank, part);
        reduce_in_rank_order(seq, &parts, self.rank)
    }

    fn mismatch(&self, seq: u64, rank: usize, local: &Payload, theirs: &str) -> Error {
        Error::Sync(format!(
            "the ranks called different collectives at collective #{seq} (rank {rank}: {theirs}, rank {}: {}); every \
             rank must run the same observers with the same settings on the same tensors",
            self.rank,
            local.shape()
        ))
    }

    fn wait_error(&self, w: WaitFailure, seq: u64) -> Error {
        match w {
            WaitFailure::TimedOut(missing) => Error::Sync(format!(
                "{} did not reach collective #{seq} within {:.1} s",
                name_ranks(&missing),
                self.timeout.as_secs_f64()
            )),
            WaitFailure::Lost(r) => Error::Sync(format!("{} (waiting at collective #{seq})", self.lost_message(r))),
            WaitFailure::Store(e) => e,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says in the store that this rank is done: why it stopped (in the part of the collective
    /// the others would wait for next), and its end.
    fn say_goodbye(&self) -> Result<()> {
        let progress = self.lock();
        let next = match progress.entered {
            Some(s) if s == progress.completed => progress.completed + 1,
            _ => progress.completed,
        };
        let mut marker = match &progress.broken {
            Some(why) => {
                let mut m = vec![FAILED];
                m.extend(why.as_bytes().iter().take(MAX_REASON));
                m
            }
            None => vec![FINISHED],
        };
        marker.truncate(1 + MAX_REASON);
        self.store.set(&self.piece_key(next, self.rank, 0), &marker)?;
        self.store.set(&self.key(&format!("end/{}", self.rank)), &[])?;
        self.store.add(&format!("qcalib/runs/{}", self.rank), 1)?;
        Ok(())
    }
}

impl Drop for TcpGroup {
    /// The rank says goodbye (so that ranks still waiting for it fail at once, with its
    /// reason); rank 0, when it serves the store, keeps it up until the other ranks that came
    /// are done with it (at most the timeout, and not for ranks that are gone).
    fn drop(&mut self) {
        if self.say_goodbye().is_ok()
            && self.server.is_some()
            && let Ok(came) = self.ranks_that_came()
        {
            let ends: Vec<(usize, String)> = came.into_iter().map(|r| (r, self.key(&format!("end/{r}")))).collect();
            if !ends.is_empty() {
                let _ = self.await_keys(&ends);
            }
        }
        self.heartbeat.take();
    }
}

impl fmt::Debug for TcpGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world)
            .field("store", &self.store)
            .finish()
    }
}

impl ProcessGroup for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> Result<()> {
        self.all_reduce(Payload::Array(Array::F32(op, data.to_vec())))?.into_array()?.write_f32(data)
    }

    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> Result<()> {
        self.all_reduce(Payload::Array(Array::U64(op, data.to_vec())))?.into_array()?.write_u64(data)
    }

    /// One exchange through the store for the whole bucket.
    fn all_reduce_bucket(&self, parts: &[Contribution]) -> Result<Vec<Reduced>> {
        self.all_reduce(Payload::Bucket(parts.to_vec()))?.into_bucket()
    }
}
