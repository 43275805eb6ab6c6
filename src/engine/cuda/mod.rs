//! The CUDA engine: the kernels of `kernels/*.cu` (PTX embedded by `build.rs`), launched
//! through cudarc on one GPU.
//!
//! - Availability is probed once per process ([`cuda_status`]); nothing here panics when there
//!   is no driver or no GPU.
//! - One engine per GPU ordinal, created on first use and shared by every observer on it.
//! - A host batch is uploaded once per batch ([`CudaEngine::load`]); a device batch is read where
//!   it is, on its own stream. Every pass then runs on the device and only small results come
//!   back.
//! - A driver failure is an [`Error::Device`]; a failure that leaves the context unusable (a
//!   kernel fault, a lost device) marks the engine as failed, and every later call says so.

pub(crate) mod batch;
mod context;
mod error;
mod extremes;
mod fake_quant;
mod histogram;
mod kl;
mod launch;
mod percentile;
mod probe;
mod ptx;
mod read_back;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

pub use probe::{CudaStatus, MIN_DRIVER_VERSION, cuda_status};
pub(crate) use read_back::read_back;

use self::batch::{DeviceBatch, DeviceBuf, DeviceData};
use self::context::Gpu;
use self::error::{GpuError, describe, is_sticky, message, to_error};
use crate::cuda_tensor::{CudaData, CudaTensorView};
use crate::engine::Extremes;
use crate::error::{Error, Result};
use crate::tensor::{OwnedTensor, TensorView};

/// The CUDA engine of one GPU.
pub(crate) struct CudaEngine {
    gpu: Gpu,
    /// Why the engine is unusable, once a failure left its context broken.
    failed: Mutex<Option<String>>,
}

impl fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaEngine(cuda:{})", self.gpu.ordinal)
    }
}

/// Every engine started (or the message of its failure to start), by ordinal.
type Engines = HashMap<usize, Result<Arc<CudaEngine>, String>>;

/// The engine of GPU `ordinal`, created on first use; an error when CUDA is not usable here,
/// the GPU does not exist, or the engine could not start on it.
pub(crate) fn engine(ordinal: usize) -> Result<Arc<CudaEngine>> {
    match cuda_status() {
        CudaStatus::Ready { devices, .. } if ordinal < devices => {}
        CudaStatus::Ready { devices, .. } => {
            return Err(Error::Device(format!(
                "cuda:{ordinal} was asked for, but this machine has {devices} GPU(s) (cuda:0 to cuda:{})",
                devices - 1
            )));
        }
        status => {
            return Err(Error::Device(format!("cuda:{ordinal} was asked for, but CUDA is not usable here: {status}")));
        }
    }
    static ENGINES: OnceLock<Mutex<Engines>> = OnceLock::new();
    let mut engines = ENGINES.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    engines.entry(ordinal).or_insert_with(|| start(ordinal)).clone().map_err(Error::Device)
}

/// The engine `Device::Auto` picks: GPU 0 when CUDA is usable and the engine starts there.
pub(crate) fn auto_engine() -> Option<Arc<CudaEngine>> {
    if matches!(cuda_status(), CudaStatus::Ready { .. }) { engine(0).ok() } else { None }
}

fn start(ordinal: usize) -> Result<Arc<CudaEngine>, String> {
    match catch_unwind(|| Gpu::new(ordinal)) {
        Ok(Ok(gpu)) => Ok(Arc::new(CudaEngine { gpu, failed: Mutex::new(None) })),
        Ok(Err(e)) => Err(message(ordinal, &format!("starting the CUDA engine (PTX from {})", ptx::PTX_ORIGIN), &e)),
        Err(_) => Err(format!("cuda:{ordinal}: starting the CUDA engine failed: cudarc panicked")),
    }
}

/// Copies a device tensor to the host (for the CPU engine), once.
pub(crate) fn copy_to_host(x: &CudaTensorView<'_>) -> Result<OwnedTensor> {
    fn copy<T: DeviceRepr + Default + Clone>(
        v: &cudarc::driver::CudaView<'_, T>,
        shape: &[usize],
    ) -> Result<ArrayD<T>> {
        let values = if v.is_empty() {
            Vec::new()
        } else {
            let stream = cudarc::driver::DeviceSlice::stream(v);
            catch_unwind(AssertUnwindSafe(|| read_back(stream, v)))
                .map_err(|_| Error::Device("copying a device tensor to the host: cudarc panicked".into()))?
                .map_err(|e| Error::Device(format!("copying a device tensor to the host failed: {}", describe(&e))))?
        };
        ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| Error::Shape(e.to_string()))
    }
    Ok(match x.data() {
        CudaData::F32(v) => OwnedTensor::F32(copy(v, x.shape())?),
        CudaData::F16(v) => OwnedTensor::F16(copy(v, x.shape())?),
        CudaData::BF16(v) => OwnedTensor::BF16(copy(v, x.shape())?),
    })
}

/// A host view as one row-major slice on the device (copied to row-major order on the host
/// first when its layout is anything else).
fn upload<T: DeviceRepr + Clone>(stream: &Arc<CudaStream>, v: &ArrayViewD<'_, T>) -> Result<CudaSlice<T>, GpuError> {
    let dense = v.as_standard_layout();
    let values =
        dense.as_slice().ok_or_else(|| GpuError::Internal("a standard-layout array is not contiguous".into()))?;
    Ok(stream.clone_htod(values)?)
}

impl CudaEngine {
    /// The GPU's ordinal.
    pub(crate) fn ordinal(&self) -> usize {
        self.gpu.ordinal
    }

    /// Runs `f`, turning its failures into [`Error`]s that name the GPU and `what` failed.
    fn run<T>(&self, what: &str, f: impl FnOnce(&Gpu) -> Result<T, GpuError>) -> Result<T> {
        let ordinal = self.gpu.ordinal;
        if let Some(why) = self.failed.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Err(Error::Device(format!("cuda:{ordinal} is unusable after an earlier failure: {why}")));
        }
        let result = catch_unwind(AssertUnwindSafe(|| f(&self.gpu)))
            .unwrap_or_else(|_| Err(GpuError::Internal("cudarc panicked".into())))
            .and_then(|v| {
                // Failures recorded while freeing buffers.
                self.gpu.ctx.check_err()?;
                Ok(v)
            });
        result.map_err(|e| {
            if let GpuError::Driver(d) = &e
                && is_sticky(d)
            {
                *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(message(ordinal, what, &e));
            }
            to_error(ordinal, what, e)
        })
    }

    /// A batch ready for the kernels: a host tensor uploaded (once), a device tensor borrowed.
    /// `None` for an empty tensor (the caller keeps it on the host: there is nothing to do).
    pub(crate) fn load<'a>(&self, x: &crate::input::Input<'a>) -> Result<Option<DeviceBatch<'a>>> {
        use crate::input::Input;
        if x.is_empty() {
            return Ok(None);
        }
        match x {
            Input::Host(t) => self
                .run("uploading a batch", |gpu| {
                    let data = match t {
                        TensorView::F32(v) => DeviceData::F32(DeviceBuf::Owned(upload(&gpu.stream, v)?)),
                        TensorView::F16(v) => DeviceData::F16(DeviceBuf::Owned(upload(&gpu.stream, v)?)),
                        TensorView::BF16(v) => DeviceData::BF16(DeviceBuf::Owned(upload(&gpu.stream, v)?)),
                    };
                    Ok(DeviceBatch { data, shape: t.shape().to_vec() })
                })
                .map(Some),
            Input::Cuda(t) => {
                let ordinal = self.gpu.ordinal;
                let ctx = t.stream().context();
                if ctx.cu_ctx() != self.gpu.ctx.cu_ctx() {
                    return Err(Error::Device(if t.ordinal() != ordinal {
                        format!(
                            "the tensor is on cuda:{} but the observer runs on cuda:{ordinal} (move it with set_device)",
                            t.ordinal()
                        )
                    } else {
                        format!("the tensor on cuda:{ordinal} belongs to another CUDA context than the primary one")
                    }));
                }
                let missing = || Error::Device(format!("cuda:{ordinal}: a device view could not be re-borrowed"));
                let data = match t.data() {
                    CudaData::F32(v) => DeviceData::F32(DeviceBuf::Borrowed(v.try_slice(..).ok_or_else(missing)?)),
                    CudaData::F16(v) => DeviceData::F16(DeviceBuf::Borrowed(v.try_slice(..).ok_or_else(missing)?)),
                    CudaData::BF16(v) => DeviceData::BF16(DeviceBuf::Borrowed(v.try_slice(..).ok_or_else(missing)?)),
                };
                Ok(Some(DeviceBatch { data, shape: t.shape().to_vec() }))
            }
        }
    }

    /// Per-channel min/max and the non-finite count (`axis = None`: per-tensor).
    pub(crate) fn extremes(&self, x: &DeviceBatch<'_>, axis: Option<usize>) -> Result<Extremes> {
        self.run("the min/max kernel", |gpu| extremes::extremes(gpu, x, x.layout(axis)))
    }

    /// The histogram of `|x|`, `bins` bins on `[0, hi]`.
    pub(crate) fn abs_histogram(&self, x: &DeviceBatch<'_>, bins: usize, hi: f32) -> Result<Vec<u64>> {
        self.run("the histogram kernel", |gpu| {
            let hist = histogram::abs_histogram_on_device(gpu, x, bins, hi)?;
            Ok(read_back(x.stream(), &hist)?)
        })
    }

    /// The extremes (per tensor) and the histogram of `|x|` on `[0, hi]`: one kernel over the
    /// data when the bins fit in shared memory and `hi > 0`, else the two kernels.
    pub(crate) fn extremes_and_abs_histogram(
        &self,
        x: &DeviceBatch<'_>,
        bins: usize,
        hi: f32,
    ) -> Result<(Extremes, Vec<u64>)> {
        let fused = self.run("the histogram kernel", |gpu| histogram::extremes_and_abs_histogram(gpu, x, bins, hi))?;
        match fused {
            Some(both) => Ok(both),
            None => Ok((self.extremes(x, None)?, self.abs_histogram(x, bins, hi)?)),
        }
    }

    /// Histograms of `|x|` per channel along `axis` (`bins[c]` bins on `[0, hi[c]]`, every
    /// channel's counts in turn) added into `out` (`out[i] += count[i]`), and with
    /// `want_extremes` the per-channel extremes from the same pass. On an error, `out` may hold
    /// part of the counts.
    pub(crate) fn add_abs_histograms(
        &self,
        x: &DeviceBatch<'_>,
        axis: usize,
        bins: &[usize],
        hi: &[f32],
        want_extremes: bool,
        out: &mut [u64],
    ) -> Result<Option<Extremes>> {
        self.run("the per-channel histogram kernel", |gpu| {
            histogram::add_abs_histograms(gpu, x, x.layout(Some(axis)), bins, hi, want_extremes, out)
        })
    }

    /// The first bins of the histogram of `|x|` whose cumulative counts reach `targets`.
    pub(crate) fn percentile_bins(
        &self,
        x: &DeviceBatch<'_>,
        bins: usize,
        hi: f32,
        targets: &[f32],
    ) -> Result<Vec<usize>> {
        self.run("the percentile kernels", |gpu| percentile::percentile_bins(gpu, x, bins, hi, targets))
    }

    /// For each channel `c` along `axis` and each target, the first bin of the channel's histogram
    /// of `|x|` (`bins` bins on `[0, hi[c]]`) whose cumulative count reaches it:
    /// `[channel][target]`.
    pub(crate) fn percentile_bins_per_channel(
        &self,
        x: &DeviceBatch<'_>,
        axis: usize,
        bins: usize,
        hi: &[f32],
        targets: &[f32],
    ) -> Result<Vec<usize>> {
        self.run("the per-channel percentile kernels", |gpu| {
            percentile::percentile_bins_per_channel(gpu, x, x.layout(Some(axis)), bins, hi, targets)
        })
    }

    /// Sums of squared fake-quantization errors, `[k][channels]`.
    pub(crate) fn fake_quant_errors(
        &self,
        x: &DeviceBatch<'_>,
        axis: Option<usize>,
        scales: &[f32],
        k: usize,
        qmin: f32,
        qmax: f32,
    ) -> Result<Vec<f64>> {
        self.run("the fake-quantization kernels", |gpu| {
            fake_quant::fake_quant_errors(gpu, x, x.layout(axis), scales, k, qmin, qmax)
        })
    }

    /// The KL threshold index of a host histogram (see [`crate::search::kl::threshold_index`]).
    pub(crate) fn kl_threshold_index(&self, hist: &[u64], nq: u64) -> Result<Option<usize>> {
        self.run("the KL search kernels", |gpu| kl::threshold_index(gpu, hist, nq))
    }

    /// The KL threshold index of each histogram of `hists` (one per channel), searched together
    /// (see [`crate::search::kl::threshold_indices`]).
    pub(crate) fn kl_threshold_indices(&self, hists: &[&[u64]], nq: u64) -> Result<Vec<Option<usize>>> {
        self.run("the KL search kernels", |gpu| kl::threshold_indices(gpu, hists, nq))
    }
}
