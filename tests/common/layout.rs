//! The same logical tensor in other memory layouts: permuted axes (transposes), gaps and
//! reversed axes (slices with steps, negative steps), broadcast (zero) strides.

use ndarray::{ArrayD, ArrayViewD, IxDyn, Slice};
use proptest::prelude::*;

/// A memory layout for a tensor of some rank: the tensor is stored with its axes permuted by
/// `perm`, and every axis of that stored tensor is a slice with step `steps[k]` of a larger
/// buffer (a negative step stores it reversed; |step| > 1 leaves gaps).
#[derive(Clone, Debug)]
pub struct Layout {
    pub perm: Vec<usize>,
    pub steps: Vec<isize>,
}

impl Layout {
    /// The standard (C-order, dense) layout.
    pub fn standard(ndim: usize) -> Layout {
        Layout { perm: (0..ndim).collect(), steps: vec![1; ndim] }
    }
}

/// Any layout of a tensor of `ndim` dimensions.
pub fn layout(ndim: usize) -> impl Strategy<Value = Layout> {
    let steps = prop::collection::vec(prop::sample::select(vec![-3isize, -2, -1, 1, 1, 1, 2, 3]), ndim);
    (Just((0..ndim).collect::<Vec<_>>()).prop_shuffle(), steps).prop_map(|(perm, steps)| Layout { perm, steps })
}

/// Calls `f` with a view of the same logical values as `a`, stored in `layout`.
pub fn with_layout<T: Clone + Default, R>(a: &ArrayD<T>, layout: &Layout, f: impl FnOnce(ArrayViewD<'_, T>) -> R) -> R {
    let permuted = a.view().permuted_axes(IxDyn(&layout.perm));
    let step = |k: usize| layout.steps[k];
    let big_shape: Vec<usize> = permuted.shape().iter().enumerate().map(|(k, &d)| d * step(k).unsigned_abs()).collect();
    let mut big = ArrayD::from_elem(IxDyn(&big_shape), T::default());
    big.slice_each_axis_mut(|ax| Slice::new(0, None, step(ax.axis.index()))).assign(&permuted);
    let stored = big.slice_each_axis(|ax| Slice::new(0, None, step(ax.axis.index())));
    let mut inverse = vec![0; layout.perm.len()];
    for (k, &p) in layout.perm.iter().enumerate() {
        inverse[p] = k;
    }
    f(stored.permuted_axes(IxDyn(&inverse)))
}
