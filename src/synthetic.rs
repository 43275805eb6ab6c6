//! Synthetic tensors for demos, benchmarks and tests: reproducible from a seed, with the shapes
//! of real activations and weights. Nothing here is used by the observers.

use ndarray::{Array, ArrayD, IxDyn};

/// A small, fast, reproducible random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Laplace with scale `b` around 0.
    pub fn laplace(&mut self, b: f64) -> f64 {
        let u = self.uniform() - 0.5;
        -b * u.signum() * (1.0 - 2.0 * u.abs()).ln()
    }
}

/// The kinds of tensor [`generate`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Standard normal activations.
    Gaussian,
    /// Laplace (scale 0.5) activations with one value in 10⁴ an outlier 20–60× larger.
    LaplaceOutliers,
    /// GELU of a standard normal: one-sided with a small negative tail.
    Gelu,
    /// ReLU of a standard normal: half exact zeros.
    Relu,
    /// A weight matrix whose rows have standard deviations spread over two decades.
    ChannelWeights,
}

impl Distribution {
    /// Every distribution.
    pub const ALL: [Distribution; 5] = [
        Distribution::Gaussian,
        Distribution::LaplaceOutliers,
        Distribution::Gelu,
        Distribution::Relu,
        Distribution::ChannelWeights,
    ];

    /// A short name.
    pub const fn name(self) -> &'static str {
        match self {
            Distribution::Gaussian => "gaussian",
            Distribution::LaplaceOutliers => "laplace+outliers",
            Distribution::Gelu => "post-gelu",
            Distribution::Relu => "post-relu",
            Distribution::ChannelWeights => "weight[rows]",
        }
    }
}

/// A tensor of `shape` drawn from `dist` with `seed`. For [`Distribution::ChannelWeights`] the
/// channels are the first dimension. A shape whose f32 data would not fit in the address space (no such
/// tensor can exist) gives an empty tensor of shape `[0]`.
///
/// ```
/// use qcalib::synthetic::{generate, Distribution};
/// let x = generate(Distribution::Relu, &[4, 8], 7);
/// assert_eq!(x.shape(), &[4, 8]);
/// assert!(x.iter().all(|&v| v >= 0.0));
/// ```
pub fn generate(dist: Distribution, shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let Some(n) = n.filter(|&n| n <= isize::MAX as usize / size_of::<f32>()) else {
        return ArrayD::zeros(IxDyn(&[0]));
    };
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let per_row = (n / rows).max(1);
    let row_sigma: Vec<f64> = (0..rows).map(|r| 0.01 * 10f64.powf(2.0 * r as f64 / rows as f64)).collect();
    let data: Vec<f32> = (0..n)
        .map(|i| {
            let v = match dist {
                Distribution::Gaussian => rng.normal(),
                Distribution::LaplaceOutliers => {
                    let v = rng.laplace(0.5);
                    if rng.next_u64().is_multiple_of(10_000) { v.signum() * (20.0 + 40.0 * rng.uniform()) } else { v }
                }
                Distribution::Gelu => {
                    let z = rng.normal();
                    0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2))
                }
                Distribution::Relu => rng.normal().max(0.0),
                Distribution::ChannelWeights => rng.normal() * row_sigma[(i / per_row).min(rows - 1)],
            };
            v as f32
        })
        .collect();
    Array::from_shape_vec(IxDyn(shape), data).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[0])))
}

/// The error function (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t + 0.254_829_592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}
