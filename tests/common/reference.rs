//! A deliberately plain implementation of SPEC §2–§5, written from the text with direct loops
//! (the KL search is the quadratic one), to check the optimised engine against.

use qcalib::{QuantDType, QuantRange};

pub const EPS: f32 = f32::EPSILON;

pub fn divisor(r: &QuantRange) -> f32 {
    ((r.quant_max - r.quant_min) as f64 / 2.0) as f32
}

pub fn scale(lo: f32, hi: f32, r: &QuantRange) -> f32 {
    let amax = (-lo).max(hi).max(0.0);
    (amax / divisor(r)).max(EPS)
}

pub fn fq(x: f32, s: f32, r: &QuantRange) -> f32 {
    (x / s).round_ties_even().clamp(r.quant_min as f32, r.quant_max as f32) * s
}

pub fn l2_error(x: &[f32], s: f32, r: &QuantRange) -> f64 {
    x.iter().map(|&v| ((fq(v, s, r) - v) as f64).powi(2)).sum::<f64>().sqrt()
}

pub fn moving(old: f32, cur: f32, c: f32) -> f32 {
    old + c * (cur - old)
}

pub fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// SPEC §5 on `[0, hi]`.
pub fn abs_hist(x: &[f32], bins: usize, hi: f32) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    for &v in x {
        let a = v.abs();
        if hi == 0.0 {
            if a == 0.0 {
                h[0] += 1;
            }
            continue;
        }
        if a > hi {
            continue;
        }
        let pos = ((a * bins as f32) / hi).floor();
        h[(pos as usize).min(bins - 1)] += 1;
    }
    h
}

fn first_reaching(h: &[u64], t: f32) -> usize {
    let mut cum = 0u64;
    for (i, &c) in h.iter().enumerate() {
        cum += c;
        if cum as f64 >= t as f64 {
            return i;
        }
    }
    h.len()
}

fn clip(mn: f32, mx: f32, i: usize, r: f32, bins: usize) -> (f32, f32) {
    let c = ((i as f64 + 0.5) as f32) * (r / bins as f32);
    (if -c > mn { -c } else { mn }, if c < mx { c } else { mx })
}

/// One batch of PercentileObserver: the clipped range.
pub fn percentile_batch(x: &[f32], percentile: f64, bins: usize) -> (f32, f32) {
    let (mn, mx) = min_max(x);
    let r = (-mn).max(mx);
    let h = abs_hist(x, bins, r);
    let t = (percentile / 100.0 * x.len() as f64) as f32;
    clip(mn, mx, first_reaching(&h, t), r, bins)
}

/// One batch of MixObserver.
pub fn mix_batch(x: &[f32], q: &QuantRange) -> (f32, f32) {
    let (mn, mx) = min_max(x);
    let r = (-mn).max(mx);
    let h = abs_hist(x, 2048, r);
    let mut idx: Vec<usize> = [0.999, 0.9995, 0.9999, 0.99993, 0.99995, 0.99997, 0.99999, 0.999995, 0.999999]
        .iter()
        .map(|&f: &f64| first_reaching(&h, f as f32 * x.len() as f32))
        .collect();
    idx.sort();
    idx.dedup();
    let cands: Vec<(f32, f32)> = idx.iter().map(|&i| clip(mn, mx, i, r, 2048)).collect();
    let errs: Vec<f64> = cands.iter().map(|&(l, h)| l2_error(x, scale(l, h, q), q)).collect();
    let best = errs.iter().copied().fold(f64::INFINITY, f64::min);
    let k = errs.iter().position(|&e| (e - best).abs() <= 1e-6 * best).unwrap();
    cands[k]
}

/// One batch of MSEObserver on one channel's values.
pub fn mse_batch(x: &[f32], stride: usize, q: &QuantRange) -> (f32, f32) {
    let (mn, mx) = min_max(x);
    let cands: Vec<f32> = (0..95).step_by(stride).map(|i| (1.0 - 0.01 * i as f64) as f32).collect();
    let errs: Vec<f64> = cands.iter().map(|&f| l2_error(x, scale(mn * f, mx * f, q), q)).collect();
    let best = errs.iter().copied().fold(f64::INFINITY, f64::min);
    let k = errs.iter().rposition(|&e| (e - best).abs() <= 1e-6 * best).unwrap();
    (mn * cands[k], mx * cands[k])
}

/// SPEC §4 KL step 2 for candidate `i`, literally.
pub fn kl_divergence(hist: &[u64], i: usize, nq: u64) -> f64 {
    let mut h: Vec<f64> = hist.iter().map(|&c| c as f64).collect();
    h[0] = h[1];
    let level: Vec<usize> = if nq >= i as u64 {
        (0..i).collect()
    } else {
        let step = i as f64 / nq as f64;
        let mut space: Vec<f64> = (0..=nq).map(|m| m as f64 * step).collect();
        space[nq as usize] = i as f64;
        // The number of m with space[m] <= j, minus one (space ascends: a binary search counts it).
        (0..i).map(|j| space.partition_point(|&s| s <= j as f64) - 1).collect()
    };
    let levels = level.iter().max().map_or(0, |m| m + 1);
    let (mut tot, mut mem) = (vec![0f64; levels], vec![0f64; levels]);
    for j in 0..i {
        if h[j] > 0.0 {
            tot[level[j]] += h[j];
            mem[level[j]] += 1.0;
        }
    }
    let mut q: Vec<f64> = (0..i).map(|j| if h[j] > 0.0 { tot[level[j]] / mem[level[j]] } else { 0.0 }).collect();
    let mut p: Vec<f64> = h[..i].to_vec();
    p[i - 1] += h[i..].iter().sum::<f64>();
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sq == 0.0 {
        return f64::INFINITY;
    }
    p.iter_mut().for_each(|v| *v /= sp);
    q.iter_mut().for_each(|v| *v = *v / sq + 1e-10);
    p.iter().zip(&q).filter(|(p, _)| **p > 0.0).map(|(p, q)| p * (p / q).ln()).sum()
}

/// The KL threshold of a window's histogram and edges.
pub fn kl_threshold(hist: &[u64], edges: &[f32], dtype: QuantDType) -> f32 {
    let nq = dtype.kl_levels();
    let div: Vec<f64> = (128..=hist.len()).map(|i| kl_divergence(hist, i, nq)).collect();
    let d = div.len();
    let sums: Vec<f64> = (0..=d - 11).map(|k| div[k..k + 9].iter().sum()).collect();
    let min = sums.iter().copied().fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return *edges.last().unwrap();
    }
    let k = sums.iter().rposition(|&s| (s - min).abs() <= 1e-9 * min.abs()).unwrap();
    edges[k + 132]
}

/// KLObserver over `batches` with one window of all of them: the threshold.
pub fn kl_window(batches: &[Vec<f32>], bins: usize, dtype: QuantDType) -> f32 {
    let (mut hist, mut edges, mut w): (Vec<u64>, Vec<f32>, f32) = (vec![], vec![], 0.0);
    let mut zeros = 0u64;
    for x in batches {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        if edges.is_empty() {
            if amax == 0.0 {
                zeros += x.len() as u64;
                continue;
            }
            w = amax / bins as f32;
            edges = (0..bins).map(|m| m as f32 * w).collect();
            edges.push(amax);
            hist = abs_hist(x, bins, amax);
            hist[0] += zeros;
            continue;
        }
        if amax > *edges.last().unwrap() {
            let nb = ((amax / w).ceil() as usize).max(hist.len());
            edges = (0..=nb).map(|m| w * m as f32).collect();
            hist.resize(nb, 0);
        }
        let b = abs_hist(x, hist.len(), *edges.last().unwrap());
        hist.iter_mut().zip(b).for_each(|(h, b)| *h += b);
    }
    if edges.is_empty() { 0.0 } else { kl_threshold(&hist, &edges, dtype) }
}
