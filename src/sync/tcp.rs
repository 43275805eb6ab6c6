//! The group of ranks in separate processes, on one machine or several, that exchange their
//! statistics through rank 0's TCP store.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::contribution::{Contribution, name_ranks, reduce_in_rank_order};
use super::rendezvous::Rendezvous;
use super::store::{TcpStore, WaitFailure, failed_message, lost_message};
use super::store_server::StoreServer;
use super::{ProcessGroup, ReduceOp};
use crate::error::{Error, Result};

/// One rank of a group of processes (`torchrun`-style, see [`Rendezvous`]): rank 0 serves a
/// [`TcpStore`], every rank connects to it, and each all-reduce is an exchange through it: each
/// rank sets its array under a key of the collective, waits for the other ranks' keys, and
/// combines all arrays in rank order (so that every rank computes identical results).
///
/// Joining waits until every rank has connected; a rank missing after the timeout makes the
/// others fail with an error naming it. During the run, a rank whose process ends before it
/// finished (a kill, a crash), or whose group broke, makes the others fail at once, naming it;
/// a rank that stops answering makes them fail after the timeout. After a failed collective the group is
/// broken: later collectives fail at once. Dropping the group on rank 0 waits (at most the
/// timeout) until the other ranks have finished with the store.
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
    progress: Mutex<Progress>,
    /// Rank 0's store; dropped after `store`.
    server: Option<StoreServer>,
}

#[derive(Default)]
struct Progress {
    completed: u64,
    broken: Option<String>,
}

impl Rendezvous {
    /// Joins the group: rank 0 serves the store, every rank connects and waits for all ranks.
    pub fn connect(&self) -> Result<TcpGroup> {
        TcpGroup::connect(self)
    }
}

impl TcpGroup {
    /// Joins the group described by `rv` (see [`Rendezvous::connect`]).
    pub fn connect(rv: &Rendezvous) -> Result<TcpGroup> {
        let (rank, world, timeout) = (rv.rank, rv.world_size, rv.timeout);
        let (server, addr) = if rank == 0 {
            let bind = rv.bind_addr()?;
            let server = StoreServer::serve(bind, world).map_err(|e| {
                Error::Sync(format!("rank 0 could not serve the store on {bind}: {e} (MASTER_PORT in use?)"))
            })?;
            let local = server.local_addr();
            let reach = match local.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port()),
                IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), local.port()),
                _ => local,
            };
            (Some(server), reach.to_string())
        } else {
            (None, rv.store_addr())
        };
        let store = TcpStore::connect(&addr, rank, world, timeout)?;
        let group = TcpGroup { rank, world, timeout, store, progress: Mutex::new(Progress::default()), server };
        group.join()?;
        Ok(group)
    }

    /// The store, for exchanges of other data between the ranks.
    pub fn store(&self) -> &TcpStore {
        &self.store
    }

    /// Waits until every rank has connected.
    fn join(&self) -> Result<()> {
        let failed = |e: Error| {
            self.lock().broken = Some(e.to_string());
            e
        };
        self.store.set(&format!("join/{}", self.rank), &[]).map_err(failed)?;
        let keys: Vec<String> = (0..self.world).map(|r| format!("join/{r}")).collect();
        self.store.wait(&keys, self.timeout).map_err(|w| {
            failed(match w {
                WaitFailure::TimedOut(missing) => Error::Sync(format!(
                    "{} did not join within {:.1} s (not started, or started with another MASTER_ADDR, MASTER_PORT or \
                     WORLD_SIZE)",
                    name_ranks(&missing),
                    self.timeout.as_secs_f64()
                )),
                WaitFailure::RankLost(r) => Error::Sync(lost_message(r)),
                WaitFailure::RankFailed(r, why) => Error::Sync(failed_message(r, &why)),
                WaitFailure::Store(e) => e,
            })
        })?;
        Ok(())
    }

    fn all_reduce(&self, part: Contribution) -> Result<Contribution> {
        let mut progress = self.lock();
        if let Some(why) = &progress.broken {
            return Err(Error::Sync(format!("the group is broken by an earlier failure: {why}")));
        }
        let seq = progress.completed;
        match self.exchange(seq, &part) {
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

    /// Collective `seq`: set this rank's part, wait for the others', combine in rank order.
    fn exchange(&self, seq: u64, part: &Contribution) -> Result<Contribution> {
        let key = |rank: usize| format!("ar/{seq}/{rank}");
        self.store.set(&key(self.rank), &part.to_bytes())?;
        let others: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        let keys: Vec<String> = others.iter().map(|&r| key(r)).collect();
        let values = self.store.wait(&keys, self.timeout).map_err(|w| match w {
            WaitFailure::TimedOut(missing) => {
                let missing: Vec<usize> = missing.iter().filter_map(|&i| others.get(i).copied()).collect();
                Error::Sync(format!(
                    "{} did not reach collective #{seq} within {:.1} s",
                    name_ranks(&missing),
                    self.timeout.as_secs_f64()
                ))
            }
            WaitFailure::RankLost(r) => Error::Sync(format!("{} (waiting at collective #{seq})", lost_message(r))),
            WaitFailure::RankFailed(r, why) => Error::Sync(failed_message(r, &why)),
            WaitFailure::Store(e) => e,
        })?;
        let mut theirs = Vec::with_capacity(values.len());
        for (bytes, &r) in values.iter().zip(&others) {
            theirs.push(
                Contribution::from_bytes(bytes)
                    .ok_or_else(|| Error::Sync(format!("rank {r} sent a malformed array for collective #{seq}")))?,
            );
        }
        let mut parts: Vec<&Contribution> = theirs.iter().collect();
        parts.insert(self.rank, part);
        let result = reduce_in_rank_order(seq, &parts)?;
        // Every rank has now entered collective `seq`, so all have read `seq - 1`: forget ours.
        if seq > 0 {
            let _ = self.store.delete(&format!("ar/{}/{}", seq - 1, self.rank));
        }
        Ok(result)
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TcpGroup {
    /// The rank says goodbye, with the reason when the group broke (so that its connection
    /// closing is no crash for the others, and ranks still waiting for it fail at once with that
    /// reason); rank 0 then keeps the store up until the other ranks are done with it.
    fn drop(&mut self) {
        let broken = self.lock().broken.clone();
        if self.store.goodbye(broken.as_deref()).is_ok()
            && let Some(server) = &self.server
        {
            server.linger(self.timeout);
        }
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
        self.all_reduce(Contribution::F32(op, data.to_vec()))?.write_f32(data)
    }

    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> Result<()> {
        self.all_reduce(Contribution::U64(op, data.to_vec()))?.write_u64(data)
    }
}
