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
use crate::observer::{ObserverKind, QParams};
use crate::sync::limits::MAX_SYNC_CHANNELS;
use crate::sync::{Contribution, ProcessGroup, Reduced, SingleRank, SyncTask, run_together};

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
    /// `is_sync_quantize` is set (`what` says why there are no statistics, when there are none).
    pub(crate) fn qparams(&mut self, what: &'static str) -> Result<QParams> {
        let group = self.group.clone();
        let mut task = self.qparams_sync(what);
        run_together(&*group, &mut [&mut task])?.pop().unwrap_or(Ok(()))?;
        task.finish()
    }

    /// The synchronisation before qparams, as data (see [`QParamsSync`]).
    pub(crate) fn qparams_sync(&mut self, what: &'static str) -> QParamsSync<'_> {
        QParamsSync { core: self, what, stage: Stage::Start }
    }

    /// Scale and zero point of every channel from the statistics as they are.
    fn local_qparams(&self, what: &'static str) -> Result<QParams> {
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

    /// Forgets the statistics (configuration, engine and group stay).
    pub(crate) fn reset(&mut self) {
        self.stats = RangeStats::default();
        self.batches = 0;
    }
}

/// Why an observer of `kind` has no qparams yet.
pub(crate) fn no_statistics_reason(kind: ObserverKind) -> &'static str {
    match kind {
        ObserverKind::Kl => "no KL window has completed (update_interval batches)",
        _ => "no batch has been observed",
    }
}

/// An observer's part in the `is_sync_quantize` reduction that precedes its qparams, as data:
/// [`Observer::qparams`](crate::Observer::qparams) runs it alone; [`qparams_all`](crate::qparams_all) runs those of many
/// observers together, one collective per round. Without `is_sync_quantize`, or with one rank,
/// it has no rounds.
///
/// The rounds: every rank gathers the others' channel counts (0: no statistics yet); then the
/// ranks with statistics contribute `min_val` and `max_val` (the others `±inf`: nothing), and
/// every rank takes the elementwise minimum and maximum, in place (so that the moving average
/// continues from the global values). Ranks with different channel counts fail, naming them;
/// a rank without statistics accepts the others' count only up to what its configuration
/// allows (1 per tensor, 2^24 per channel).
#[derive(Debug)]
pub struct QParamsSync<'a> {
    core: &'a mut Core,
    what: &'static str,
    stage: Stage,
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    Start,
    /// The channel counts were asked for.
    Counts,
    /// The ranges of `channels` channels were asked for.
    Ranges {
        channels: usize,
    },
    Done,
}

impl QParamsSync<'_> {
    /// The qparams, from the statistics after the last round.
    pub fn finish(self) -> Result<QParams> {
        self.core.local_qparams(self.what)
    }

    /// The channel count every rank takes, from every rank's count.
    fn agree_on_channels(&self, counts: &[u64]) -> Result<usize> {
        let mine = self.core.stats.min_val.len() as u64;
        let present: Vec<(usize, u64)> = counts.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
        let Some(&(_, first)) = present.first() else {
            return Err(Error::NoStatistics("no rank has observed a batch yet"));
        };
        let reference = if mine > 0 { mine } else { first };
        let differ: Vec<usize> = present.iter().filter(|&&(_, n)| n != reference).map(|&(r, _)| r).collect();
        if !differ.is_empty() {
            let fewest = present.iter().map(|&(_, n)| n).min().unwrap_or(0);
            let most = present.iter().map(|&(_, n)| n).max().unwrap_or(0);
            let list: Vec<String> = present.iter().map(|(r, n)| format!("rank {r}: {n}")).collect();
            return Err(Error::Sync(format!(
                "the ranks hold statistics of different channel counts ({fewest} to {most}; {})",
                list.join(", ")
            )));
        }
        let allowed = if self.core.quant.qscheme.is_per_channel() { MAX_SYNC_CHANNELS as u64 } else { 1 };
        if reference > allowed {
            let (r, _) = present[0];
            return Err(Error::Sync(format!(
                "rank {r} claims statistics of {reference} channels, more than this observer can hold ({allowed})"
            )));
        }
        usize::try_from(reference).map_err(|_| Error::Sync("a channel count overflows".into()))
    }
}

impl SyncTask for QParamsSync<'_> {
    fn next(&mut self, previous: Option<Reduced>) -> Result<Option<Contribution>> {
        let stats = &self.core.stats;
        match (self.stage, previous) {
            (Stage::Start, _) => {
                if !self.core.quant.is_sync_quantize || self.core.group.world_size() <= 1 {
                    self.stage = Stage::Done;
                    return Ok(None);
                }
                self.stage = Stage::Counts;
                Ok(Some(Contribution { gathered: vec![stats.min_val.len() as u64], ..Default::default() }))
            }
            (Stage::Counts, Some(reduced)) => {
                self.stage = Stage::Done;
                let counts: Vec<u64> = reduced.gathered.iter().map(|g| g.first().copied().unwrap_or(0)).collect();
                let channels = self.agree_on_channels(&counts)?;
                let part = if stats.is_empty() {
                    Contribution {
                        mins: vec![f32::INFINITY; channels],
                        maxs: vec![f32::NEG_INFINITY; channels],
                        ..Default::default()
                    }
                } else {
                    Contribution { mins: stats.min_val.clone(), maxs: stats.max_val.clone(), ..Default::default() }
                };
                self.stage = Stage::Ranges { channels };
                Ok(Some(part))
            }
            (Stage::Ranges { channels }, Some(reduced)) => {
                self.stage = Stage::Done;
                let (min_val, max_val) = (reduced.mins, reduced.maxs);
                if min_val.len() != channels
                    || max_val.len() != channels
                    || min_val.iter().chain(&max_val).any(|v| !v.is_finite())
                {
                    return Err(Error::Sync("the ranks' reduced range is not finite".into()));
                }
                self.core.stats = RangeStats { min_val, max_val };
                Ok(None)
            }
            (Stage::Done, _) => Ok(None),
            (_, None) => Err(Error::Sync("a round of the qparams synchronisation returned nothing".into())),
        }
    }
}
