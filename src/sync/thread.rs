//! The group of ranks that are threads of one process.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::contribution::{Array, Outcome, Payload, name_ranks, reduce_in_rank_order};
use super::{Contribution, ProcessGroup, ReduceOp, Reduced, default_timeout};
use crate::error::{Error, Result};

/// One rank of a group whose ranks are threads of this process (data-parallel calibration on
/// one machine, and tests of the multi-rank semantics).
///
/// [`ThreadGroup::new`] returns one handle per rank; move each to its thread. Every collective
/// waits at most the group's timeout for the other ranks: a rank that does not arrive in time
/// makes the others fail with an error naming it, and a rank whose handle is dropped (its thread
/// returned or panicked) makes them fail at once. After a failed collective the group is broken
/// on every rank: later collectives fail at once.
///
/// ```
/// use std::sync::Arc;
/// use qcalib::sync::{ProcessGroup, ThreadGroup};
/// use qcalib::{MinMaxObserver, Observer, QuantConfig};
///
/// let batches = [vec![-1.0f32, 2.0], vec![-3.0f32, 0.5]];
/// let scales = std::thread::scope(|s| {
///     let ranks = ThreadGroup::new(2).unwrap();
///     let workers: Vec<_> = ranks.into_iter().zip(&batches).map(|(rank, batch)| {
///         s.spawn(move || {
///             let quant = QuantConfig { is_sync_quantize: true, ..Default::default() };
///             let mut obs = MinMaxObserver::new(quant)?;
///             obs.set_process_group(Arc::new(rank));
///             obs.observe(batch)?;
///             obs.qparams()
///         })
///     }).collect();
///     workers.into_iter().map(|w| w.join().unwrap().unwrap().scale[0]).collect::<Vec<f32>>()
/// });
/// assert_eq!(scales, vec![3.0 / 127.5; 2]); // both ranks: the range [-3, 2]
/// ```
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
    /// The collectives this rank has completed, and why the group broke, if it did.
    progress: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    completed: u64,
    broken: Option<String>,
}

/// What the ranks share.
struct Shared {
    world: usize,
    timeout: Duration,
    table: Mutex<Table>,
    changed: Condvar,
}

/// The collectives in flight (at most two: a rank cannot leave collective `n` before all ranks
/// have entered it).
struct Table {
    rounds: BTreeMap<u64, Round>,
    /// Ranks whose handle was dropped.
    left: Vec<bool>,
    /// Set when a collective failed on some rank: the group is unusable.
    broken: Option<String>,
}

struct Round {
    parts: Vec<Option<Payload>>,
    /// Ranks that have not read the result yet.
    unread: usize,
}

impl ThreadGroup {
    /// The handles of a group of `world` ranks, rank 0 first, waiting at most
    /// [`default_timeout`] for each other.
    pub fn new(world: usize) -> Result<Vec<ThreadGroup>> {
        Self::with_timeout(world, default_timeout()?)
    }

    /// The handles of a group of `world` ranks that wait at most `timeout` for each other.
    pub fn with_timeout(world: usize, timeout: Duration) -> Result<Vec<ThreadGroup>> {
        if world == 0 {
            return Err(Error::config("world_size", "must be at least 1"));
        }
        let shared = Arc::new(Shared {
            world,
            timeout,
            table: Mutex::new(Table { rounds: BTreeMap::new(), left: vec![false; world], broken: None }),
            changed: Condvar::new(),
        });
        Ok((0..world)
            .map(|rank| ThreadGroup { rank, shared: shared.clone(), progress: Mutex::new(Progress::default()) })
            .collect())
    }

    /// One collective: contribute `part`, wait for every rank's, combine them in rank order.
    fn all_reduce(&self, part: Payload) -> Result<Outcome> {
        let mut progress = lock(&self.progress);
        if let Some(why) = &progress.broken {
            return Err(Error::Sync(format!("the group is broken by an earlier failure: {why}")));
        }
        let seq = progress.completed;
        match self.shared.run(self.rank, seq, part) {
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
}

impl Shared {
    fn run(&self, rank: usize, seq: u64, part: Payload) -> Result<Outcome> {
        let deadline = Instant::now() + self.timeout;
        let mut table = lock(&self.table);
        let world = self.world;
        table.rounds.entry(seq).or_insert_with(|| Round { parts: vec![None; world], unread: world }).parts[rank] =
            Some(part);
        self.changed.notify_all();
        loop {
            let round = table.rounds.get(&seq).ok_or_else(|| Error::Sync(format!("collective #{seq} vanished")))?;
            let missing: Vec<usize> = (0..world).filter(|&r| round.parts[r].is_none()).collect();
            if missing.is_empty() {
                // Complete: valid even if the group broke later (a rank ahead of this one failed
                // at the next collective).
                break;
            }
            if let Some(why) = &table.broken {
                return Err(Error::Sync(format!("collective #{seq} failed: {why}")));
            }
            let gone: Vec<usize> = missing.iter().copied().filter(|&r| table.left[r]).collect();
            let now = Instant::now();
            let failure = if !gone.is_empty() {
                Some(format!("{} left the group before collective #{seq}", name_ranks(&gone)))
            } else if now >= deadline {
                Some(format!(
                    "{} did not reach collective #{seq} within {:.1} s",
                    name_ranks(&missing),
                    self.timeout.as_secs_f64()
                ))
            } else {
                None
            };
            if let Some(why) = failure {
                table.broken = Some(why.clone());
                self.changed.notify_all();
                return Err(Error::Sync(why));
            }
            table = self.changed.wait_timeout(table, deadline - now).map_or_else(|e| e.into_inner().0, |(t, _)| t);
        }
        let round = table.rounds.get_mut(&seq).ok_or_else(|| Error::Sync(format!("collective #{seq} vanished")))?;
        let parts: Vec<&Payload> = round.parts.iter().flatten().collect();
        let result = reduce_in_rank_order(seq, &parts, rank);
        round.unread -= 1;
        if round.unread == 0 {
            table.rounds.remove(&seq);
        }
        result
    }
}

/// Locks `m`, also after a panic of another rank's thread (the data stays consistent: every
/// update of it is a single assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for ThreadGroup {
    /// The rank leaves: ranks still waiting for it fail at once.
    fn drop(&mut self) {
        let mut table = lock(&self.shared.table);
        table.left[self.rank] = true;
        self.shared.changed.notify_all();
    }
}

impl fmt::Debug for ThreadGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadGroup").field("rank", &self.rank).field("world_size", &self.shared.world).finish()
    }
}

impl ProcessGroup for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> Result<()> {
        self.all_reduce(Payload::Array(Array::F32(op, data.to_vec())))?.into_array()?.write_f32(data)
    }

    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> Result<()> {
        self.all_reduce(Payload::Array(Array::U64(op, data.to_vec())))?.into_array()?.write_u64(data)
    }

    /// One collective for the whole bucket.
    fn all_reduce_bucket(&self, parts: &[Contribution]) -> Result<Vec<Reduced>> {
        self.all_reduce(Payload::Bucket(parts.to_vec()))?.into_bucket()
    }
}
