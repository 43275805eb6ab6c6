//! Every observer's `observe` on each engine, per-tensor and per-channel, f32 and f16, from 64K
//! to 64M elements. `QCALIB_BENCH_SIZES=65536,1048576` picks sizes; `QCALIB_BENCH_DEVICES=cpu,cuda`
//! picks engines (default: cpu, plus cuda when usable).
//!
//!     cargo bench --bench observers -- 'percentile'

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use ndarray::{ArrayD, IxDyn};
use qcalib::synthetic::Rng;
use qcalib::{Device, ObserverKind, ObserverSpec, QScheme, TensorView};

const CHANNELS: usize = 1024;

fn sizes() -> Vec<usize> {
    std::env::var("QCALIB_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1 << 16, 1 << 20, 1 << 24, 1 << 26])
}

fn devices() -> Vec<Device> {
    let wanted = std::env::var("QCALIB_BENCH_DEVICES").unwrap_or_else(|_| "cpu,auto".into());
    let mut out: Vec<Device> = Vec::new();
    for d in wanted.split(',').filter_map(|d| d.trim().parse::<Device>().ok()) {
        // `auto` stands for the GPU when there is one: skip it when it would be the CPU again.
        let resolved = match d {
            Device::Auto => {
                match ObserverSpec::new(ObserverKind::MinMax).build().and_then(|mut o| o.set_device(d).map(|_| o)) {
                    Ok(o) if o.device() != Device::Cpu => o.device(),
                    _ => continue,
                }
            }
            d => d,
        };
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    }
    out
}

/// Laplace activations with rare outliers.
fn data(n: usize) -> Vec<f32> {
    let mut rng = Rng::new(7);
    (0..n)
        .map(|_| {
            let x = rng.laplace(0.5);
            (if rng.next_u64().is_multiple_of(100_000) { x * 40.0 } else { x }) as f32
        })
        .collect()
}

fn spec(kind: ObserverKind, axis: Option<isize>) -> ObserverSpec {
    let mut quant = kind.default_config();
    if let Some(a) = axis {
        quant.qscheme = QScheme::PerChannelSymmetric;
        quant.ch_axis = a;
    }
    ObserverSpec {
        kind,
        quant,
        bins: matches!(kind, ObserverKind::Kl | ObserverKind::Percentile).then_some(2048),
        percentile: None,
        update_interval: (kind == ObserverKind::Kl).then_some(usize::MAX),
        stride: None,
        sync_histograms: false,
    }
}

fn observers(c: &mut Criterion) {
    for n in sizes() {
        let x32 = data(n);
        let x16: Vec<f16> = x32.iter().map(|&v| f16::from_f32(v)).collect();
        let rows = n / CHANNELS;
        let flat32 = ArrayD::from_shape_vec(IxDyn(&[n]), x32.clone()).unwrap_or_default();
        let flat16 = ArrayD::from_shape_vec(IxDyn(&[n]), x16.clone()).unwrap_or_default();
        let wide =
            ArrayD::from_shape_vec(IxDyn(&[CHANNELS, rows]), x32[..rows * CHANNELS].to_vec()).unwrap_or_default();
        let tall =
            ArrayD::from_shape_vec(IxDyn(&[rows, CHANNELS]), x32[..rows * CHANNELS].to_vec()).unwrap_or_default();
        for device in devices() {
            for kind in ObserverKind::ALL {
                let mut cases: Vec<(String, TensorView<'_>, Option<isize>)> = Vec::new();
                if kind != ObserverKind::MovingAveragePerChannelMinMax {
                    cases.push(("per-tensor f32".into(), (&flat32).into(), None));
                    cases.push(("per-tensor f16".into(), (&flat16).into(), None));
                }
                if matches!(
                    kind,
                    ObserverKind::MinMax | ObserverKind::MovingAveragePerChannelMinMax | ObserverKind::Mse
                ) && rows > 0
                {
                    cases.push(("per-channel axis 0 f32".into(), (&wide).into(), Some(0)));
                    cases.push(("per-channel last axis f32".into(), (&tall).into(), Some(-1)));
                }
                let mut group = c.benchmark_group(format!("{kind}/{device}"));
                group.throughput(Throughput::Elements(n as u64));
                if n >= 1 << 22 {
                    group.sample_size(10);
                }
                for (variant, x, axis) in cases {
                    let Ok(mut obs) = spec(kind, axis).build() else { continue };
                    if obs.set_device(device).is_err() {
                        continue;
                    }
                    group.bench_with_input(BenchmarkId::new(variant, n), &x, |b, x| {
                        b.iter(|| obs.observe_tensor(x).unwrap_or_default())
                    });
                }
                group.finish();
            }
        }
    }
}

criterion_group!(benches, observers);
criterion_main!(benches);
