//! A batch on the device, as the CUDA engine's kernels read it: a row-major buffer (uploaded
//! from the host by the engine, or the caller's own device buffer) and its shape.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, DeviceSlice};
use half::{bf16, f16};

/// A buffer the batch owns (an upload) or borrows (the caller's device tensor).
#[derive(Debug)]
pub(crate) enum DeviceBuf<'a, T> {
    Owned(CudaSlice<T>),
    Borrowed(CudaView<'a, T>),
}

impl<T> DeviceBuf<'_, T> {
    /// A view of the whole buffer.
    pub(crate) fn view(&self) -> Option<CudaView<'_, T>> {
        match self {
            DeviceBuf::Owned(s) => Some(s.as_view()),
            DeviceBuf::Borrowed(v) => v.try_slice(..),
        }
    }

    /// The stream the buffer belongs to: the engine's for an upload, the caller's otherwise.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        match self {
            DeviceBuf::Owned(s) => s.stream(),
            DeviceBuf::Borrowed(v) => v.stream(),
        }
    }
}

/// The element type and buffer of a batch.
#[derive(Debug)]
pub(crate) enum DeviceData<'a> {
    F32(DeviceBuf<'a, f32>),
    F16(DeviceBuf<'a, f16>),
    BF16(DeviceBuf<'a, bf16>),
}

/// Runs `$body` with `$buf` bound to the typed [`DeviceBuf`] of a [`DeviceData`] and `$dtype`
/// to the element type's index into the kernels' name tables (f32, f16, bf16).
macro_rules! with_device_buf {
    ($data:expr, $buf:ident, $dtype:ident => $body:expr) => {
        match $data {
            $crate::engine::cuda::batch::DeviceData::F32($buf) => {
                let $dtype = 0usize;
                $body
            }
            $crate::engine::cuda::batch::DeviceData::F16($buf) => {
                let $dtype = 1usize;
                $body
            }
            $crate::engine::cuda::batch::DeviceData::BF16($buf) => {
                let $dtype = 2usize;
                $body
            }
        }
    };
}
pub(crate) use with_device_buf;

/// A non-empty tensor on the device, row-major.
#[derive(Debug)]
pub(crate) struct DeviceBatch<'a> {
    pub data: DeviceData<'a>,
    pub shape: Vec<usize>,
}

/// A dense tensor seen as `[outer, channels, inner]` for a channel axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelLayout {
    pub outer: u64,
    pub channels: u64,
    pub inner: u64,
}

impl DeviceBatch<'_> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The stream the kernels on this batch run on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        with_device_buf!(&self.data, b, _d => b.stream())
    }

    /// The layout for per-channel reductions along `axis` (`None`: per-tensor). One channel, or
    /// none (per-tensor), is the whole tensor as one run.
    pub(crate) fn layout(&self, axis: Option<usize>) -> ChannelLayout {
        layout_of(&self.shape, axis)
    }
}

/// [`DeviceBatch::layout`] of a row-major tensor of shape `shape`.
pub(crate) fn layout_of(shape: &[usize], axis: Option<usize>) -> ChannelLayout {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    match axis {
        Some(a) if a < shape.len() && shape[a] > 1 => ChannelLayout {
            outer: shape[..a].iter().map(|&d| d as u64).product(),
            channels: shape[a] as u64,
            inner: shape[a + 1..].iter().map(|&d| d as u64).product(),
        },
        _ => ChannelLayout { outer: 1, channels: 1, inner: n },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_of_every_axis() {
        let l = |outer, channels, inner| ChannelLayout { outer, channels, inner };
        assert_eq!(layout_of(&[2, 3, 4], None), l(1, 1, 24));
        assert_eq!(layout_of(&[2, 3, 4], Some(0)), l(1, 2, 12));
        assert_eq!(layout_of(&[2, 3, 4], Some(1)), l(2, 3, 4));
        assert_eq!(layout_of(&[2, 3, 4], Some(2)), l(6, 4, 1));
        assert_eq!(layout_of(&[2, 1, 4], Some(1)), l(1, 1, 8));
        assert_eq!(layout_of(&[7], Some(0)), l(1, 7, 1));
        assert_eq!(layout_of(&[], None), l(1, 1, 1));
    }
}
