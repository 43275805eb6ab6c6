use qcalib::*;
use std::time::Instant;
fn main() {
    let n = 1 << 16;
    let mut rng = synthetic::Rng::new(1);
    let x: Vec<f32> = (0..n).map(|_| rng.laplace(0.5) as f32).collect();
    let t: Input = (&x).into();
    let scales: Vec<f32> = (0..95).map(|i| 0.05 * (1.0 - 0.01 * i as f32)).collect();
    for (name, r) in [
        ("qint8 (reciprocal)", QuantRange::resolve(QuantDType::QInt8, None, None).unwrap()),
        ("qint32 (division)", QuantRange::resolve(QuantDType::QInt32, None, None).unwrap()),
    ] {
        let mut best = f64::MAX;
        for _ in 0..30 {
            let t0 = Instant::now();
            std::hint::black_box(stats::fake_quant_errors(&t, None, &scales, 95, &r, Device::Cpu).unwrap());
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!("{name}: {:.3} ns per (element, candidate)", best * 1e9 / (n * 95) as f64);
    }
}
