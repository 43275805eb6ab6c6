//! Floating-point instructions against host IEEE arithmetic: rounding, subnormals with and
//! without `.ftz`, NaN, infinities, signed zeros, `.sat`, and PTX's `min`/`max` rules.

mod common;

use common::*;

const NAN32: u32 = 0x7fff_ffff;
const NAN64: u64 = 0x7fff_ffff_ffff_ffff;

/// Edge cases of f32: zeros, subnormals, the normal limits, halfway cases of addition, NaN,
/// infinities.
fn specials32() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fa0_0000), // a signalling NaN
        1.0 + f32::EPSILON,
        1.5 * f32::EPSILON / 2.0, // adding it to 1 is a halfway case after rounding ties
        f32::EPSILON / 2.0,       // 1 + this is exactly halfway: ties to even (1)
        3.0,
        0.1,
        1e-30,
        1e30,
        16_777_216.0,
        16_777_217.0,
        1.175_494_2e-38,
    ];
    let mut x = 0x9e37_79b9u32;
    for _ in 0..40 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(f32::from_bits(x));
    }
    v
}

fn specials64() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f64::from_bits(1),
        f64::from_bits(0x000f_ffff_ffff_ffff),
        f64::MIN_POSITIVE,
        f64::MAX,
        -f64::MAX,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::EPSILON / 2.0,
        1.0 + f64::EPSILON,
        3.0,
        0.1,
        1e-300,
        1e300,
        9_007_199_254_740_993.0,
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(f64::from_bits(x));
    }
    v
}

/// Every pair of `v` (a, b) and a third operand.
fn pairs<T: Copy>(v: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &x) in v.iter().enumerate() {
        for (j, &y) in v.iter().enumerate() {
            a.push(x);
            b.push(y);
            c.push(v[(i * 7 + j * 3) % v.len()]);
        }
    }
    (a, b, c)
}

/// The bits of `x`, a NaN as the canonical one. Tested on the bits: rustc 1.95 in release turns
/// `if x.is_nan() { NAN32 } else { x.to_bits() }` after a `sqrt` into a select of floats that
/// keeps the NaN `sqrt` made.
fn canon32(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 { NAN32 } else { bits }
}

fn canon64(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff_ffff_ffff > 0x7ff0_0000_0000_0000 { NAN64 } else { bits }
}

fn ftz(x: f32) -> f32 {
    if x.is_subnormal() { f32::from_bits(x.to_bits() & 0x8000_0000) } else { x }
}

fn check32(op: &str, want: impl Fn(f32, f32, f32) -> u32) {
    let m = elementwise(
        ".f32",
        ".f32",
        4,
        &format!("\t{op} %out, %a, %b{};", if op.starts_with("fma") { ", %c" } else { "" }),
    );
    let (a, b, c) = pairs(&specials32());
    let out: Vec<u32> = run_elementwise(&m, &a, &b, &c);
    for i in 0..a.len() {
        assert_eq!(out[i], want(a[i], b[i], c[i]), "{op} {:e} {:e} {:e}", a[i], b[i], c[i]);
    }
}

fn check64(op: &str, want: impl Fn(f64, f64, f64) -> u64) {
    let m = elementwise(
        ".f64",
        ".f64",
        8,
        &format!("\t{op} %out, %a, %b{};", if op.starts_with("fma") { ", %c" } else { "" }),
    );
    let (a, b, c) = pairs(&specials64());
    let out: Vec<u64> = run_elementwise(&m, &a, &b, &c);
    for i in 0..a.len() {
        assert_eq!(out[i], want(a[i], b[i], c[i]), "{op} {:e} {:e} {:e}", a[i], b[i], c[i]);
    }
}

#[test]
fn f32_arithmetic_rounds_to_nearest_even() {
    check32("add.rn.f32", |a, b, _| canon32(a + b));
    check32("add.f32", |a, b, _| canon32(a + b));
    check32("sub.rn.f32", |a, b, _| canon32(a - b));
    check32("mul.rn.f32", |a, b, _| canon32(a * b));
    check32("div.rn.f32", |a, b, _| canon32(a / b));
    check32("fma.rn.f32", |a, b, c| canon32(a.mul_add(b, c)));
}

#[test]
fn f64_arithmetic_rounds_to_nearest_even() {
    check64("add.rn.f64", |a, b, _| canon64(a + b));
    check64("sub.rn.f64", |a, b, _| canon64(a - b));
    check64("mul.rn.f64", |a, b, _| canon64(a * b));
    check64("div.rn.f64", |a, b, _| canon64(a / b));
    check64("fma.rn.f64", |a, b, c| canon64(a.mul_add(b, c)));
}

#[test]
fn ftz_flushes_subnormal_inputs_and_results() {
    check32("add.rn.ftz.f32", |a, b, _| canon32(ftz(ftz(a) + ftz(b))));
    check32("mul.rn.ftz.f32", |a, b, _| canon32(ftz(ftz(a) * ftz(b))));
    check32("fma.rn.ftz.f32", |a, b, c| canon32(ftz(ftz(a).mul_add(ftz(b), ftz(c)))));
    check32("div.rn.ftz.f32", |a, b, _| canon32(ftz(ftz(a) / ftz(b))));
    // Two normal numbers whose difference is subnormal: 1.5 * 2^-126 - 2^-126 = 2^-127.
    let (a, b) = ([1.5 * f32::MIN_POSITIVE, -f32::MIN_POSITIVE / 2.0], [f32::MIN_POSITIVE, 0.0]);
    let m = elementwise(".f32", ".f32", 4, "\tsub.rn.f32 %out, %a, %b;");
    let out: Vec<f32> = run_elementwise(&m, &a, &b, &[0.0; 2]);
    assert_eq!(out, [f32::MIN_POSITIVE / 2.0, -f32::MIN_POSITIVE / 2.0], "without .ftz subnormals stay");
    let m = elementwise(".f32", ".f32", 4, "\tsub.rn.ftz.f32 %out, %a, %b;");
    let out: Vec<f32> = run_elementwise(&m, &a, &b, &[0.0; 2]);
    assert_eq!(out[0].to_bits(), 0, "a subnormal result is flushed");
    assert_eq!(out[1].to_bits(), 0x8000_0000, "a subnormal input is flushed, keeping its sign");
}

#[test]
fn saturation_clamps_to_the_unit_interval() {
    let sat = |r: f32| {
        if r > 1.0 {
            1.0f32
        } else if r > 0.0 {
            r
        } else {
            0.0
        }
    };
    check32("add.rn.sat.f32", |a, b, _| sat(a + b).to_bits());
    check32("mul.rn.sat.f32", |a, b, _| sat(a * b).to_bits());
    check32("fma.rn.sat.f32", |a, b, c| sat(a.mul_add(b, c)).to_bits());
}

/// PTX `min`: NaN loses, both NaN give the canonical NaN, -0 < +0.
fn min_ref<T: PartialOrd + Copy>(a: T, b: T, nan: fn(T) -> bool, neg: fn(T) -> bool) -> Option<T> {
    match (nan(a), nan(b)) {
        (true, true) => None,
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ if a < b || (a == b && neg(a)) => Some(a),
        _ => Some(b),
    }
}

fn max_ref<T: PartialOrd + Copy>(a: T, b: T, nan: fn(T) -> bool, neg: fn(T) -> bool) -> Option<T> {
    match (nan(a), nan(b)) {
        (true, true) => None,
        (true, false) => Some(b),
        (false, true) => Some(a),
        _ if a > b || (a == b && !neg(a)) => Some(a),
        _ => Some(b),
    }
}

#[test]
fn min_max_follow_ptx_nan_and_zero_rules() {
    type Test<T> = fn(T) -> bool;
    let (n32, s32): (Test<f32>, Test<f32>) = (f32::is_nan, f32::is_sign_negative);
    let (n64, s64): (Test<f64>, Test<f64>) = (f64::is_nan, f64::is_sign_negative);
    check32("min.f32", |a, b, _| min_ref(a, b, n32, s32).map_or(NAN32, f32::to_bits));
    check32("max.f32", |a, b, _| max_ref(a, b, n32, s32).map_or(NAN32, f32::to_bits));
    check32("min.ftz.f32", |a, b, _| min_ref(ftz(a), ftz(b), n32, s32).map_or(NAN32, f32::to_bits));
    check32("min.NaN.f32", |a, b, _| {
        if a.is_nan() || b.is_nan() { NAN32 } else { min_ref(a, b, n32, s32).map_or(NAN32, f32::to_bits) }
    });
    check32("max.NaN.f32", |a, b, _| {
        if a.is_nan() || b.is_nan() { NAN32 } else { max_ref(a, b, n32, s32).map_or(NAN32, f32::to_bits) }
    });
    check64("min.f64", |a, b, _| min_ref(a, b, n64, s64).map_or(NAN64, f64::to_bits));
    check64("max.f64", |a, b, _| max_ref(a, b, n64, s64).map_or(NAN64, f64::to_bits));
    assert_eq!(min_ref(-0.0f32, 0.0, n32, s32).map(f32::to_bits), Some(0x8000_0000));
}

#[test]
fn abs_neg_rcp_sqrt() {
    let one = |op: &str, ty: &str| {
        let size = if ty == ".f32" { 4 } else { 8 };
        elementwise(ty, ty, size, &format!("\t{op} %out, %a;"))
    };
    let v32 = specials32();
    let run32 = |op: &str| -> Vec<u32> { run_elementwise(&one(op, ".f32"), &v32, &v32, &v32) };
    let v64 = specials64();
    let run64 = |op: &str| -> Vec<u64> { run_elementwise(&one(op, ".f64"), &v64, &v64, &v64) };
    for (i, &x) in v32.iter().enumerate() {
        assert_eq!(run32("abs.f32")[i], canon32(x.abs()), "abs {x:e}");
        assert_eq!(run32("neg.f32")[i], canon32(-x), "neg {x:e}");
        assert_eq!(run32("abs.ftz.f32")[i], canon32(ftz(x).abs()), "abs.ftz {x:e}");
        assert_eq!(run32("rcp.rn.f32")[i], canon32(1.0 / x), "rcp {x:e}");
        assert_eq!(run32("sqrt.rn.f32")[i], canon32(x.sqrt()), "sqrt {x:e}");
    }
    for (i, &x) in v64.iter().enumerate() {
        // .f64 abs and neg pass NaN through unchanged.
        let abs = if x.is_nan() { x.to_bits() } else { x.abs().to_bits() };
        let neg = if x.is_nan() { x.to_bits() } else { (-x).to_bits() };
        assert_eq!(run64("abs.f64")[i], abs);
        assert_eq!(run64("neg.f64")[i], neg);
        assert_eq!(run64("rcp.rn.f64")[i], canon64(1.0 / x));
        assert_eq!(run64("sqrt.rn.f64")[i], canon64(x.sqrt()));
    }
}

#[test]
fn the_reciprocal_sequence_of_common_cuh_is_within_an_ulp() {
    // kernels/common.cuh, recip(): rcp.approx.ftz.f64 and two Newton steps.
    let m = elementwise(
        ".f64",
        ".f64",
        8,
        "\trcp.approx.ftz.f64 %t1, %a;
	neg.f64 %t2, %a;
	fma.rn.f64 %t3, %t2, %t1, 0d3FF0000000000000;
	fma.rn.f64 %t4, %t1, %t3, %t1;
	fma.rn.f64 %t5, %t2, %t4, 0d3FF0000000000000;
	fma.rn.f64 %out, %t4, %t5, %t4;",
    );
    let x: Vec<f64> = (1..2000u64).map(|i| (i * i * 7919 % 1_000_003) as f64 + 1.0).collect();
    let out: Vec<f64> = run_elementwise(&m, &x, &x, &x);
    let mut exact = 0;
    for (i, &v) in x.iter().enumerate() {
        let want = 1.0 / v;
        let ulps = (out[i].to_bits() as i64 - want.to_bits() as i64).abs();
        assert!(ulps <= 1, "{v}: {} vs {want}", out[i]);
        exact += usize::from(ulps == 0);
    }
    assert!(exact > x.len() * 9 / 10, "{exact} of {} correctly rounded", x.len());
    // The approximation alone is coarse: its low word is zero.
    let m = elementwise(".f64", ".f64", 8, "\trcp.approx.ftz.f64 %out, %a;");
    let out: Vec<u64> = run_elementwise(&m, &[3.0f64, 1e-310, f64::INFINITY], &[0.0; 3], &[0.0; 3]);
    assert_eq!(out[0] & 0xFFFF_FFFF, 0);
    assert_eq!(out[1], f64::INFINITY.to_bits(), "a subnormal input is flushed: 1/0");
    assert_eq!(out[2], 0);
}

/// The PTX comparison operators, as the ISA defines them.
fn compare(op: &str, a: f64, b: f64) -> bool {
    let u = a.is_nan() || b.is_nan();
    match op {
        "eq" => !u && a == b,
        "ne" => !u && a != b,
        "lt" => !u && a < b,
        "le" => !u && a <= b,
        "gt" => !u && a > b,
        "ge" => !u && a >= b,
        "equ" => u || a == b,
        "neu" => u || a != b,
        "ltu" => u || a < b,
        "leu" => u || a <= b,
        "gtu" => u || a > b,
        "geu" => u || a >= b,
        "num" => !u,
        "nan" => u,
        _ => unreachable!(),
    }
}

const CMPS: [&str; 14] = ["eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"];

#[test]
fn setp_ordered_and_unordered() {
    let (a32, b32, _) = pairs(&specials32());
    let (a64, b64, _) = pairs(&specials64());
    for op in CMPS {
        let body = format!(
            "\tsetp.{op}.f32 %p1|%p2, %a, %b;\n\tselp.f32 %t1, 0f3F800000, 0f00000000, %p1;\n\tselp.f32 %t2, 0f40000000, 0f00000000, %p2;\n\tadd.rn.f32 %out, %t1, %t2;"
        );
        let out: Vec<f32> = run_elementwise(&elementwise(".f32", ".f32", 4, &body), &a32, &b32, &a32);
        for i in 0..a32.len() {
            let t = compare(op, a32[i].into(), b32[i].into());
            assert_eq!(out[i], if t { 1.0 } else { 2.0 }, "setp.{op}.f32 {:e} {:e}", a32[i], b32[i]);
        }
        let body =
            format!("\tsetp.{op}.f64 %p1, %a, %b;\n\tselp.f64 %out, 0d3FF0000000000000, 0d0000000000000000, %p1;");
        let out: Vec<f64> = run_elementwise(&elementwise(".f64", ".f64", 8, &body), &a64, &b64, &a64);
        for i in 0..a64.len() {
            assert_eq!(out[i] == 1.0, compare(op, a64[i], b64[i]), "setp.{op}.f64 {:e} {:e}", a64[i], b64[i]);
        }
    }
    // .ftz: subnormals compare as zeros.
    let body = "\tsetp.eq.ftz.f32 %p1, %a, %b;\n\tselp.f32 %out, 0f3F800000, 0f00000000, %p1;";
    let out: Vec<f32> = run_elementwise(
        &elementwise(".f32", ".f32", 4, body),
        &[f32::from_bits(1), f32::from_bits(1)],
        &[0.0, -0.0],
        &[0.0; 2],
    );
    assert_eq!(out, [1.0, 1.0]);
    let body = "\tsetp.eq.f32 %p1, %a, %b;\n\tselp.f32 %out, 0f3F800000, 0f00000000, %p1;";
    let out: Vec<f32> = run_elementwise(&elementwise(".f32", ".f32", 4, body), &[f32::from_bits(1)], &[0.0], &[0.0]);
    assert_eq!(out, [0.0]);
}

#[test]
fn setp_combines_with_a_predicate() {
    // p = (a < b) AND c_pred, q = !(a < b) AND c_pred, c_pred = (c > 0).
    let body = "\tsetp.gt.f32 %p3, %c, 0f00000000;
	setp.lt.and.f32 %p1|%p2, %a, %b, %p3;
	selp.f32 %t1, 0f3F800000, 0f00000000, %p1;
	selp.f32 %t2, 0f40000000, 0f00000000, %p2;
	setp.ge.xor.f32 %p4, %a, %b, !%p3;
	selp.f32 %t3, 0f40800000, 0f00000000, %p4;
	add.rn.f32 %t4, %t1, %t2;
	add.rn.f32 %out, %t4, %t3;";
    let m = elementwise(".f32", ".f32", 4, body);
    let a = [1.0f32, 1.0, 3.0, 3.0, f32::NAN];
    let b = [2.0f32, 2.0, 2.0, 2.0, 2.0];
    let c = [1.0f32, -1.0, 1.0, -1.0, 1.0];
    let out: Vec<f32> = run_elementwise(&m, &a, &b, &c);
    for i in 0..a.len() {
        let t = a[i] < b[i];
        let cp = c[i] > 0.0;
        let ge = a[i] >= b[i];
        let want =
            f32::from(u8::from(t && cp)) + 2.0 * f32::from(u8::from(!t && cp)) + 4.0 * f32::from(u8::from(ge ^ !cp));
        assert_eq!(out[i], want, "{i}");
    }
}
