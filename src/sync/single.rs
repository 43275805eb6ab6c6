//! The group of one rank.

use super::{Contribution, ProcessGroup, ReduceOp, Reduced};
use crate::error::{Error, Result};

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

    /// The contributions themselves, checked as a peer's would be.
    fn all_reduce_bucket(&self, parts: &[Contribution]) -> Result<Vec<Reduced>> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.check_values().map_err(|why| Error::Sync(format!("rank 0 sent invalid values (part {i}): {why}")))?;
                Ok(Reduced {
                    mins: p.mins.clone(),
                    maxs: p.maxs.clone(),
                    sums: p.sums.clone(),
                    checks_differ: Vec::new(),
                    gathered: vec![p.gathered.clone()],
                })
            })
            .collect()
    }
}
