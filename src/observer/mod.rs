//! The observers of `horizon_plugin_pytorch.quantization.observer_v2` (SPEC §4): one type per
//! observer, all behind the [`Observer`] trait.

mod all;
mod config;
mod core;
mod kl;
mod min_max;
mod mix;
mod mse;
mod per_channel;
mod percentile;
pub mod state;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::all::{observe_all, qparams_all};
pub use self::config::ObserverConfig;
pub use self::core::{QParamsSync, RangeStats};
pub use kl::{KlObserver, KlWindow};
pub use min_max::{MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver};
pub use mix::{MIX_BINS, MIX_FRACTIONS, MixObserver};
pub use mse::MseObserver;
pub use per_channel::MAX_CHANNEL_COUNTERS;
pub use percentile::PercentileObserver;
pub use state::ObserverState;

use crate::config::QuantConfig;
use crate::engine::Device;
use crate::error::Result;
use crate::input::Input;
use crate::sync::{ProcessGroup, SyncTask};
use crate::tensor::TensorView;

/// Quantization parameters: one scale and zero point per tensor or per channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    /// The scales.
    pub scale: Vec<f32>,
    /// The zero points (always 0: every scheme is symmetric).
    pub zero_point: Vec<i32>,
    /// The lower end of the integer range.
    pub quant_min: i64,
    /// The upper end of the integer range.
    pub quant_max: i64,
}

/// Which observer, by the CLI's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObserverKind {
    /// [`MinMaxObserver`].
    MinMax,
    /// [`MovingAverageMinMaxObserver`].
    MovingAverageMinMax,
    /// [`MovingAveragePerChannelMinMaxObserver`].
    MovingAveragePerChannelMinMax,
    /// [`PercentileObserver`].
    Percentile,
    /// [`KlObserver`].
    Kl,
    /// [`MseObserver`].
    Mse,
    /// [`MixObserver`].
    Mix,
}

impl ObserverKind {
    /// Every observer, in the order of SPEC §4.
    pub const ALL: [ObserverKind; 7] = [
        ObserverKind::MinMax,
        ObserverKind::MovingAverageMinMax,
        ObserverKind::MovingAveragePerChannelMinMax,
        ObserverKind::Percentile,
        ObserverKind::Kl,
        ObserverKind::Mse,
        ObserverKind::Mix,
    ];

    /// The CLI's name, e.g. `moving-average-min-max`.
    pub const fn name(self) -> &'static str {
        match self {
            ObserverKind::MinMax => "min-max",
            ObserverKind::MovingAverageMinMax => "moving-average-min-max",
            ObserverKind::MovingAveragePerChannelMinMax => "moving-average-per-channel-min-max",
            ObserverKind::Percentile => "percentile",
            ObserverKind::Kl => "kl",
            ObserverKind::Mse => "mse",
            ObserverKind::Mix => "mix",
        }
    }

    /// The plugin's defaults of the shared parameters for this observer: per-channel on axis 0
    /// for [`MovingAveragePerChannelMinMaxObserver`], per-tensor for every other one.
    pub fn default_config(self) -> QuantConfig {
        match self {
            ObserverKind::MovingAveragePerChannelMinMax => QuantConfig::per_channel(0),
            _ => QuantConfig::default(),
        }
    }

    /// The plugin's class name, e.g. `MovingAverageMinMaxObserver`.
    pub const fn plugin_name(self) -> &'static str {
        match self {
            ObserverKind::MinMax => "MinMaxObserver",
            ObserverKind::MovingAverageMinMax => "MovingAverageMinMaxObserver",
            ObserverKind::MovingAveragePerChannelMinMax => "MovingAveragePerChannelMinMaxObserver",
            ObserverKind::Percentile => "PercentileObserver",
            ObserverKind::Kl => "KLObserver",
            ObserverKind::Mse => "MSEObserver",
            ObserverKind::Mix => "MixObserver",
        }
    }
}

impl fmt::Display for ObserverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ObserverKind {
    type Err = crate::Error;

    /// The CLI's name or the plugin's class name.
    fn from_str(s: &str) -> Result<Self> {
        ObserverKind::ALL.into_iter().find(|k| k.name() == s || k.plugin_name() == s).ok_or_else(|| {
            let names: Vec<_> = ObserverKind::ALL.iter().map(|k| k.name()).collect();
            crate::Error::config("observer", format!("`{s}` is not one of {}", names.join(", ")))
        })
    }
}

/// What every observer does: observe batches, then compute qparams from the statistics.
///
/// ```
/// use ndarray::array;
/// use qcalib::{MinMaxObserver, Observer, QuantConfig};
/// let mut obs = MinMaxObserver::new(QuantConfig { averaging_constant: 0.5, ..Default::default() })?;
/// obs.observe(&array![-1.0f32, 2.0])?;
/// obs.observe(&array![-3.0f32, 1.0])?;
/// assert_eq!(obs.min_val(), Some(&[-2.0f32][..])); // -1 + 0.5 * (-3 - -1)
/// assert_eq!(obs.qparams()?.scale, vec![2.0 / 127.5]);
/// # Ok::<(), qcalib::Error>(())
/// ```
pub trait Observer: Send + fmt::Debug {
    /// Which observer this is.
    fn kind(&self) -> ObserverKind;

    /// Observes one batch, on the host or on a GPU (every observer type, and `dyn Observer`, also
    /// has an `observe` method that takes anything convertible into an [`Input`]). An empty
    /// tensor is a no-op; on error (NaN/inf, a wrong `ch_axis`, a changed channel count, a device
    /// failure) the state is unchanged.
    fn observe_input(&mut self, x: &Input<'_>) -> Result<()>;

    /// Observes one host batch: [`Observer::observe_input`] of a [`TensorView`].
    fn observe_tensor(&mut self, x: &TensorView<'_>) -> Result<()> {
        self.observe_input(&Input::Host(x.clone()))
    }

    /// Scale and zero point per tensor or channel. With `is_sync_quantize`, first replaces
    /// `min_val`/`max_val` by their minimum/maximum over the ranks of the process group (every
    /// rank must call it). An error before any statistics exist.
    fn qparams(&mut self) -> Result<QParams>;

    /// The running minimum (one value, or one per channel); `None` before any statistics.
    fn min_val(&self) -> Option<&[f32]>;

    /// The running maximum (one value, or one per channel); `None` before any statistics.
    fn max_val(&self) -> Option<&[f32]>;

    /// Forgets everything observed; the configuration stays.
    fn reset(&mut self);

    /// Non-empty batches observed since the last reset.
    fn batches(&self) -> u64;

    /// The shared parameters.
    fn quant_config(&self) -> &QuantConfig;

    /// The device the loops run on (never `Auto`: the one chosen).
    fn device(&self) -> Device;

    /// Moves the observer to `device` (`Auto` picks CUDA when a usable GPU is present). Asking
    /// for a device that is not usable is an error, and the observer stays where it was.
    fn set_device(&mut self, device: Device) -> Result<()>;

    /// The process group `is_sync_quantize` reduces over (default: a single rank).
    fn set_process_group(&mut self, group: Arc<dyn ProcessGroup>);

    /// The process group set by [`Observer::set_process_group`].
    fn process_group(&self) -> Arc<dyn ProcessGroup>;

    /// Sync as data: this observer's part in the `is_sync_quantize` reduction that precedes
    /// its qparams ([`QParamsSync`]). [`Observer::qparams`] runs it alone;
    /// [`qparams_all`] runs those of many observers in one collective per round.
    fn qparams_sync(&mut self) -> QParamsSync<'_>;

    /// Sync as data: when observing `x` needs the other ranks (KL with
    /// [`sync_histograms`](crate::KlConfig::sync_histograms) and several ranks), the
    /// synchronised observation of `x`; `None` when the observer observes alone.
    /// [`Observer::observe_input`] runs it alone; [`observe_all`] runs those of many observers
    /// in one collective per round.
    /// Making the task costs nothing: the batch is read in its first round.
    fn observe_sync<'s>(&'s mut self, x: &'s Input<'_>) -> Option<Box<dyn SyncTask + 's>> {
        let _ = x;
        None
    }

    /// The full calibration state: the configuration, `min_val`/`max_val`, the batch count and
    /// (KL) the window in progress. Save it (e.g. [`ObserverState::to_json`]) to resume later with
    /// [`ObserverState::into_observer`] or [`Observer::load_state`]; the resumed observer gives
    /// bit for bit the results of one that was never interrupted. See [`state`] for the format.
    fn save_state(&self) -> ObserverState;

    /// Replaces everything observed by `state` (saved by an observer of the same kind with the
    /// same parameters; the device and the process group stay). A state of another kind, with
    /// another parameter ([`Error::StateMismatch`](crate::Error::StateMismatch) names it), of
    /// another format version or with inconsistent contents is refused, and the observer is
    /// unchanged.
    ///
    /// ```
    /// use qcalib::{MseConfig, MseObserver, Observer, Error};
    /// let mut a = MseObserver::new(MseConfig::default())?;
    /// a.observe(&[0.5f32, -1.0, 0.25][..])?;
    /// let mut b = MseObserver::new(MseConfig::default())?;
    /// b.load_state(&a.save_state())?;
    /// assert_eq!(b.qparams()?, a.qparams()?);
    /// let mut c = MseObserver::new(MseConfig { stride: 5, ..Default::default() })?;
    /// let err = c.load_state(&a.save_state()).unwrap_err();
    /// assert!(matches!(err, Error::StateMismatch { ref parameter, .. } if parameter == "stride"));
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    fn load_state(&mut self, state: &ObserverState) -> Result<()>;
}

impl dyn Observer + '_ {
    /// Observes one batch: [`Observer::observe_input`] for anything that converts into an
    /// [`Input`] (arrays and views of f32, f16, bf16, slices, vectors, and
    /// [`CudaTensorView`](crate::CudaTensorView)s of device memory).
    ///
    /// ```
    /// use qcalib::{ObserverKind, ObserverSpec};
    /// let kind = ObserverKind::Mse;
    /// let spec = ObserverSpec { kind, quant: kind.default_config(), bins: None, percentile: None,
    ///                           update_interval: None, stride: Some(5), sync_histograms: false };
    /// let mut obs = spec.build()?;
    /// obs.observe(&vec![1.0f32, -0.5, 0.25])?;
    /// assert_eq!(obs.batches(), 1);
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    pub fn observe<'a>(&mut self, x: impl Into<Input<'a>>) -> Result<()> {
        self.observe_input(&x.into())
    }
}

/// `observe`, the convenient form of [`Observer::observe_tensor`], on an observer type.
macro_rules! impl_observe {
    ($name:ident) => {
        impl $name {
            /// Observes one batch: [`Observer::observe_input`] for anything that converts into
            /// an [`Input`](crate::Input) (arrays and views of f32, f16, bf16, slices, vectors,
            /// and [`CudaTensorView`](crate::CudaTensorView)s of device memory).
            pub fn observe<'a>(&mut self, x: impl Into<$crate::input::Input<'a>>) -> $crate::error::Result<()> {
                $crate::observer::Observer::observe_input(self, &x.into())
            }
        }
    };
}
pub(crate) use impl_observe;

/// The [`Observer`] methods that only delegate to the shared core (`self.core`).
macro_rules! delegate_to_core {
    () => {
        fn min_val(&self) -> Option<&[f32]> {
            (!self.core.stats.is_empty()).then_some(&self.core.stats.min_val[..])
        }

        fn max_val(&self) -> Option<&[f32]> {
            (!self.core.stats.is_empty()).then_some(&self.core.stats.max_val[..])
        }

        fn reset(&mut self) {
            self.core.reset();
            self.reset_own_state();
        }

        fn batches(&self) -> u64 {
            self.core.batches
        }

        fn quant_config(&self) -> &$crate::config::QuantConfig {
            &self.core.quant
        }

        fn device(&self) -> $crate::engine::Device {
            self.core.engine.device()
        }

        fn set_device(&mut self, device: $crate::engine::Device) -> $crate::error::Result<()> {
            self.core.engine = $crate::engine::Engine::new(device)?.into();
            Ok(())
        }

        fn set_process_group(&mut self, group: std::sync::Arc<dyn $crate::sync::ProcessGroup>) {
            self.core.group = group;
        }

        fn process_group(&self) -> std::sync::Arc<dyn $crate::sync::ProcessGroup> {
            self.core.group.clone()
        }

        fn qparams_sync(&mut self) -> $crate::observer::QParamsSync<'_> {
            let what = $crate::observer::core::no_statistics_reason(self.kind());
            self.core.qparams_sync(what)
        }

        fn save_state(&self) -> $crate::observer::ObserverState {
            let mut state =
                $crate::observer::ObserverState::new(self.observer_config(), &self.core.stats, self.core.batches, None);
            self.save_own_state(&mut state);
            state
        }

        fn load_state(&mut self, state: &$crate::observer::ObserverState) -> $crate::error::Result<()> {
            state.check_for(&self.observer_config())?;
            self.core.stats =
                $crate::observer::RangeStats { min_val: state.min_val.clone(), max_val: state.max_val.clone() };
            self.core.batches = state.batches;
            self.load_own_state(state);
            Ok(())
        }
    };
}
pub(crate) use delegate_to_core;

/// `restore`, an observer type's constructor from a saved [`ObserverState`].
macro_rules! impl_restore {
    ($name:ident, $variant:ident) => {
        impl $name {
            /// The observer saved in `state`, with the state's configuration (on the default
            /// device). A state of another kind, another format version or with inconsistent
            /// contents is an error.
            pub fn restore(state: &$crate::observer::ObserverState) -> $crate::error::Result<Self> {
                state.check_format()?;
                let $crate::observer::ObserverConfig::$variant(config) = &state.config else {
                    return Err($crate::error::Error::StateMismatch {
                        parameter: "observer".into(),
                        saved: state.kind().to_string(),
                        current: $crate::observer::ObserverKind::$variant.to_string(),
                    });
                };
                let mut obs = $name::new(config.clone())?;
                $crate::observer::Observer::load_state(&mut obs, state)?;
                Ok(obs)
            }
        }
    };
}
pub(crate) use impl_restore;

/// Builds a boxed observer of `kind` from the parameters of every observer (the CLI's view):
/// each observer takes the ones it has.
#[derive(Clone, Debug, PartialEq)]
pub struct ObserverSpec {
    /// Which observer.
    pub kind: ObserverKind,
    /// The shared parameters (start from [`ObserverKind::default_config`]).
    pub quant: QuantConfig,
    /// Histogram bins (Percentile, KL); `None`: the observer's default.
    pub bins: Option<usize>,
    /// Percentile (Percentile).
    pub percentile: Option<f64>,
    /// Batches per KL window.
    pub update_interval: Option<usize>,
    /// MSE candidate stride.
    pub stride: Option<usize>,
    /// KL's histogram sync across ranks.
    pub sync_histograms: bool,
}

impl ObserverSpec {
    /// The observer `kind` with the plugin's defaults.
    ///
    /// ```
    /// use qcalib::{ObserverKind, ObserverSpec};
    /// let obs = ObserverSpec::new(ObserverKind::Percentile).build()?;
    /// assert_eq!(obs.kind(), ObserverKind::Percentile);
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    pub fn new(kind: ObserverKind) -> Self {
        ObserverSpec {
            kind,
            quant: kind.default_config(),
            bins: None,
            percentile: None,
            update_interval: None,
            stride: None,
            sync_histograms: false,
        }
    }

    /// The complete configuration: the options given, the observer's defaults for the others.
    /// An option the observer does not have (e.g. `bins` for MinMax) is an error.
    pub fn config(&self) -> Result<ObserverConfig> {
        use crate::config::{KlConfig, MseConfig, PercentileConfig};
        let reject = |name: &'static str, given: bool| -> Result<()> {
            if given {
                Err(crate::Error::config(name, format!("is not a parameter of {}", self.kind.plugin_name())))
            } else {
                Ok(())
            }
        };
        let (bins, pct, ui, stride) =
            (self.bins.is_some(), self.percentile.is_some(), self.update_interval.is_some(), self.stride.is_some());
        match self.kind {
            ObserverKind::Percentile | ObserverKind::Kl => {}
            _ => reject("bins", bins)?,
        }
        if self.kind != ObserverKind::Percentile {
            reject("percentile", pct)?;
        }
        if self.kind != ObserverKind::Kl {
            reject("update_interval", ui)?;
            reject("sync_histograms", self.sync_histograms)?;
        }
        if self.kind != ObserverKind::Mse {
            reject("stride", stride)?;
        }
        let q = self.quant.clone();
        Ok(match self.kind {
            ObserverKind::MinMax => ObserverConfig::MinMax(q),
            ObserverKind::MovingAverageMinMax => ObserverConfig::MovingAverageMinMax(q),
            ObserverKind::MovingAveragePerChannelMinMax => ObserverConfig::MovingAveragePerChannelMinMax(q),
            ObserverKind::Mix => ObserverConfig::Mix(q),
            ObserverKind::Percentile => {
                let d = PercentileConfig::default();
                ObserverConfig::Percentile(PercentileConfig {
                    percentile: self.percentile.unwrap_or(d.percentile),
                    bins: self.bins.unwrap_or(d.bins),
                    quant: q,
                })
            }
            ObserverKind::Kl => {
                let d = KlConfig::default();
                ObserverConfig::Kl(KlConfig {
                    bins: self.bins.unwrap_or(d.bins),
                    update_interval: self.update_interval.unwrap_or(d.update_interval),
                    sync_histograms: self.sync_histograms,
                    quant: q,
                })
            }
            ObserverKind::Mse => {
                ObserverConfig::Mse(MseConfig { stride: self.stride.unwrap_or(MseConfig::default().stride), quant: q })
            }
        })
    }

    /// The observer, validated.
    pub fn build(&self) -> Result<Box<dyn Observer>> {
        self.config()?.build()
    }
}
