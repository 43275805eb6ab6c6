//! Inputs: host tensors as `ndarray` views of f32, f16 or bf16, of any shape and memory layout.
//!
//! Nothing here copies a tensor: f16 and bf16 are widened to f32 exactly, a few thousand values
//! at a time, inside the loops that read them.

use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, Axis, Dimension};

/// An element type a tensor can hold: f32, or f16 and bf16, which are widened exactly.
pub trait Element: Copy + Send + Sync + 'static {
    /// The element's name in messages (`f32`, `f16`, `bf16`).
    const NAME: &'static str;

    /// Widens `src` into `dst` (same length), exactly.
    fn widen(src: &[Self], dst: &mut [f32]);

    /// `src` itself when the element type is f32 (no widening needed).
    fn as_f32(src: &[Self]) -> Option<&[f32]>;

    /// One value, widened.
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline]
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        Some(src)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for f16 {
    const NAME: &'static str = "f16";
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        crate::engine::cpu::widen::f16_to_f32(src, dst);
    }
    #[inline]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Element for bf16 {
    const NAME: &'static str = "bf16";
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
    #[inline]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// A borrowed host tensor: an `ndarray` view of f32, f16 or bf16 of any shape, strides and
/// memory layout.
///
/// Build it with `From` from any array or view:
///
/// ```
/// use ndarray::{array, Array2};
/// use qcalib::TensorView;
/// let a: Array2<f32> = array![[1.0, -2.0], [3.0, 4.0]];
/// let t = TensorView::from(&a);
/// assert_eq!(t.shape(), &[2, 2]);
/// let t = TensorView::from(a.t()); // a transposed view: no copy
/// assert_eq!(t.len(), 4);
/// let h = a.mapv(half::f16::from_f32);
/// assert_eq!(TensorView::from(&h).dtype_name(), "f16");
/// ```
#[derive(Clone, Debug)]
pub enum TensorView<'a> {
    /// f32 elements.
    F32(ArrayViewD<'a, f32>),
    /// IEEE half-precision elements.
    F16(ArrayViewD<'a, f16>),
    /// bfloat16 elements.
    BF16(ArrayViewD<'a, bf16>),
}

macro_rules! tensor_from {
    ($t:ty, $variant:ident) => {
        impl<'a, D: Dimension> From<ndarray::ArrayView<'a, $t, D>> for TensorView<'a> {
            fn from(v: ndarray::ArrayView<'a, $t, D>) -> Self {
                TensorView::$variant(v.into_dyn())
            }
        }
        impl<'a, D: Dimension> From<&'a ndarray::Array<$t, D>> for TensorView<'a> {
            fn from(a: &'a ndarray::Array<$t, D>) -> Self {
                TensorView::$variant(a.view().into_dyn())
            }
        }
        impl<'a, 'b: 'a, D: Dimension> From<&'a ndarray::ArrayView<'b, $t, D>> for TensorView<'a> {
            fn from(a: &'a ndarray::ArrayView<'b, $t, D>) -> Self {
                TensorView::$variant(a.view().into_dyn())
            }
        }
        impl<'a> From<&'a [$t]> for TensorView<'a> {
            fn from(s: &'a [$t]) -> Self {
                TensorView::$variant(ndarray::ArrayView1::from(s).into_dyn())
            }
        }
        impl<'a> From<&'a Vec<$t>> for TensorView<'a> {
            fn from(s: &'a Vec<$t>) -> Self {
                TensorView::$variant(ndarray::ArrayView1::from(s.as_slice()).into_dyn())
            }
        }
    };
}
tensor_from!(f32, F32);
tensor_from!(f16, F16);
tensor_from!(bf16, BF16);

/// Runs `$body` with `$v` bound to the typed `ArrayViewD` of a [`TensorView`].
macro_rules! with_view {
    ($tensor:expr, $v:ident => $body:expr) => {
        match $tensor {
            $crate::tensor::TensorView::F32($v) => $body,
            $crate::tensor::TensorView::F16($v) => $body,
            $crate::tensor::TensorView::BF16($v) => $body,
        }
    };
}
pub(crate) use with_view;

impl TensorView<'_> {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        with_view!(self, v => v.shape())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_view!(self, v => v.len())
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
            TensorView::F32(_) => f32::NAME,
            TensorView::F16(_) => f16::NAME,
            TensorView::BF16(_) => bf16::NAME,
        }
    }
}

/// A host tensor that owns its values: f32, f16 or bf16 of any shape (a device tensor copied to
/// the host, or a tensor read from a file that could not be used in place).
///
/// ```
/// use qcalib::{OwnedTensor, TensorView};
/// let t = OwnedTensor::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 3])));
/// let v: TensorView<'_> = t.view();
/// assert_eq!((v.shape(), v.dtype_name()), (&[2, 3][..], "f32"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedTensor {
    /// f32 values.
    F32(ArrayD<f32>),
    /// f16 values.
    F16(ArrayD<f16>),
    /// bf16 values.
    BF16(ArrayD<bf16>),
}

impl OwnedTensor {
    /// A view for the observers.
    pub fn view(&self) -> TensorView<'_> {
        match self {
            OwnedTensor::F32(a) => a.into(),
            OwnedTensor::F16(a) => a.into(),
            OwnedTensor::BF16(a) => a.into(),
        }
    }
}

impl TensorView<'_> {
    /// A copy that owns its values (in the same memory order when the view is dense).
    pub fn to_owned(&self) -> OwnedTensor {
        match self {
            TensorView::F32(v) => OwnedTensor::F32(v.to_owned()),
            TensorView::F16(v) => OwnedTensor::F16(v.to_owned()),
            TensorView::BF16(v) => OwnedTensor::BF16(v.to_owned()),
        }
    }
}

/// How the reductions walk a host tensor: its channels (1 for per-tensor) and, when it is dense
/// in memory, a slice seen as `[outer, channels, inner]`.
pub(crate) enum HostLayout<'a, T> {
    /// Dense: channel `c`'s elements are `data[(o * channels + c) * inner + i]`.
    Dense { data: &'a [T], outer: usize, channels: usize, inner: usize },
    /// Anything else (gaps, broadcast strides, a reversed channel axis): walked through the view.
    Strided { view: ArrayViewD<'a, T>, axis: Option<usize> },
}

impl<'a, T> HostLayout<'a, T> {
    /// The layout of `view` for per-channel reductions along `axis` (`None`: per-tensor).
    pub(crate) fn new(view: &ArrayViewD<'a, T>, axis: Option<usize>) -> Self {
        let mut v = view.clone();
        // Reversing an axis other than the channel axis reorders elements within a channel only.
        for k in 0..v.ndim() {
            if v.strides()[k] < 0 && Some(k) != axis {
                v.invert_axis(Axis(k));
            }
        }
        let n = v.len();
        let Some(data) = v.to_slice_memory_order() else {
            return HostLayout::Strided { view: v, axis };
        };
        let Some(axis) = axis else {
            return HostLayout::Dense { data, outer: 1, channels: 1, inner: n };
        };
        let channels = v.shape()[axis];
        let stride = v.strides()[axis];
        if channels > 1 && stride < 0 {
            return HostLayout::Strided { view: v, axis: Some(axis) };
        }
        if channels <= 1 {
            return HostLayout::Dense { data, outer: 1, channels, inner: n };
        }
        // Dense with distinct strides on the axes longer than 1: the axes with larger strides are
        // outside the channel axis in memory, the smaller ones inside.
        let (mut outer, mut inner) = (1usize, 1usize);
        for (k, (&len, &s)) in v.shape().iter().zip(v.strides()).enumerate() {
            if k == axis || len <= 1 {
                continue;
            }
            if s > stride {
                outer *= len;
            } else {
                inner *= len;
            }
        }
        HostLayout::Dense { data, outer, channels, inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, ShapeBuilder, s};

    fn dense<T>(l: HostLayout<'_, T>) -> (usize, usize, usize) {
        match l {
            HostLayout::Dense { outer, channels, inner, .. } => (outer, channels, inner),
            HostLayout::Strided { .. } => panic!("expected a dense layout"),
        }
    }

    #[test]
    fn dense_layouts_of_every_axis_and_order() {
        let a = Array3::<f32>::zeros((2, 3, 4));
        let v = a.view().into_dyn();
        assert_eq!(dense(HostLayout::new(&v, None)), (1, 1, 24));
        assert_eq!(dense(HostLayout::new(&v, Some(0))), (1, 2, 12));
        assert_eq!(dense(HostLayout::new(&v, Some(1))), (2, 3, 4));
        assert_eq!(dense(HostLayout::new(&v, Some(2))), (6, 4, 1));
        let f = Array3::<f32>::zeros((2, 3, 4).f());
        let v = f.view().into_dyn();
        assert_eq!(dense(HostLayout::new(&v, Some(0))), (12, 2, 1));
        assert_eq!(dense(HostLayout::new(&v, Some(2))), (1, 4, 6));
    }

    #[test]
    fn gaps_and_reversed_channels_are_strided() {
        let a = Array3::<f32>::zeros((2, 3, 4));
        let v = a.slice(s![.., .., ..2]).into_dyn();
        assert!(matches!(HostLayout::new(&v, None), HostLayout::Strided { .. }));
        let v = a.slice(s![.., ..;-1, ..]).into_dyn();
        assert!(matches!(HostLayout::new(&v, Some(1)), HostLayout::Strided { .. }));
        assert_eq!(dense(HostLayout::new(&v, Some(0))), (1, 2, 12));
    }
}
