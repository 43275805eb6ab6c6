//! Tensors of more than 2^31 and 2^32 elements count right (no 32-bit counter wraps): broadcast
//! views, so that they take no memory. Each walks billions of elements, so they are ignored by
//! default; run them with
//!
//! ```sh
//! cargo test --release --test large -- --ignored
//! ```

use ndarray::Array1;
use qcalib::{Error, MinMaxObserver, Observer, PercentileConfig, PercentileObserver, QuantConfig};

/// `pattern` repeated `rows` times: a `[rows, pattern.len()]` view with a zero row stride.
fn repeated(pattern: &[f32], rows: usize) -> (Array1<f32>, [usize; 2]) {
    (Array1::from(pattern.to_vec()), [rows, pattern.len()])
}

#[test]
#[ignore = "walks 2^32 + 2 elements: run in release with --ignored"]
fn non_finite_values_past_2_32_are_counted_exactly() {
    // 2^31 + 1 rows of [NaN, 1]: 2^32 + 2 elements, of which 2^31 + 1 are NaN.
    let (base, shape) = repeated(&[f32::NAN, 1.0], (1 << 31) + 1);
    let x = base.broadcast(shape).unwrap();
    assert_eq!(x.len(), (1usize << 32) + 2);
    let mut obs = MinMaxObserver::new(QuantConfig::default()).unwrap();
    let err = obs.observe(x).unwrap_err();
    assert!(matches!(err, Error::NonFinite { count } if count == (1 << 31) + 1), "{err}");
    assert_eq!(obs.batches(), 0);
}

#[test]
#[ignore = "walks 2^32 + 2^28 elements twice: run in release with --ignored"]
fn a_histogram_bin_past_2_32_counts_exactly() {
    // 15 of every 16 values are 1.0: the last bin holds 15 * (2^28 + 2^24) > 2^32 values. Were
    // its count to wrap at 2^32, no bin would reach the 99.99th percentile and the clip would be
    // past the top of the histogram instead of the centre of its last bin.
    let mut pattern = [1.0f32; 16];
    pattern[3] = -0.25;
    let rows = (1 << 28) + (1 << 24);
    let (base, shape) = repeated(&pattern, rows);
    let x = base.broadcast(shape).unwrap();
    assert!(x.len() > 1 << 32);
    let bins = 2048;
    let mut obs = PercentileObserver::new(PercentileConfig { percentile: 99.99, bins, ..Default::default() }).unwrap();
    obs.observe(x).unwrap();
    let centre_of_last = (bins as f32 - 0.5) * (1.0 / bins as f32);
    assert_eq!(obs.max_val(), Some(&[centre_of_last][..]));
    assert_eq!(obs.min_val(), Some(&[-0.25f32][..]));
}

#[test]
#[ignore = "walks 2^31 + 8 elements: run in release with --ignored"]
fn min_and_max_past_2_31_elements() {
    let mut pattern = vec![0.5f32; 8];
    pattern[7] = -3.0;
    let (base, shape) = repeated(&pattern, (1 << 28) + 1);
    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(1)).unwrap();
    obs.observe(base.broadcast(shape).unwrap()).unwrap();
    assert_eq!(obs.min_val(), Some(&[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -3.0][..]));
}
