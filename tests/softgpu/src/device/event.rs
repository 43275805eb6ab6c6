//! Events: a point in a stream's work, done when the stream gets there, with the time it did
//! (host time: softgpu's timings say nothing about a GPU's).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use cudarc::driver::sys::CUresult;

use super::stream::{Stream, Work};

/// `CU_EVENT_DISABLE_TIMING`.
pub const DISABLE_TIMING: u32 = 0x2;

/// An event.
#[derive(Debug)]
pub struct Event {
    /// The creation flags.
    pub flags: u32,
    /// The instance of the context it belongs to.
    pub instance: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The stream and the sequence number of the last record.
    record: Option<(Arc<Stream>, u64)>,
    /// Counts the records, so that an old record that completes late changes nothing.
    generation: u64,
    /// When the stream reached the last record.
    reached: Option<Instant>,
}

impl Event {
    /// A new event, never recorded.
    pub fn new(flags: u32, instance: u64) -> Arc<Event> {
        Arc::new(Event { flags, instance, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the work of `stream` queued so far: the event is done when the stream has done it.
    /// `enqueue` queues the record's work on the stream (through the context, for the legacy
    /// stream's ordering) and returns its sequence number.
    pub fn record(self: &Arc<Event>, stream: &Arc<Stream>, enqueue: impl FnOnce(Work) -> u64) {
        // Hold the lock while enqueueing, so that generations and sequence numbers agree.
        let mut state = self.lock();
        state.generation += 1;
        state.reached = None;
        let generation = state.generation;
        let event = self.clone();
        let seq = enqueue(Box::new(move || {
            let mut state = event.lock();
            if state.generation == generation {
                state.reached = Some(Instant::now());
            }
            Ok(())
        }));
        state.record = Some((stream.clone(), seq));
    }

    /// The stream and sequence number of the last record (`None`: never recorded).
    pub fn point(&self) -> Option<(Arc<Stream>, u64)> {
        self.lock().record.clone()
    }

    /// Whether the recorded work is done (an event never recorded is).
    pub fn done(&self) -> bool {
        self.point().is_none_or(|(s, seq)| s.completed() >= seq)
    }

    /// Blocks until the recorded work is done.
    pub fn synchronize(&self) {
        if let Some((s, seq)) = self.point() {
            s.wait_for(seq);
        }
    }

    /// Milliseconds from `self` to `end`: `CUDA_ERROR_INVALID_HANDLE` when either has timing
    /// disabled or was never recorded, `CUDA_ERROR_NOT_READY` while either is not done.
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32, CUresult> {
        if (self.flags | end.flags) & DISABLE_TIMING != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        let (a, b) = (self.point(), end.point());
        if a.is_none() || b.is_none() {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        let (Some(t0), Some(t1)) = (self.lock().reached, end.lock().reached) else {
            return Err(CUresult::CUDA_ERROR_NOT_READY);
        };
        let ms = if t1 >= t0 { (t1 - t0).as_secs_f64() * 1e3 } else { -((t0 - t1).as_secs_f64() * 1e3) };
        Ok(ms as f32)
    }
}
