//! Process groups: how the ranks of a data-parallel calibration agree on statistics
//! (`is_sync_quantize`, SPEC §4).

mod single;

use std::fmt::Debug;

pub use single::SingleRank;

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
/// can detect the failure (a missing rank, a length mismatch, a timeout).
pub trait ProcessGroup: Send + Sync + Debug {
    /// This rank, `0 .. world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Reduces `data` elementwise over all ranks, in place. Only `Min` and `Max` are used on
    /// floats.
    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> Result<()>;

    /// Reduces `data` elementwise over all ranks, in place.
    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> Result<()>;
}
