//! An observer's engine, chosen when it is first used.
//!
//! A new observer runs on `Device::Auto`, which is the CUDA engine on GPU 0 when a GPU is
//! usable. Starting that engine retains a context on GPU 0 and loads every kernel there, so it
//! must not happen for an observer that is moved to the CPU or to another GPU before it sees any
//! data (as the CLI does for `--device cpu` and for a rank bound to `cuda:$LOCAL_RANK`). So the
//! default is resolved on first use, and [`Observer::set_device`](crate::Observer::set_device)
//! sets an engine outright.

use std::ops::Deref;
use std::sync::OnceLock;

use super::{Device, Engine};

/// An engine that is `Device::Auto`'s until first used, or one set explicitly.
#[derive(Debug, Default)]
pub(crate) struct LazyEngine(OnceLock<Engine>);

impl LazyEngine {
    /// `Device::Auto`, resolved on first use.
    pub(crate) fn auto() -> LazyEngine {
        LazyEngine(OnceLock::new())
    }
}

impl From<Engine> for LazyEngine {
    fn from(engine: Engine) -> LazyEngine {
        LazyEngine(OnceLock::from(engine))
    }
}

impl Deref for LazyEngine {
    type Target = Engine;

    /// The engine: on first use of `Auto`, CUDA on GPU 0 when it is usable, else the CPU.
    fn deref(&self) -> &Engine {
        self.0.get_or_init(|| match Engine::new(Device::Auto) {
            Ok(engine) => engine,
            Err(_) => Engine::Cpu, // `Auto` never fails; the CPU is its fallback
        })
    }
}
