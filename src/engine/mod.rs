//! Engines: where the heavy loops over a tensor run. An observer first [`Engine::load`]s a batch
//! (free on the CPU; one upload per batch on a GPU), then asks for up to three statistics of it,
//! per tensor or per channel, and does the small math on the results itself:
//!
//! - the extremes (min, max, count of non-finite values),
//! - the histogram of `|x|` (SPEC §5),
//! - the sums of squared fake-quantization errors of many candidate scales.

pub(crate) mod cpu;
mod device;

pub use device::Device;

use crate::error::{Error, Result};
use crate::tensor::TensorView;

/// Per-channel extremes of a tensor (one entry per channel; one in all for per-tensor).
#[derive(Clone, Debug, PartialEq)]
pub struct Extremes {
    /// Minimum per channel (NaN skipped).
    pub min: Vec<f32>,
    /// Maximum per channel (NaN skipped).
    pub max: Vec<f32>,
    /// How many values were NaN or infinite, over the whole tensor.
    pub non_finite: u64,
}

impl Extremes {
    /// An error when the tensor held NaN or infinity (SPEC §6).
    pub fn check_finite(&self) -> Result<()> {
        match self.non_finite {
            0 => Ok(()),
            count => Err(Error::NonFinite { count }),
        }
    }
}

/// A batch as an engine holds it while an observer works on it.
#[derive(Debug)]
pub(crate) enum Loaded<'a> {
    /// A host tensor (a view: the CPU engine reads the data where it is).
    Host(TensorView<'a>),
}

impl Loaded<'_> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            Loaded::Host(x) => x.len(),
        }
    }
}

/// The engine an observer runs its loops on.
#[derive(Clone, Debug, Default)]
pub(crate) enum Engine {
    /// Rayon and vectorised loops on the host.
    #[default]
    Cpu,
}

impl Engine {
    /// The engine for `device`.
    pub(crate) fn new(device: Device) -> Result<Engine> {
        match device {
            Device::Auto | Device::Cpu => Ok(Engine::Cpu),
            Device::Cuda(ordinal) => {
                Err(Error::Device(format!("cuda:{ordinal} was asked for, but this build of qcalib has no CUDA engine")))
            }
        }
    }

    /// The device this engine runs on, as the CLI prints it (`cpu`, `cuda:0`).
    pub(crate) fn device(&self) -> Device {
        match self {
            Engine::Cpu => Device::Cpu,
        }
    }

    /// Makes `x` ready for this engine's loops (once per batch).
    pub(crate) fn load<'a>(&self, x: &TensorView<'a>) -> Result<Loaded<'a>> {
        match self {
            Engine::Cpu => Ok(Loaded::Host(x.clone())),
        }
    }

    /// Per-channel min/max and the non-finite count (`axis = None`: per-tensor).
    pub(crate) fn extremes(&self, x: &Loaded<'_>, axis: Option<usize>) -> Result<Extremes> {
        match (self, x) {
            (Engine::Cpu, Loaded::Host(x)) => Ok(cpu::extremes(x, axis)),
        }
    }

    /// The histogram of `|x|`, `bins` bins on `[0, hi]`; `hi = 0` counts zeros in bin 0.
    pub(crate) fn abs_histogram(&self, x: &Loaded<'_>, bins: usize, hi: f32) -> Result<Vec<u64>> {
        match (self, x) {
            (Engine::Cpu, Loaded::Host(x)) => Ok(cpu::abs_histogram(x, bins, hi)),
        }
    }

    /// [`extremes`](Engine::extremes) (per tensor) and [`abs_histogram`](Engine::abs_histogram)
    /// from one pass over the data: for a histogram whose range is known before the batch (a KL
    /// window in progress), to be redone only when the batch turns out to exceed it.
    pub(crate) fn extremes_and_abs_histogram(
        &self,
        x: &Loaded<'_>,
        bins: usize,
        hi: f32,
    ) -> Result<(Extremes, Vec<u64>)> {
        match (self, x) {
            (Engine::Cpu, Loaded::Host(x)) => Ok(cpu::extremes_and_abs_histogram(x, bins, hi)),
        }
    }

    /// Sums of squared fake-quantization errors, `[k][channels]`, of the candidate scales
    /// `scales` (`[k][channels]`, every scale > 0).
    pub(crate) fn fake_quant_errors(
        &self,
        x: &Loaded<'_>,
        axis: Option<usize>,
        scales: &[f32],
        k: usize,
        qmin: f32,
        qmax: f32,
    ) -> Result<Vec<f64>> {
        match (self, x) {
            (Engine::Cpu, Loaded::Host(x)) => Ok(cpu::fake_quant_errors(x, axis, scales, k, qmin, qmax)),
        }
    }
}
