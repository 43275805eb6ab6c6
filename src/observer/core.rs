//! What every observer shares: the validated configuration, `min_val`/`max_val` with the update
//! rule, the engine, the process group, and qparams (SPEC §2).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::arith;
use crate::config::QuantConfig;
use crate::dtype::QuantRange;
use crate::engine::{Extremes, LazyEngine, Loaded};
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::QParams;
use crate::sync::{ProcessGroup, ReduceOp, SingleRank};

/// `min_val` and `max_val`: empty before the first update, then one value per tensor or per
/// channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeStats {
    /// The running minimum, per channel.
    pub min_val: Vec<f32>,
    /// The running maximum, per channel.
    pub max_val: Vec<f32>,
}

impl RangeStats {
    /// Whether any statistics exist yet.
    pub fn is_empty(&self) -> bool {
        self.min_val.is_empty()
    }
}

/// The shared part of every observer.
#[derive(Debug)]
pub(crate) struct Core {
    pub quant: QuantConfig,
    pub range: QuantRange,
    pub stats: RangeStats,
    /// Non-empty batches observed since the last reset.
    pub batches: u64,
    /// `Device::Auto`'s engine until `set_device` (resolved on first use: see [`LazyEngine`]).
    pub engine: LazyEngine,
    pub group: Arc<dyn ProcessGroup>,
}

impl Core {
    /// A core for a validated configuration, on the default device.
    pub(crate) fn new(quant: QuantConfig, range: QuantRange) -> Result<Core> {
        Ok(Core {
            quant,
            range,
            stats: RangeStats::default(),
            batches: 0,
            engine: LazyEngine::auto(),
            group: Arc::new(SingleRank),
        })
    }

    /// The channel axis for `x` (`None`: per-tensor), checking the channel count against the
    /// statistics kept so far.
    pub(crate) fn channel_axis(&self, x: &Input<'_>) -> Result<Option<usize>> {
        let axis = self.quant.channel_axis(x.ndim())?;
        if let Some(axis) = axis {
            let found = x.shape()[axis];
            let expected = self.stats.min_val.len();
            if expected != 0 && expected != found {
                return Err(Error::ChannelCountChanged { expected, found, axis });
            }
        }
        Ok(axis)
    }

    /// The finite extremes of `x` (an error when it holds NaN or infinity).
    pub(crate) fn extremes(&self, x: &Loaded<'_>, axis: Option<usize>) -> Result<Extremes> {
        let e = self.engine.extremes(x, axis)?;
        e.check_finite()?;
        Ok(e)
    }

    /// The update rule: the first update stores the batch statistic, later ones take the moving
    /// average with `averaging_constant`.
    pub(crate) fn update(&mut self, min: &[f32], max: &[f32]) {
        let c = self.quant.averaging_constant;
        if self.stats.is_empty() {
            self.stats.min_val = min.to_vec();
            self.stats.max_val = max.to_vec();
        } else {
            for (old, &cur) in self.stats.min_val.iter_mut().zip(min) {
                *old = arith::moving_average(*old, cur, c);
            }
            for (old, &cur) in self.stats.max_val.iter_mut().zip(max) {
                *old = arith::moving_average(*old, cur, c);
            }
        }
    }

    /// Scale and zero point of every channel, after syncing the statistics across ranks when
    /// `is_sync_quantize` is set.
    pub(crate) fn qparams(&mut self, what: &'static str) -> Result<QParams> {
        self.sync()?;
        if self.stats.is_empty() {
            return Err(Error::NoStatistics(what));
        }
        let scale: Vec<f32> = self
            .stats
            .min_val
            .iter()
            .zip(&self.stats.max_val)
            .map(|(&lo, &hi)| arith::scale(lo, hi, &self.range))
            .collect();
        let zero_point = vec![0; scale.len()];
        Ok(QParams { scale, zero_point, quant_min: self.range.quant_min, quant_max: self.range.quant_max })
    }

    /// `min_val` becomes its elementwise minimum over ranks and `max_val` its maximum, in place.
    /// A rank without statistics takes the others'; ranks holding different channel counts fail.
    ///
    /// Every rank runs the same two collectives, and every decision is taken on reduced values,
    /// so that all ranks succeed or fail together: a header (the most and the fewest channels
    /// among the ranks that have statistics), then one MAX over `[-min_val, max_val]` (the
    /// minimum is the negated maximum of the negations, exactly).
    fn sync(&mut self) -> Result<()> {
        if !self.quant.is_sync_quantize || self.group.world_size() <= 1 {
            return Ok(());
        }
        let n = self.stats.min_val.len() as u64;
        // [most channels, u64::MAX - fewest channels among ranks that have statistics]
        let mut header = [n, if n > 0 { u64::MAX - n } else { 0 }];
        self.group.all_reduce_u64(&mut header, ReduceOp::Max)?;
        let (most, fewest) = (header[0], u64::MAX - header[1]);
        if most == 0 {
            return Err(Error::NoStatistics("no rank has observed a batch yet"));
        }
        if fewest != most {
            return Err(Error::Sync(format!(
                "the ranks hold statistics of different channel counts ({fewest} to {most})"
            )));
        }
        let most = usize::try_from(most).map_err(|_| Error::Sync("channel count overflows".into()))?;
        let mut both = if n > 0 {
            self.stats.min_val.iter().map(|&v| -v).chain(self.stats.max_val.iter().copied()).collect()
        } else {
            vec![f32::NEG_INFINITY; 2 * most]
        };
        self.group.all_reduce_f32(&mut both, ReduceOp::Max)?;
        let (neg_min, max) = both.split_at(most);
        self.stats = RangeStats { min_val: neg_min.iter().map(|&v| -v).collect(), max_val: max.to_vec() };
        Ok(())
    }

    /// Forgets the statistics (configuration, engine and group stay).
    pub(crate) fn reset(&mut self) {
        self.stats = RangeStats::default();
        self.batches = 0;
    }
}
