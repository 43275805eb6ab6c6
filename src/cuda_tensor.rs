//! Device-resident input: a tensor that already lives in CUDA memory, as a cudarc buffer and a
//! shape.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, DeviceSlice};
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::tensor::Element;

/// A tensor in CUDA device memory: a cudarc [`CudaView`] (or [`CudaSlice`]) of `f32`, `f16` or
/// `bf16` values in row-major (C) order, and its shape. Nothing is copied to build it.
///
/// An observer on the CUDA engine reads it where it is: the kernels run on the stream the buffer
/// belongs to (the caller's stream, so they are ordered after the work that wrote the tensor),
/// the statistics stay on the device, and only the small results (extremes, error sums, a
/// histogram of at most a few thousand counts) come back. An observer on the CPU engine copies
/// the tensor to the host once per batch. The buffer must belong to the primary context of the
/// observer's GPU (`CudaContext::new(n)`, which is what cudarc and PyTorch use).
///
/// ```
/// use qcalib::cudarc::driver::CudaContext;
/// use qcalib::{CudaStatus, CudaTensorView, Device, MinMaxObserver, Observer, QuantConfig};
///
/// if !matches!(qcalib::cuda_status(), CudaStatus::Ready { .. }) {
///     return Ok(()); // this example needs a GPU
/// }
/// let ctx = CudaContext::new(0).map_err(|e| qcalib::Error::Device(e.to_string()))?;
/// let stream = ctx.default_stream();
/// let host: Vec<f32> = (0..24).map(|i| i as f32 - 10.0).collect();
/// let on_gpu = stream.clone_htod(&host).map_err(|e| qcalib::Error::Device(e.to_string()))?;
///
/// let mut obs = MinMaxObserver::new(QuantConfig::per_channel(1))?;
/// obs.set_device(Device::Cuda(0))?;
/// obs.observe(CudaTensorView::from_slice(&on_gpu, &[2, 3, 4])?)?;
/// assert_eq!(obs.max_val(), Some(&[5.0f32, 9.0, 13.0][..]));
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Debug)]
pub struct CudaTensorView<'a> {
    data: CudaData<'a>,
    shape: Vec<usize>,
}

/// The typed device view inside a [`CudaTensorView`] (public only to the crate: the module is
/// private).
#[derive(Debug)]
pub enum CudaData<'a> {
    #[allow(missing_docs)]
    F32(CudaView<'a, f32>),
    #[allow(missing_docs)]
    F16(CudaView<'a, f16>),
    #[allow(missing_docs)]
    BF16(CudaView<'a, bf16>),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type a [`CudaTensorView`] can hold: `f32`, `half::f16` or `half::bf16`.
pub trait CudaElement: Element + sealed::Sealed {
    #[doc(hidden)]
    fn wrap(view: CudaView<'_, Self>) -> CudaData<'_>;
}

impl CudaElement for f32 {
    fn wrap(view: CudaView<'_, Self>) -> CudaData<'_> {
        CudaData::F32(view)
    }
}

impl CudaElement for f16 {
    fn wrap(view: CudaView<'_, Self>) -> CudaData<'_> {
        CudaData::F16(view)
    }
}

impl CudaElement for bf16 {
    fn wrap(view: CudaView<'_, Self>) -> CudaData<'_> {
        CudaData::BF16(view)
    }
}

/// Runs `$body` with `$v` bound to the typed `CudaView` of a [`CudaData`].
macro_rules! with_cuda_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::cuda_tensor::CudaData::F32($v) => $body,
            $crate::cuda_tensor::CudaData::F16($v) => $body,
            $crate::cuda_tensor::CudaData::BF16($v) => $body,
        }
    };
}

impl<'a> CudaTensorView<'a> {
    /// The tensor of shape `shape` whose values, in row-major order, are `data`. An error when
    /// the shape does not hold exactly `data.len()` elements.
    pub fn new<T: CudaElement>(data: CudaView<'a, T>, shape: &[usize]) -> Result<Self> {
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(Error::Shape(format!(
                "shape {shape:?} does not hold the {} elements of the device buffer",
                data.len()
            )));
        }
        Ok(CudaTensorView { data: T::wrap(data), shape: shape.to_vec() })
    }

    /// The tensor of shape `shape` held by all of `data` (see [`CudaTensorView::new`]).
    pub fn from_slice<T: CudaElement>(data: &'a CudaSlice<T>, shape: &[usize]) -> Result<Self> {
        Self::new(data.as_view(), shape)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_cuda_data!(&self.data, v => v.len())
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f32`, `f16` or `bf16`.
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            CudaData::F32(_) => f32::NAME,
            CudaData::F16(_) => f16::NAME,
            CudaData::BF16(_) => bf16::NAME,
        }
    }

    /// The stream the buffer belongs to (the kernels that read it run there).
    pub fn stream(&self) -> &Arc<CudaStream> {
        with_cuda_data!(&self.data, v => v.stream())
    }

    /// The ordinal of the GPU that holds the buffer.
    pub fn ordinal(&self) -> usize {
        self.stream().context().ordinal()
    }

    /// The typed view.
    pub(crate) fn data(&self) -> &CudaData<'a> {
        &self.data
    }
}
