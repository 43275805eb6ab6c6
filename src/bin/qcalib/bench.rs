//! `qcalib bench`: every observer timed in-process on generated data, next to the memory
//! bandwidth measured on the same buffer.

use std::time::Instant;

use ndarray::ArrayView;
use qcalib::synthetic::Rng;
use qcalib::{Observer, ObserverKind, ObserverSpec, QScheme, TensorView};
use rayon::prelude::*;
use serde_json::json;

use crate::{BenchArgs, Format};

/// Channels of the per-channel variants.
const CHANNELS: usize = 1024;

/// One timed case.
struct Case {
    observer: &'static str,
    variant: String,
    seconds: f64,
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let n = args.elements.max(CHANNELS);
    let data = generate(n);
    let bandwidth = median(args.runs, || {
        let t = Instant::now();
        std::hint::black_box(read_and_sum(&data));
        t.elapsed().as_secs_f64()
    });
    let bandwidth_gbps = bytes(n) / bandwidth / 1e9;
    let mut cases = Vec::new();
    let mut device = args.device.to_string();
    let rows = n / CHANNELS;
    let flat = ArrayView::from_shape(n, &data).map_err(|e| e.to_string())?;
    let wide = ArrayView::from_shape((CHANNELS, rows), &data[..rows * CHANNELS]).map_err(|e| e.to_string())?;
    let tall = ArrayView::from_shape((rows, CHANNELS), &data[..rows * CHANNELS]).map_err(|e| e.to_string())?;
    for kind in ObserverKind::ALL {
        let mut variants: Vec<(String, TensorView<'_>, Option<isize>)> = Vec::new();
        if kind != ObserverKind::MovingAveragePerChannelMinMax {
            variants.push(("per-tensor".into(), flat.into(), None));
        }
        if matches!(kind, ObserverKind::MinMax | ObserverKind::MovingAveragePerChannelMinMax | ObserverKind::Mse) {
            variants.push((format!("per-channel axis 0 ({CHANNELS} ch)"), wide.into(), Some(0)));
            variants.push((format!("per-channel last axis ({CHANNELS} ch)"), tall.into(), Some(-1)));
        }
        for (variant, x, axis) in variants {
            let mut quant = kind.default_config();
            if let Some(a) = axis {
                quant.qscheme = QScheme::PerChannelSymmetric;
                quant.ch_axis = a;
            }
            let spec = ObserverSpec {
                kind,
                quant,
                bins: matches!(kind, ObserverKind::Kl | ObserverKind::Percentile).then_some(2048),
                percentile: None,
                // KL: the collection alone (the search is timed on its own below).
                update_interval: (kind == ObserverKind::Kl).then_some(usize::MAX),
                stride: None,
                sync_histograms: false,
            };
            let mut obs = spec.build().map_err(|e| e.to_string())?;
            obs.set_device(args.device).map_err(|e| e.to_string())?;
            device = obs.device().to_string();
            let variant = match kind {
                ObserverKind::Kl => format!("{variant}, 2048 bins, collection"),
                ObserverKind::Percentile => format!("{variant}, 2048 bins"),
                ObserverKind::Mse => format!("{variant}, 95 candidates"),
                _ => variant,
            };
            let seconds = time_observer(obs.as_mut(), &x, args.runs)?;
            cases.push(Case { observer: kind.name(), variant, seconds });
        }
    }
    let hist = kl_histogram(&data, 2048);
    let seconds = median(args.runs.max(20), || {
        let t = Instant::now();
        std::hint::black_box(qcalib::search::kl::threshold_index(&hist, 128));
        t.elapsed().as_secs_f64()
    });
    cases.push(Case { observer: "kl-search", variant: "2048 bins, qint8".into(), seconds });

    match args.format {
        Format::Json => {
            let results: Vec<_> = cases
                .iter()
                .map(|c| {
                    let gbps = if c.observer.ends_with("-search") { 0.0 } else { bytes(n) / c.seconds / 1e9 };
                    json!({"observer": c.observer, "variant": c.variant, "seconds": c.seconds,
                           "gbps": gbps, "ratio": gbps / bandwidth_gbps})
                })
                .collect();
            let v = json!({"device": device, "elements": n, "bandwidth_gbps": bandwidth_gbps, "results": results});
            println!("{v}");
        }
        Format::Table => {
            println!(
                "qcalib bench on {device}: {n} f32 elements ({:.0} MB), {} threads, median of {} runs",
                bytes(n) / 1e6,
                rayon::current_num_threads(),
                args.runs
            );
            println!("memory read bandwidth (parallel read-and-sum of the same buffer): {bandwidth_gbps:.1} GB/s");
            println!(
                "{:<36} {:<44} {:>11} {:>12} {:>8} {:>7}",
                "observer", "variant", "time", "elements/s", "GB/s", "ratio"
            );
            for c in &cases {
                if c.observer.ends_with("-search") {
                    println!("{:<36} {:<44} {:>9.3}ms", c.observer, c.variant, c.seconds * 1e3);
                    continue;
                }
                let gbps = bytes(n) / c.seconds / 1e9;
                println!(
                    "{:<36} {:<44} {:>9.2}ms {:>12.3e} {:>8.2} {:>6.0}%",
                    c.observer,
                    c.variant,
                    c.seconds * 1e3,
                    n as f64 / c.seconds,
                    gbps,
                    100.0 * gbps / bandwidth_gbps
                );
            }
        }
    }
    Ok(())
}

fn bytes(n: usize) -> f64 {
    (n * std::mem::size_of::<f32>()) as f64
}

/// The median of `runs` timings of `f`, after one warm-up call.
fn median(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs.max(1)).map(|_| f()).collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn time_observer(obs: &mut dyn Observer, x: &TensorView<'_>, runs: usize) -> Result<f64, String> {
    let mut failure = None;
    let seconds = median(runs, || {
        let t = Instant::now();
        if let Err(e) = obs.observe_tensor(x) {
            failure = Some(e.to_string());
        }
        t.elapsed().as_secs_f64()
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(seconds),
    }
}

/// Laplace-distributed activations with rare outliers, generated in parallel.
fn generate(n: usize) -> Vec<f32> {
    let mut data = vec![0f32; n];
    data.par_chunks_mut(1 << 16).enumerate().for_each(|(i, chunk)| {
        let mut rng = Rng::new(0x5EED ^ i as u64);
        for v in chunk {
            let x = rng.laplace(0.5);
            *v = if rng.next_u64().is_multiple_of(100_000) { (x * 40.0) as f32 } else { x as f32 };
        }
    });
    data
}

/// The memory-bandwidth reference: a parallel read-and-sum over the buffer.
fn read_and_sum(data: &[f32]) -> f32 {
    data.par_chunks(1 << 18)
        .map(|c| {
            let mut acc = [0f32; 16];
            let mut it = c.chunks_exact(16);
            for ch in &mut it {
                for j in 0..16 {
                    acc[j] += ch[j];
                }
            }
            acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
        })
        .sum()
}

/// The KL histogram of the buffer (2048 bins on [0, max |x|]), for timing the search alone.
fn kl_histogram(data: &[f32], bins: usize) -> Vec<u64> {
    let amax = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut h = vec![0u64; bins];
    for &v in data {
        let pos = ((v.abs() * bins as f32) / amax) as usize;
        h[pos.min(bins - 1)] += 1;
    }
    h
}
