//! `cvt` against host IEEE conversions and an independent binary16 implementation (`half`):
//! every rounding mode, halfway cases, subnormals, overflow, NaN, `.ftz`, `.sat`, and the
//! saturating float-to-integer conversions with the ISA's NaN rule.

mod common;

use common::*;
use half::f16;

const NAN32: u32 = 0x7fff_ffff;
const NAN64: u64 = 0x7fff_ffff_ffff_ffff;
const MODES: [&str; 4] = ["rn", "rz", "rm", "rp"];

fn xorshift(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

/// Values around the f32 boundaries, as f64: halfway cases, subnormals, overflow.
fn f64_inputs() -> Vec<f64> {
    let mut v = vec![0.0, -0.0, 1.0, f64::MAX, f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 5e-324];
    for &f in &[1.0f32, 3.0, 0.1, f32::MAX, f32::MIN_POSITIVE, f32::from_bits(1), f32::from_bits(0x7f_ffff), 65504.0] {
        for s in [1.0, -1.0] {
            let x = f64::from(f) * s;
            let up = f64::from(f.next_up()) * s;
            v.extend([x, (x + up) / 2.0, x + (up - x) / 4.0, x + 3.0 * (up - x) / 4.0, up]);
        }
    }
    // Just above f32::MAX: below, at and above the rounding threshold (MAX + half an ulp).
    let half_ulp = 2f64.powi(103);
    v.extend([
        f64::from(f32::MAX) + half_ulp / 2.0,
        f64::from(f32::MAX) + half_ulp,
        f64::from(f32::MAX) + half_ulp * 1.5,
    ]);
    // Half the smallest subnormal: ties to even (0); a bit more rounds up.
    v.extend([2f64.powi(-150), 2f64.powi(-150) * 1.0000001, -2f64.powi(-150)]);
    for x in xorshift(2000, 7) {
        let f = f64::from_bits(x);
        v.push(f);
        v.push(f64::from_bits((x & 0x800F_FFFF_FFFF_FFFF) | (((x >> 52) % 320 + 1023 - 160) << 52)));
    }
    v
}

/// `x` rounded to f32 by `mode`, from the host's round-to-nearest conversion and the neighbours.
fn f64_to_f32(x: f64, mode: &str) -> u32 {
    if x.is_nan() {
        return NAN32;
    }
    let r = x as f32;
    if f64::from(r) == x {
        return r.to_bits();
    }
    let (lo, hi) = if f64::from(r) < x { (r, r.next_up()) } else { (r.next_down(), r) };
    match mode {
        "rn" => r,
        "rz" => {
            if x > 0.0 {
                lo
            } else {
                hi
            }
        }
        "rm" => lo,
        _ => hi,
    }
    .to_bits()
}

#[test]
fn f64_to_f32_in_every_mode() {
    let x = f64_inputs();
    for mode in MODES {
        let m = map_kernel((".f64", ".f64", 8), (".f32", ".f32", 4), &format!("\tcvt.{mode}.f32.f64 %out, %a;"));
        let out: Vec<u32> = run_map(&m, &x);
        for (i, &v) in x.iter().enumerate() {
            assert_eq!(out[i], f64_to_f32(v, mode), "cvt.{mode}.f32.f64 {v:e}");
        }
    }
    // .ftz flushes a subnormal result.
    let m = map_kernel((".f64", ".f64", 8), (".f32", ".f32", 4), "\tcvt.rn.ftz.f32.f64 %out, %a;");
    let out: Vec<u32> = run_map(&m, &[1e-40f64, -1e-40, 1e-30]);
    assert_eq!(out, [0, 0x8000_0000, (1e-30f64 as f32).to_bits()]);
}

fn f16_next_up(h: u16) -> u16 {
    match h {
        0x8000 | 0x0000 => 0x0001,
        0x7c00 => 0x7c00,
        h if h & 0x8000 != 0 => h - 1,
        h => h + 1,
    }
}

fn f16_next_down(h: u16) -> u16 {
    match h {
        0x0000 | 0x8000 => 0x8001,
        0xfc00 => 0xfc00,
        h if h & 0x8000 != 0 => h + 1,
        h => h - 1,
    }
}

/// `x` rounded to binary16 by `mode`, from `half`'s round-to-nearest and the neighbours.
fn f32_to_f16(x: f32, mode: &str) -> u16 {
    if x.is_nan() {
        return 0x7fff;
    }
    let r = f16::from_f32(x);
    if r.to_f32() == x {
        return r.to_bits();
    }
    let (lo, hi) = if r.to_f32() < x {
        (r.to_bits(), f16_next_up(r.to_bits()))
    } else {
        (f16_next_down(r.to_bits()), r.to_bits())
    };
    match mode {
        "rn" => r.to_bits(),
        "rz" => {
            if x > 0.0 {
                lo
            } else {
                hi
            }
        }
        "rm" => lo,
        _ => hi,
    }
}

#[test]
fn f32_to_f16_in_every_mode() {
    let mut x: Vec<f32> =
        vec![0.0, -0.0, 1.0, 65504.0, 65519.0, 65520.0, 65536.0, 1e10, -1e10, f32::NAN, f32::INFINITY];
    // Halfway cases: between two binary16 numbers (normal and subnormal).
    for h in [0x3c00u16, 0x3c01, 0x0001, 0x0002, 0x03ff, 0x0400, 0x7bfe, 0x8001, 0xbc00] {
        let a = f16::from_bits(h).to_f32();
        let b = f16::from_bits(f16_next_up(h)).to_f32();
        x.extend([a, (a + b) / 2.0, a + (b - a) / 4.0, a + 3.0 * (b - a) / 4.0]);
    }
    x.extend([2f32.powi(-25), 2f32.powi(-25) * 1.01, 2f32.powi(-26), -2f32.powi(-25)]);
    for v in xorshift(3000, 11) {
        let f = f32::from_bits(v as u32);
        x.push(f);
        x.push(f32::from_bits((v as u32 & 0x807f_ffff) | ((((v >> 32) % 50 + 127 - 30) as u32) << 23)));
    }
    for mode in MODES {
        let m = map_kernel((".f32", ".f32", 4), (".b16", ".b16", 2), &format!("\tcvt.{mode}.f16.f32 %out, %a;"));
        let out: Vec<u16> = run_map(&m, &x);
        for (i, &v) in x.iter().enumerate() {
            assert_eq!(out[i], f32_to_f16(v, mode), "cvt.{mode}.f16.f32 {v:e}");
        }
    }
}

#[test]
fn f16_to_f32_and_f64_are_exact() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let m = map_kernel((".b16", ".b16", 2), (".f32", ".f32", 4), "\tcvt.f32.f16 %out, %a;");
    let out: Vec<u32> = run_map(&m, &all);
    let m64 = map_kernel((".b16", ".b16", 2), (".f64", ".f64", 8), "\tcvt.f64.f16 %out, %a;");
    let out64: Vec<u64> = run_map(&m64, &all);
    for &h in &all {
        let f = f16::from_bits(h);
        let want = if f.is_nan() { NAN32 } else { f.to_f32().to_bits() };
        assert_eq!(out[h as usize], want, "{h:#06x}");
        let want = if f.is_nan() { NAN64 } else { f.to_f64().to_bits() };
        assert_eq!(out64[h as usize], want, "{h:#06x}");
    }
}

#[test]
fn f32_to_f64_is_exact_and_ftz_flushes_the_input() {
    let x: Vec<f32> =
        vec![0.0, -0.0, 1.0, f32::from_bits(1), -f32::from_bits(0x7f_ffff), f32::MAX, f32::NAN, f32::INFINITY];
    let m = map_kernel((".f32", ".f32", 4), (".f64", ".f64", 8), "\tcvt.f64.f32 %out, %a;");
    let out: Vec<u64> = run_map(&m, &x);
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(out[i], if v.is_nan() { NAN64 } else { f64::from(v).to_bits() });
    }
    let m = map_kernel((".f32", ".f32", 4), (".f64", ".f64", 8), "\tcvt.ftz.f64.f32 %out, %a;");
    let out: Vec<f64> = run_map(&m, &x);
    assert_eq!(out[3].to_bits(), 0);
    assert_eq!(out[4].to_bits(), 1 << 63);
    assert_eq!(out[2], 1.0);
}

fn round_int(x: f64, mode: &str) -> f64 {
    match mode {
        "rni" => x.round_ties_even(),
        "rzi" => x.trunc(),
        "rmi" => x.floor(),
        _ => x.ceil(),
    }
}

#[test]
fn rounding_to_integral_values() {
    let mut x32: Vec<f32> =
        vec![0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 8388607.5, 8388609.0, 1e30, -0.0, f32::from_bits(1)];
    x32.extend([-f32::from_bits(1), f32::NAN, f32::INFINITY, -3.7, 3.7]);
    x32.extend(
        xorshift(500, 3)
            .into_iter()
            .map(|v| f32::from_bits(((v as u32) & 0x807f_ffff) | (((v >> 40) % 40 + 110) as u32) << 23)),
    );
    for mode in ["rni", "rzi", "rmi", "rpi"] {
        for ftz in ["", ".ftz"] {
            let m =
                map_kernel((".f32", ".f32", 4), (".f32", ".f32", 4), &format!("\tcvt.{mode}{ftz}.f32.f32 %out, %a;"));
            let out: Vec<u32> = run_map(&m, &x32);
            for (i, &v) in x32.iter().enumerate() {
                let v = if ftz.is_empty() || !v.is_subnormal() { v } else { f32::from_bits(v.to_bits() & 0x8000_0000) };
                let r = round_int(f64::from(v), mode) as f32;
                assert_eq!(out[i], if r.is_nan() { NAN32 } else { r.to_bits() }, "cvt.{mode}{ftz}.f32.f32 {v:e}");
            }
        }
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v) * 1.000000001).chain([4503599627370495.5, -0.2]).collect();
        let m = map_kernel((".f64", ".f64", 8), (".f64", ".f64", 8), &format!("\tcvt.{mode}.f64.f64 %out, %a;"));
        let out: Vec<u64> = run_map(&m, &x64);
        for (i, &v) in x64.iter().enumerate() {
            let r = round_int(v, mode);
            assert_eq!(out[i], if r.is_nan() { NAN64 } else { r.to_bits() }, "cvt.{mode}.f64.f64 {v:e}");
        }
    }
}

/// The ISA's float-to-integer conversion: rounded, clamped, NaN by its rule.
fn float_to_int(v: f64, mode: &str, bits: u32, signed: bool, src_f64: bool) -> u64 {
    if v.is_nan() {
        return if !src_f64 && bits != 64 { 0 } else { 1 << (bits - 1) };
    }
    let r = round_int(v, mode);
    let (lo, hi) = if signed { (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1) } else { (0, (1i128 << bits) - 1) };
    let n = if r <= lo as f64 {
        lo
    } else if r >= hi as f64 {
        hi
    } else {
        r as i128
    };
    (n as u64) & if bits == 64 { u64::MAX } else { (1 << bits) - 1 }
}

#[test]
fn float_to_integer_saturates() {
    let x: Vec<f64> = vec![
        0.0,
        -0.0,
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        3.7,
        -3.7,
        65535.5,
        65536.0,
        -32768.6,
        2147483647.5,
        2147483648.0,
        -2147483648.5,
        4294967295.4,
        4294967296.0,
        9.3e18,
        1.8446744073709552e19,
        3e19,
        -9.3e18,
        1e300,
        -1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-310,
    ];
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let dsts = [
        (".s16", ".b16", 16, true),
        (".u16", ".b16", 16, false),
        (".s32", ".b32", 32, true),
        (".u32", ".b32", 32, false),
        (".s64", ".b64", 64, true),
        (".u64", ".b64", 64, false),
    ];
    for mode in ["rni", "rzi", "rmi", "rpi"] {
        for (dt, reg, bits, signed) in dsts {
            let store = (reg, if bits == 16 { ".b16" } else { reg }, bits / 8);
            let m = map_kernel((".f64", ".f64", 8), store, &format!("\tcvt.{mode}{dt}.f64 %out, %a;"));
            let got: Vec<u64> = match bits {
                16 => run_map::<f64, u16>(&m, &x).into_iter().map(u64::from).collect(),
                32 => run_map::<f64, u32>(&m, &x).into_iter().map(u64::from).collect(),
                _ => run_map::<f64, u64>(&m, &x),
            };
            for (i, &v) in x.iter().enumerate() {
                assert_eq!(got[i], float_to_int(v, mode, bits, signed, true), "cvt.{mode}{dt}.f64 {v:e}");
            }
            let m = map_kernel((".f32", ".f32", 4), store, &format!("\tcvt.{mode}{dt}.f32 %out, %a;"));
            let got: Vec<u64> = match bits {
                16 => run_map::<f32, u16>(&m, &x32).into_iter().map(u64::from).collect(),
                32 => run_map::<f32, u32>(&m, &x32).into_iter().map(u64::from).collect(),
                _ => run_map::<f32, u64>(&m, &x32),
            };
            for (i, &v) in x32.iter().enumerate() {
                assert_eq!(got[i], float_to_int(f64::from(v), mode, bits, signed, false), "cvt.{mode}{dt}.f32 {v:e}");
            }
        }
    }
}

/// `v` rounded to f32 / f64 by `mode`.
fn int_to_float(v: i128, mode: &str, double: bool) -> u64 {
    let (r, next_up, next_down, exact): (f64, f64, f64, i128) = if double {
        let r = v as f64;
        (r, r.next_up(), r.next_down(), r as i128)
    } else {
        let r = v as f32;
        (f64::from(r), f64::from(r.next_up()), f64::from(r.next_down()), r as i128)
    };
    let bits = |x: f64| if double { x.to_bits() } else { u64::from((x as f32).to_bits()) };
    if exact == v {
        return bits(r);
    }
    let (lo, hi) = if exact < v { (r, next_up) } else { (next_down, r) };
    bits(match mode {
        "rn" => r,
        "rz" => {
            if v > 0 {
                lo
            } else {
                hi
            }
        }
        "rm" => lo,
        _ => hi,
    })
}

#[test]
fn integer_to_float_in_every_mode() {
    let mut x: Vec<u64> =
        vec![0, 1, u64::MAX, 1 << 63, (1 << 63) - 1, 16_777_217, 16_777_219, (1 << 53) + 1, 0xFFFF_FFFF, 0x8000_0001];
    x.extend(xorshift(500, 5));
    x.extend(xorshift(200, 9).into_iter().map(|v| v >> (v % 60)));
    for mode in MODES {
        for (src, signed, bits) in [(".u64", false, 64), (".s64", true, 64), (".u32", false, 32), (".s32", true, 32)] {
            let value = |v: u64| -> i128 {
                match (signed, bits) {
                    (true, 64) => i128::from(v as i64),
                    (false, 64) => i128::from(v),
                    (true, _) => i128::from(v as u32 as i32),
                    _ => i128::from(v as u32),
                }
            };
            let reg = if bits == 64 { ".b64" } else { ".b32" };
            let ld = if bits == 64 { ".u64" } else { ".u32" };
            for double in [false, true] {
                let (dt, dst) = if double { (".f64", (".f64", ".f64", 8)) } else { (".f32", (".f32", ".f32", 4)) };
                let m = map_kernel((reg, ld, bits / 8), dst, &format!("\tcvt.{mode}{dt}{src} %out, %a;"));
                let got: Vec<u64> = if bits == 64 {
                    if double {
                        run_map::<u64, u64>(&m, &x)
                    } else {
                        run_map::<u64, u32>(&m, &x).into_iter().map(u64::from).collect()
                    }
                } else {
                    let x32: Vec<u32> = x.iter().map(|&v| v as u32).collect();
                    if double {
                        run_map::<u32, u64>(&m, &x32)
                    } else {
                        run_map::<u32, u32>(&m, &x32).into_iter().map(u64::from).collect()
                    }
                };
                for (i, &v) in x.iter().enumerate() {
                    assert_eq!(got[i], int_to_float(value(v), mode, double), "cvt.{mode}{dt}{src} {v:#x}");
                }
            }
        }
    }
}

#[test]
fn integer_to_integer() {
    let x: Vec<u64> = vec![
        0,
        1,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        1 << 40,
        u64::MAX,
        0x8000_0000_0000_0000,
    ];
    type Access = (&'static str, &'static str, u32);
    type Case = (&'static str, Access, Access, fn(u64) -> u64);
    let cases: [Case; 9] = [
        ("cvt.u16.u32", (".b32", ".u32", 4), (".b16", ".b16", 2), |v| v & 0xffff),
        ("cvt.u32.u16", (".b16", ".u16", 2), (".b32", ".u32", 4), |v| v & 0xffff),
        ("cvt.s32.s16", (".b16", ".u16", 2), (".b32", ".u32", 4), |v| (v as u16 as i16 as i32 as u32).into()),
        ("cvt.s64.s32", (".b32", ".u32", 4), (".b64", ".u64", 8), |v| v as u32 as i32 as i64 as u64),
        ("cvt.u64.u32", (".b32", ".u32", 4), (".b64", ".u64", 8), |v| v & 0xffff_ffff),
        ("cvt.u32.u64", (".b64", ".u64", 8), (".b32", ".u32", 4), |v| v & 0xffff_ffff),
        ("cvt.sat.u16.u32", (".b32", ".u32", 4), (".b16", ".b16", 2), |v| (v & 0xffff_ffff).min(0xffff)),
        ("cvt.sat.s32.s64", (".b64", ".u64", 8), (".b32", ".u32", 4), |v| {
            (v as i64).clamp(i32::MIN.into(), i32::MAX.into()) as i32 as u32 as u64
        }),
        ("cvt.sat.u32.s32", (".b32", ".u32", 4), (".b32", ".u32", 4), |v| (v as u32 as i32).max(0) as u64),
    ];
    for (op, src, dst, want) in cases {
        let m = map_kernel(src, dst, &format!("\t{op} %out, %a;"));
        let got: Vec<u64> = match (src.2, dst.2) {
            (4, 2) => run_map::<u32, u16>(&m, &x.iter().map(|&v| v as u32).collect::<Vec<_>>())
                .into_iter()
                .map(u64::from)
                .collect(),
            (2, 4) => run_map::<u16, u32>(&m, &x.iter().map(|&v| v as u16).collect::<Vec<_>>())
                .into_iter()
                .map(u64::from)
                .collect(),
            (4, 8) => run_map::<u32, u64>(&m, &x.iter().map(|&v| v as u32).collect::<Vec<_>>()),
            (8, 4) => run_map::<u64, u32>(&m, &x).into_iter().map(u64::from).collect(),
            _ => run_map::<u32, u32>(&m, &x.iter().map(|&v| v as u32).collect::<Vec<_>>())
                .into_iter()
                .map(u64::from)
                .collect(),
        };
        for (i, &v) in x.iter().enumerate() {
            let input = match src.2 {
                2 => v & 0xffff,
                4 => v & 0xffff_ffff,
                _ => v,
            };
            assert_eq!(got[i], want(input), "{op} {input:#x}");
        }
    }
}
