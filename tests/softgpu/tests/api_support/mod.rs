//! What the API-level tests share: calls through softgpu's exported C functions (as cudarc
//! makes them), with their results checked.

#![allow(dead_code)]

use std::ffi::{CStr, c_char, c_void};

use cudarc::driver::sys::{CUcontext, CUdeviceptr, CUevent, CUfunction, CUmodule, CUresult, CUstream};
use softgpu::api::{context, error, event, init, memory, module, stream};

/// Asserts that `r` is `CUDA_SUCCESS`, naming the error otherwise.
#[track_caller]
pub fn ok(r: CUresult) {
    assert_eq!(r, CUresult::CUDA_SUCCESS, "{}", name(r));
}

/// The name of `r` (from `cuGetErrorName`).
pub fn name(r: CUresult) -> String {
    let mut p: *const c_char = std::ptr::null();
    // SAFETY: one out-pointer.
    unsafe { error::cuGetErrorName(r as u32, &mut p) };
    if p.is_null() {
        return format!("CUresult {}", r as u32);
    }
    // SAFETY: a static string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Starts the driver and makes the primary context of `device` current on this thread.
pub fn use_device(device: i32) -> CUcontext {
    ok(init::cuInit(0));
    let mut ctx: CUcontext = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    ok(unsafe { context::cuDevicePrimaryCtxRetain(&mut ctx, device) });
    ok(context::cuCtxSetCurrent(ctx));
    ctx
}

/// A new stream (`flags`: 0 or `CU_STREAM_NON_BLOCKING`).
pub fn new_stream(flags: u32) -> CUstream {
    let mut s: CUstream = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    ok(unsafe { stream::cuStreamCreate(&mut s, flags) });
    s
}

/// A new event (`flags`: `CU_EVENT_*`).
pub fn new_event(flags: u32) -> CUevent {
    let mut e: CUevent = std::ptr::null_mut();
    // SAFETY: one out-pointer.
    ok(unsafe { event::cuEventCreate(&mut e, flags) });
    e
}

/// `bytes` of device memory.
pub fn alloc(bytes: usize) -> CUdeviceptr {
    let mut p: CUdeviceptr = 0;
    // SAFETY: one out-pointer.
    ok(unsafe { memory::cuMemAlloc_v2(&mut p, bytes) });
    p
}

/// Copies `data` to the device at `dst` (synchronous).
pub fn upload<T: Copy>(dst: CUdeviceptr, data: &[T]) {
    // SAFETY: the slice's bytes.
    ok(unsafe { memory::cuMemcpyHtoD_v2(dst, data.as_ptr().cast(), std::mem::size_of_val(data)) });
}

/// `n` values of type `T` at `src` (synchronous).
pub fn download<T: Copy + Default>(src: CUdeviceptr, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    // SAFETY: the vector's bytes.
    ok(unsafe { memory::cuMemcpyDtoH_v2(out.as_mut_ptr().cast(), src, std::mem::size_of_val(out.as_slice())) });
    out
}

/// Loads PTX text as a module: the module, or the error.
pub fn load(ptx: &str) -> Result<CUmodule, CUresult> {
    let text = std::ffi::CString::new(ptx).unwrap();
    let mut m: CUmodule = std::ptr::null_mut();
    // SAFETY: a NUL-terminated image and one out-pointer.
    match unsafe { module::cuModuleLoadData(&mut m, text.as_ptr().cast()) } {
        CUresult::CUDA_SUCCESS => Ok(m),
        e => Err(e),
    }
}

/// The kernel `name` of module `m`.
pub fn function(m: CUmodule, name: &str) -> Result<CUfunction, CUresult> {
    let name = std::ffi::CString::new(name).unwrap();
    let mut f: CUfunction = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name and one out-pointer.
    match unsafe { module::cuModuleGetFunction(&mut f, m, name.as_ptr()) } {
        CUresult::CUDA_SUCCESS => Ok(f),
        e => Err(e),
    }
}

/// Launches `f` with `grid` x `block` threads (x only) and these parameters.
pub fn launch(f: CUfunction, grid: u32, block: u32, shared: u32, s: CUstream, params: &mut [*mut c_void]) -> CUresult {
    // SAFETY: one pointer per parameter, each to its bytes (the caller's promise).
    unsafe {
        softgpu::api::launch::cuLaunchKernel(
            f,
            grid,
            1,
            1,
            block,
            1,
            1,
            shared,
            s,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
}

/// A stream operation that sleeps `ms` then appends `tag` to `log` (through cuLaunchHostFunc).
pub fn host_step(s: CUstream, log: &'static std::sync::Mutex<Vec<&'static str>>, tag: &'static str, ms: u64) {
    struct Step {
        log: &'static std::sync::Mutex<Vec<&'static str>>,
        tag: &'static str,
        ms: u64,
    }
    unsafe extern "C" fn run(data: *mut c_void) {
        // SAFETY: a `Box<Step>` leaked below, called once.
        let step = unsafe { Box::from_raw(data.cast::<Step>()) };
        std::thread::sleep(std::time::Duration::from_millis(step.ms));
        step.log.lock().unwrap().push(step.tag);
    }
    let data = Box::into_raw(Box::new(Step { log, tag, ms })).cast::<c_void>();
    ok(stream::cuLaunchHostFunc(s, Some(run), data));
}

/// A kernel that adds 1.0 to each of `n` floats (one thread each): the smallest PTX that
/// exercises parameters, special registers, a branch, global loads and stores.
pub const ADD_ONE_PTX: &str = r#"
.version 9.0
.target sm_75
.address_size 64

.visible .entry add_one(
	.param .u64 add_one_param_0,
	.param .u32 add_one_param_1
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<5>;
	.reg .f32 	%f<3>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [add_one_param_0];
	ld.param.u32 	%r2, [add_one_param_1];
	mov.u32 	%r3, %ctaid.x;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r1, %tid.x;
	mul.lo.s32 	%r3, %r3, %r4;
	add.s32 	%r1, %r3, %r1;
	setp.ge.u32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.u32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd2, %rd3;
	ld.global.f32 	%f1, [%rd4];
	add.f32 	%f2, %f1, 0f3F800000;
	st.global.f32 	[%rd4], %f2;
$L__BB0_2:
	ret;
}
"#;
