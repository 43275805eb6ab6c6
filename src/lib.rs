//! # qcalib
//!
//! Quantization calibration for neural-network tensors: the scale and zero point of a tensor
//! (or of each of its channels) from the batches it takes during calibration. qcalib reproduces
//! the observers of `horizon_plugin_pytorch.quantization.observer_v2` — the same scales from the
//! same data — on a CPU engine (rayon, vectorised loops) that needs nothing but Rust.
//!
//! | observer | what sets the range |
//! |---|---|
//! | [`MinMaxObserver`] | min and max, per tensor or per channel |
//! | [`MovingAverageMinMaxObserver`] | the same, per tensor |
//! | [`MovingAveragePerChannelMinMaxObserver`] | the same, per channel |
//! | [`PercentileObserver`] | a percentile of `|x|` |
//! | [`KlObserver`] | the KL-divergence threshold of a histogram of `|x|` |
//! | [`MseObserver`] | the shrink factor with the smallest fake-quantization error |
//! | [`MixObserver`] | the percentile clip with the smallest fake-quantization error |
//!
//! Every observer follows the moving average of SPEC §2 across batches, and computes symmetric
//! scales: `scale = max(|range|) / ((quant_max - quant_min) / 2)`, zero point 0.
//!
//! ```
//! use ndarray::Array2;
//! use qcalib::{KlConfig, KlObserver, Observer};
//!
//! let batch = Array2::from_shape_fn((64, 384), |(i, j)| ((i * 384 + j) as f32 * 0.001).sin());
//! let mut obs = KlObserver::new(KlConfig::default())?;
//! obs.observe(&batch)?;                       // f32, f16 or bf16 views of any layout
//! let q = obs.qparams()?;
//! assert_eq!(q.zero_point, vec![0]);
//! assert!(q.scale[0] > 0.0);
//! # Ok::<(), qcalib::Error>(())
//! ```
//!
//! With `is_sync_quantize`, data-parallel ranks (threads, processes on one or more machines, or
//! GPUs through NCCL) reduce their statistics through a [`sync::ProcessGroup`], so that every
//! rank ends with the same qparams; see [`sync`]. Processes meet in a TCP store speaking
//! PyTorch's TCPStore protocol (`torchrun`'s, or one rank 0 serves), and [`qparams_all`] /
//! [`observe_all`] synchronise many observers in one collective per round.
//!
//! Bad input never panics: NaN or infinity in a batch, a wrong `ch_axis`, a changed channel
//! count or an invalid parameter return an [`Error`] and leave the observer as it was.
//!
//! Calibration survives restarts: [`Observer::save_state`] gives an [`ObserverState`] (a
//! versioned JSON format, see [`observer::state`]) from which
//! [`ObserverState::into_observer`] resumes bit for bit where the run stopped.

#![warn(missing_docs)]

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod arith;
mod config;
mod cuda_tensor;
mod dtype;
mod engine;
mod error;
mod input;
#[cfg(feature = "io")]
pub mod io;
pub mod observer;
pub mod search;
pub mod stats;
pub mod sync;
pub mod synthetic;
mod tensor;

pub use config::{KlConfig, MAX_BINS, MseConfig, PercentileConfig, QuantConfig};
pub use cuda_tensor::{CudaElement, CudaTensorView};
/// The cudarc crate qcalib is built with (for [`CudaTensorView`]'s buffers).
pub use cudarc;
pub use dtype::{QScheme, QuantDType, QuantRange};
pub use engine::cuda::{CudaStatus, MIN_DRIVER_VERSION, cuda_status};
pub use engine::{Device, Extremes};
pub use error::{Error, Result};
pub use input::Input;
pub use observer::{
    KlObserver, MinMaxObserver, MixObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    MseObserver, Observer, ObserverConfig, ObserverKind, ObserverSpec, ObserverState, PercentileObserver, QParams,
    observe_all, qparams_all,
};
pub use tensor::{Element, OwnedTensor, TensorView};
