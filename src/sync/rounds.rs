//! Running the synchronisations of many participants together: one bucketed collective per
//! round, whatever the number of participants.

use super::{Contribution, ProcessGroup, Reduced};
use crate::error::{Error, Result};

/// One participant in a synchronised operation (an observer computing its qparams, a KL
/// observer observing a batch with `sync_histograms`): a sequence of rounds, each a
/// [`Contribution`] answered by a [`Reduced`].
///
/// Every rank's participant must go through the same rounds with contributions of the same
/// lengths: a participant decides on reduced values only (which are the same on every rank), and
/// reports a local failure (an unreadable batch) inside its contribution rather than by
/// returning early, so that all ranks fail together. It changes the state it synchronises only
/// in its last round.
pub trait SyncTask {
    /// The contribution to the next round, given what the previous round returned (`None`
    /// before the first); `Ok(None)` when the participant has finished. An error ends it.
    fn next(&mut self, previous: Option<Reduced>) -> Result<Option<Contribution>>;
}

/// Runs `tasks` over `group` together: each round, the contributions of every task that has not
/// finished go in one bucket ([`ProcessGroup::all_reduce_bucket`]). Returns each task's outcome;
/// an error of the group itself (a rank gone, a timeout) is the outer error.
///
/// ```
/// use qcalib::sync::{Contribution, Reduced, SingleRank, SyncTask, run_together};
/// /// Agrees on the largest value in one round.
/// struct Largest(f32, Option<f32>);
/// impl SyncTask for Largest {
///     fn next(&mut self, previous: Option<Reduced>) -> qcalib::Result<Option<Contribution>> {
///         Ok(match previous {
///             None => Some(Contribution { maxs: vec![self.0], ..Default::default() }),
///             Some(r) => {
///                 self.1 = Some(r.maxs[0]);
///                 None
///             }
///         })
///     }
/// }
/// let (mut a, mut b) = (Largest(1.0, None), Largest(-2.0, None));
/// let outcomes = run_together(&SingleRank, &mut [&mut a, &mut b])?;
/// assert!(outcomes.iter().all(Result::is_ok));
/// assert_eq!((a.1, b.1), (Some(1.0), Some(-2.0)));
/// # Ok::<(), qcalib::Error>(())
/// ```
pub fn run_together<G: ProcessGroup + ?Sized>(group: &G, tasks: &mut [&mut dyn SyncTask]) -> Result<Vec<Result<()>>> {
    let mut outcomes: Vec<Option<Result<()>>> = tasks.iter().map(|_| None).collect();
    let mut previous: Vec<Option<Reduced>> = tasks.iter().map(|_| None).collect();
    loop {
        let mut active = Vec::new();
        let mut parts = Vec::new();
        for (i, task) in tasks.iter_mut().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            match task.next(previous[i].take()) {
                Ok(Some(part)) => {
                    active.push(i);
                    parts.push(part);
                }
                Ok(None) => outcomes[i] = Some(Ok(())),
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        if active.is_empty() {
            break;
        }
        let reduced = group.all_reduce_bucket(&parts)?;
        if reduced.len() != active.len() {
            return Err(Error::Sync(format!("a bucket of {} part(s) came back with {}", active.len(), reduced.len())));
        }
        for (i, r) in active.into_iter().zip(reduced) {
            previous[i] = Some(r);
        }
    }
    Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
}
