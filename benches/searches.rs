//! The searches alone: the KL threshold search on a histogram, and the MSE search (the
//! fake-quantization errors of 95 candidates over the tensor, per tensor and per channel).
//!
//!     cargo bench --bench searches

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use qcalib::search::candidates::mse_candidates;
use qcalib::synthetic::Rng;
use qcalib::{Device, QuantDType, QuantRange, arith, search, stats};

fn laplace(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.laplace(0.5) as f32).collect()
}

fn kl_search(c: &mut Criterion) {
    let x = laplace(1 << 22, 1);
    let mut group = c.benchmark_group("kl-search");
    for bins in [512usize, 2048, 8192] {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let hist = stats::abs_histogram(&(&x).into(), bins, amax, Device::Cpu).unwrap_or_default();
        for dtype in [QuantDType::QInt8, QuantDType::QInt16] {
            if dtype == QuantDType::QInt16 && bins > 2048 {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(dtype.name(), bins), &hist, |b, h| {
                b.iter(|| search::kl::threshold_index(h, dtype.kl_levels()))
            });
        }
    }
    group.finish();
}

fn mse_search(c: &mut Criterion) {
    let Ok(range) = QuantRange::resolve(QuantDType::QInt8, None, None) else { return };
    let mut group = c.benchmark_group("mse-search");
    group.sample_size(10);
    for n in [1usize << 16, 1 << 20, 1 << 24] {
        let x = laplace(n, 2);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scales: Vec<f32> =
            mse_candidates(1).iter().map(|&(_, f)| arith::scale(-amax * f, amax * f, &range)).collect();
        group.throughput(Throughput::Elements(n as u64));
        let t = ArrayD::from_shape_vec(IxDyn(&[n]), x).unwrap_or_default();
        group.bench_with_input(BenchmarkId::new("per-tensor 95 candidates", n), &t, |b, t| {
            b.iter(|| stats::fake_quant_errors(&t.into(), None, &scales, scales.len(), &range, Device::Cpu))
        });
    }
    group.finish();
}

criterion_group!(benches, kl_search, mse_search);
criterion_main!(benches);
