//! Many observers at once: their synchronisations across ranks in one collective per round,
//! whatever their number (a model's tensors, a `.safetensors` batch).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::{Observer, QParams};
use crate::sync::{ProcessGroup, SyncTask, run_together};

/// [`Observer::qparams`] of every observer, with the `is_sync_quantize` reductions of all of
/// them in one bucketed collective per round (two rounds: the channel counts, then the ranges),
/// instead of two collectives per observer. Every rank calls it with the same observers (same
/// kinds and settings, in the same order).
///
/// The outer error is a failure of the process group (a rank gone, a timeout); each observer's
/// own outcome (its qparams, or e.g. [`Error::NoStatistics`]) is in the vector, in order.
/// Observers with different process groups are synchronised group by group. `O` is an
/// observer type, or `dyn Observer` for observers of several types.
///
/// ```
/// use std::sync::Arc;
/// use qcalib::sync::ThreadGroup;
/// use qcalib::{MinMaxObserver, Observer, QuantConfig, qparams_all};
///
/// let scales = std::thread::scope(|s| {
///     let ranks = ThreadGroup::new(2).unwrap();
///     let workers: Vec<_> = ranks.into_iter().enumerate().map(|(rank, group)| {
///         s.spawn(move || {
///             let group = Arc::new(group);
///             let quant = QuantConfig { is_sync_quantize: true, ..Default::default() };
///             let mut tensors: Vec<MinMaxObserver> = (0..100).map(|_| MinMaxObserver::new(quant.clone()).unwrap()).collect();
///             for (t, obs) in tensors.iter_mut().enumerate() {
///                 obs.set_process_group(group.clone());
///                 obs.observe(&[rank as f32 + t as f32, -1.0][..]).unwrap();
///             }
///             // Two collectives for the 100 tensors.
///             let q = qparams_all(&mut tensors.iter_mut().collect::<Vec<_>>()).unwrap();
///             q.into_iter().map(|q| q.unwrap().scale[0]).collect::<Vec<f32>>()
///         })
///     }).collect();
///     workers.into_iter().map(|w| w.join().unwrap()).collect::<Vec<_>>()
/// });
/// assert_eq!(scales[0], scales[1]);
/// assert_eq!(scales[0][7], 8.0 / 127.5); // the range [-1, 1 + 7] of rank 1
/// ```
pub fn qparams_all<O: Observer + ?Sized>(observers: &mut [&mut O]) -> Result<Vec<Result<QParams>>> {
    let groups: Vec<Arc<dyn ProcessGroup>> = observers.iter().map(|o| o.process_group()).collect();
    let mut tasks: Vec<_> = observers.iter_mut().map(|o| o.qparams_sync()).collect();
    let mut outcomes: Vec<Option<Result<()>>> = tasks.iter().map(|_| None).collect();
    for (group, members) in by_group(&groups) {
        let mut selected: Vec<&mut dyn SyncTask> = Vec::with_capacity(members.len());
        for (i, task) in tasks.iter_mut().enumerate() {
            if members.contains(&i) {
                selected.push(task);
            }
        }
        for (i, outcome) in members.iter().zip(run_together(&*group, &mut selected)?) {
            outcomes[*i] = Some(outcome);
        }
    }
    Ok(tasks
        .into_iter()
        .zip(outcomes)
        .map(|(task, outcome)| outcome.unwrap_or(Ok(())).and_then(|()| task.finish()))
        .collect())
}

/// Observes `inputs[i]` with `observers[i]`, with the synchronisations of the observers that
/// observe together with the other ranks (KL with `sync_histograms`) in one bucketed collective
/// per round: two for all of them, instead of two per observer. The other observers observe
/// alone. Every rank calls it with the same observers in the same order (an empty tensor where a
/// rank has no batch).
///
/// The outer error is a failure of the process group, or inputs that do not match the
/// observers; each observer's own outcome is in the vector, in order (on an error its state is
/// unchanged).
pub fn observe_all<O: Observer + ?Sized>(observers: &mut [&mut O], inputs: &[Input<'_>]) -> Result<Vec<Result<()>>> {
    if observers.len() != inputs.len() {
        return Err(Error::Shape(format!("{} observers but {} inputs", observers.len(), inputs.len())));
    }
    let groups: Vec<Arc<dyn ProcessGroup>> = observers.iter().map(|o| o.process_group()).collect();
    let mut outcomes: Vec<Option<Result<()>>> = observers.iter().map(|_| None).collect();
    let mut tasks: Vec<(usize, Box<dyn SyncTask + '_>)> = Vec::new();
    for (i, (obs, x)) in observers.iter_mut().zip(inputs).enumerate() {
        // An observer that needs no other rank observes here; the others in the rounds below.
        let alone = obs.observe_sync(x).is_none();
        if alone {
            outcomes[i] = Some(obs.observe_input(x));
        }
    }
    for (i, (obs, x)) in observers.iter_mut().zip(inputs).enumerate() {
        if outcomes[i].is_none()
            && let Some(task) = obs.observe_sync(x)
        {
            tasks.push((i, task));
        }
    }
    let synced: Vec<usize> = tasks.iter().map(|(i, _)| *i).collect();
    let task_groups: Vec<Arc<dyn ProcessGroup>> = synced.iter().map(|&i| groups[i].clone()).collect();
    for (group, members) in by_group(&task_groups) {
        let mut selected: Vec<&mut dyn SyncTask> = Vec::with_capacity(members.len());
        for (k, (_, task)) in tasks.iter_mut().enumerate() {
            if members.contains(&k) {
                selected.push(task.as_mut());
            }
        }
        for (k, outcome) in members.iter().zip(run_together(&*group, &mut selected)?) {
            outcomes[synced[*k]] = Some(outcome);
        }
    }
    Ok(outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
}

/// The indices of `groups` by group (the same `Arc`), in the order of first appearance (the
/// same on every rank).
fn by_group(groups: &[Arc<dyn ProcessGroup>]) -> Vec<(Arc<dyn ProcessGroup>, Vec<usize>)> {
    let mut out: Vec<(Arc<dyn ProcessGroup>, Vec<usize>)> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        match out.iter_mut().find(|(h, _)| Arc::ptr_eq(h, g)) {
            Some((_, members)) => members.push(i),
            None => out.push((g.clone(), vec![i])),
        }
    }
    out
}
