//! What the interpreter tests share: a device memory, and PTX and launch helpers.
#![allow(dead_code)]

use std::sync::Mutex;

use softgpu::exec::{self, Allocation, Fault, GlobalMemory, Launch, RunStats};
use softgpu::ptx::Module;

/// One allocation: 16-byte aligned host storage at a device address.
struct Buffer {
    base: u64,
    len: u64,
    ptr: *mut u8,
    _storage: Vec<u128>,
}

/// Device memory for the tests: allocations at distinct, 256-byte aligned device addresses
/// (from 0x7000_0000_0000, with a gap between them so that an access just past one is
/// outside every allocation).
#[derive(Default)]
pub struct Memory {
    buffers: Mutex<Vec<Buffer>>,
    /// Whether `allocation` answers (to test both paths of the interpreter).
    pub ranges: bool,
}

// SAFETY: the raw pointers are to storage the Memory owns and never moves; the interpreter
// accesses it atomically, the tests only between launches.
unsafe impl Sync for Memory {}
unsafe impl Send for Memory {}

impl Memory {
    pub fn new() -> Self {
        Memory { buffers: Mutex::new(Vec::new()), ranges: true }
    }

    /// A new allocation of `len` bytes, zeroed.
    pub fn alloc(&self, len: usize) -> u64 {
        let mut bufs = self.buffers.lock().unwrap();
        let base = bufs.last().map_or(0x7000_0000_0000, |b| (b.base + b.len + 4096).next_multiple_of(256));
        let mut storage = vec![0u128; len.div_ceil(16).max(1)];
        let ptr = storage.as_mut_ptr().cast::<u8>();
        bufs.push(Buffer { base, len: len as u64, ptr, _storage: storage });
        base
    }

    pub fn write(&self, addr: u64, data: &[u8]) {
        let p = self.resolve(addr, data.len() as u64).expect("write inside an allocation");
        // SAFETY: inside a live allocation; no launch runs.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let p = self.resolve(addr, len as u64).expect("read inside an allocation");
        let mut out = vec![0u8; len];
        // SAFETY: as `write`.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), len) };
        out
    }

    pub fn upload<T: Pod>(&self, data: &[T]) -> u64 {
        let bytes = to_bytes(data);
        let a = self.alloc(bytes.len());
        self.write(a, &bytes);
        a
    }

    pub fn download<T: Pod>(&self, addr: u64, n: usize) -> Vec<T> {
        from_bytes(&self.read(addr, n * T::SIZE))
    }
}

impl GlobalMemory for Memory {
    fn resolve(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let bufs = self.buffers.lock().ok()?;
        let b = bufs.iter().find(|b| addr >= b.base && addr - b.base < b.len.max(1))?;
        (addr - b.base + len <= b.len).then(|| b.ptr.wrapping_add((addr - b.base) as usize))
    }

    fn allocation(&self, addr: u64) -> Option<Allocation> {
        if !self.ranges {
            return None;
        }
        let bufs = self.buffers.lock().ok()?;
        let b = bufs.iter().find(|b| addr >= b.base && addr - b.base < b.len)?;
        Some(Allocation { base: b.base, len: b.len, host: b.ptr })
    }
}

/// Plain values as little-endian bytes.
pub trait Pod: Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

macro_rules! pod {
    ($($t:ty),*) => {$(
        impl Pod for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap())
            }
        }
    )*};
}
pod!(u8, u16, u32, u64, i32, i64, f32, f64);

pub fn to_bytes<T: Pod>(data: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * T::SIZE);
    for &v in data {
        v.put(&mut out);
    }
    out
}

pub fn from_bytes<T: Pod>(b: &[u8]) -> Vec<T> {
    b.chunks_exact(T::SIZE).map(T::get).collect()
}

/// A module of `entries` with the header nvcc writes.
pub fn module(entries: &str) -> Module {
    let text = format!(".version 9.0\n.target sm_75\n.address_size 64\n\n{entries}");
    Module::load(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A parameter value.
pub fn arg<T: Pod>(v: T) -> Vec<u8> {
    to_bytes(&[v])
}

/// Runs kernel `name` of `m`.
pub fn launch(
    m: &Module,
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared_bytes: u32,
    args: &[Vec<u8>],
    mem: &Memory,
) -> Result<RunStats, Fault> {
    let k = m.kernel(name).expect("kernel");
    let params: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let l = Launch { kernel: &k, grid, block, dynamic_shared_bytes, params: &params };
    exec::run_with_stats(&l, mem)
}

/// The kernel of a per-element test: `out[i] = f(a[i], b[i], c[i])` for i < n, one thread per
/// element, where `body` computes `%out` from `%a`, `%b`, `%c` (registers of `.reg` type `ty`,
/// loaded and stored with `mem_ty`), with `%p<8>` and `%t<8>` (same type) free.
pub fn elementwise(ty: &str, mem_ty: &str, size: u32, body: &str) -> Module {
    module(&format!(
        r#"
.visible .entry t(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pout, .param .u32 n)
{{
	.reg .pred %p<8>;
	.reg .b32 %r<8>;
	.reg .b64 %rd<12>;
	.reg {ty} %a, %b, %c, %out;
	.reg {ty} %t<8>;
	ld.param.u64 %rd1, [pa];
	ld.param.u64 %rd2, [pb];
	ld.param.u64 %rd3, [pc];
	ld.param.u64 %rd4, [pout];
	ld.param.u32 %r5, [n];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mul.lo.s32 %r4, %r2, %r3;
	add.s32 %r4, %r4, %r1;
	setp.ge.u32 %p7, %r4, %r5;
	@%p7 bra $DONE;
	mul.wide.u32 %rd5, %r4, {size};
	add.s64 %rd6, %rd1, %rd5;
	add.s64 %rd7, %rd2, %rd5;
	add.s64 %rd8, %rd3, %rd5;
	add.s64 %rd9, %rd4, %rd5;
	ld.global{mem_ty} %a, [%rd6];
	ld.global{mem_ty} %b, [%rd7];
	ld.global{mem_ty} %c, [%rd8];
{body}
	st.global{mem_ty} [%rd9], %out;
$DONE:
	ret;
}}
"#
    ))
}

/// Runs an [`elementwise`] kernel over `a`, `b`, `c` and returns `out`.
pub fn run_elementwise<T: Pod, U: Pod>(m: &Module, a: &[T], b: &[T], c: &[T]) -> Vec<U> {
    let mem = Memory::new();
    let n = a.len();
    let (pa, pb, pc) = (mem.upload(a), mem.upload(b), mem.upload(c));
    let out = mem.alloc(n * U::SIZE);
    let grid = (n as u32).div_ceil(128).max(1);
    launch(m, "t", [grid, 1, 1], [128, 1, 1], 0, &[arg(pa), arg(pb), arg(pc), arg(out), arg(n as u32)], &mem)
        .unwrap_or_else(|f| panic!("{f}"));
    mem.download(out, n)
}

/// The kernel of a per-element conversion test: `out[i] = f(a[i])`, `%a` of `.reg` type
/// `src.0` loaded with `src.1` (`src.2` bytes), `%out` of `dst.0` stored with `dst.1`.
pub fn map_kernel(src: (&str, &str, u32), dst: (&str, &str, u32), body: &str) -> Module {
    module(&format!(
        r#"
.visible .entry t(.param .u64 pa, .param .u64 pout, .param .u32 n)
{{
	.reg .pred %p<8>;
	.reg .b32 %r<8>;
	.reg .b64 %rd<12>;
	.reg {} %a;
	.reg {} %out;
	ld.param.u64 %rd1, [pa];
	ld.param.u64 %rd4, [pout];
	ld.param.u32 %r5, [n];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mul.lo.s32 %r4, %r2, %r3;
	add.s32 %r4, %r4, %r1;
	setp.ge.u32 %p7, %r4, %r5;
	@%p7 bra $DONE;
	mul.wide.u32 %rd5, %r4, {};
	add.s64 %rd6, %rd1, %rd5;
	mul.wide.u32 %rd5, %r4, {};
	add.s64 %rd9, %rd4, %rd5;
	ld.global{} %a, [%rd6];
{body}
	st.global{} [%rd9], %out;
$DONE:
	ret;
}}
"#,
        src.0, dst.0, src.2, dst.2, src.1, dst.1
    ))
}

/// Runs a [`map_kernel`] over `a`.
pub fn run_map<T: Pod, U: Pod>(m: &Module, a: &[T]) -> Vec<U> {
    let mem = Memory::new();
    let n = a.len();
    let pa = mem.upload(a);
    let out = mem.alloc(n * U::SIZE);
    let grid = (n as u32).div_ceil(128).max(1);
    launch(m, "t", [grid, 1, 1], [128, 1, 1], 0, &[arg(pa), arg(out), arg(n as u32)], &mem)
        .unwrap_or_else(|f| panic!("{f}"));
    mem.download(out, n)
}
