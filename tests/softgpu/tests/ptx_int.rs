//! Integer and logic instructions against host arithmetic, at the edges: 0, ±1, the extremes,
//! shift amounts at and past the width, division by zero (all ones, see `exec::int`).

mod common;

use common::*;

fn edges64() -> Vec<u64> {
    let mut v = vec![0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 0x7fff, 0x8000, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];
    v.extend([1 << 32, (1 << 63) - 1, 1 << 63, u64::MAX, u64::MAX - 1, (-7i64) as u64, 7]);
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x);
        v.push(x >> 40);
    }
    v
}

fn all_pairs(v: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for &x in v {
        for &y in v {
            a.push(x);
            b.push(y);
        }
    }
    (a, b)
}

/// Checks `op` on 32-bit (`wide == false`) or 64-bit operands against `want`.
fn check(op: &str, wide: bool, want: impl Fn(u64, u64) -> u64) {
    let (a, b) = all_pairs(&edges64());
    let body = format!("\t{op} %out, %a, %b;");
    if wide {
        let m = elementwise(".b64", ".u64", 8, &body);
        let out: Vec<u64> = run_elementwise(&m, &a, &b, &a);
        for i in 0..a.len() {
            assert_eq!(out[i], want(a[i], b[i]), "{op} {:#x} {:#x}", a[i], b[i]);
        }
    } else {
        let (a, b): (Vec<u32>, Vec<u32>) =
            (a.iter().map(|&x| x as u32).collect(), b.iter().map(|&x| x as u32).collect());
        let m = elementwise(".b32", ".u32", 4, &body);
        let out: Vec<u32> = run_elementwise(&m, &a, &b, &a);
        for i in 0..a.len() {
            assert_eq!(u64::from(out[i]), want(a[i].into(), b[i].into()), "{op} {:#x} {:#x}", a[i], b[i]);
        }
    }
}

#[test]
fn arithmetic_32() {
    let s = |x: u64| x as u32 as i32;
    let u = |x: u64| x as u32;
    check("add.s32", false, |a, b| u(a).wrapping_add(u(b)).into());
    check("sub.s32", false, |a, b| u(a).wrapping_sub(u(b)).into());
    check("mul.lo.s32", false, |a, b| u(a).wrapping_mul(u(b)).into());
    check("mul.hi.u32", false, |a, b| (a * b) >> 32);
    check("mul.hi.s32", false, |a, b| ((i64::from(s(a)) * i64::from(s(b))) >> 32) as u32 as u64);
    check("div.u32", false, |a, b| u(a).checked_div(u(b)).unwrap_or(u32::MAX).into());
    check("rem.u32", false, |a, b| u(a).checked_rem(u(b)).unwrap_or(u32::MAX).into());
    check("div.s32", false, |a, b| if s(b) == 0 { 0xffff_ffff } else { s(a).wrapping_div(s(b)) as u32 as u64 });
    check("rem.s32", false, |a, b| if s(b) == 0 { 0xffff_ffff } else { s(a).wrapping_rem(s(b)) as u32 as u64 });
    check("min.u32", false, |a, b| a.min(b));
    check("max.u32", false, |a, b| a.max(b));
    check("min.s32", false, |a, b| s(a).min(s(b)) as u32 as u64);
    check("max.s32", false, |a, b| s(a).max(s(b)) as u32 as u64);
}

#[test]
fn arithmetic_64() {
    let s = |x: u64| x as i64;
    check("add.s64", true, |a, b| a.wrapping_add(b));
    check("sub.s64", true, |a, b| a.wrapping_sub(b));
    check("mul.lo.s64", true, |a, b| a.wrapping_mul(b));
    check("mul.hi.u64", true, |a, b| ((u128::from(a) * u128::from(b)) >> 64) as u64);
    check("mul.hi.s64", true, |a, b| ((i128::from(s(a)) * i128::from(s(b))) >> 64) as u64);
    check("div.u64", true, |a, b| a.checked_div(b).unwrap_or(u64::MAX));
    check("rem.u64", true, |a, b| a.checked_rem(b).unwrap_or(u64::MAX));
    check("div.s64", true, |a, b| if b == 0 { u64::MAX } else { s(a).wrapping_div(s(b)) as u64 });
    check("min.s64", true, |a, b| s(a).min(s(b)) as u64);
    check("max.u64", true, |a, b| a.max(b));
}

#[test]
fn logic_and_shifts() {
    check("and.b32", false, |a, b| a & b);
    check("or.b32", false, |a, b| a | b);
    check("xor.b32", false, |a, b| a ^ b);
    check("and.b64", true, |a, b| a & b);
    check("or.b64", true, |a, b| a | b);
    // Shift amounts are the low 32 bits of b, clamped to the width.
    check("shl.b32", false, |a, b| if b >= 32 { 0 } else { u64::from((a as u32) << b) });
    check("shr.u32", false, |a, b| if b >= 32 { 0 } else { u64::from((a as u32) >> b) });
    check("shr.s32", false, |a, b| ((a as u32 as i32) >> b.min(31)) as u32 as u64);
    let m = elementwise(".b64", ".u64", 8, "\tcvt.u32.u64 %r6, %b;\n\tshl.b64 %out, %a, %r6;");
    let (a, b) = all_pairs(&edges64());
    let out: Vec<u64> = run_elementwise(&m, &a, &b, &a);
    for i in 0..a.len() {
        let n = b[i] as u32;
        assert_eq!(out[i], if n >= 64 { 0 } else { a[i] << n }, "shl.b64 {:#x} {n}", a[i]);
    }
    let m = elementwise(".b64", ".u64", 8, "\tcvt.u32.u64 %r6, %b;\n\tshr.s64 %out, %a, %r6;");
    let out: Vec<u64> = run_elementwise(&m, &a, &b, &a);
    for i in 0..a.len() {
        assert_eq!(out[i], ((a[i] as i64) >> (b[i] as u32).min(63)) as u64, "shr.s64");
    }
}

/// Checks `mad.*` (`%out = part of %a * %b, plus %c`) on 32-bit or 64-bit operands against `want`.
fn check_mad(op: &str, wide: bool, want: impl Fn(u64, u64, u64) -> u64) {
    let v = edges64();
    let (a, b) = all_pairs(&v);
    let c: Vec<u64> = (0..a.len()).map(|i| v[(i * 7 + 3) % v.len()]).collect();
    let body = format!("\t{op} %out, %a, %b, %c;");
    if wide {
        let m = elementwise(".b64", ".u64", 8, &body);
        let out: Vec<u64> = run_elementwise(&m, &a, &b, &c);
        for i in 0..a.len() {
            assert_eq!(out[i], want(a[i], b[i], c[i]), "{op} {:#x} {:#x} {:#x}", a[i], b[i], c[i]);
        }
    } else {
        let to32 = |v: &[u64]| v.iter().map(|&x| x as u32).collect::<Vec<u32>>();
        let (a, b, c) = (to32(&a), to32(&b), to32(&c));
        let m = elementwise(".b32", ".u32", 4, &body);
        let out: Vec<u32> = run_elementwise(&m, &a, &b, &c);
        for i in 0..a.len() {
            let w = want(a[i].into(), b[i].into(), c[i].into());
            assert_eq!(u64::from(out[i]), w, "{op} {:#x} {:#x} {:#x}", a[i], b[i], c[i]);
        }
    }
}

#[test]
fn mad_lo_and_hi() {
    let s32 = |x: u64| i64::from(x as u32 as i32);
    let u32_ = |x: u64| x as u32;
    check_mad("mad.lo.s32", false, |a, b, c| u32_(a).wrapping_mul(u32_(b)).wrapping_add(u32_(c)).into());
    check_mad("mad.lo.u32", false, |a, b, c| u32_(a).wrapping_mul(u32_(b)).wrapping_add(u32_(c)).into());
    check_mad("mad.hi.u32", false, |a, b, c| u32_((a * b) >> 32).wrapping_add(u32_(c)).into());
    check_mad("mad.hi.s32", false, |a, b, c| u32_(((s32(a) * s32(b)) >> 32) as u64).wrapping_add(u32_(c)).into());
    check_mad("mad.lo.u64", true, |a, b, c| a.wrapping_mul(b).wrapping_add(c));
    check_mad("mad.hi.u64", true, |a, b, c| (((u128::from(a) * u128::from(b)) >> 64) as u64).wrapping_add(c));
    check_mad("mad.hi.s64", true, |a, b, c| {
        (((i128::from(a as i64) * i128::from(b as i64)) >> 64) as u64).wrapping_add(c)
    });
}

#[test]
fn unary_and_wide() {
    let m = elementwise(".b32", ".u32", 4, "\tnot.b32 %t1, %a;\n\tneg.s32 %t2, %b;\n\txor.b32 %out, %t1, %t2;");
    let (a, b) = all_pairs(&edges64());
    let (a, b): (Vec<u32>, Vec<u32>) = (a.iter().map(|&x| x as u32).collect(), b.iter().map(|&x| x as u32).collect());
    let out: Vec<u32> = run_elementwise(&m, &a, &b, &a);
    for i in 0..a.len() {
        assert_eq!(out[i], !a[i] ^ b[i].wrapping_neg());
    }
    let m = elementwise(".b32", ".u32", 4, "\tabs.s32 %out, %a;");
    let out: Vec<u32> = run_elementwise(&m, &a, &b, &a);
    for i in 0..a.len() {
        assert_eq!(out[i], (a[i] as i32).wrapping_abs() as u32);
    }
    // mul.wide and mad.wide: 32 x 32 -> 64 bits (plus a 64-bit addend), into a 64-bit register.
    let m = module(
        r#"
.visible .entry t(.param .u64 pa, .param .u64 pout)
{
	.reg .b32 %r<8>;
	.reg .b64 %rd<10>;
	ld.param.u64 %rd1, [pa];
	ld.param.u64 %rd2, [pout];
	ld.global.u32 %r1, [%rd1];
	ld.global.u32 %r2, [%rd1+4];
	ld.global.u64 %rd5, [%rd1+8];
	mul.wide.u32 %rd3, %r1, %r2;
	mul.wide.s32 %rd4, %r1, %r2;
	mad.wide.u32 %rd6, %r1, %r2, %rd5;
	mad.wide.s32 %rd7, %r1, %r2, %rd5;
	st.global.u64 [%rd2], %rd3;
	st.global.u64 [%rd2+8], %rd4;
	st.global.u64 [%rd2+16], %rd6;
	st.global.u64 [%rd2+24], %rd7;
	ret;
}
"#,
    );
    let mem = Memory::new();
    let pa = mem.upload(&[0xffff_fffdu32, 7, 0xffff_ffff, 0xffff_ffff]);
    let out = mem.alloc(32);
    launch(&m, "t", [1, 1, 1], [1, 1, 1], 0, &[arg(pa), arg(out)], &mem).unwrap();
    let product = 0xffff_fffdu64 * 7;
    assert_eq!(mem.download::<u64>(out, 4), [product, (-21i64) as u64, product.wrapping_sub(1), (-22i64) as u64]);
}

#[test]
fn predicates_logic_and_selection() {
    // p1 = a < b (unsigned), p2 = a == c; out = selp(p1 and p2) + 2 selp(p1 or !p2) + 4 selp(p1 xor p2)
    //   + 8 selp(not p1).
    let body = "\tsetp.lo.u32 %p1, %a, %b;
	setp.eq.u32 %p2, %a, %c;
	and.pred %p3, %p1, %p2;
	or.pred %p4, %p1, !%p2;
	xor.pred %p5, %p1, %p2;
	not.pred %p6, %p1;
	mov.pred %p0, %p6;
	selp.b32 %t1, 1, 0, %p3;
	selp.b32 %t2, 2, 0, %p4;
	selp.b32 %t3, 4, 0, %p5;
	selp.b32 %t4, 8, 0, %p0;
	add.s32 %t5, %t1, %t2;
	add.s32 %t6, %t3, %t4;
	add.s32 %out, %t5, %t6;";
    let m = elementwise(".b32", ".u32", 4, body);
    let a = [1u32, 1, 5, 5, 0xffff_ffff];
    let b = [2u32, 2, 2, 2, 0];
    let c = [1u32, 0, 5, 0, 0xffff_ffff];
    let out: Vec<u32> = run_elementwise(&m, &a, &b, &c);
    for i in 0..a.len() {
        let (p1, p2) = (a[i] < b[i], a[i] == c[i]);
        let want = u32::from(p1 && p2) + 2 * u32::from(p1 || !p2) + 4 * u32::from(p1 ^ p2) + 8 * u32::from(!p1);
        assert_eq!(out[i], want, "{i}");
    }
    // Signed comparisons and the 64-bit ones.
    let body = "\tsetp.lt.s32 %p1, %a, %b;\n\tselp.u32 %out, 1, 0, %p1;";
    let out: Vec<u32> =
        run_elementwise(&elementwise(".b32", ".u32", 4, body), &[0xffff_ffffu32, 1], &[1, 0xffff_ffff], &[0, 0]);
    assert_eq!(out, [1, 0]);
    let body = "\tsetp.ge.u64 %p1, %a, %b;\n\tsetp.ne.s64 %p2, %a, %c;\n\tand.pred %p3, %p1, %p2;\n\tselp.u64 %out, 1, 0, %p3;";
    let out: Vec<u64> =
        run_elementwise(&elementwise(".b64", ".u64", 8, body), &[u64::MAX, 5, 5], &[1, 5, 6], &[0, 5, 0]);
    assert_eq!(out, [1, 0, 0]);
}
