//! Engines: where the heavy loops over a tensor run. An observer first [`Engine::load`]s a batch
//! (free on the CPU; one upload per batch on a GPU, none for a tensor already on the GPU), then
//! asks for up to three statistics of it, per tensor or per channel, and does the small math on
//! the results itself:
//!
//! - the extremes (min, max, count of non-finite values),
//! - the histogram of `|x|` (SPEC §5), or only the bins where its cumulative count reaches
//!   given targets (percentiles),
//! - the sums of squared fake-quantization errors of many candidate scales;
//!
//! and the KL threshold search on a histogram. The CPU engine is the reference: the CUDA engine
//! gives the same extremes and histograms, and error sums equal to rounding.

pub(crate) mod cpu;
pub(crate) mod cuda;
mod device;
mod lazy;

use std::sync::Arc;

pub use device::Device;
pub(crate) use lazy::LazyEngine;

use crate::error::{Error, Result};
use crate::input::Input;
use crate::search;
use crate::tensor::{OwnedTensor, TensorView};

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
    /// The largest `|x|` of channel `c`: `max(-min, max)` (the histogram range of SPEC §4).
    pub fn abs_max(&self, c: usize) -> f32 {
        let (lo, hi) = (self.min[c], self.max[c]);
        if -lo > hi { -lo } else { hi }
    }

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
    /// A host tensor (a view: the CPU engine reads the data where it is). Also an empty tensor
    /// on any engine: there is nothing to upload.
    Host(TensorView<'a>),
    /// A device tensor copied to the host for the CPU engine.
    HostCopy(OwnedTensor),
    /// A batch on a GPU, for the CUDA engine.
    Cuda(cuda::batch::DeviceBatch<'a>),
}

impl Loaded<'_> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            Loaded::Host(x) => x.len(),
            Loaded::HostCopy(x) => x.view().len(),
            Loaded::Cuda(x) => x.len(),
        }
    }
}

/// The engine an observer runs its loops on.
#[derive(Clone, Debug, Default)]
pub(crate) enum Engine {
    /// Rayon and vectorised loops on the host.
    #[default]
    Cpu,
    /// CUDA kernels on one GPU.
    Cuda(Arc<cuda::CudaEngine>),
}

/// A batch loaded for one engine given to another (a bug in qcalib, not in the input).
fn mismatch() -> Error {
    Error::Device("internal error in qcalib: a batch loaded for one engine was given to another".into())
}

impl Engine {
    /// The engine for `device`: `Auto` is CUDA on GPU 0 when it is usable, else the CPU (never an
    /// error); `Cuda(n)` is an error when GPU `n` is not usable.
    pub(crate) fn new(device: Device) -> Result<Engine> {
        match device {
            Device::Cpu => Ok(Engine::Cpu),
            Device::Auto => Ok(cuda::auto_engine().map_or(Engine::Cpu, Engine::Cuda)),
            Device::Cuda(ordinal) => cuda::engine(ordinal).map(Engine::Cuda),
        }
    }

    /// The device this engine runs on, as the CLI prints it (`cpu`, `cuda:0`).
    pub(crate) fn device(&self) -> Device {
        match self {
            Engine::Cpu => Device::Cpu,
            Engine::Cuda(g) => Device::Cuda(g.ordinal()),
        }
    }

    /// Makes `x` ready for this engine's loops (once per batch): nothing to do for a host tensor
    /// on the CPU, a copy to the host for a device tensor on the CPU, an upload for a host tensor
    /// on a GPU, nothing for a device tensor on its GPU.
    pub(crate) fn load<'a>(&self, x: &Input<'a>) -> Result<Loaded<'a>> {
        match (self, x) {
            (Engine::Cpu, Input::Host(t)) => Ok(Loaded::Host(t.clone())),
            (Engine::Cpu, Input::Cuda(t)) => Ok(Loaded::HostCopy(cuda::copy_to_host(t)?)),
            (Engine::Cuda(g), x) => match (g.load(x)?, x) {
                (Some(batch), _) => Ok(Loaded::Cuda(batch)),
                (None, Input::Host(t)) => Ok(Loaded::Host(t.clone())),
                (None, Input::Cuda(t)) => Ok(Loaded::HostCopy(cuda::copy_to_host(t)?)),
            },
        }
    }

    /// Per-channel min/max and the non-finite count (`axis = None`: per-tensor).
    pub(crate) fn extremes(&self, x: &Loaded<'_>, axis: Option<usize>) -> Result<Extremes> {
        match (self, x) {
            (_, Loaded::Host(x)) => Ok(cpu::extremes(x, axis)),
            (_, Loaded::HostCopy(x)) => Ok(cpu::extremes(&x.view(), axis)),
            (Engine::Cuda(g), Loaded::Cuda(x)) => g.extremes(x, axis),
            (Engine::Cpu, Loaded::Cuda(_)) => Err(mismatch()),
        }
    }

    /// The histogram of `|x|`, `bins` bins on `[0, hi]`; `hi = 0` counts zeros in bin 0.
    pub(crate) fn abs_histogram(&self, x: &Loaded<'_>, bins: usize, hi: f32) -> Result<Vec<u64>> {
        match (self, x) {
            (_, Loaded::Host(x)) => Ok(cpu::abs_histogram(x, bins, hi)),
            (_, Loaded::HostCopy(x)) => Ok(cpu::abs_histogram(&x.view(), bins, hi)),
            (Engine::Cuda(g), Loaded::Cuda(x)) => g.abs_histogram(x, bins, hi),
            (Engine::Cpu, Loaded::Cuda(_)) => Err(mismatch()),
        }
    }

    /// The extremes of `x` (per tensor, or per channel along `axis`), checked finite (SPEC §6),
    /// and for each target count the first bin of the histogram of `|x|` (`bins` bins on
    /// `[0, max |x|]`, per channel: the channel's values on the channel's range) whose cumulative
    /// count is `>= target` (`bins` when none is): `[channel][target]`; see
    /// [`search::percentile::first_bin_reaching`]. The CPU finds both in one pass over the data
    /// when it can (see `cpu::select`); a GPU runs the extremes kernel, then the percentile
    /// kernels on the histograms it keeps (one per channel, or one).
    pub(crate) fn extremes_and_percentile_bins(
        &self,
        x: &Loaded<'_>,
        axis: Option<usize>,
        bins: usize,
        targets: &[f32],
    ) -> Result<(Extremes, Vec<usize>)> {
        let host = |x: &TensorView<'_>| match axis {
            None => cpu::extremes_and_percentile_bins(x, bins, targets),
            Some(axis) => cpu::extremes_and_percentile_bins_per_channel(x, axis, bins, targets),
        };
        let (e, found) = match (self, x) {
            (_, Loaded::Host(x)) => host(x),
            (_, Loaded::HostCopy(x)) => host(&x.view()),
            (Engine::Cuda(g), Loaded::Cuda(x)) => {
                let e = g.extremes(x, axis)?;
                e.check_finite()?;
                let found = match axis {
                    None => g.percentile_bins(x, bins, e.abs_max(0), targets)?,
                    Some(axis) => {
                        let hi: Vec<f32> = (0..e.min.len()).map(|c| e.abs_max(c)).collect();
                        g.percentile_bins_per_channel(x, axis, bins, &hi, targets)?
                    }
                };
                (e, found)
            }
            (Engine::Cpu, Loaded::Cuda(_)) => return Err(mismatch()),
        };
        e.check_finite()?;
        Ok((e, found))
    }

    /// Histograms of `|x|` per channel along `axis`: channel `c` gets `bins[c]` bins on
    /// `[0, hi[c]]` (none when `bins[c]` is 0; `hi[c] = 0` counts its zeros in bin 0); the counts
    /// of every channel in turn. With `extremes`, also the per-channel extremes, from the same
    /// pass over the data.
    pub(crate) fn abs_histograms(
        &self,
        x: &Loaded<'_>,
        axis: usize,
        bins: &[usize],
        hi: &[f32],
        extremes: bool,
    ) -> Result<(Option<Extremes>, Vec<u64>)> {
        let mut counts = vec![0; bins.iter().sum()];
        let e = self.add_abs_histograms(x, axis, bins, hi, extremes, &mut counts)?;
        Ok((e, counts))
    }

    /// [`abs_histograms`](Engine::abs_histograms) added into `out` (which holds
    /// `bins.iter().sum()` counters, channel after channel): for an observer that keeps the
    /// buffer from batch to batch. The CPU adds each channel's counts there as it finishes with
    /// them (no per-batch vector of all the counts to allocate, fault in and copy); a GPU reads
    /// its counts back through a page-locked buffer it keeps and adds them. On an error, `out`
    /// may hold part of the counts (the observers drop it then).
    pub(crate) fn add_abs_histograms(
        &self,
        x: &Loaded<'_>,
        axis: usize,
        bins: &[usize],
        hi: &[f32],
        extremes: bool,
        out: &mut [u64],
    ) -> Result<Option<Extremes>> {
        if out.len() != bins.iter().sum::<usize>() {
            return Err(Error::Device(format!(
                "internal error in qcalib: {} counters given for histograms of {} bins",
                out.len(),
                bins.iter().sum::<usize>()
            )));
        }
        match (self, x) {
            (_, Loaded::Host(x)) => Ok(cpu::add_abs_histograms(x, axis, bins, hi, extremes, out)),
            (_, Loaded::HostCopy(x)) => Ok(cpu::add_abs_histograms(&x.view(), axis, bins, hi, extremes, out)),
            (Engine::Cuda(g), Loaded::Cuda(x)) => g.add_abs_histograms(x, axis, bins, hi, extremes, out),
            (Engine::Cpu, Loaded::Cuda(_)) => Err(mismatch()),
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
            (_, Loaded::Host(x)) => Ok(cpu::extremes_and_abs_histogram(x, bins, hi)),
            (_, Loaded::HostCopy(x)) => Ok(cpu::extremes_and_abs_histogram(&x.view(), bins, hi)),
            (Engine::Cuda(g), Loaded::Cuda(x)) => g.extremes_and_abs_histogram(x, bins, hi),
            (Engine::Cpu, Loaded::Cuda(_)) => Err(mismatch()),
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
            (_, Loaded::Host(x)) => Ok(cpu::fake_quant_errors(x, axis, scales, k, qmin, qmax)),
            (_, Loaded::HostCopy(x)) => Ok(cpu::fake_quant_errors(&x.view(), axis, scales, k, qmin, qmax)),
            (Engine::Cuda(g), Loaded::Cuda(x)) => g.fake_quant_errors(x, axis, scales, k, qmin, qmax),
            (Engine::Cpu, Loaded::Cuda(_)) => Err(mismatch()),
        }
    }

    /// The KL threshold index of `hist` with `nq` quantized levels (SPEC §4); see
    /// [`search::kl::threshold_index`].
    pub(crate) fn kl_threshold_index(&self, hist: &[u64], nq: u64) -> Result<Option<usize>> {
        match self {
            Engine::Cpu => Ok(search::kl::threshold_index(hist, nq)),
            Engine::Cuda(g) => g.kl_threshold_index(hist, nq),
        }
    }

    /// The KL threshold index of each of the per-channel histograms `hists` with `nq` quantized
    /// levels, the channels in parallel; see [`search::kl::threshold_indices`].
    pub(crate) fn kl_threshold_indices(&self, hists: &[&[u64]], nq: u64) -> Result<Vec<Option<usize>>> {
        match self {
            Engine::Cpu => Ok(search::kl::threshold_indices(hists, nq)),
            Engine::Cuda(g) => g.kl_threshold_indices(hists, nq),
        }
    }
}
