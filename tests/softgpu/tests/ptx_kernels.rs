//! qcalib's own kernels (kernels/ptx/), launched through the interpreter as
//! src/engine/cuda/ launches them (argument order, grid, block, shared memory), against plain
//! Rust references.

mod common;

use common::*;
use softgpu::ptx::Module;

fn load(file: &str) -> Module {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels/ptx").join(file);
    Module::load(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A deterministic sequence of awkward f32 values: normal, subnormal, zeros, infinities, NaN.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match i % 97 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -0.0,
                3 => f32::from_bits((x as u32) & 0x807f_ffff), // subnormal
                _ => ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0,
            }
        })
        .collect()
}

/// The inverse of the kernels' f2ord.
fn ord_to_f32(u: u32) -> f32 {
    f32::from_bits(if u & 0x8000_0000 != 0 { u & 0x7fff_ffff } else { !u })
}

/// (min, max, non-finite count) of `x`, NaN skipped, as `fminf`/`fmaxf` fold.
fn extremes(x: &[f32]) -> (f32, f32, u64) {
    let (mut lo, mut hi, mut bad) = (f32::INFINITY, f32::NEG_INFINITY, 0);
    for &v in x {
        if !v.is_finite() {
            bad += 1;
        }
        if !v.is_nan() {
            if v < lo || (v == lo && v.is_sign_negative()) {
                lo = v;
            }
            if v > hi || (v == hi && v.is_sign_positive()) {
                hi = v;
            }
        }
    }
    (lo, hi, bad)
}

/// Runs extremes_rows_f32 over `[outer, c, inner]` as src/engine/cuda/extremes.rs does and
/// returns (min, max) per channel and the non-finite count.
fn extremes_rows(
    x: &[f32],
    offset: usize,
    outer: u64,
    c: u64,
    inner: u64,
    per_split: u64,
) -> (Vec<f32>, Vec<f32>, u64) {
    let m = load("extremes.ptx");
    let mem = Memory::new();
    let dx = mem.upload(x) + 4 * offset as u64;
    let out = mem.alloc((2 * c as usize + 2) * 4);
    let units = if outer == 1 { inner } else { outer };
    let splits = units.div_ceil(per_split);
    let magic: u32 = if (2..256).contains(&inner) { (1u64 << 32).div_ceil(inner) as u32 } else { 0 };
    let args = [arg(dx), arg(outer), arg(c), arg(inner), arg(per_split), arg(magic), arg(out)];
    launch(&m, "extremes_rows_f32", [c as u32, splits as u32, 1], [256, 1, 1], 0, &args, &mem)
        .unwrap_or_else(|f| panic!("{f}"));
    let w: Vec<u32> = mem.download(out, 2 * c as usize + 2);
    let c = c as usize;
    let mins = w[..c].iter().map(|&u| ord_to_f32(!u)).collect();
    let maxs = w[c..2 * c].iter().map(|&u| ord_to_f32(u)).collect();
    (mins, maxs, u64::from(w[2 * c]) | (u64::from(w[2 * c + 1]) << 32))
}

#[test]
fn extremes_per_tensor() {
    for (n, offset) in [(1usize, 0usize), (255, 0), (4099, 1), (70_001, 3)] {
        let all = values(n + offset, n as u64);
        // An offset start: the kernel reads the unaligned head one by one, then 16-byte vectors.
        let x = &all[offset..];
        let (mins, maxs, bad) = extremes_rows(&all, offset, 1, 1, n as u64, 16 * 1024);
        let (lo, hi, nb) = extremes(x);
        assert_eq!((mins[0].to_bits(), maxs[0].to_bits(), bad), (lo.to_bits(), hi.to_bits(), nb), "n {n}");
    }
}

#[test]
fn extremes_per_channel() {
    for (outer, c, inner, per_split) in [(3u64, 4u64, 300u64, 2u64), (50, 3, 7, 9), (2, 5, 1000, 1), (1, 6, 5000, 1024)]
    {
        let x = values((outer * c * inner) as usize, outer * 31 + c);
        let (mins, maxs, bad) = extremes_rows(&x, 0, outer, c, inner, per_split);
        let mut total_bad = 0;
        for ch in 0..c as usize {
            let vals: Vec<f32> = (0..outer as usize)
                .flat_map(|o| {
                    let start = (o * c as usize + ch) * inner as usize;
                    x[start..start + inner as usize].to_vec()
                })
                .collect();
            let (lo, hi, nb) = extremes(&vals);
            total_bad += nb;
            assert_eq!((mins[ch].to_bits(), maxs[ch].to_bits()), (lo.to_bits(), hi.to_bits()), "channel {ch}");
        }
        assert_eq!(bad, total_bad);
    }
}

#[test]
fn extremes_channel_last() {
    let m = load("extremes.ptx");
    for (rows, c) in [(1000u64, 3u64), (37, 300)] {
        let x = values((rows * c) as usize, rows + c);
        let mem = Memory::new();
        let dx = mem.upload(&x);
        let out = mem.alloc((2 * c as usize + 2) * 4);
        let tile = c.min(256);
        let rows_per_step = 256 / tile;
        let row_splits = rows.div_ceil(rows_per_step * 64).clamp(1, 65535);
        let args = [arg(dx), arg(rows), arg(c), arg(out)];
        launch(&m, "extremes_cols_f32", [c.div_ceil(tile) as u32, row_splits as u32, 1], [256, 1, 1], 0, &args, &mem)
            .unwrap_or_else(|f| panic!("{f}"));
        let w: Vec<u32> = mem.download(out, 2 * c as usize + 2);
        for ch in 0..c as usize {
            let col: Vec<f32> = (0..rows as usize).map(|r| x[r * c as usize + ch]).collect();
            let (lo, hi, _) = extremes(&col);
            assert_eq!(ord_to_f32(!w[ch]).to_bits(), lo.to_bits());
            assert_eq!(ord_to_f32(w[c as usize + ch]).to_bits(), hi.to_bits());
        }
    }
}

/// The bin rule of kernels/histogram.cu (`abs_bin`), in plain Rust.
fn abs_bin(v: f32, bins: u32, hi: f32, inv_hi: f64) -> Option<u32> {
    let (bins_f, top) = (bins as f32, (bins - 1) as f32);
    let div = |p: f32| (f64::from(p) * inv_hi) as f32;
    let a = v.abs();
    let product = a * bins_f;
    let pos = if product < f32::INFINITY { div(product) } else { div(a) * bins_f };
    let pos = if pos < top { pos } else { top };
    (a <= hi).then_some(pos as u32)
}

#[test]
fn histograms_shared_and_global() {
    let m = load("histogram.ptx");
    for (n, bins, hi) in [(100_000usize, 2048u32, 3.0f32), (5000, 100, 1.5), (3, 7, 4.0)] {
        let x = values(n, bins as u64);
        let inv_hi = 1.0 / f64::from(hi);
        let mut want = vec![0u64; bins as usize];
        for &v in &x {
            if let Some(b) = abs_bin(v, bins, hi, inv_hi) {
                want[b as usize] += 1;
            }
        }
        let blocks = (n as u64).div_ceil(64 * 1024).clamp(1, 8 * 132) as u32;
        for (name, shared) in [("abs_hist_shared_f32", bins * 4), ("abs_hist_global_f32", 0)] {
            let mem = Memory::new();
            let dx = mem.upload(&x);
            let hist = mem.alloc(bins as usize * 8);
            let args = [arg(dx), arg(n as u64), arg(bins), arg(hi), arg(inv_hi), arg(hist)];
            launch(&m, name, [blocks, 1, 1], [256, 1, 1], shared, &args, &mem).unwrap_or_else(|f| panic!("{f}"));
            assert_eq!(mem.download::<u64>(hist, bins as usize), want, "{name} n {n}");
        }
        // With the extremes in the same pass.
        let mem = Memory::new();
        let dx = mem.upload(&x);
        let hist = mem.alloc(bins as usize * 8);
        let ext = mem.alloc(16);
        let args = [arg(dx), arg(n as u64), arg(bins), arg(hi), arg(inv_hi), arg(hist), arg(ext)];
        launch(&m, "abs_hist_extremes_shared_f32", [blocks, 1, 1], [256, 1, 1], bins * 4, &args, &mem)
            .unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(mem.download::<u64>(hist, bins as usize), want);
        let w: Vec<u32> = mem.download(ext, 4);
        let (lo, hi_v, bad) = extremes(&x);
        assert_eq!((ord_to_f32(!w[0]).to_bits(), ord_to_f32(w[1]).to_bits()), (lo.to_bits(), hi_v.to_bits()));
        assert_eq!(u64::from(w[2]) | (u64::from(w[3]) << 32), bad);
    }
}

#[test]
fn percentile_first_bins() {
    let m = load("percentile.ptx");
    let bins = 1000u32;
    let hist: Vec<u64> = (0..bins as u64).map(|b| (b * 7919) % 13 + u64::from(b % 50 == 0) * 1000).collect();
    let total: u64 = hist.iter().sum();
    let targets: Vec<f32> =
        (0..20).map(|i| (total as f32) * i as f32 / 19.0).chain([0.5, total as f32 + 1.0]).collect();
    let mem = Memory::new();
    let dh = mem.upload(&hist);
    let dt = mem.upload(&targets);
    let out = mem.alloc(targets.len() * 4);
    let args = [arg(dh), arg(bins), arg(dt), arg(targets.len() as u32), arg(out)];
    launch(&m, "first_bins_reaching", [1, 1, 1], [256, 1, 1], 0, &args, &mem).unwrap_or_else(|f| panic!("{f}"));
    let got: Vec<u32> = mem.download(out, targets.len());
    for (q, &t) in targets.iter().enumerate() {
        let mut cum = 0u64;
        let want = (0..bins)
            .find(|&b| {
                cum += hist[b as usize];
                cum as f64 >= f64::from(t)
            })
            .unwrap_or(bins);
        assert_eq!(got[q], want, "target {t}");
    }
}

#[test]
fn a_one_instruction_mutation_changes_the_result() {
    // The check of issue 11: one `max.f32` made `min.f32` in extremes.ptx must be seen.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels/ptx/extremes.ptx");
    let text = std::fs::read_to_string(path).unwrap();
    // Finite values, the largest at the start of a 16-byte vector (the first max.f32 is the
    // first element of the kernel's vector loop).
    let mut x: Vec<f32> = values(5000, 77).into_iter().map(|v| if v.is_finite() { v } else { 0.5 }).collect();
    x[0] = 100.0;
    let (lo, hi, _) = extremes(&x);
    let run = |text: &str| {
        let m = Module::load(text).unwrap();
        let mem = Memory::new();
        let dx = mem.upload(&x);
        let out = mem.alloc(16);
        let args = [arg(dx), arg(1u64), arg(1u64), arg(5000u64), arg(16384u64), arg(0u32), arg(out)];
        launch(&m, "extremes_rows_f32", [1, 1, 1], [256, 1, 1], 0, &args, &mem).unwrap();
        let w: Vec<u32> = mem.download(out, 2);
        (ord_to_f32(!w[0]), ord_to_f32(w[1]))
    };
    assert_eq!(run(&text), (lo, hi));
    let mutated = text.replacen("\tmax.f32", "\tmin.f32", 1);
    assert_ne!(mutated, text);
    assert_ne!(run(&mutated), (lo, hi));
}
