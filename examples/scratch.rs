use qcalib::*;
use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1 << 18);
    let reps: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(200);
    let mut rng = synthetic::Rng::new(1);
    let x: Vec<f32> = (0..n).map(|_| rng.laplace(0.5) as f32).collect();
    let bench = |name: &str, f: &mut dyn FnMut()| {
        f();
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name:<12} {:8.3} ns/elem  {:6.2} GB/s", best * 1e9 / n as f64, (4 * n) as f64 / best / 1e9);
    };
    let mut mm = MinMaxObserver::new(QuantConfig::default()).unwrap();
    bench("minmax", &mut || mm.observe(&x).unwrap());
    let mut p = PercentileObserver::new(PercentileConfig::default()).unwrap();
    bench("percentile", &mut || p.observe(&x).unwrap());
    let mut k = KlObserver::new(KlConfig { bins: 2048, update_interval: usize::MAX, ..Default::default() }).unwrap();
    bench("kl-collect", &mut || k.observe(&x).unwrap());
    let mut m = MixObserver::new(QuantConfig::default()).unwrap();
    bench("mix", &mut || m.observe(&x).unwrap());
    let mut e = MseObserver::new(MseConfig::default()).unwrap();
    bench("mse", &mut || e.observe(&x).unwrap());
}
