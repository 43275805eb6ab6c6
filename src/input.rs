//! What an observer takes: a host tensor ([`TensorView`]) or a tensor already in CUDA memory
//! ([`CudaTensorView`]).

use crate::cuda_tensor::CudaTensorView;
use crate::tensor::TensorView;

/// A batch as an observer takes it: on the host or on a GPU.
///
/// Anything that converts into a [`TensorView`] (ndarray arrays and views of f32, f16 or bf16,
/// slices, vectors) converts into an `Input`, and so does a [`CudaTensorView`]:
///
/// ```
/// use ndarray::array;
/// use qcalib::Input;
/// let a = array![[1.0f32, -2.0], [3.0, 4.0]];
/// let x: Input<'_> = (&a).into();
/// assert_eq!((x.shape(), x.len(), x.is_on_device()), (&[2, 2][..], 4, false));
/// ```
///
/// Which engine reads it is the observer's choice ([`Device`](crate::Device)): a CUDA observer
/// uploads a host tensor once per batch (made contiguous on the host first when its layout is
/// not row-major); a CPU observer copies a device tensor to the host once per batch.
#[derive(Debug)]
pub enum Input<'a> {
    /// A host tensor.
    Host(TensorView<'a>),
    /// A tensor in CUDA device memory.
    Cuda(CudaTensorView<'a>),
}

impl<'a, T: Into<TensorView<'a>>> From<T> for Input<'a> {
    fn from(x: T) -> Self {
        Input::Host(x.into())
    }
}

impl<'a> From<CudaTensorView<'a>> for Input<'a> {
    fn from(x: CudaTensorView<'a>) -> Self {
        Input::Cuda(x)
    }
}

impl Input<'_> {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Input::Host(x) => x.shape(),
            Input::Cuda(x) => x.shape(),
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Input::Host(x) => x.len(),
            Input::Cuda(x) => x.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// `f32`, `f16` or `bf16`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Input::Host(x) => x.dtype_name(),
            Input::Cuda(x) => x.dtype_name(),
        }
    }

    /// Whether the tensor is in device memory.
    pub fn is_on_device(&self) -> bool {
        matches!(self, Input::Cuda(_))
    }
}
