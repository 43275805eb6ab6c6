//! Control flow and communication: divergence and reconvergence within a warp, barriers across
//! warps, shuffles, atomics under contention across blocks, vector and narrow memory accesses,
//! and the special registers of 3-D launches.

mod common;

use common::*;

/// A kernel that stores one u32 per thread: `%v` (computed by `body` from `%tid`, the thread's
/// linear index in the grid, and `%lane`) goes to out[tid].
fn per_thread(body: &str, extra_regs: &str) -> softgpu::ptx::Module {
    module(&format!(
        r#"
.visible .entry t(.param .u64 pout)
{{
	.reg .pred %p<16>;
	.reg .b32 %r<32>;
	.reg .b32 %tid, %lane, %v;
	.reg .b64 %rd<8>;
	{extra_regs}
	ld.param.u64 %rd1, [pout];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mul.lo.s32 %r4, %r2, %r3;
	add.s32 %tid, %r4, %r1;
	mov.u32 %lane, %laneid;
{body}
	mul.wide.u32 %rd2, %tid, 4;
	add.s64 %rd3, %rd1, %rd2;
	st.global.u32 [%rd3], %v;
	ret;
}}
"#
    ))
}

fn run_per_thread(m: &softgpu::ptx::Module, blocks: u32, threads: u32) -> (Vec<u32>, softgpu::exec::RunStats) {
    let mem = Memory::new();
    let n = (blocks * threads) as usize;
    let out = mem.alloc(n * 4);
    let stats = launch(m, "t", [blocks, 1, 1], [threads, 1, 1], 0, &[arg(out)], &mem).unwrap_or_else(|f| panic!("{f}"));
    (mem.download(out, n), stats)
}

#[test]
fn nested_if_else_reconverges_at_its_joins() {
    const TAIL: u64 = 16;
    let tail = "\tadd.s32 %v, %v, %r10;\n".repeat(TAIL as usize);
    let body = format!(
        "\tmov.u32 %v, 0;
	and.b32 %r5, %tid, 1;
	setp.eq.s32 %p1, %r5, 0;
	@%p1 bra $ELSE;
	and.b32 %r6, %tid, 2;
	setp.eq.s32 %p2, %r6, 0;
	@%p2 bra $INNER_ELSE;
	mov.u32 %r10, 1;
	bra.uni $INNER_JOIN;
$INNER_ELSE:
	mov.u32 %r10, 2;
$INNER_JOIN:
	bra.uni $JOIN;
$ELSE:
	mov.u32 %r10, 3;
$JOIN:
{tail}"
    );
    let m = per_thread(&body, "");
    let (out, stats) = run_per_thread(&m, 1, 32);
    for (t, &v) in out.iter().enumerate() {
        let r = if t & 1 == 0 {
            3
        } else if t & 2 != 0 {
            1
        } else {
            2
        };
        assert_eq!(u64::from(v), r * TAIL, "thread {t}");
    }
    // Before the body: 7 instructions; the body: 4 + then (3) + inner then (2) + inner else (1)
    // + the inner join (1) + else (1), each once per warp; the tail once: the warp reconverged;
    // then the store (3) and ret.
    assert_eq!(stats.warp_instructions, 7 + 4 + 3 + 2 + 1 + 1 + 1 + TAIL + 4);
    // A uniform warp takes one side only.
    let (_, uniform) =
        run_per_thread(&per_thread(&body.replace("and.b32 %r5, %tid, 1", "and.b32 %r5, %tid, 64"), ""), 1, 32);
    assert_eq!(uniform.warp_instructions, 7 + 4 + 1 + TAIL + 4);
}

#[test]
fn loops_with_lane_dependent_trip_counts() {
    // v = sum of i for i in 0..(lane * 3 % 17), then a tail that runs once per warp.
    let body = "\tmov.u32 %v, 0;
	mul.lo.s32 %r5, %lane, 3;
	rem.u32 %r5, %r5, 17;
	mov.u32 %r6, 0;
	setp.eq.s32 %p1, %r5, 0;
	@%p1 bra $DONE;
$LOOP:
	add.s32 %v, %v, %r6;
	add.s32 %r6, %r6, 1;
	setp.lt.u32 %p2, %r6, %r5;
	@%p2 bra $LOOP;
$DONE:
	add.s32 %v, %v, 1000;";
    let (out, stats) = run_per_thread(&per_thread(body, ""), 3, 96);
    for (t, &v) in out.iter().enumerate() {
        let n = ((t % 32) * 3 % 17) as u32;
        assert_eq!(v, n * n.saturating_sub(1) / 2 + 1000, "thread {t}");
    }
    // Each warp runs the loop body as often as its longest lane (16 iterations of 4), the rest
    // once.
    let warps = 9;
    assert_eq!(stats.warp_instructions, warps * (7 + 6 + 16 * 4 + 1 + 4));
}

#[test]
fn lanes_that_exit_early_leave_the_others_running() {
    let body = "\tmov.u32 %v, %tid;
	and.b32 %r5, %tid, 3;
	setp.eq.s32 %p1, %r5, 0;
	@%p1 ret;
	mul.lo.s32 %v, %v, 2;";
    let m = per_thread(body, "");
    let mem = Memory::new();
    let out = mem.upload(&vec![7u32; 64]);
    launch(&m, "t", [1, 1, 1], [64, 1, 1], 0, &[arg(out)], &mem).unwrap();
    let got: Vec<u32> = mem.download(out, 64);
    for (t, &v) in got.iter().enumerate() {
        assert_eq!(v, if t % 4 == 0 { 7 } else { 2 * t as u32 }, "thread {t}");
    }
}

#[test]
fn barriers_order_shared_memory_across_warps() {
    // Three phases over 256 threads (8 warps): each writes shared, syncs, reads a neighbour from
    // another warp, syncs, writes again.
    let m = module(
        r#"
.visible .entry t(.param .u64 pout)
{
	.reg .pred %p<4>;
	.reg .b32 %r<32>;
	.reg .b64 %rd<8>;
	.shared .align 4 .b8 buf[1024];
	ld.param.u64 %rd1, [pout];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, buf;
	shl.b32 %r3, %r1, 2;
	add.s32 %r4, %r2, %r3;
	mul.lo.s32 %r5, %r1, 3;
	st.shared.u32 [%r4], %r5;
	bar.sync 0;
	add.s32 %r6, %r1, 37;
	and.b32 %r6, %r6, 255;
	shl.b32 %r7, %r6, 2;
	add.s32 %r8, %r2, %r7;
	ld.shared.u32 %r9, [%r8];
	bar.sync 0;
	add.s32 %r10, %r9, 1;
	st.shared.u32 [%r4], %r10;
	bar.sync 0;
	sub.s32 %r11, %r1, 100;
	and.b32 %r11, %r11, 255;
	shl.b32 %r12, %r11, 2;
	add.s32 %r13, %r2, %r12;
	ld.shared.u32 %r14, [%r13];
	mul.wide.u32 %rd2, %r1, 4;
	add.s64 %rd3, %rd1, %rd2;
	st.global.u32 [%rd3], %r14;
	ret;
}
"#,
    );
    let mem = Memory::new();
    let out = mem.alloc(256 * 4);
    launch(&m, "t", [4, 1, 1], [256, 1, 1], 0, &[arg(out)], &mem).unwrap_or_else(|f| panic!("{f}"));
    let got: Vec<u32> = mem.download(out, 256);
    for (t, &v) in got.iter().enumerate() {
        let j = (t + 256 - 100) % 256; // the thread whose value t reads in phase 3
        let k = (j + 37) % 256; // which read thread k's phase-1 value
        assert_eq!(v, 3 * k as u32 + 1, "thread {t}");
    }
}

/// CUDA's `__shfl_*_sync` results, from the CUDA programming guide (not from the PTX formula):
/// within groups of `width` lanes; `__shfl_xor_sync` may read earlier groups but not later
/// ones ("if they attempt to access elements from later groups of threads their own value of
/// var will be returned").
fn cuda_shuffle(mode: &str, lane: usize, v: &[u32], b: usize, width: usize) -> (u32, bool) {
    let start = lane / width * width;
    let src = match mode {
        "bfly" => Some(lane ^ b).filter(|&j| j < start + width),
        "up" => lane.checked_sub(b).filter(|&j| j >= start),
        "down" => Some(lane + b).filter(|&j| j < start + width),
        _ => Some(start + b % width),
    };
    match src {
        Some(j) => (v[j], true),
        None => (v[lane], false),
    }
}

#[test]
fn shuffles_in_every_mode_and_width() {
    for mode in ["bfly", "up", "down", "idx"] {
        for width in [32usize, 16, 8, 4, 1] {
            for b in [0usize, 1, 2, 3, 5, 16, 31] {
                let c = ((32 - width) << 8) | if mode == "up" { 0 } else { 0x1f };
                let body = format!(
                    "\tmul.lo.s32 %r5, %lane, 7919;
	xor.b32 %r5, %r5, 0x5bd1e995;
	shfl.sync.{mode}.b32 %r6|%p1, %r5, {b}, {c}, -1;
	selp.u32 %r7, 1, 0, %p1;
	shl.b32 %r7, %r7, 31;
	shr.u32 %r6, %r6, 1;
	or.b32 %v, %r6, %r7;"
                );
                let (out, _) = run_per_thread(&per_thread(&body, ""), 1, 64);
                let v: Vec<u32> = (0..32u32).map(|l| (l.wrapping_mul(7919)) ^ 0x5bd1_e995).collect();
                for (t, &got) in out.iter().enumerate() {
                    let (want, p) = cuda_shuffle(mode, t % 32, &v, b, width);
                    assert_eq!(got, (want >> 1) | (u32::from(p) << 31), "shfl.{mode} width {width} b {b} lane {t}");
                }
            }
        }
    }
}

#[test]
fn a_butterfly_reduction_of_doubles_as_nvcc_writes_it() {
    // warp_sum of kernels/common.cuh: 5 rounds of two b32 shuffles of a double.
    let mut body = String::from("\tcvt.rn.f64.u32 %fd1, %tid;\n\tmul.rn.f64 %fd1, %fd1, 0d3FB999999999999A;\n");
    for off in [16, 8, 4, 2, 1] {
        body += &format!(
            "\tmov.b64 {{%r10,%r11}}, %fd1;
	shfl.sync.bfly.b32 %r13|%p1, %r11, {off}, 31, -1;
	shfl.sync.bfly.b32 %r12|%p2, %r10, {off}, 31, -1;
	mov.b64 %fd2, {{%r12,%r13}};
	add.rn.f64 %fd1, %fd1, %fd2;\n"
        );
    }
    body += "\tcvt.rzi.u32.f64 %v, %fd1;";
    let (out, _) = run_per_thread(&per_thread(&body, ".reg .f64 %fd<4>;"), 2, 64);
    for w in 0..4 {
        let vals: Vec<f64> = (0..32).map(|l| (w * 32 + l) as f64 * 0.1).collect();
        // The same butterfly order on the host.
        let mut v = vals.clone();
        for off in [16, 8, 4, 2, 1] {
            let prev = v.clone();
            for l in 0..32 {
                v[l] = prev[l] + prev[l ^ off];
            }
        }
        for l in 0..32 {
            assert_eq!(out[w * 32 + l], v[l] as u32, "warp {w} lane {l}");
        }
    }
}

#[test]
fn shuffles_wait_for_lanes_that_arrive_later() {
    // Odd lanes take a detour; the shuffle (after the join, laid out before the detour) must see
    // every lane's value.
    let body = "\tmov.u32 %r5, %lane;
	and.b32 %r6, %lane, 1;
	setp.ne.s32 %p1, %r6, 0;
	@%p1 bra $DETOUR;
$SHUFFLE:
	shfl.sync.bfly.b32 %r7, %r5, 1, 31, -1;
	add.s32 %v, %r7, 100;
	bra.uni $END;
$DETOUR:
	add.s32 %r5, %r5, 1000;
	bra.uni $SHUFFLE;
$END:";
    let (out, _) = run_per_thread(&per_thread(body, ""), 1, 32);
    for (l, &v) in out.iter().enumerate() {
        let partner = l ^ 1;
        let pv = if partner & 1 == 1 { partner + 1000 } else { partner };
        assert_eq!(v as usize, pv + 100, "lane {l}");
    }
}

#[test]
fn global_atomics_under_contention_across_blocks() {
    let m = module(
        &r#"
.visible .entry t(.param .u64 pctr, .param .u64 ptickets)
{
	.reg .pred %p<4>;
	.reg .b32 %r<16>;
	.reg .b64 %rd<16>;
	ld.param.u64 %rd1, [pctr];
	ld.param.u64 %rd2, [ptickets];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mad.lo.s32 %r4, %r2, %r3, %r1;
	ret;
}
"#
        .replace("\tmad.lo.s32 %r4, %r2, %r3, %r1;\n", "\tmul.lo.s32 %r4, %r2, %r3;\n\tadd.s32 %r4, %r4, %r1;\n")
        .replace(
            "\tret;",
            "\tatom.global.add.u32 %r5, [%rd1], 1;
	mul.wide.u32 %rd3, %r4, 4;
	add.s64 %rd4, %rd2, %rd3;
	st.global.u32 [%rd4], %r5;
	add.s32 %r6, %r4, 1;
	cvt.u64.u32 %rd5, %r6;
	atom.global.add.u64 %rd6, [%rd1+8], %rd5;
	atom.global.max.u32 %r7, [%rd1+16], %r4;
	atom.global.min.u32 %r8, [%rd1+20], %r4;
	red.global.add.u32 [%rd1+24], 2;
	atom.global.cas.b32 %r9, [%rd1+28], 0, %r6;
	setp.eq.s32 %p1, %r9, 0;
	@%p1 red.global.add.u32 [%rd1+32], 1;
	and.b32 %r10, %r4, 31;
	mov.u32 %r11, 1;
	shl.b32 %r12, %r11, %r10;
	atom.global.or.b32 %r13, [%rd1+36], %r12;
	atom.global.xor.b32 %r13, [%rd1+40], %r12;
	atom.global.inc.u32 %r14, [%rd1+44], 99;
	atom.global.exch.b32 %r15, [%rd1+48], %r4;
	ret;",
        ),
    );
    let blocks = 64u32;
    let n = blocks * 256;
    let mem = Memory::new();
    let ctr = mem.upload(&[0u32, 0, 0, 0, 0, u32::MAX, 0, 0, 0, 0, 0, 0, 0]);
    let tickets = mem.alloc(n as usize * 4);
    launch(&m, "t", [blocks, 1, 1], [256, 1, 1], 0, &[arg(ctr), arg(tickets)], &mem).unwrap_or_else(|f| panic!("{f}"));
    let c: Vec<u32> = mem.download(ctr, 13);
    assert_eq!(c[0], n);
    assert_eq!(u64::from(c[2]) | u64::from(c[3]) << 32, u64::from(n) * u64::from(n + 1) / 2);
    assert_eq!((c[4], c[5]), (n - 1, 0));
    assert_eq!(c[6], 2 * n);
    assert_ne!(c[7], 0, "one compare-and-swap won");
    assert_eq!(c[8], 1, "exactly one");
    assert_eq!(c[9], u32::MAX);
    assert_eq!(c[10], 0, "each bit flipped an even number of times");
    assert_eq!(c[11], n % 100, "inc wraps at 99");
    assert!(c[12] < n);
    let mut t: Vec<u32> = mem.download(tickets, n as usize);
    t.sort_unstable();
    assert!(t.iter().enumerate().all(|(i, &v)| v == i as u32), "the tickets are a permutation");
}

#[test]
fn shared_atomics_count_a_histogram() {
    let m = module(
        r#"
.visible .entry t(.param .u64 pout)
{
	.reg .pred %p<4>;
	.reg .b32 %r<16>;
	.reg .b64 %rd<8>;
	.shared .align 4 .b8 counts[32];
	ld.param.u64 %rd1, [pout];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, counts;
	setp.lt.u32 %p1, %r1, 8;
	shl.b32 %r3, %r1, 2;
	add.s32 %r4, %r2, %r3;
	@%p1 st.shared.u32 [%r4], 0;
	bar.sync 0;
	rem.u32 %r5, %r1, 5;
	shl.b32 %r6, %r5, 2;
	add.s32 %r7, %r2, %r6;
	atom.shared.add.u32 %r8, [%r7], 1;
	atom.shared.max.u32 %r9, [%r2+28], %r1;
	bar.sync 0;
	@!%p1 bra $END;
	ld.shared.u32 %r10, [%r4];
	mul.wide.u32 %rd2, %r1, 4;
	add.s64 %rd3, %rd1, %rd2;
	st.global.u32 [%rd3], %r10;
$END:
	ret;
}
"#,
    );
    let mem = Memory::new();
    let out = mem.alloc(32);
    launch(&m, "t", [1, 1, 1], [300, 1, 1], 0, &[arg(out)], &mem).unwrap_or_else(|f| panic!("{f}"));
    let got: Vec<u32> = mem.download(out, 8);
    assert_eq!(got, [60, 60, 60, 60, 60, 0, 0, 299]);
}

#[test]
fn vector_and_narrow_accesses() {
    let m = module(
        &r#"
.visible .entry t(.param .u64 pin, .param .u64 pout)
{
	.reg .b16 %rs<4>;
	.reg .b32 %r<16>;
	.reg .b64 %rd<8>;
	.reg .f64 %fd<4>;
	.shared .align 16 .b8 s[32];
	ld.param.u64 %rd1, [pin];
	ld.param.u64 %rd2, [pout];
	ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd1];
	st.global.v4.u32 [%rd2], {%r4, %r3, %r2, %r1};
	ld.global.v2.f64 {%fd1, %fd2}, [%rd1+16];
	add.rn.f64 %fd3, %fd1, %fd2;
	st.global.f64 [%rd2+16], %fd3;
	ld.global.s16 %r5, [%rd1+32];
	st.global.u32 [%rd2+24], %r5;
	ld.global.u8 %rs1, [%rd1+34];
	ld.global.s8 %r6, [%rd1+35];
	st.global.u16 [%rd2+28], %rs1;
	st.global.b32 [%rd2+32], %r6;
	st.shared.v2.u32 [s+8], {%r1, %r2};
	ld.shared.u64 %rd3, [s+8];
	st.global.u64 [%rd2+40], %rd3;
	st.global.u8 [%rd2+48], 511;
	ret;
}
"#
        .replace("511", "255"),
    );
    let mem = Memory::new();
    let mut input = Vec::new();
    for w in [11u32, 22, 33, 44] {
        input.extend_from_slice(&w.to_le_bytes());
    }
    input.extend_from_slice(&1.5f64.to_le_bytes());
    input.extend_from_slice(&2.25f64.to_le_bytes());
    input.extend_from_slice(&(-3i16).to_le_bytes());
    input.extend_from_slice(&[200u8, 0x80]);
    input.resize(48, 0);
    let pin = mem.alloc(48);
    mem.write(pin, &input);
    let out = mem.alloc(56);
    launch(&m, "t", [1, 1, 1], [1, 1, 1], 0, &[arg(pin), arg(out)], &mem).unwrap_or_else(|f| panic!("{f}"));
    let w: Vec<u32> = mem.download(out, 4);
    assert_eq!(w, [44, 33, 22, 11]);
    let b = mem.read(out, 56);
    assert_eq!(f64::from_le_bytes(b[16..24].try_into().unwrap()), 3.75);
    assert_eq!(i32::from_le_bytes(b[24..28].try_into().unwrap()), -3, "ld.s16 sign-extends");
    assert_eq!(u16::from_le_bytes(b[28..30].try_into().unwrap()), 200, "ld.u8 zero-extends");
    assert_eq!(i32::from_le_bytes(b[32..36].try_into().unwrap()), -128, "ld.s8 sign-extends");
    assert_eq!(u64::from_le_bytes(b[40..48].try_into().unwrap()), 11 | 22 << 32);
    assert_eq!(b[48], 255);
}

#[test]
fn special_registers_of_3d_launches() {
    let m = module(
        r#"
.visible .entry t(.param .u64 pout)
{
	.reg .b32 %r<40>;
	.reg .b64 %rd<8>;
	ld.param.u64 %rd1, [pout];
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %tid.y;
	mov.u32 %r3, %tid.z;
	mov.u32 %r4, %ntid.x;
	mov.u32 %r5, %ntid.y;
	mov.u32 %r6, %ntid.z;
	mov.u32 %r7, %ctaid.x;
	mov.u32 %r8, %ctaid.y;
	mov.u32 %r9, %ctaid.z;
	mov.u32 %r10, %nctaid.x;
	mov.u32 %r11, %nctaid.y;
	mov.u32 %r12, %nctaid.z;
	mov.u32 %r13, %laneid;
	mul.lo.s32 %r20, %r9, %r11;
	add.s32 %r20, %r20, %r8;
	mul.lo.s32 %r20, %r20, %r10;
	add.s32 %r20, %r20, %r7;
	mul.lo.s32 %r21, %r4, %r5;
	mul.lo.s32 %r21, %r21, %r6;
	mul.lo.s32 %r20, %r20, %r21;
	mul.lo.s32 %r22, %r3, %r5;
	add.s32 %r22, %r22, %r2;
	mul.lo.s32 %r22, %r22, %r4;
	add.s32 %r22, %r22, %r1;
	add.s32 %r20, %r20, %r22;
	shl.b32 %r23, %r1, 24;
	shl.b32 %r24, %r2, 16;
	shl.b32 %r25, %r3, 8;
	or.b32 %r26, %r23, %r24;
	or.b32 %r26, %r26, %r25;
	or.b32 %r26, %r26, %r13;
	mul.wide.u32 %rd2, %r20, 8;
	add.s64 %rd3, %rd1, %rd2;
	st.global.u32 [%rd3], %r26;
	shl.b32 %r27, %r7, 16;
	shl.b32 %r28, %r8, 8;
	or.b32 %r27, %r27, %r28;
	or.b32 %r27, %r27, %r9;
	st.global.u32 [%rd3+4], %r27;
	ret;
}
"#,
    );
    let (grid, block) = ([3u32, 2, 2], [5u32, 3, 4]);
    let threads = block.iter().product::<u32>() as usize;
    let n = grid.iter().product::<u32>() as usize * threads;
    let mem = Memory::new();
    let out = mem.alloc(n * 8);
    launch(&m, "t", grid, block, 0, &[arg(out)], &mem).unwrap_or_else(|f| panic!("{f}"));
    let got: Vec<u32> = mem.download(out, 2 * n);
    for bz in 0..grid[2] {
        for by in 0..grid[1] {
            for bx in 0..grid[0] {
                let b = ((bz * grid[1] + by) * grid[0] + bx) as usize;
                for t in 0..threads {
                    let (tx, ty, tz) =
                        (t as u32 % block[0], t as u32 / block[0] % block[1], t as u32 / (block[0] * block[1]));
                    let i = b * threads + t;
                    assert_eq!(got[2 * i], tx << 24 | ty << 16 | tz << 8 | (t as u32 % 32), "block {b} thread {t}");
                    assert_eq!(got[2 * i + 1], bx << 16 | by << 8 | bz);
                }
            }
        }
    }
}
