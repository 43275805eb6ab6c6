//! Process groups: how the ranks of a data-parallel calibration agree on statistics
//! (`is_sync_quantize`, SPEC §4).
//!
//! | group | ranks | transport |
//! |---|---|---|
//! | [`SingleRank`] (the default) | one | none: every collective is the identity |
//! | [`ThreadGroup`] | threads of one process | shared memory |
//! | [`TcpGroup`] | processes on one or more machines ([`Rendezvous`], `torchrun`'s variables) | a [`TcpStore`]: rank 0's [`StoreServer`], or `torchrun`'s |
//! | [`NcclGroup`] | one per GPU, processes or threads | NCCL on the device, with a CPU group beside it |
//!
//! **Sync as data.** An observer does not run collectives itself: it describes what it needs
//! reduced as a [`Contribution`] (minimums, maximums, sums, words that must agree, words to
//! gather), and [`run_together`] packs the contributions of every observer of a step into one
//! bucket per round ([`ProcessGroup::all_reduce_bucket`]), checks what comes back (lengths,
//! finite values, agreement, each failing rank named) and hands each observer its [`Reduced`]
//! slice. [`qparams_all`](crate::qparams_all) and [`observe_all`](crate::observe_all) use it for
//! many observers at once: one collective per round whatever the number of tensors.
//!
//! Every wait across ranks has a timeout ([`default_timeout`]: `QCALIB_SYNC_TIMEOUT` seconds,
//! 300 by default). A rank that never arrives, stops, or whose process ends makes the other ranks
//! fail with an [`Error::Sync`](crate::Error::Sync) naming it, never hang; after a failed
//! collective a group is broken and every later collective fails at once.

mod contribution;
mod heartbeat;
pub mod limits;
mod nccl;
mod nccl_probe;
mod protocol;
mod rendezvous;
mod rounds;
mod single;
mod store;
mod store_server;
mod tcp;
mod thread;
mod timeout;

use std::fmt::Debug;

pub(crate) use contribution::name_ranks;
pub use contribution::{Contribution, Reduced};
pub use nccl::NcclGroup;
pub use nccl_probe::{DRIVER_NEEDED, NcclInfo, probe_nccl};
pub use rendezvous::{Rendezvous, StoreRole};
pub use rounds::{SyncTask, run_together};
pub use single::SingleRank;
pub use store::TcpStore;
pub use store_server::StoreServer;
pub use tcp::TcpGroup;
pub use thread::ThreadGroup;
pub use timeout::{DEFAULT_TIMEOUT, TIMEOUT_VAR, default_timeout};

use crate::error::Result;

/// A reduction across ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Elementwise minimum.
    Min,
    /// Elementwise maximum.
    Max,
    /// Elementwise sum.
    Sum,
}

/// A group of ranks that reduce small arrays together.
///
/// Every rank calls the same collectives in the same order with arrays of the same length;
/// a collective returns on every rank with the reduced array, or an error on every rank that
/// can detect the failure (a missing rank, a length mismatch, a timeout). The CPU groups reduce
/// in rank order, so every rank gets bit-identical results.
pub trait ProcessGroup: Send + Sync + Debug {
    /// This rank, `0 .. world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Reduces `data` elementwise over all ranks, in place.
    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> Result<()>;

    /// Reduces `data` elementwise over all ranks, in place (a sum that overflows is an error).
    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> Result<()>;

    /// Reduces every contribution of `parts` over all ranks as one bucket: what each gets back
    /// is described at [`Contribution`] and [`Reduced`]. A rank whose lengths differ, or whose
    /// values are invalid (NaN, a `+inf` maximum…), makes every rank fail with an error naming
    /// it.
    ///
    /// The CPU groups exchange the whole bucket at once (one collective); the default, for
    /// groups with only the plain all-reduces, runs at most three of them whatever the number of
    /// parts: one to agree on the lengths and on each rank's verdict on its own values, then one
    /// MAX of the minimums (negated) and maximums, and one SUM of the rest, all parts' arrays
    /// packed together. NCCL's group runs the first on its CPU group and the other two on the
    /// GPUs.
    fn all_reduce_bucket(&self, parts: &[Contribution]) -> Result<Vec<Reduced>> {
        contribution::reduce_with_all_reduces(self, parts)
    }
}
