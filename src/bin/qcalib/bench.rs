//! `qcalib bench`: every observer timed in-process on generated data, next to the memory
//! bandwidth measured on the same buffer.

use std::time::Instant;

use ndarray::ArrayView;
use qcalib::search::candidates::mse_candidates;
use qcalib::synthetic::Rng;
use qcalib::{
    CudaTensorView, Device, Input, Observer, ObserverKind, ObserverSpec, QScheme, QuantDType, QuantRange, arith, stats,
};
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
    /// For a search: the bytes it reads (none: a search on a histogram only).
    searched_bytes: Option<f64>,
}

impl Case {
    /// Input bytes per second (0 for a search on a histogram).
    fn gbps(&self, n: usize) -> f64 {
        if self.observer == "kl-search" { 0.0 } else { self.searched_bytes.unwrap_or(bytes(n)) / self.seconds / 1e9 }
    }
}

/// The warning that timings mean nothing, when `device` is softgpu (the PTX interpreter that runs
/// qcalib's CUDA path in the tests, see `scripts/softgpu-env.sh`).
pub(crate) fn softgpu_warning(device: Device) -> Option<String> {
    let status = qcalib::cuda_status();
    (matches!(device, Device::Cuda(_)) && status.is_softgpu()).then(|| {
        format!(
            "note: {device} is softgpu, the PTX interpreter of qcalib's tests ({status}): its results are checked in \
             software, its timings say nothing about a GPU"
        )
    })
}

/// The device the observers will run on (`auto` resolved).
fn resolve(device: Device) -> Result<Device, String> {
    let mut probe = ObserverSpec::new(ObserverKind::MinMax).build().map_err(|e| e.to_string())?;
    probe.set_device(device).map_err(|e| e.to_string())?;
    Ok(probe.device())
}

/// The generated tensor in GPU memory, uploaded once before the timings.
struct DeviceCopy {
    stream: std::sync::Arc<qcalib::cudarc::driver::CudaStream>,
    data: qcalib::cudarc::driver::CudaSlice<f32>,
}

impl DeviceCopy {
    fn upload(ordinal: usize, data: &[f32]) -> Result<Self, String> {
        let ctx = qcalib::cudarc::driver::CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
        let stream = ctx.new_stream().map_err(|e| format!("cuda:{ordinal}: {e}"))?;
        let data = stream.clone_htod(data).map_err(|e| format!("upload: {e}"))?;
        Ok(DeviceCopy { stream, data })
    }

    /// The first `m` values seen with `shape`.
    fn view(&self, m: usize, shape: &[usize]) -> Result<Input<'_>, String> {
        let view = self.data.try_slice(0..m).ok_or("shape larger than the tensor")?;
        Ok(CudaTensorView::new(view, shape).map_err(|e| e.to_string())?.into())
    }

    /// The median time of a device-to-device copy of the tensor.
    fn copy_seconds(&self, runs: usize) -> Result<f64, String> {
        let mut dst = self.stream.alloc_zeros::<f32>(self.data.len()).map_err(|e| e.to_string())?;
        let mut failure = None;
        let t = median(runs, || {
            let t = Instant::now();
            let r = self.stream.memcpy_dtod(&self.data, &mut dst).and_then(|_| self.stream.synchronize());
            if let Err(e) = r {
                failure = Some(e.to_string());
            }
            t.elapsed().as_secs_f64()
        });
        failure.map_or(Ok(t), Err)
    }
}

pub fn run(args: &BenchArgs, out: &mut dyn std::io::Write) -> Result<(), crate::output::Failure> {
    let n = args.elements.max(CHANNELS);
    let data = generate(n);
    let device = resolve(args.device)?;
    let rows = n / CHANNELS;
    let shapes: [(&str, Vec<usize>, Option<isize>); 3] = [
        ("per-tensor", vec![n], None),
        ("per-channel axis 0", vec![CHANNELS, rows], Some(0)),
        ("per-channel last axis", vec![rows, CHANNELS], Some(-1)),
    ];
    // The tensor where the engine reads it: host memory, or (CUDA) uploaded once, beforehand.
    let on_device = match device {
        Device::Cuda(ordinal) => Some(DeviceCopy::upload(ordinal, &data)?),
        _ => None,
    };
    let input = |shape: &[usize]| -> Result<Input<'_>, String> {
        let m: usize = shape.iter().product();
        match &on_device {
            Some(d) => d.view(m, shape),
            None => Ok(ArrayView::from_shape(shape, &data[..m]).map_err(|e| e.to_string())?.into_dyn().into()),
        }
    };
    let bandwidth = match &on_device {
        Some(d) => d.copy_seconds(args.runs)?,
        None => median(args.runs, || {
            let t = Instant::now();
            std::hint::black_box(read_and_sum(&data));
            t.elapsed().as_secs_f64()
        }),
    };
    // A copy reads and writes every byte: count both (CUDA); the host reference only reads.
    let bandwidth_gbps = bytes(n) * if on_device.is_some() { 2.0 } else { 1.0 } / bandwidth / 1e9;

    let mut cases = Vec::new();
    for kind in ObserverKind::ALL {
        let per_channel_ok = kind != ObserverKind::MovingAverageMinMax;
        for (name, shape, axis) in &shapes {
            let wanted = match axis {
                None => kind != ObserverKind::MovingAveragePerChannelMinMax,
                Some(_) => per_channel_ok,
            };
            if !wanted {
                continue;
            }
            let mut quant = kind.default_config();
            if let Some(a) = axis {
                quant.qscheme = QScheme::PerChannelSymmetric;
                quant.ch_axis = *a;
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
            obs.set_device(device).map_err(|e| e.to_string())?;
            let channels = if axis.is_some() { format!(" ({CHANNELS} ch)") } else { String::new() };
            let variant = match kind {
                ObserverKind::Kl => format!("{name}{channels}, 2048 bins, collection"),
                ObserverKind::Percentile => format!("{name}{channels}, 2048 bins"),
                ObserverKind::Mse => format!("{name}{channels}, 95 candidates"),
                _ => format!("{name}{channels}"),
            };
            let seconds = time_observer(obs.as_mut(), &input(shape)?, args.runs)?;
            cases.push(Case { observer: kind.name(), variant, seconds, searched_bytes: None });
        }
    }

    // The searches alone.
    let flat = input(&[n])?;
    let Ok(range) = QuantRange::resolve(QuantDType::QInt8, None, None) else { return Err("qint8 range".into()) };
    let amax = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scales: Vec<f32> = mse_candidates(1).iter().map(|&(_, f)| arith::scale(-amax * f, amax * f, &range)).collect();
    let mut failure = None;
    let seconds = median(args.runs, || {
        let t = Instant::now();
        if let Err(e) = stats::fake_quant_errors(&flat, None, &scales, scales.len(), &range, device) {
            failure = Some(e.to_string());
        }
        t.elapsed().as_secs_f64()
    });
    cases.push(Case {
        observer: "mse-search",
        variant: "per-tensor, 95 candidates (fake-quant errors alone)".into(),
        seconds,
        searched_bytes: Some(bytes(n)),
    });
    let hist = kl_histogram(&data, 2048);
    let seconds = median(args.runs.max(20), || {
        let t = Instant::now();
        if let Err(e) = stats::kl_threshold_index(&hist, QuantDType::QInt8.kl_levels(), device) {
            failure = Some(e.to_string());
        }
        t.elapsed().as_secs_f64()
    });
    cases.push(Case { observer: "kl-search", variant: "2048 bins, qint8".into(), seconds, searched_bytes: None });
    // A qint16 window widened to 65,536 bins (issue 14): half its candidates have more bins than
    // levels, 32,767 levels each (not on softgpu, whose interpreter would take hours for it).
    let warning = softgpu_warning(device);
    if warning.is_none() {
        let hist = kl_histogram(&data, 1 << 16);
        let seconds = median(args.runs.min(3), || {
            let t = Instant::now();
            if let Err(e) = stats::kl_threshold_index(&hist, QuantDType::QInt16.kl_levels(), device) {
                failure = Some(e.to_string());
            }
            t.elapsed().as_secs_f64()
        });
        cases.push(Case { observer: "kl-search", variant: "65536 bins, qint16".into(), seconds, searched_bytes: None });
    }
    // Per channel (SPEC §8): the searches of every channel's histogram, the channels in parallel
    // (on the CPU) or in three launches (CUDA; not on softgpu, whose interpreter would take
    // minutes for it).
    if warning.is_none() {
        let hists: Vec<Vec<u64>> = data[..rows * CHANNELS].chunks_exact(rows).map(|c| kl_histogram(c, 2048)).collect();
        let refs: Vec<&[u64]> = hists.iter().map(Vec::as_slice).collect();
        let seconds = median(args.runs, || {
            let t = Instant::now();
            if let Err(e) = stats::kl_threshold_indices(&refs, QuantDType::QInt8.kl_levels(), device) {
                failure = Some(e.to_string());
            }
            t.elapsed().as_secs_f64()
        });
        let variant = format!("per-channel ({CHANNELS} ch), 2048 bins, qint8");
        cases.push(Case { observer: "kl-search", variant, seconds, searched_bytes: None });
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    let device = device.to_string();

    match args.format {
        Format::Json => {
            let results: Vec<_> = cases
                .iter()
                .map(|c| {
                    let gbps = c.gbps(n);
                    json!({"observer": c.observer, "variant": c.variant, "seconds": c.seconds,
                           "gbps": gbps, "ratio": gbps / bandwidth_gbps})
                })
                .collect();
            let v = json!({"device": device, "elements": n, "bandwidth_gbps": bandwidth_gbps, "results": results});
            writeln!(out, "{v}")?;
            if let Some(warning) = &warning {
                eprintln!("{warning}");
            }
        }
        Format::Table => {
            writeln!(
                out,
                "qcalib bench on {device}: {n} f32 elements ({:.0} MB), {} threads, median of {} runs",
                bytes(n) / 1e6,
                rayon::current_num_threads(),
                args.runs
            )?;
            if let Some(warning) = &warning {
                writeln!(out, "{warning}")?;
            }
            if on_device.is_some() {
                writeln!(
                    out,
                    "device-to-device copy of the same buffer (bytes read + written): {bandwidth_gbps:.1} GB/s"
                )?;
            } else {
                writeln!(
                    out,
                    "memory read bandwidth (parallel read-and-sum of the same buffer): {bandwidth_gbps:.1} GB/s"
                )?;
            }
            writeln!(
                out,
                "{:<36} {:<52} {:>11} {:>12} {:>8} {:>7}",
                "observer", "variant", "time", "elements/s", "GB/s", "ratio"
            )?;
            for c in &cases {
                if c.observer == "kl-search" {
                    writeln!(out, "{:<36} {:<52} {:>9.3}ms", c.observer, c.variant, c.seconds * 1e3)?;
                    continue;
                }
                let gbps = c.gbps(n);
                writeln!(
                    out,
                    "{:<36} {:<52} {:>9.2}ms {:>12.3e} {:>8.2} {:>6.0}%",
                    c.observer,
                    c.variant,
                    c.seconds * 1e3,
                    n as f64 / c.seconds,
                    gbps,
                    100.0 * gbps / bandwidth_gbps
                )?;
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

fn time_observer(obs: &mut dyn Observer, x: &Input<'_>, runs: usize) -> Result<f64, String> {
    let mut failure = None;
    let seconds = median(runs, || {
        let t = Instant::now();
        if let Err(e) = obs.observe_input(x) {
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
