//! The checks a real GPU does not make: each must stop the launch with a fault that names the
//! kernel, the PTX line, the block and the thread.

mod common;

use common::*;
use softgpu::exec::{Fault, FaultKind};

/// The 1-based line of the first line of `text` (a module built by `module`) containing `needle`.
fn line_of(entries: &str, needle: &str) -> usize {
    // `module` puts four header lines before the entries.
    4 + entries.lines().position(|l| l.contains(needle)).expect("needle") + 1
}

fn run(
    entries: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: &[Vec<u8>],
    mem: &Memory,
) -> Result<(), Fault> {
    launch(&module(entries), "t", grid, block, shared, args, mem).map(|_| ())
}

const STORE_PAST_END: &str = r#"
.visible .entry t(.param .u64 p, .param .u32 n)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	.reg .b64 %rd<8>;
	ld.param.u64 %rd1, [p];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %ctaid.x;
	mul.lo.s32 %r3, %r2, 64;
	add.s32 %r4, %r3, %r1;
	mul.wide.u32 %rd2, %r4, 4;
	add.s64 %rd3, %rd1, %rd2;
	st.global.u32 [%rd3], %r4;
	ret;
}
"#;

#[test]
fn a_store_past_the_end_of_an_allocation() {
    let mem = Memory::new();
    let buf = mem.alloc(100 * 4);
    let other = mem.alloc(4096);
    let f = run(STORE_PAST_END, [2, 1, 1], [64, 1, 1], 0, &[arg(buf), arg(0u32)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::IllegalAddress);
    assert_eq!(f.cuda_error(), 700);
    assert_eq!(f.kernel, "t");
    assert_eq!(f.ptx_line, line_of(STORE_PAST_END, "st.global.u32"));
    assert_eq!((f.block, f.thread), ([1, 0, 0], [36, 0, 0]), "element 100 is thread 36 of block 1");
    assert!(f.detail.contains(&format!("{:#x}", buf + 400)), "{f}");
    assert!(f.detail.contains("st.global.u32 [%rd3], %r4"), "{f}");
    let shown = f.to_string();
    assert!(shown.contains("kernel `t`") && shown.contains("block (1, 0, 0) thread (36, 0, 0)"), "{shown}");
    // The blocks before ran; the allocation after was not touched.
    assert_eq!(mem.download::<u32>(buf, 64), (0..64).collect::<Vec<_>>());
    assert!(mem.download::<u32>(other, 1024).iter().all(|&v| v == 0));
    // Without the driver's allocation ranges, through resolve() alone: the same fault.
    let mut mem = Memory::new();
    mem.ranges = false;
    let buf = mem.alloc(100 * 4);
    let g = run(STORE_PAST_END, [2, 1, 1], [64, 1, 1], 0, &[arg(buf), arg(0u32)], &mem).unwrap_err();
    assert_eq!((g.kind, g.block, g.thread), (f.kind, f.block, f.thread));
}

#[test]
fn the_lowest_faulting_block_is_reported() {
    let mem = Memory::new();
    let buf = mem.alloc(4);
    for _ in 0..5 {
        let f = run(STORE_PAST_END, [300, 1, 1], [64, 1, 1], 0, &[arg(buf), arg(0u32)], &mem).unwrap_err();
        assert_eq!((f.block, f.thread), ([0, 0, 0], [1, 0, 0]));
    }
}

#[test]
fn a_load_from_null_and_a_misaligned_load() {
    let text = r#"
.visible .entry t(.param .u64 p)
{
	.reg .b32 %r<4>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd1, [p];
	ld.global.nc.u32 %r1, [%rd1];
	st.global.u32 [%rd1+4], %r1;
	ret;
}
"#;
    let mem = Memory::new();
    let f = run(text, [1, 1, 1], [32, 1, 1], 0, &[arg(0u64)], &mem).unwrap_err();
    assert_eq!((f.kind, f.ptx_line, f.thread), (FaultKind::IllegalAddress, line_of(text, "ld.global.nc"), [0, 0, 0]));
    let buf = mem.alloc(64);
    let f = run(text, [1, 1, 1], [32, 1, 1], 0, &[arg(buf + 2)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::MisalignedAddress);
    assert_eq!(f.cuda_error(), 716);
    assert!(f.detail.contains("4 bytes"), "{f}");
    // A 16-byte vector load must be 16-byte aligned.
    let v4 = text.replace("ld.global.nc.u32 %r1, [%rd1];", "ld.global.nc.v4.u32 {%r0, %r1, %r2, %r3}, [%rd1];");
    let f = run(&v4, [1, 1, 1], [1, 1, 1], 0, &[arg(buf + 8)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::MisalignedAddress);
    assert!(run(&v4, [1, 1, 1], [1, 1, 1], 0, &[arg(buf + 16)], &mem).is_ok());
}

#[test]
fn shared_memory_out_of_range_and_uninitialised() {
    let text = r#"
.visible .entry t(.param .u32 i, .param .u32 j)
{
	.reg .b32 %r<8>;
	.shared .align 4 .b8 s[64];
	ld.param.u32 %r1, [i];
	ld.param.u32 %r2, [j];
	mov.u32 %r3, s;
	add.s32 %r4, %r3, %r1;
	st.shared.u16 [%r4], 7;
	bar.sync 0;
	add.s32 %r5, %r3, %r2;
	ld.shared.u32 %r6, [%r5];
	ret;
}
"#;
    let mem = Memory::new();
    // Writes 2 bytes at 8, reads 4 at 8: bytes 10 and 11 were never written.
    let f = run(text, [1, 1, 1], [64, 1, 1], 0, &[arg(8u32), arg(8u32)], &mem).unwrap_err();
    assert_eq!((f.kind, f.ptx_line), (FaultKind::UninitializedShared, line_of(text, "ld.shared.u32")));
    assert!(f.detail.contains("0xa"), "{f}");
    assert_eq!(f.cuda_error(), 700);
    // Past the 64 bytes of the block (dynamic shared memory would come after, none here).
    let f = run(text, [1, 1, 1], [64, 1, 1], 0, &[arg(64u32), arg(8u32)], &mem).unwrap_err();
    assert_eq!((f.kind, f.ptx_line), (FaultKind::IllegalAddress, line_of(text, "st.shared.u16")));
    // With 16 bytes of dynamic shared memory after the static 64, offset 64 is inside.
    let f = run(text, [1, 1, 1], [64, 1, 1], 16, &[arg(64u32), arg(64u32)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::UninitializedShared, "{f}");
    // A misaligned shared store.
    let f = run(text, [1, 1, 1], [64, 1, 1], 0, &[arg(3u32), arg(8u32)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::MisalignedAddress);
    // Every block starts with unwritten shared memory: block 1 cannot read block 0's data.
    let text2 = r#"
.visible .entry t()
{
	.reg .b32 %r<8>;
	.reg .pred %p<2>;
	.shared .align 4 .b8 s[64];
	mov.u32 %r1, %ctaid.x;
	setp.ne.s32 %p1, %r1, 0;
	@%p1 bra $READ;
	st.shared.u32 [s], 1;
$READ:
	ld.shared.u32 %r2, [s];
	ret;
}
"#;
    let f = run(text2, [2, 1, 1], [1, 1, 1], 0, &[], &mem).unwrap_err();
    assert_eq!((f.kind, f.block), (FaultKind::UninitializedShared, [1, 0, 0]));
    // An atomic reads: on unwritten shared memory it is a fault too.
    let text3 = text2
        .replace("\tst.shared.u32 [s], 1;\n", "")
        .replace("ld.shared.u32 %r2, [s];", "atom.shared.add.u32 %r2, [s], 1;");
    let f = run(&text3, [1, 1, 1], [1, 1, 1], 0, &[], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::UninitializedShared);
}

#[test]
fn a_barrier_one_thread_skips() {
    let text = r#"
.visible .entry t(.param .u32 skip)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	ld.param.u32 %r1, [skip];
	mov.u32 %r2, %tid.x;
	setp.eq.s32 %p1, %r2, %r1;
	@%p1 ret;
	bar.sync 0;
	ret;
}
"#;
    let mem = Memory::new();
    let f = run(text, [3, 1, 1], [128, 1, 1], 0, &[arg(77u32)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::BarrierDivergence);
    assert_eq!(f.cuda_error(), 715);
    assert_eq!((f.block, f.thread), ([0, 0, 0], [77, 0, 0]), "{f}");
    assert_eq!(f.ptx_line, line_of(text, "bar.sync"));
    assert!(f.detail.contains(&format!("PTX line {}", line_of(text, "@%p1 ret"))), "{f}");
    assert!(f.detail.contains("127 threads"), "{f}");
    // Nobody skips: fine.
    assert!(run(text, [3, 1, 1], [128, 1, 1], 0, &[arg(1000u32)], &mem).is_ok());
    // Threads at two different bar.sync instructions.
    let two = text
        .replace("\t@%p1 ret;\n", "\t@%p1 bra $OTHER;\n")
        .replace("\tbar.sync 0;\n\tret;\n", "\tbar.sync 0;\n\tret;\n$OTHER:\n\tbar.sync 0;\n\tret;\n");
    let f = run(&two, [1, 1, 1], [128, 1, 1], 0, &[arg(5u32)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::BarrierDivergence);
    assert!(f.detail.contains("different bar.sync"), "{f}");
}

const SHUFFLE: &str = r#"
.visible .entry t(.param .u32 mask, .param .u32 quit)
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	ld.param.u32 %r1, [mask];
	ld.param.u32 %r2, [quit];
	mov.u32 %r3, %laneid;
	setp.eq.s32 %p1, %r3, %r2;
	@%p1 ret;
	shfl.sync.bfly.b32 %r4, %r3, 1, 31, %r1;
	ret;
}
"#;

#[test]
fn shuffle_masks() {
    let mem = Memory::new();
    let ok = run(SHUFFLE, [1, 1, 1], [32, 1, 1], 0, &[arg(u32::MAX), arg(99u32)], &mem);
    assert!(ok.is_ok());
    let line = line_of(SHUFFLE, "shfl.sync");
    // The mask misses lanes 16..31, which execute it.
    let f = run(SHUFFLE, [1, 1, 1], [32, 1, 1], 0, &[arg(0xFFFFu32), arg(99u32)], &mem).unwrap_err();
    assert_eq!((f.kind, f.ptx_line, f.thread), (FaultKind::ShuffleMask, line, [16, 0, 0]), "{f}");
    assert_eq!(f.cuda_error(), 715);
    // The mask names lane 9, which has exited.
    let f = run(SHUFFLE, [1, 1, 1], [32, 1, 1], 0, &[arg(u32::MAX), arg(9u32)], &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::ShuffleMask);
    assert!(f.detail.contains("lane 9") && f.detail.contains("exited"), "{f}");
    // The mask names lanes that are not threads (a block of 20).
    let f = run(SHUFFLE, [1, 1, 1], [20, 1, 1], 0, &[arg(u32::MAX), arg(99u32)], &mem).unwrap_err();
    assert!(f.detail.contains("not a thread"), "{f}");
    // A block of 20 with the right mask is fine.
    assert!(run(SHUFFLE, [1, 1, 1], [20, 1, 1], 0, &[arg(0xF_FFFFu32), arg(99u32)], &mem).is_ok());
}

#[test]
fn shuffle_masks_that_differ_read_outside_or_wait_forever() {
    let mem = Memory::new();
    // Lanes pass different masks.
    let differ = SHUFFLE
        .replace("mov.u32 %r3, %laneid;", "mov.u32 %r3, %laneid;\n\tshl.b32 %r5, 1, %r3;\n\tor.b32 %r1, %r1, %r5;");
    let f = run(&differ, [1, 1, 1], [32, 1, 1], 0, &[arg(0x7FFF_FFFFu32), arg(99u32)], &mem).unwrap_err();
    assert!(f.detail.contains("lane 31 passes membermask 0xffffffff, lane 0 passes 0x7fffffff"), "{f}");
    // Lanes 0..15 with mask 0xFFFF read lanes 16..31 (bfly 16): outside the mask.
    let outside = r#"
.visible .entry t()
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	mov.u32 %r3, %laneid;
	setp.ge.u32 %p1, %r3, 16;
	@%p1 ret;
	shfl.sync.bfly.b32 %r4, %r3, 16, 31, 0xFFFF;
	ret;
}
"#;
    let f = run(outside, [1, 1, 1], [32, 1, 1], 0, &[], &mem).unwrap_err();
    assert!(f.detail.contains("not in the membermask"), "{f}");
    // Half the warp waits at the shuffle for lanes that wait at a barrier: they never come.
    let deadlock = r#"
.visible .entry t()
{
	.reg .pred %p<2>;
	.reg .b32 %r<8>;
	mov.u32 %r3, %laneid;
	setp.ge.u32 %p1, %r3, 16;
	@%p1 bra $BAR;
	shfl.sync.bfly.b32 %r4, %r3, 16, 31, -1;
$BAR:
	bar.sync 0;
	ret;
}
"#;
    let f = run(deadlock, [1, 1, 1], [32, 1, 1], 0, &[], &mem).unwrap_err();
    assert_eq!((f.kind, f.ptx_line), (FaultKind::ShuffleMask, line_of(deadlock, "shfl.sync")));
    assert!(f.detail.contains("waits at bar.sync"), "{f}");
}

#[test]
fn launches_the_kernel_cannot_take() {
    let text = r#"
.visible .entry t(.param .u64 p, .param .u32 n)
.maxntid 256, 1, 1
{
	.shared .align 8 .b8 s[1024];
	ret;
}
.visible .entry r()
.reqntid 64, 2, 1
{
	ret;
}
"#;
    let m = module(text);
    let mem = Memory::new();
    let invalid = |f: Fault| {
        assert_eq!((f.kind, f.cuda_error(), f.ptx_line), (FaultKind::InvalidLaunch, 1, 0));
        f.detail
    };
    let ok_args = [arg(0u64), arg(0u32)];
    assert!(launch(&m, "t", [1, 1, 1], [256, 1, 1], 0, &ok_args, &mem).is_ok());
    let d = invalid(launch(&m, "t", [1, 1, 1], [256, 1, 1], 0, &[arg(0u64)], &mem).unwrap_err());
    assert!(d.contains("1 parameters passed"), "{d}");
    let d = invalid(launch(&m, "t", [1, 1, 1], [256, 1, 1], 0, &[arg(0u64), arg(0u64)], &mem).unwrap_err());
    assert!(d.contains("parameter 1 has 8 bytes"), "{d}");
    let d = invalid(launch(&m, "t", [1, 1, 1], [257, 1, 1], 0, &ok_args, &mem).unwrap_err());
    assert!(d.contains("257 threads"), "{d}");
    let d = invalid(launch(&m, "t", [1, 1, 1], [16, 16, 2], 0, &ok_args, &mem).unwrap_err());
    assert!(d.contains("512 threads"), "{d}");
    invalid(launch(&m, "t", [0, 1, 1], [32, 1, 1], 0, &ok_args, &mem).unwrap_err());
    invalid(launch(&m, "t", [1, 65536, 1], [32, 1, 1], 0, &ok_args, &mem).unwrap_err());
    invalid(launch(&m, "t", [1, 1, 1], [32, 1, 65], 0, &ok_args, &mem).unwrap_err());
    let d = invalid(launch(&m, "t", [1, 1, 1], [32, 1, 1], 227 * 1024, &ok_args, &mem).unwrap_err());
    assert!(d.contains("shared memory"), "{d}");
    assert!(launch(&m, "t", [1, 1, 1], [32, 1, 1], 226 * 1024, &ok_args, &mem).is_ok());
    let d = invalid(launch(&m, "r", [1, 1, 1], [128, 1, 1], 0, &[], &mem).unwrap_err());
    assert!(d.contains("reqntid"), "{d}");
    assert!(launch(&m, "r", [1, 1, 1], [64, 2, 1], 0, &[], &mem).is_ok());
    // A register file the interpreter will not allocate (60000 registers x 1024 threads).
    let big = module(".visible .entry t()\n{\n\t.reg .b32 %r<60000>;\n\tret;\n}\n");
    let d = invalid(launch(&big, "t", [1, 1, 1], [1024, 1, 1], 0, &[], &mem).unwrap_err());
    assert!(d.contains("too many resources"), "{d}");
}

#[test]
fn a_real_kernel_given_too_short_a_buffer() {
    // extremes_rows_f32 told about more elements than the buffer holds.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels/ptx/extremes.ptx");
    let m = softgpu::ptx::Module::load(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mem = Memory::new();
    let x = mem.upload(&vec![1.0f32; 1000]);
    let out = mem.alloc(16);
    let args = [arg(x), arg(1u64), arg(1u64), arg(1001u64), arg(16384u64), arg(0u32), arg(out)];
    let f = launch(&m, "extremes_rows_f32", [1, 1, 1], [256, 1, 1], 0, &args, &mem).unwrap_err();
    assert_eq!(f.kind, FaultKind::IllegalAddress, "{f}");
    assert!(f.detail.contains(&format!("{:#x}", x + 4000)), "{f}");
}
