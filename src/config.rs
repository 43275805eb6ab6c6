//! Observer parameters, with the plugin's names and defaults (SPEC §4).

use serde::{Deserialize, Serialize};

use crate::dtype::{QScheme, QuantDType, QuantRange};
use crate::error::{Error, Result};

/// The parameters every observer shares.
///
/// `Default` gives the plugin's defaults: `averaging_constant = 0.01`, `ch_axis = -1`, `qint8`,
/// per-tensor symmetric, the dtype's range, no sync.
///
/// ```
/// use qcalib::{QuantConfig, QuantDType, QScheme};
/// let per_channel = QuantConfig { ch_axis: 0, qscheme: QScheme::PerChannelSymmetric, ..Default::default() };
/// let int4 = QuantConfig { dtype: QuantDType::QInt4, averaging_constant: 1.0, ..Default::default() };
/// assert!(per_channel.validate().is_ok() && int4.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    /// Weight of the current batch in the moving average of `min_val`/`max_val`, in `[0, 1]`.
    pub averaging_constant: f32,
    /// The channel dimension for per-channel schemes; negative counts from the last dimension.
    /// Per-tensor schemes need `-1`.
    pub ch_axis: isize,
    /// The quantized dtype.
    pub dtype: QuantDType,
    /// Per-tensor or per-channel (both symmetric).
    pub qscheme: QScheme,
    /// Replaces the dtype's lower bound; must come with `quant_max`.
    pub quant_min: Option<i64>,
    /// Replaces the dtype's upper bound; must come with `quant_min`.
    pub quant_max: Option<i64>,
    /// Reduce `min_val`/`max_val` over all ranks of the observer's process group before computing
    /// qparams (SPEC §4, is_sync_quantize).
    pub is_sync_quantize: bool,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig {
            averaging_constant: 0.01,
            ch_axis: -1,
            dtype: QuantDType::QInt8,
            qscheme: QScheme::PerTensorSymmetric,
            quant_min: None,
            quant_max: None,
            is_sync_quantize: false,
        }
    }
}

impl QuantConfig {
    /// The defaults with a per-channel symmetric scheme on `ch_axis`.
    pub fn per_channel(ch_axis: isize) -> Self {
        QuantConfig { ch_axis, qscheme: QScheme::PerChannelSymmetric, ..Default::default() }
    }

    /// Checks every rule of SPEC §1, §3 and §6 that does not depend on a tensor, and returns the
    /// integer range.
    pub fn validate(&self) -> Result<QuantRange> {
        let c = self.averaging_constant;
        if !(0.0..=1.0).contains(&c) {
            return Err(Error::config("averaging_constant", format!("{c} is outside [0, 1]")));
        }
        if !self.qscheme.is_per_channel() && self.ch_axis != -1 {
            return Err(Error::config(
                "ch_axis",
                format!("{} is set but qscheme is per_tensor_symmetric (which needs -1)", self.ch_axis),
            ));
        }
        QuantRange::resolve(self.dtype, self.quant_min, self.quant_max)
    }

    /// The channel axis of a tensor with `ndim` dimensions: `None` for per-tensor schemes.
    pub fn channel_axis(&self, ndim: usize) -> Result<Option<usize>> {
        if !self.qscheme.is_per_channel() {
            return Ok(None);
        }
        let axis = if self.ch_axis < 0 { ndim as isize + self.ch_axis } else { self.ch_axis };
        if axis < 0 || axis >= ndim as isize {
            return Err(Error::ChannelAxis { ch_axis: self.ch_axis, ndim });
        }
        Ok(Some(axis as usize))
    }

    /// An error unless the scheme is per-tensor (for the observers the plugin has per-tensor only).
    pub(crate) fn require_per_tensor(&self, observer: &str) -> Result<()> {
        if self.qscheme.is_per_channel() {
            return Err(Error::config("qscheme", format!("{observer} is per-tensor only")));
        }
        Ok(())
    }
}

/// Parameters of [`PercentileObserver`](crate::PercentileObserver).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentileConfig {
    /// The percentile of `|x|` that becomes the clip value, in `[0, 100]` (default 99.99).
    pub percentile: f64,
    /// Histogram bins, at least 1 (default 2048).
    pub bins: usize,
    /// The shared parameters.
    #[serde(flatten)]
    pub quant: QuantConfig,
}

impl Default for PercentileConfig {
    fn default() -> Self {
        PercentileConfig { percentile: 99.99, bins: 2048, quant: QuantConfig::default() }
    }
}

impl PercentileConfig {
    /// Checks the parameters (SPEC §6).
    pub fn validate(&self) -> Result<QuantRange> {
        if !(0.0..=100.0).contains(&self.percentile) {
            return Err(Error::config("percentile", format!("{} is outside [0, 100]", self.percentile)));
        }
        if self.bins == 0 {
            return Err(Error::config("bins", "must be at least 1"));
        }
        if self.bins > MAX_BINS {
            return Err(Error::config("bins", format!("{} is more than {MAX_BINS}", self.bins)));
        }
        self.quant.validate()
    }
}

/// Parameters of [`KlObserver`](crate::KlObserver).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlConfig {
    /// Histogram bins of a new window, at least 256 (default 512).
    pub bins: usize,
    /// Batches per window: the threshold is searched after every `update_interval` batches
    /// (default 1).
    pub update_interval: usize,
    /// **Extension** (SPEC §4, is_sync_quantize): agree on the histogram range and sum the
    /// histograms across ranks every batch, so that N ranks calibrate exactly like one rank that
    /// sees all their batches. Needs `is_sync_quantize`.
    #[serde(default)]
    pub sync_histograms: bool,
    /// The shared parameters.
    #[serde(flatten)]
    pub quant: QuantConfig,
}

impl Default for KlConfig {
    fn default() -> Self {
        KlConfig { bins: 512, update_interval: 1, sync_histograms: false, quant: QuantConfig::default() }
    }
}

impl KlConfig {
    /// Checks the parameters (SPEC §6).
    pub fn validate(&self) -> Result<QuantRange> {
        if self.bins < 256 {
            return Err(Error::config("bins", format!("{} is less than 256", self.bins)));
        }
        if self.bins > MAX_BINS {
            return Err(Error::config("bins", format!("{} is more than {MAX_BINS}", self.bins)));
        }
        if self.update_interval == 0 {
            return Err(Error::config("update_interval", "must be at least 1"));
        }
        if self.sync_histograms && !self.quant.is_sync_quantize {
            return Err(Error::config("sync_histograms", "needs is_sync_quantize"));
        }
        self.quant.validate()
    }
}

/// Parameters of [`MseObserver`](crate::MseObserver).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MseConfig {
    /// Step between the candidate indices `0, stride, 2*stride, … < 95` (default 1).
    pub stride: usize,
    /// The shared parameters.
    #[serde(flatten)]
    pub quant: QuantConfig,
}

impl Default for MseConfig {
    fn default() -> Self {
        MseConfig { stride: 1, quant: QuantConfig::default() }
    }
}

impl MseConfig {
    /// Checks the parameters (SPEC §6).
    pub fn validate(&self) -> Result<QuantRange> {
        if self.stride == 0 {
            return Err(Error::config("stride", "must be at least 1"));
        }
        self.quant.validate()
    }
}

/// The most histogram bins an observer accepts, configured or grown: a KL window whose batch
/// would widen the histogram beyond this is refused with an error (the plugin would allocate it,
/// and a search over 2^20 bins already takes seconds).
pub const MAX_BINS: usize = 1 << 20;
