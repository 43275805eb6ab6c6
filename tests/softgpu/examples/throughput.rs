//! Interpreter throughput: lane-instructions per second on qcalib's kernels over 2^20 floats,
//! as the engine launches them. Run with `cargo run -p softgpu --release --example throughput`
//! (optionally `RAYON_NUM_THREADS=n`); prints the median of several runs of each kernel.

use std::sync::Mutex;
use std::time::Instant;

use softgpu::exec::{self, Allocation, GlobalMemory, Launch};
use softgpu::ptx::Module;

/// Device memory: allocations of 16-byte aligned host storage.
struct Memory {
    buffers: Mutex<Vec<(u64, u64, usize)>>,
}

// SAFETY: the host addresses are of leaked storage that lives as long as the process.
unsafe impl Sync for Memory {}

impl Memory {
    fn upload(&self, bytes: &[u8]) -> u64 {
        let storage: &'static mut [u128] = Vec::leak(vec![0u128; bytes.len().div_ceil(16).max(1)]);
        let host = storage.as_mut_ptr().cast::<u8>();
        // SAFETY: `storage` holds at least `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), host, bytes.len()) };
        let mut b = self.buffers.lock().unwrap();
        let base = b.last().map_or(0x1_0000_0000, |&(base, len, _)| (base + len + 4096).next_multiple_of(256));
        b.push((base, bytes.len() as u64, host as usize));
        base
    }
}

impl GlobalMemory for Memory {
    fn resolve(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let a = self.allocation(addr)?;
        (addr - a.base + len <= a.len).then(|| a.host.wrapping_add((addr - a.base) as usize))
    }

    fn allocation(&self, addr: u64) -> Option<Allocation> {
        let b = self.buffers.lock().ok()?;
        let &(base, len, host) = b.iter().find(|&&(base, len, _)| addr >= base && addr - base < len)?;
        Some(Allocation { base, len, host: host as *mut u8 })
    }
}

fn module(file: &str) -> Module {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels/ptx").join(file);
    Module::load(&std::fs::read_to_string(path).expect("kernels/ptx")).expect("loads")
}

fn measure(name: &str, m: &Module, kernel: &str, grid: [u32; 3], shared: u32, params: &[Vec<u8>], mem: &Memory) {
    let k = m.kernel(kernel).expect("kernel");
    let p: Vec<&[u8]> = params.iter().map(|v| v.as_slice()).collect();
    let l = Launch { kernel: &k, grid, block: [256, 1, 1], dynamic_shared_bytes: shared, params: &p };
    let mut rates = Vec::new();
    let mut lanes = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let s = exec::run_with_stats(&l, mem).unwrap_or_else(|f| panic!("{f}"));
        let secs = t.elapsed().as_secs_f64();
        lanes = s.lane_instructions;
        rates.push(s.lane_instructions as f64 / secs);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{name:<40} {:>12} lane-instructions  median {:>7.1} M/s  (min {:.1}, max {:.1})",
        lanes,
        rates[3] / 1e6,
        rates[0] / 1e6,
        rates[6] / 1e6
    );
}

fn main() {
    let n = 1usize << 20;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mem = Memory { buffers: Mutex::new(Vec::new()) };
    let dx = mem.upload(&bytes);
    println!("{} rayon threads, {} elements", rayon::current_num_threads(), n);

    let a = |v: u64| v.to_le_bytes().to_vec();
    let ext = module("extremes.ptx");
    let out = mem.upload(&[0u8; 16]);
    let params = [a(dx), a(1), a(1), a(n as u64), a(16 * 1024), 0u32.to_le_bytes().to_vec(), a(out)];
    // src/engine/cuda/extremes.rs: per tensor, (1, n / 16Ki) blocks.
    measure("extremes_rows_f32", &ext, "extremes_rows_f32", [1, (n / 16384) as u32, 1], 0, &params, &mem);

    let hist = module("histogram.ptx");
    let bins = 2048u32;
    let h = mem.upload(&vec![0u8; bins as usize * 8]);
    let hi = 3.0f32;
    let params = [
        a(dx),
        a(n as u64),
        bins.to_le_bytes().to_vec(),
        hi.to_le_bytes().to_vec(),
        (1.0 / f64::from(hi)).to_le_bytes().to_vec(),
        a(h),
    ];
    // src/engine/cuda/histogram.rs: n / 64Ki blocks, bins * 4 bytes of shared memory.
    let blocks = [(n / 65536) as u32, 1, 1];
    measure("abs_hist_shared_f32 (2048 bins)", &hist, "abs_hist_shared_f32", blocks, bins * 4, &params, &mem);
    measure("abs_hist_global_f32 (2048 bins)", &hist, "abs_hist_global_f32", blocks, 0, &params, &mem);

    // src/engine/cuda/fake_quant.rs: 16 candidates per block, 8Ki values per block; 2^18 values
    // here (the kernel does about 16 x 15 instructions per value).
    let fq = module("fake_quant.ptx");
    let k = 16u64;
    let scales: Vec<f32> = (1..=k).map(|i| 0.01 * i as f32).collect();
    let inv: Vec<f64> = scales.iter().map(|&s| 1.0 / f64::from(s)).collect();
    let ds = mem.upload(&scales.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let di = mem.upload(&inv.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    let m = (n / 4) as u64;
    let splits = m / 8192;
    let partial = mem.upload(&vec![0u8; (splits * k * 8) as usize]);
    let f = |v: f32| v.to_le_bytes().to_vec();
    let params = [
        a(dx),
        a(1),
        a(1),
        a(m),
        a(8192),
        0u32.to_le_bytes().to_vec(),
        a(ds),
        a(di),
        a(k),
        f(-128.0),
        f(127.0),
        a(partial),
    ];
    measure("fq_err_rows_f32 (16 candidates)", &fq, "fq_err_rows_f32", [1, splits as u32, 1], 0, &params, &mem);
}
