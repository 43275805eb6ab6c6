//! Streams: work runs in order, on a thread of its own per stream, asynchronously to the host
//! as on a GPU. A host call waits for exactly what the driver API says it waits for; so a
//! program that reads results before synchronising reads whatever is there at that moment.
//!
//! A failure of an operation (a kernel fault, a collective that failed) is printed to stderr and
//! makes the context's error sticky: every later operation of every stream of the context is
//! skipped, and every later call reports the error, as after a fault on real hardware.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use cudarc::driver::sys::CUresult;

/// The error a failed operation leaves in its context: what, and the `CUresult` from then on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error every later call of the context reports.
    pub code: CUresult,
    /// What happened (printed to stderr once).
    pub message: String,
}

/// A unit of work for a stream.
pub type Work = Box<dyn FnOnce() -> Result<(), Failure> + Send>;

/// A context's sticky error: 0 while there is none, else the `CUresult`.
#[derive(Debug, Default)]
pub struct StickyError(AtomicU32);

impl StickyError {
    /// The error, if one happened.
    pub fn get(&self) -> Option<CUresult> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            code => Some(super::result_from_code(code)),
        }
    }

    /// Records `code` unless an error is recorded already.
    pub fn set(&self, code: CUresult) {
        let _ = self.0.compare_exchange(0, code as u32, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// How a stream orders itself with the context's legacy default stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The legacy default stream (`0`, `CU_STREAM_LEGACY`): waits for the work of every blocking
    /// stream before it, and they wait for its work before theirs.
    Legacy,
    /// A stream created without `CU_STREAM_NON_BLOCKING`.
    Blocking,
    /// A stream created with `CU_STREAM_NON_BLOCKING`: no implicit ordering.
    NonBlocking,
}

/// A stream: a queue of work and the thread that runs it.
#[derive(Debug)]
pub struct Stream {
    /// How it orders itself with the legacy stream.
    pub kind: StreamKind,
    /// The creation flags (`cuStreamGetFlags`).
    pub flags: u32,
    /// The priority (`cuStreamGetPriority`).
    pub priority: i32,
    /// The device of its context.
    pub device: usize,
    /// The instance of the context it belongs to.
    pub instance: u64,
    sticky: Arc<StickyError>,
    queue: Mutex<Queue>,
    progress: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Work>,
    /// Operations ever enqueued (the sequence number of the last one).
    enqueued: u64,
    /// Operations done (run, or skipped after a failure).
    completed: u64,
    /// No more work will come: the thread ends once the queue is empty.
    closed: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queue {{ enqueued: {}, completed: {}, closed: {} }}", self.enqueued, self.completed, self.closed)
    }
}

impl Stream {
    /// A stream and its thread.
    pub fn start(
        kind: StreamKind,
        flags: u32,
        priority: i32,
        device: usize,
        instance: u64,
        sticky: Arc<StickyError>,
    ) -> Result<Arc<Stream>, CUresult> {
        let stream = Arc::new(Stream {
            kind,
            flags,
            priority,
            device,
            instance,
            sticky,
            queue: Mutex::new(Queue::default()),
            progress: Condvar::new(),
        });
        let worker = stream.clone();
        std::thread::Builder::new()
            .name(format!("softgpu-stream-dev{device}"))
            .spawn(move || worker.run())
            .map_err(|_| CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
        Ok(stream)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `work`; its sequence number (the stream is done with it once
    /// [`completed`](Stream::completed) reaches it).
    pub fn enqueue(&self, work: Work) -> u64 {
        let mut q = self.lock();
        q.pending.push_back(work);
        q.enqueued += 1;
        self.progress.notify_all();
        q.enqueued
    }

    /// The sequence number of the last operation enqueued.
    pub fn enqueued(&self) -> u64 {
        self.lock().enqueued
    }

    /// How many operations are done.
    pub fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Whether every operation enqueued so far is done.
    pub fn idle(&self) -> bool {
        let q = self.lock();
        q.completed == q.enqueued
    }

    /// Blocks until operation `seq` is done.
    pub fn wait_for(&self, seq: u64) {
        let mut q = self.lock();
        while q.completed < seq {
            q = self.progress.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until everything enqueued so far is done.
    pub fn synchronize(&self) {
        let seq = self.enqueued();
        self.wait_for(seq);
    }

    /// No more work will be enqueued: the thread finishes what is queued and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.progress.notify_all();
    }

    fn run(&self) {
        loop {
            let work = {
                let mut q = self.lock();
                loop {
                    if let Some(work) = q.pending.pop_front() {
                        break work;
                    }
                    if q.closed {
                        return;
                    }
                    q = self.progress.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
            };
            if self.sticky.get().is_none() {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
                    Err(Failure {
                        code: CUresult::CUDA_ERROR_UNKNOWN,
                        message: "softgpu: an operation panicked".into(),
                    })
                });
                if let Err(failure) = outcome {
                    eprintln!("{}", failure.message);
                    self.sticky.set(failure.code);
                }
            }
            let mut q = self.lock();
            q.completed += 1;
            self.progress.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn work_runs_in_order_and_a_failure_skips_the_rest() {
        let sticky = Arc::new(StickyError::default());
        let s = Stream::start(StreamKind::NonBlocking, 1, 0, 0, 1, sticky.clone()).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let log = log.clone();
            s.enqueue(Box::new(move || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                log.lock().unwrap().push(i);
                Ok(())
            }));
        }
        assert!(!s.idle(), "the work runs after enqueue returns");
        s.synchronize();
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        let after = Arc::new(AtomicU64::new(0));
        s.enqueue(Box::new(|| Err(Failure { code: CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, message: "test".into() })));
        let a = after.clone();
        let seq = s.enqueue(Box::new(move || {
            a.store(1, Ordering::SeqCst);
            Ok(())
        }));
        s.wait_for(seq);
        assert_eq!(after.load(Ordering::SeqCst), 0, "skipped after the failure");
        assert_eq!(sticky.get(), Some(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS));
        sticky.set(CUresult::CUDA_ERROR_LAUNCH_FAILED);
        assert_eq!(sticky.get(), Some(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS), "the first error stays");
        s.close();
    }
}
