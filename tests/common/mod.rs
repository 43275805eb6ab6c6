//! Shared by the integration tests: a plain reference implementation of SPEC, and helpers.
#![allow(dead_code)]

pub mod files;
pub mod layout;
pub mod reference;

use std::path::PathBuf;

use qcalib::synthetic::Rng;

#[allow(unused_imports)] // not every test uses every helper
pub use files::{f32_bytes, npy_bytes, npy_header, npy_with_header, scratch, shape_text, write_npy_f32};

/// The repository: `QCALIB_REPO` when set (test executables run away from the tree they were
/// built in, see `scripts/gpu-run.sh`), else the crate's directory.
pub fn repo_root() -> PathBuf {
    std::env::var_os("QCALIB_REPO").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The golden fixtures, `tests/fixtures/golden`.
pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/golden")
}

/// The `qcalib` executable: `QCALIB_BIN` when set, else the one cargo built for the tests.
pub fn qcalib_bin() -> PathBuf {
    let built = option_env!("CARGO_BIN_EXE_qcalib").unwrap_or("qcalib");
    std::env::var_os("QCALIB_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(built))
}

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
