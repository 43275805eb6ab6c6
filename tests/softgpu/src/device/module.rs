//! Modules loaded from PTX text, and their functions with the attributes a launch checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cudarc::driver::sys::{CUfunction_attribute as F, CUresult};

use super::properties::{DEFAULT_SHARED_PER_BLOCK, OPTIN_SHARED_PER_BLOCK, RESERVED_SHARED_PER_BLOCK};
use crate::ptx::{self, Kernel};

/// A module: the decoded PTX.
#[derive(Debug)]
pub struct Module {
    /// The decoded kernels.
    pub ptx: ptx::Module,
    /// The `.version` of the PTX text, as `major * 10 + minor` (`CU_FUNC_ATTRIBUTE_PTX_VERSION`).
    pub ptx_version: i32,
    /// The instance of the context it was loaded into.
    pub instance: u64,
}

/// Why a module image did not load.
#[derive(Debug)]
pub struct ModuleError {
    /// `CUDA_ERROR_INVALID_PTX`, or `CUDA_ERROR_INVALID_IMAGE` for an image that is not PTX text.
    pub code: CUresult,
    /// What is wrong (printed to stderr by the API).
    pub message: String,
}

impl Module {
    /// Decodes `image`: PTX text (softgpu runs no cubin or fatbin).
    pub fn load(image: &[u8], instance: u64) -> Result<Module, ModuleError> {
        let invalid_image = |message: String| ModuleError { code: CUresult::CUDA_ERROR_INVALID_IMAGE, message };
        if image.starts_with(b"\x7fELF") || image.starts_with(&[0x50, 0xed, 0x55, 0xba]) {
            return Err(invalid_image(
                "softgpu: the module image is a cubin or fatbin; softgpu loads PTX text only".into(),
            ));
        }
        let text = std::str::from_utf8(image)
            .map_err(|e| invalid_image(format!("softgpu: the module image is not PTX text (not UTF-8: {e})")))?;
        let ptx = ptx::Module::load(text).map_err(|e| ModuleError {
            code: CUresult::CUDA_ERROR_INVALID_PTX,
            message: format!("softgpu: the PTX does not load: {e}"),
        })?;
        Ok(Module { ptx, ptx_version: ptx_version(text), instance })
    }
}

/// `major * 10 + minor` of the `.version` directive (0 when there is none).
fn ptx_version(text: &str) -> i32 {
    let version = text.lines().find_map(|l| l.trim().strip_prefix(".version")).map(str::trim);
    let Some((major, minor)) = version.and_then(|v| v.split_once('.')) else { return 0 };
    match (major.trim().parse::<i32>(), minor.trim().parse::<i32>()) {
        (Ok(a), Ok(b)) => a * 10 + b,
        _ => 0,
    }
}

/// A kernel of a loaded module, with the attributes set on it.
#[derive(Debug)]
pub struct Function {
    /// The decoded kernel.
    pub kernel: Arc<Kernel>,
    /// The module (kept loaded while the function is used).
    pub module: Arc<Module>,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    max_dynamic_shared: AtomicU32,
}

impl Function {
    /// The function `kernel` of `module`.
    pub fn new(module: Arc<Module>, kernel: Arc<Kernel>) -> Function {
        let default = DEFAULT_SHARED_PER_BLOCK.saturating_sub(kernel.static_shared_bytes() as u32);
        Function { kernel, module, max_dynamic_shared: AtomicU32::new(default) }
    }

    /// The most dynamic shared memory a launch may ask for.
    pub fn max_dynamic_shared(&self) -> u32 {
        self.max_dynamic_shared.load(Ordering::Relaxed)
    }

    /// The value of function attribute `attribute` (a `CUfunction_attribute`), or `None` for one
    /// softgpu does not model.
    pub fn attribute(&self, attribute: i32) -> Option<i32> {
        let k = &self.kernel;
        let is = |a: F| a as i32 == attribute;
        Some(if is(F::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK) {
            k.max_threads_per_block() as i32
        } else if is(F::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES) {
            k.static_shared_bytes() as i32
        } else if is(F::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES) || is(F::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES) {
            0
        } else if is(F::CU_FUNC_ATTRIBUTE_NUM_REGS) {
            k.num_regs() as i32
        } else if is(F::CU_FUNC_ATTRIBUTE_PTX_VERSION) {
            self.module.ptx_version
        } else if is(F::CU_FUNC_ATTRIBUTE_BINARY_VERSION) {
            90
        } else if is(F::CU_FUNC_ATTRIBUTE_CACHE_MODE_CA) {
            0
        } else if is(F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
            self.max_dynamic_shared() as i32
        } else if is(F::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT) {
            -1
        } else {
            return None;
        })
    }

    /// Sets function attribute `attribute`: only `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`
    /// (up to 227 KiB with the static shared memory) and the carveout hint, which changes nothing.
    pub fn set_attribute(&self, attribute: i32, value: i32) -> Result<(), CUresult> {
        if attribute == F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as i32 {
            let limit = OPTIN_SHARED_PER_BLOCK.saturating_sub(self.kernel.static_shared_bytes() as u32);
            let value = u32::try_from(value).map_err(|_| CUresult::CUDA_ERROR_INVALID_VALUE)?;
            if value > limit {
                return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
            }
            self.max_dynamic_shared.store(value, Ordering::Relaxed);
            Ok(())
        } else if attribute == F::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT as i32 {
            if (-1..=100).contains(&value) { Ok(()) } else { Err(CUresult::CUDA_ERROR_INVALID_VALUE) }
        } else {
            Err(CUresult::CUDA_ERROR_NOT_SUPPORTED)
        }
    }

    /// Resident blocks per multiprocessor for blocks of `threads` threads and
    /// `dynamic_shared` bytes of dynamic shared memory, from the thread, block and shared-memory
    /// limits (registers are not modelled: PTX declares virtual registers, not what ptxas
    /// allocates).
    pub fn max_active_blocks(&self, threads: u32, dynamic_shared: u32) -> u32 {
        use super::properties::{
            MAX_BLOCKS_PER_MULTIPROCESSOR, MAX_THREADS_PER_MULTIPROCESSOR, SHARED_PER_MULTIPROCESSOR,
        };
        if threads == 0 || threads > self.kernel.max_threads_per_block() {
            return 0;
        }
        let warps = threads.div_ceil(32) * 32;
        let by_threads = MAX_THREADS_PER_MULTIPROCESSOR / warps;
        let shared = self.kernel.static_shared_bytes() as u32 + dynamic_shared + RESERVED_SHARED_PER_BLOCK;
        let by_shared = SHARED_PER_MULTIPROCESSOR / shared;
        by_threads.min(by_shared).min(MAX_BLOCKS_PER_MULTIPROCESSOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ptx_version_is_read_from_the_text() {
        assert_eq!(ptx_version("//\n.version 9.0\n.target sm_75\n"), 90);
        assert_eq!(ptx_version(".version 8.5"), 85);
        assert_eq!(ptx_version(".target sm_75"), 0);
    }

    #[test]
    fn binaries_are_refused_with_invalid_image() {
        let e = Module::load(b"\x7fELF\x02\x01", 0).unwrap_err();
        assert_eq!(e.code, CUresult::CUDA_ERROR_INVALID_IMAGE);
        let e = Module::load(&[0xff, 0xfe, 0x00], 0).unwrap_err();
        assert_eq!(e.code, CUresult::CUDA_ERROR_INVALID_IMAGE);
    }
}
