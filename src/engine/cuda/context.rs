//! One GPU as the engine holds it: its primary context, a stream of its own (for uploads and the
//! work on them), the kernels loaded from the embedded PTX, and its size.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream, sys};
use cudarc::nvrtc::Ptx;

use super::error::GpuError;
use super::launch::{Kernel, KernelSpec, Launch};
use super::read_back::Staging;
use super::{extremes, fake_quant, histogram, kl, percentile, ptx};

/// Every kernel the launchers use.
pub(crate) fn all_kernels() -> impl Iterator<Item = &'static KernelSpec> {
    extremes::KERNELS
        .iter()
        .chain(histogram::KERNELS)
        .chain(fake_quant::KERNELS)
        .chain(percentile::KERNELS)
        .chain(kl::KERNELS)
}

/// A GPU ready to run the kernels.
pub(crate) struct Gpu {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    /// The engine's own stream (non-blocking): uploads of host batches and the work on them.
    pub stream: Arc<CudaStream>,
    /// Streaming multiprocessors (for grid sizes that do not affect results).
    pub sms: u64,
    /// The page-locked buffer through which large counts come back.
    pub staging: Staging,
    kernels: HashMap<&'static str, Kernel>,
}

impl Gpu {
    /// Retains the primary context of GPU `ordinal`, creates a stream and loads every module.
    pub(crate) fn new(ordinal: usize) -> Result<Gpu, GpuError> {
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.new_stream()?;
        let sms = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let mut kernels = HashMap::new();
        for (name, text) in ptx::MODULES {
            let module = ctx.load_module(Ptx::from_src(*text))?;
            for spec in all_kernels().filter(|k| k.module == *name) {
                let function = module.load_function(spec.name)?;
                kernels.insert(spec.name, Kernel { spec, function });
            }
        }
        if let Some(missing) = all_kernels().find(|k| !kernels.contains_key(k.name)) {
            return Err(GpuError::Internal(format!("kernel {} is in no embedded module", missing.name)));
        }
        Ok(Gpu { ordinal, ctx, stream, sms: sms.max(1) as u64, staging: Staging::default(), kernels })
    }

    /// The kernel `name`.
    pub(crate) fn kernel(&self, name: &str) -> Result<&Kernel, GpuError> {
        self.kernels.get(name).ok_or_else(|| GpuError::Internal(format!("kernel {name} is not loaded")))
    }

    /// A launch of kernel `name` on `stream`: push its arguments, then
    /// [`launch`](Launch::launch) it.
    pub(crate) fn launch<'a>(&'a self, stream: &'a CudaStream, name: &str) -> Result<Launch<'a>, GpuError> {
        Ok(Launch::new(stream, self.kernel(name)?))
    }
}
