//! Shared by the integration tests: a plain reference implementation of SPEC, and helpers.
#![allow(dead_code)]

pub mod layout;
pub mod reference;

use qcalib::synthetic::Rng;

/// Random values of awkward magnitudes: mostly normal, some exact zeros, a few outliers.
pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let u = rng.next_u64() % 100;
            let v = rng.normal();
            (match u {
                0..=4 => 0.0,
                5 => v * 30.0,
                _ => v,
            }) as f32
        })
        .collect()
}
