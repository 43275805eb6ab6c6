//! Primary contexts: one per device, retained and released by count; while retained, an
//! *instance* holds the context's state (its legacy default stream, the streams made in it, its
//! sticky error). Releasing the last reference destroys the instance and everything in it (its
//! memory, streams, events, modules), as the driver does; the next retain starts afresh.
//!
//! The current context is per thread (a stack, for `cuCtxPushCurrent`/`cuCtxPopCurrent`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::driver::sys::CUresult;

use super::stream::{StickyError, Stream, StreamKind, Work};

/// `CU_STREAM_NON_BLOCKING`.
pub const STREAM_NON_BLOCKING: u32 = 0x1;

/// The legacy default stream's handles: `0` (the NULL stream), `CU_STREAM_LEGACY` (1) and
/// `CU_STREAM_PER_THREAD` (2, which softgpu orders like the legacy stream: more ordering than
/// the driver promises, never less).
pub fn is_default_stream(handle: usize) -> bool {
    handle <= 2
}

/// The primary context of one device.
#[derive(Debug)]
pub struct Context {
    /// The device.
    pub device: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    retained: u32,
    flags: u32,
    instance: Option<Arc<Instance>>,
}

/// The state of a context between its first retain and its last release.
#[derive(Debug)]
pub struct Instance {
    /// Unique over the process: what streams, events and modules of this instance record.
    pub id: u64,
    /// The device.
    pub device: usize,
    /// The error a fault left, reported by every call from then on.
    pub sticky: Arc<StickyError>,
    /// The legacy default stream.
    pub legacy: Arc<Stream>,
    streams: Mutex<Vec<Arc<Stream>>>,
    limits: Mutex<HashMap<i32, usize>>,
    cache_config: Mutex<u32>,
}

impl Context {
    /// The primary context of `device`, not retained.
    pub fn new(device: usize) -> Context {
        Context { device, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retains the context, starting an instance when it had none.
    pub fn retain(&self) -> Result<(), CUresult> {
        let mut state = self.lock();
        if state.instance.is_none() {
            state.instance = Some(Instance::start(self.device)?);
        }
        state.retained += 1;
        Ok(())
    }

    /// Releases the context; the instance that the last release ends (for the caller to tear
    /// down). `CUDA_ERROR_INVALID_CONTEXT` when it is not retained.
    pub fn release(&self) -> Result<Option<Arc<Instance>>, CUresult> {
        let mut state = self.lock();
        if state.retained == 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_CONTEXT);
        }
        state.retained -= 1;
        Ok(if state.retained == 0 { state.instance.take() } else { None })
    }

    /// Ends the instance now (`cuDevicePrimaryCtxReset`), keeping the retain count: the next
    /// use starts a new one. The old instance, for the caller to tear down.
    pub fn reset(&self) -> Result<Option<Arc<Instance>>, CUresult> {
        let mut state = self.lock();
        let old = state.instance.take();
        if state.retained > 0 {
            state.instance = Some(Instance::start(self.device)?);
        }
        Ok(old)
    }

    /// The live instance: `CUDA_ERROR_INVALID_CONTEXT` when the context is not retained.
    pub fn instance(&self) -> Result<Arc<Instance>, CUresult> {
        self.lock().instance.clone().ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)
    }

    /// The flags (`cuDevicePrimaryCtxGetState`) and whether it is active.
    pub fn state(&self) -> (u32, bool) {
        let state = self.lock();
        (state.flags, state.instance.is_some())
    }

    /// Sets the flags (only the scheduling and resource flags: softgpu has nothing to do
    /// with them).
    pub fn set_flags(&self, flags: u32) -> Result<(), CUresult> {
        // CU_CTX_SCHED_MASK | CU_CTX_LMEM_RESIZE_TO_MAX | CU_CTX_COREDUMP_ENABLE |
        // CU_CTX_USER_COREDUMP_ENABLE | CU_CTX_SYNC_MEMOPS
        const KNOWN: u32 = 0x07 | 0x10 | 0x20 | 0x40 | 0x80;
        if flags & !KNOWN != 0 || (flags & 0x07) == 0x03 || (flags & 0x07) > 0x04 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        self.lock().flags = flags;
        Ok(())
    }
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

impl Instance {
    fn start(device: usize) -> Result<Arc<Instance>, CUresult> {
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let sticky = Arc::new(StickyError::default());
        let legacy = Stream::start(StreamKind::Legacy, 0, 0, device, id, sticky.clone())?;
        Ok(Arc::new(Instance {
            id,
            device,
            sticky,
            legacy,
            streams: Mutex::new(Vec::new()),
            limits: Mutex::new(HashMap::new()),
            cache_config: Mutex::new(0),
        }))
    }

    /// The sticky error, as a `Result`.
    pub fn check(&self) -> Result<(), CUresult> {
        self.sticky.get().map_or(Ok(()), Err)
    }

    /// A new stream (`flags`: `CU_STREAM_NON_BLOCKING` or 0).
    pub fn create_stream(&self, flags: u32, priority: i32) -> Result<Arc<Stream>, CUresult> {
        if flags & !STREAM_NON_BLOCKING != 0 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let kind = if flags & STREAM_NON_BLOCKING != 0 { StreamKind::NonBlocking } else { StreamKind::Blocking };
        let s = Stream::start(kind, flags, priority, self.device, self.id, self.sticky.clone())?;
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).push(s.clone());
        Ok(s)
    }

    /// Forgets `stream`: it finishes its work and its thread ends.
    pub fn destroy_stream(&self, stream: &Arc<Stream>) {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).retain(|s| !Arc::ptr_eq(s, stream));
        stream.close();
    }

    /// Queues `work` on `stream`, after what the legacy stream's rules make it wait for.
    pub fn enqueue(&self, stream: &Arc<Stream>, work: Work) -> u64 {
        let wait_for = |s: &Arc<Stream>| {
            let (other, seq) = (s.clone(), s.enqueued());
            Box::new(move || {
                other.wait_for(seq);
                Ok(())
            }) as Work
        };
        match stream.kind {
            StreamKind::Blocking if !self.legacy.idle() => {
                stream.enqueue(wait_for(&self.legacy));
            }
            StreamKind::Legacy => {
                let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
                for s in streams.iter().filter(|s| s.kind == StreamKind::Blocking && !s.idle()) {
                    stream.enqueue(wait_for(s));
                }
            }
            _ => {}
        }
        stream.enqueue(work)
    }

    /// Blocks until every stream of the context has done what it was given so far.
    pub fn synchronize(&self) {
        self.legacy.synchronize();
        let streams: Vec<Arc<Stream>> = self.streams.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for s in streams {
            s.synchronize();
        }
    }

    /// Waits for the work queued so far, then ends every stream's thread.
    pub fn shut_down(&self) {
        self.synchronize();
        let streams = std::mem::take(&mut *self.streams.lock().unwrap_or_else(PoisonError::into_inner));
        for s in streams {
            s.close();
        }
        self.legacy.close();
    }

    /// A limit (`cuCtxGetLimit`): what was set, else the default.
    pub fn limit(&self, limit: i32) -> Result<usize, CUresult> {
        if let Some(&v) = self.limits.lock().unwrap_or_else(PoisonError::into_inner).get(&limit) {
            return Ok(v);
        }
        default_limit(limit).ok_or(CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT)
    }

    /// Sets a limit (`cuCtxSetLimit`); softgpu records it and nothing more.
    pub fn set_limit(&self, limit: i32, value: usize) -> Result<(), CUresult> {
        default_limit(limit).ok_or(CUresult::CUDA_ERROR_UNSUPPORTED_LIMIT)?;
        self.limits.lock().unwrap_or_else(PoisonError::into_inner).insert(limit, value);
        Ok(())
    }

    /// The cache configuration (`cuCtxGetCacheConfig`): what was set, a hint only.
    pub fn cache_config(&self) -> u32 {
        *self.cache_config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the cache configuration hint (`CU_FUNC_CACHE_PREFER_*`, 0 to 3).
    pub fn set_cache_config(&self, config: u32) -> Result<(), CUresult> {
        if config > 3 {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        *self.cache_config.lock().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

/// The defaults of `CUlimit`s: stack size, printf FIFO, malloc heap, and the device-runtime ones.
fn default_limit(limit: i32) -> Option<usize> {
    match limit {
        0 => Some(1024),    // CU_LIMIT_STACK_SIZE
        1 => Some(1 << 20), // CU_LIMIT_PRINTF_FIFO_SIZE
        2 => Some(8 << 20), // CU_LIMIT_MALLOC_HEAP_SIZE
        3 => Some(2),       // CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH
        4 => Some(2048),    // CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT
        5 => Some(32),      // CU_LIMIT_MAX_L2_FETCH_GRANULARITY
        6 => Some(0),       // CU_LIMIT_PERSISTING_L2_CACHE_SIZE
        _ => None,
    }
}

thread_local! {
    /// This thread's context stack (device ordinals); the top is current.
    static CURRENT: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The device of this thread's current context.
pub fn current() -> Option<usize> {
    CURRENT.with(|c| c.borrow().last().copied())
}

/// Makes `device`'s context current on this thread (replacing the top of the stack), or
/// unbinds the current one (`None`).
pub fn set_current(device: Option<usize>) {
    CURRENT.with(|c| {
        let mut stack = c.borrow_mut();
        match device {
            Some(d) => match stack.last_mut() {
                Some(top) => *top = d,
                None => stack.push(d),
            },
            None => {
                stack.pop();
            }
        }
    });
}

/// Pushes `device`'s context on this thread's stack.
pub fn push_current(device: usize) {
    CURRENT.with(|c| c.borrow_mut().push(device));
}

/// Pops the current context; its device.
pub fn pop_current() -> Option<usize> {
    CURRENT.with(|c| c.borrow_mut().pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_stream_orders_itself_with_blocking_streams_only() {
        let ctx = Context::new(0);
        ctx.retain().unwrap();
        let i = ctx.instance().unwrap();
        let blocking = i.create_stream(0, 0).unwrap();
        let free = i.create_stream(STREAM_NON_BLOCKING, 0).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let step = |name: &'static str, ms: u64| {
            let log = log.clone();
            Box::new(move || {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                log.lock().unwrap().push(name);
                Ok(())
            }) as Work
        };
        i.enqueue(&blocking, step("blocking", 30));
        i.enqueue(&i.legacy, step("legacy", 0));
        i.enqueue(&free, step("free", 0));
        i.synchronize();
        let log = log.lock().unwrap().clone();
        let at = |n| log.iter().position(|&x| x == n).unwrap();
        assert!(at("blocking") < at("legacy"), "{log:?}");
        assert!(at("free") < at("blocking"), "{log:?}: the non-blocking stream waits for nothing");
        let old = ctx.release().unwrap().unwrap();
        old.shut_down();
        assert_eq!(ctx.instance().unwrap_err(), CUresult::CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(ctx.release().unwrap_err(), CUresult::CUDA_ERROR_INVALID_CONTEXT);
    }

    #[test]
    fn the_current_context_is_a_stack_per_thread() {
        set_current(Some(1));
        push_current(0);
        assert_eq!(current(), Some(0));
        std::thread::spawn(|| assert_eq!(current(), None)).join().unwrap();
        assert_eq!(pop_current(), Some(0));
        assert_eq!(current(), Some(1));
        set_current(None);
        assert_eq!(current(), None);
    }
}
