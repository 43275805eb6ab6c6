//! The device model behind the C API: devices and their primary contexts, the memory table,
//! streams, events, modules. Nothing here knows the C calling conventions; [`crate::api`]
//! checks the arguments and calls in.

pub mod context;
pub mod event;
pub mod handles;
pub mod launch;
pub mod memory;
pub mod module;
pub mod pinned;
pub mod properties;
pub mod stats;
pub mod stream;
pub mod transfer;

use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::CUresult;

use self::context::{Context, Instance};
use self::event::Event;
use self::handles::Registry;
use self::memory::MemoryTable;
use self::module::{Function, Module};
use self::pinned::PinnedTable;
use self::stream::Stream;

/// Every `CUresult` of the bindings, with its name (`CUDA_ERROR_NOT_SUPPORTED`, ...).
pub const RESULTS: &[(u32, &std::ffi::CStr)] = include!(concat!(env!("OUT_DIR"), "/cuda_results.rs"));

/// The `CUresult` of code `code` (`CUDA_ERROR_UNKNOWN` for a code the bindings do not have).
pub fn result_from_code(code: u32) -> CUresult {
    if RESULTS.iter().any(|&(c, _)| c == code) {
        // SAFETY: `CUresult` is a `repr(u32)` enum and `code` is one of its values (the table is
        // generated from the same bindings).
        unsafe { std::mem::transmute::<u32, CUresult>(code) }
    } else {
        CUresult::CUDA_ERROR_UNKNOWN
    }
}

/// The driver: what `cuInit` starts.
#[derive(Debug)]
pub struct Driver {
    /// The primary context of each device.
    pub contexts: Vec<Context>,
    /// Device memory of every device.
    pub memory: MemoryTable,
    /// Page-locked host memory (`cuMemHostAlloc`).
    pub pinned: PinnedTable,
    /// Streams made by `cuStreamCreate`.
    pub streams: Registry<Stream>,
    /// Events.
    pub events: Registry<Event>,
    /// Modules.
    pub modules: Registry<Module>,
    /// Functions.
    pub functions: Registry<Function>,
}

static DRIVER: OnceLock<Result<Driver, String>> = OnceLock::new();

/// Starts the driver (`cuInit`): `CUDA_ERROR_INVALID_VALUE` (and a message on stderr) when
/// `SOFTGPU_DEVICES` is not a number, `CUDA_ERROR_NO_DEVICE` when it is 0.
pub fn init() -> Result<&'static Driver, CUresult> {
    let driver = DRIVER.get_or_init(|| {
        properties::device_count().map(|n| Driver {
            contexts: (0..n).map(Context::new).collect(),
            memory: MemoryTable::default(),
            pinned: PinnedTable::default(),
            streams: Registry::new(0x51),
            events: Registry::new(0xe1),
            modules: Registry::new(0x31),
            functions: Registry::new(0xf1),
        })
    });
    match driver {
        Ok(d) if d.contexts.is_empty() => Err(CUresult::CUDA_ERROR_NO_DEVICE),
        Ok(d) => Ok(d),
        Err(message) => {
            eprintln!("softgpu: {message}");
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        }
    }
}

/// The driver, once `cuInit` has started it: `CUDA_ERROR_NOT_INITIALIZED` before.
pub fn driver() -> Result<&'static Driver, CUresult> {
    match DRIVER.get() {
        Some(Ok(d)) if !d.contexts.is_empty() => Ok(d),
        _ => Err(CUresult::CUDA_ERROR_NOT_INITIALIZED),
    }
}

impl Driver {
    /// The primary context of `device`: `CUDA_ERROR_INVALID_DEVICE` when there is no such device.
    pub fn context(&self, device: i64) -> Result<&Context, CUresult> {
        usize::try_from(device).ok().and_then(|d| self.contexts.get(d)).ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
    }

    /// The instance of this thread's current context: `CUDA_ERROR_INVALID_CONTEXT` when there is
    /// none or it is not retained.
    pub fn current(&self) -> Result<Arc<Instance>, CUresult> {
        let device = context::current().ok_or(CUresult::CUDA_ERROR_INVALID_CONTEXT)?;
        self.context(device as i64)?.instance()
    }

    /// The instance of the current context, checked for a sticky error.
    pub fn current_checked(&self) -> Result<Arc<Instance>, CUresult> {
        let instance = self.current()?;
        instance.check()?;
        Ok(instance)
    }

    /// The instance a stream belongs to, and the stream: a default-stream handle (0, 1, 2) means
    /// the current context's legacy stream. `CUDA_ERROR_INVALID_HANDLE` for an unknown handle.
    pub fn stream(&self, handle: usize) -> Result<(Arc<Instance>, Arc<Stream>), CUresult> {
        if context::is_default_stream(handle) {
            let instance = self.current()?;
            let legacy = instance.legacy.clone();
            return Ok((instance, legacy));
        }
        let stream = self.streams.get(handle).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        let instance = self.context(stream.device as i64)?.instance()?;
        if instance.id != stream.instance {
            return Err(CUresult::CUDA_ERROR_INVALID_HANDLE);
        }
        Ok((instance, stream))
    }

    /// Ends `instance` (its context was released or reset): waits for its work, ends its
    /// streams, frees its memory and forgets its handles.
    pub fn tear_down(&self, instance: &Instance) {
        instance.shut_down();
        self.memory.free_device(instance.device);
        let id = instance.id;
        self.streams.remove_where(|s| s.instance == id);
        self.events.remove_where(|e| e.instance == id);
        self.functions.remove_where(|f| f.module.instance == id);
        self.modules.remove_where(|m| m.instance == id);
    }
}
