//! A rank's heartbeat: a counter in the store that a thread of the rank increments every
//! second over its own connection, so that the other ranks can tell a rank whose process is
//! gone (the counter stops) from one that is only slow (it keeps counting), whoever serves the
//! store.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::TcpStore;
use crate::error::{Error, Result};

/// How often a rank's counter goes up.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// How long a counter that has started must stand still before its rank counts as gone.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(6);

/// The thread that beats; stops when dropped.
pub(crate) struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Beats once on `store` under `key` (an error if that fails), then every [`PERIOD`] on a
    /// thread until dropped (or until the store is gone).
    pub(crate) fn start(store: TcpStore, key: String) -> Result<Heartbeat> {
        store.add(&key, 1)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("qcalib-heartbeat".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD) {
                    if store.add(&key, 1).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Sync(format!("could not start the heartbeat thread: {e}")))?;
        Ok(Heartbeat { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a waiting rank has seen of the others' counters.
#[derive(Default)]
pub(crate) struct Watch {
    /// Per rank: the last value seen, and when it was first seen.
    seen: std::collections::HashMap<usize, (i64, Instant)>,
}

impl Watch {
    /// Records `value` for `rank` at `now`; `true` when the rank has beaten before and its
    /// counter has stood still for [`DEAD_AFTER`].
    pub(crate) fn stopped(&mut self, rank: usize, value: i64, now: Instant) -> bool {
        match self.seen.get(&rank) {
            Some(&(v, since)) if v == value => value > 0 && now.duration_since(since) >= DEAD_AFTER,
            _ => {
                self.seen.insert(rank, (value, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_stands_still_is_a_rank_gone_once_it_has_started() {
        let t0 = Instant::now();
        let mut w = Watch::default();
        assert!(!w.stopped(1, 3, t0));
        assert!(!w.stopped(1, 3, t0 + DEAD_AFTER / 2));
        assert!(w.stopped(1, 3, t0 + DEAD_AFTER));
        assert!(!w.stopped(1, 4, t0 + DEAD_AFTER * 2)); // it moved again
        // A rank that never beat (0) is not gone: it has not come yet.
        assert!(!w.stopped(2, 0, t0));
        assert!(!w.stopped(2, 0, t0 + DEAD_AFTER * 3));
    }
}
