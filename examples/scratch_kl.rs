use std::time::Instant;
fn main() {
    let mut rng = qcalib::synthetic::Rng::new(3);
    let n = 1 << 22;
    let x: Vec<f32> = (0..n).map(|_| rng.laplace(0.5) as f32).collect();
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut h = vec![0u64; 2048];
    for &v in &x {
        h[(((v.abs() * 2048.0) / amax) as usize).min(2047)] += 1;
    }
    for nq in [128u64, 32768] {
        let mut best = f64::MAX;
        for _ in 0..50 {
            let t = Instant::now();
            std::hint::black_box(qcalib::search::kl::threshold_index(&h, nq));
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("nq {nq}: {:.3} ms", best * 1e3);
    }
}
