//! Quantized dtypes, schemes and integer ranges (SPEC §1, §3).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A quantized integer dtype (SPEC §1).
///
/// ```
/// use qcalib::QuantDType;
/// assert_eq!(QuantDType::QInt8.range(), (-128, 127));
/// assert_eq!("quint4".parse::<QuantDType>().unwrap(), QuantDType::QUInt4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantDType {
    /// Signed 4-bit: -8 ..= 7.
    QInt4,
    /// Unsigned 4-bit: 0 ..= 15.
    QUInt4,
    /// Signed 8-bit: -128 ..= 127 (the default).
    #[default]
    QInt8,
    /// Signed 16-bit: -32768 ..= 32767.
    QInt16,
    /// Signed 32-bit: -2^31 ..= 2^31 - 1.
    QInt32,
}

impl QuantDType {
    /// Every dtype, in the order of SPEC §1.
    pub const ALL: [QuantDType; 5] =
        [QuantDType::QInt4, QuantDType::QUInt4, QuantDType::QInt8, QuantDType::QInt16, QuantDType::QInt32];

    /// `(qmin, qmax)` of the dtype.
    pub const fn range(self) -> (i64, i64) {
        match self {
            QuantDType::QInt4 => (-8, 7),
            QuantDType::QUInt4 => (0, 15),
            QuantDType::QInt8 => (-128, 127),
            QuantDType::QInt16 => (-32768, 32767),
            QuantDType::QInt32 => (-2147483648, 2147483647),
        }
    }

    /// The plugin's name: `qint4`, `quint4`, `qint8`, `qint16` or `qint32`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantDType::QInt4 => "qint4",
            QuantDType::QUInt4 => "quint4",
            QuantDType::QInt8 => "qint8",
            QuantDType::QInt16 => "qint16",
            QuantDType::QInt32 => "qint32",
        }
    }

    /// The number of quantized levels `nq` of the KL threshold search (SPEC §4, KLObserver):
    /// `-qmin` of the dtype, or `qmax + 1` for the unsigned quint4 (**Deviation**: the plugin
    /// gets 0 there and fails).
    pub const fn kl_levels(self) -> u64 {
        let (lo, hi) = self.range();
        if lo < 0 { (-lo) as u64 } else { (hi + 1) as u64 }
    }
}

impl fmt::Display for QuantDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantDType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        QuantDType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| Error::config("dtype", format!("`{s}` is not one of qint4, quint4, qint8, qint16, qint32")))
    }
}

/// The quantization scheme (SPEC §3). Both are symmetric: the zero point is always 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QScheme {
    /// One scale for the whole tensor (`torch.per_tensor_symmetric`, the default).
    #[default]
    PerTensorSymmetric,
    /// One scale per channel along `ch_axis` (`torch.per_channel_symmetric`).
    PerChannelSymmetric,
}

impl QScheme {
    /// The plugin's name: `per_tensor_symmetric` or `per_channel_symmetric`.
    pub const fn name(self) -> &'static str {
        match self {
            QScheme::PerTensorSymmetric => "per_tensor_symmetric",
            QScheme::PerChannelSymmetric => "per_channel_symmetric",
        }
    }

    /// Whether the scheme keeps one scale per channel.
    pub const fn is_per_channel(self) -> bool {
        matches!(self, QScheme::PerChannelSymmetric)
    }
}

impl fmt::Display for QScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QScheme {
    type Err = Error;

    /// Accepts the plugin's names and their kebab-case forms.
    fn from_str(s: &str) -> Result<Self> {
        match s.replace('-', "_").as_str() {
            "per_tensor_symmetric" => Ok(QScheme::PerTensorSymmetric),
            "per_channel_symmetric" => Ok(QScheme::PerChannelSymmetric),
            _ => Err(Error::config("qscheme", format!("`{s}` is not per_tensor_symmetric or per_channel_symmetric"))),
        }
    }
}

/// The integer range `quant_min ..= quant_max` that scales map onto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantRange {
    /// The smallest quantized value.
    pub quant_min: i64,
    /// The largest quantized value.
    pub quant_max: i64,
}

impl QuantRange {
    /// The range of `dtype`, or the user's `quant_min`/`quant_max` when both are given (SPEC §1).
    ///
    /// A lone `quant_min` or `quant_max` is an error (**Deviation**: the plugin ignores it), as is
    /// a range that is empty, excludes 0 or leaves the dtype's range.
    ///
    /// ```
    /// use qcalib::{QuantDType, QuantRange};
    /// let r = QuantRange::resolve(QuantDType::QInt8, Some(-127), Some(127)).unwrap();
    /// assert_eq!(r.scale_divisor(), 127.0);
    /// assert!(QuantRange::resolve(QuantDType::QInt8, Some(-127), None).is_err());
    /// ```
    pub fn resolve(dtype: QuantDType, quant_min: Option<i64>, quant_max: Option<i64>) -> Result<Self> {
        let (lo, hi) = dtype.range();
        match (quant_min, quant_max) {
            (None, None) => Ok(QuantRange { quant_min: lo, quant_max: hi }),
            (Some(_), None) => Err(Error::config("quant_max", "must be given together with quant_min")),
            (None, Some(_)) => Err(Error::config("quant_min", "must be given together with quant_max")),
            (Some(qmin), Some(qmax)) => {
                if qmin >= qmax {
                    return Err(Error::config("quant_min", format!("{qmin} must be smaller than quant_max {qmax}")));
                }
                if qmin > 0 || qmax < 0 {
                    return Err(Error::config("quant_min", format!("the range {qmin}..={qmax} must contain 0")));
                }
                if qmin < lo || qmax > hi {
                    return Err(Error::config(
                        "quant_min",
                        format!("the range {qmin}..={qmax} leaves the range {lo}..={hi} of {dtype}"),
                    ));
                }
                Ok(QuantRange { quant_min: qmin, quant_max: qmax })
            }
        }
    }

    /// Half the integer range, `(quant_max - quant_min) / 2` rounded to f32: the divisor of the
    /// scale formula (SPEC §2).
    ///
    /// The difference is taken in i128, so a range built by hand with any `i64` bounds never
    /// overflows (a range from [`QuantRange::resolve`] lies inside the dtype's and gives the same
    /// value either way).
    pub fn scale_divisor(&self) -> f32 {
        ((self.quant_max as i128 - self.quant_min as i128) as f64 / 2.0) as f32
    }

    /// `quant_min` as f32, the lower clamp of fake quantization.
    pub fn min_f32(&self) -> f32 {
        self.quant_min as f32
    }

    /// `quant_max` as f32, the upper clamp of fake quantization.
    pub fn max_f32(&self) -> f32 {
        self.quant_max as f32
    }
}
