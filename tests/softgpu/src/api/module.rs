//! Modules (from PTX text) and functions.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::sys::{CUfunction, CUmodule, CUresult};

use super::{call, out};
use crate::device::driver;
use crate::device::module::{Function, Module};

/// Loads `image` (NUL-terminated PTX text) into the current context and registers the module.
fn load(ph_module: *mut CUmodule, image: &[u8]) -> Result<(), CUresult> {
    if ph_module.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    let d = driver()?;
    let instance = d.current_checked()?;
    let module = Module::load(image, instance.id).map_err(|e| {
        eprintln!("{}", e.message);
        e.code
    })?;
    // SAFETY: checked non-NULL; the caller's promise of a valid pointer.
    unsafe { out(ph_module, d.modules.insert(Arc::new(module)) as CUmodule) }
}

/// The bytes of a module image: up to the NUL that ends PTX text.
///
/// # Safety
/// `image` must be NULL or a NUL-terminated string.
unsafe fn image_bytes<'a>(image: *const c_void) -> Result<&'a [u8], CUresult> {
    if image.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: the caller's promise. (A cubin is not NUL-terminated, but starts with `\x7fELF`,
    // whose first bytes are enough to refuse it.)
    Ok(unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_bytes())
}

/// Loads a module from PTX text. A PTX that softgpu cannot run is `CUDA_ERROR_INVALID_PTX`, with
/// the interpreter's message (the line and what is wrong) on stderr.
///
/// # Safety
/// `ph_module` must be NULL or valid for a write; `image` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(ph_module: *mut CUmodule, image: *const c_void) -> CUresult {
    // SAFETY: the caller's promise.
    call(|| load(ph_module, unsafe { image_bytes(image) }?))
}

/// As [`cuModuleLoadData`]; the JIT options are ignored (there is no JIT).
///
/// # Safety
/// As [`cuModuleLoadData`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    ph_module: *mut CUmodule,
    image: *const c_void,
    _num_options: c_uint,
    _options: *mut c_void,
    _option_values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: the caller's promise.
    unsafe { cuModuleLoadData(ph_module, image) }
}

/// Loads a module from a file of PTX text.
///
/// # Safety
/// `ph_module` must be NULL or valid for a write; `fname` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoad(ph_module: *mut CUmodule, fname: *const c_char) -> CUresult {
    call(|| {
        if fname.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller's promise.
        let path = unsafe { CStr::from_ptr(fname) }.to_string_lossy().into_owned();
        let image = std::fs::read(&path).map_err(|e| {
            eprintln!("softgpu: cuModuleLoad: {path}: {e}");
            CUresult::CUDA_ERROR_FILE_NOT_FOUND
        })?;
        load(ph_module, &image)
    })
}

/// Unloads a module (functions in use keep it until they are done).
#[unsafe(no_mangle)]
pub extern "C" fn cuModuleUnload(hmod: CUmodule) -> CUresult {
    call(|| {
        let d = driver()?;
        let module = d.modules.remove(hmod as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        d.functions.remove_where(|f| Arc::ptr_eq(&f.module, &module));
        Ok(())
    })
}

/// The kernel `name` of a module: `CUDA_ERROR_NOT_FOUND` when it has none of that name.
///
/// # Safety
/// `hfunc` must be NULL or valid for a write; `name` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) -> CUresult {
    call(|| {
        if hfunc.is_null() || name.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let d = driver()?;
        let module = d.modules.get(hmod as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        // SAFETY: the caller's promise.
        let name = unsafe { CStr::from_ptr(name) }.to_str().map_err(|_| CUresult::CUDA_ERROR_NOT_FOUND)?;
        let kernel = module.ptx.kernel(name).ok_or(CUresult::CUDA_ERROR_NOT_FOUND)?;
        let function = Arc::new(Function::new(module, kernel));
        // SAFETY: the caller's promise.
        unsafe { out(hfunc, d.functions.insert(function) as CUfunction) }
    })
}

/// A module's global variable: softgpu's modules have none (the interpreter runs kernels
/// only), so every name is `CUDA_ERROR_NOT_FOUND`.
#[unsafe(no_mangle)]
pub extern "C" fn cuModuleGetGlobal_v2(
    _dptr: *mut u64,
    _bytes: *mut usize,
    hmod: CUmodule,
    _name: *const c_char,
) -> CUresult {
    call(|| {
        driver()?.modules.get(hmod as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)?;
        Err(CUresult::CUDA_ERROR_NOT_FOUND)
    })
}

fn function(hfunc: CUfunction) -> Result<Arc<Function>, CUresult> {
    driver()?.functions.get(hfunc as usize).ok_or(CUresult::CUDA_ERROR_INVALID_HANDLE)
}

/// A function attribute; `CUDA_ERROR_NOT_SUPPORTED` for one softgpu does not model.
///
/// # Safety
/// `pi` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut c_int, attrib: c_int, hfunc: CUfunction) -> CUresult {
    call(|| {
        let value = function(hfunc)?.attribute(attrib).ok_or(CUresult::CUDA_ERROR_NOT_SUPPORTED)?;
        // SAFETY: the caller's promise.
        unsafe { out(pi, value) }
    })
}

/// Sets a function attribute: the most dynamic shared memory (up to 227 KiB), or the carveout
/// hint.
#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetAttribute(hfunc: CUfunction, attrib: c_int, value: c_int) -> CUresult {
    call(|| function(hfunc)?.set_attribute(attrib, value))
}

/// The cache configuration hint of a function (accepted, changes nothing).
#[unsafe(no_mangle)]
pub extern "C" fn cuFuncSetCacheConfig(hfunc: CUfunction, config: c_uint) -> CUresult {
    call(|| {
        function(hfunc)?;
        if config > 3 { Err(CUresult::CUDA_ERROR_INVALID_VALUE) } else { Ok(()) }
    })
}
