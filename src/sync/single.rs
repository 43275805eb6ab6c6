//! The group of one rank.

use super::{ProcessGroup, ReduceOp};
use crate::error::Result;

/// A group of one rank: every collective is the identity. The default of every observer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleRank;

impl ProcessGroup for SingleRank {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_f32(&self, _: &mut [f32], _: ReduceOp) -> Result<()> {
        Ok(())
    }

    fn all_reduce_u64(&self, _: &mut [u64], _: ReduceOp) -> Result<()> {
        Ok(())
    }
}
