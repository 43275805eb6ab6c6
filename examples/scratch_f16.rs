use half::{f16, slice::HalfFloatSliceExt};
use std::time::Instant;
fn main() {
    let src: Vec<f16> = (0..4096).map(|i| f16::from_f32(i as f32 * 0.01)).collect();
    let mut dst = vec![0f32; 4096];
    let mut best = f64::MAX;
    for _ in 0..10000 {
        let t = Instant::now();
        src.convert_to_f32_slice(&mut dst);
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("half convert: {:.3} ns/elem", best * 1e9 / 4096.0);
    let mut best = f64::MAX;
    for _ in 0..10000 {
        let t = Instant::now();
        for (d, s) in dst.iter_mut().zip(&src) {
            *d = s.to_f32();
        }
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("scalar to_f32: {:.3} ns/elem", best * 1e9 / 4096.0);
}
