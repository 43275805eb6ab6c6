//! **Extension** `sync_histograms` per channel (SPEC §8): the ranks observe one batch together,
//! as one rank would observe their batches concatenated, channel by channel. The rounds, every
//! decision taken on reduced values (so that all ranks succeed or fail together and keep
//! identical windows):
//!
//! 1. each rank gathers its element count, non-finite count, failure and channel count, and the
//!    window's settings and position must agree;
//! 2. each rank contributes its channels' largest `|x|` (maximums), and the windows' bin counts
//!    must agree;
//! 3. when histograms are due, each rank counts its batch on the agreed per-channel ranges and
//!    the histograms of every channel are summed (with every rank's failure gathered beside).
//!
//! A rank whose batch is empty takes part with nothing; a step where every batch is empty is a
//! no-op. The windows change only at the end of the last round. The per-tensor observer's rounds
//! are [`SyncedObserve`](super::SyncedObserve)'s; these are kept apart so that the two can move
//! together (and were written to be as small).

use super::{KlObserver, KlWindow};
use crate::engine::{Extremes, Loaded};
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::per_channel::check_counters;
use crate::sync::{Contribution, Reduced, SyncTask, name_ranks};

/// A per-channel KL observer's part in observing one batch with `sync_histograms`.
pub(super) struct SyncedChannels<'s, 'x> {
    obs: &'s mut KlObserver,
    x: &'s Input<'x>,
    /// The batch, its channel axis and per-channel extremes (`None`: empty), or why it could not
    /// be read.
    local: Result<Option<(Loaded<'x>, usize, Extremes)>>,
    stage: Stage,
}

enum Stage {
    Start,
    /// The counts were asked for.
    Counts,
    /// The channels' ranges were asked for: `values` per channel over all ranks.
    Ranges {
        values: usize,
    },
    /// The histograms were asked for: the channels' plans (see `KlWindow::plan`), their
    /// agreed largest `|x|`, and this rank's outcome.
    Histograms {
        plans: Vec<Option<(usize, f32)>>,
        amax: Vec<f32>,
        values: usize,
        mine: Result<()>,
    },
    Done,
}

impl<'s, 'x> SyncedChannels<'s, 'x> {
    pub(super) fn new(obs: &'s mut KlObserver, x: &'s Input<'x>) -> Self {
        SyncedChannels { obs, x, local: Ok(None), stage: Stage::Start }
    }

    /// Reads the batch: its channel axis (checked against the channels kept) and extremes.
    fn load(&mut self) {
        let obs = &self.obs;
        self.local = if self.x.is_empty() {
            Ok(None)
        } else {
            (|| {
                let axis = obs.core.channel_axis(self.x)?.ok_or_else(|| Error::Sync("not per channel".into()))?;
                let channels = self.x.shape()[axis];
                if !obs.channels.is_empty() && obs.channels.len() != channels {
                    return Err(Error::ChannelCountChanged { expected: obs.channels.len(), found: channels, axis });
                }
                let l = obs.core.engine.load(self.x)?;
                let e = obs.core.engine.extremes(&l, Some(axis))?;
                Ok(Some((l, axis, e)))
            })()
        };
    }

    /// Round 1: every rank's counts and channel count; the settings and the window's position.
    fn counts(&self) -> Contribution {
        let (obs, w) = (&self.obs, &self.obs.channels);
        let step = w.first().map_or(0, |w| w.step);
        let checks = [obs.bins, obs.update_interval, step, w.len()].map(|v| v as u64).to_vec();
        let gathered = match &self.local {
            Ok(Some((l, axis, e))) => vec![l.len() as u64, e.non_finite, 0, self.x.shape()[*axis] as u64],
            Ok(None) => vec![0, 0, 0, 0],
            Err(_) => vec![0, 0, 1, 0],
        };
        Contribution { checks, gathered, ..Default::default() }
    }

    /// After round 1: fails every rank when a rank failed, holds non-finite values, or the ranks
    /// differ in settings or channel counts; else the channel count and the values per channel.
    fn agree(&mut self, counts: &Reduced) -> Result<(usize, usize)> {
        let mut refused = Vec::new();
        for (r, g) in counts.gathered.iter().enumerate() {
            match g.as_slice() {
                [_, _, f, _] if *f != 0 => refused.push(format!("rank {r} failed")),
                [_, n, _, _] if *n != 0 => refused.push(format!("rank {r} holds {n} non-finite value(s)")),
                [_, _, _, _] => {}
                _ => refused.push(format!("rank {r} sent malformed counts")),
            }
        }
        if !refused.is_empty() {
            return Err(match std::mem::replace(&mut self.local, Ok(None)) {
                Err(e) => e,
                Ok(Some((_, _, e))) if e.non_finite > 0 => Error::NonFinite { count: e.non_finite },
                Ok(_) => Error::Sync(format!(
                    "the ranks' batches cannot be observed together ({}); the KL state is unchanged on every rank",
                    refused.join(", ")
                )),
            });
        }
        if !counts.checks_differ.is_empty() {
            return Err(Error::Sync(format!(
                "the ranks' KL observers differ in bins, update_interval, the position in the window or the channel \
                 count of the window (this rank differs from {}); with sync_histograms every rank observes the same \
                 number of batches with the same settings",
                name_ranks(&counts.checks_differ)
            )));
        }
        let present: Vec<(usize, u64)> =
            counts.gathered.iter().enumerate().filter(|(_, g)| g[0] > 0).map(|(r, g)| (r, g[3])).collect();
        let Some(&(_, channels)) = present.first() else { return Ok((0, 0)) };
        if present.iter().any(|&(_, c)| c != channels) {
            let list: Vec<String> = present.iter().map(|(r, c)| format!("rank {r}: {c}")).collect();
            return Err(Error::Sync(format!(
                "the ranks' batches have different channel counts ({}); the KL state is unchanged on every rank",
                list.join(", ")
            )));
        }
        let numel = counts.gathered.iter().try_fold(0u64, |acc, g| acc.checked_add(g[0]));
        let too_many = || Error::TooLarge("the ranks' batches hold more elements than this machine counts".into());
        let numel = numel.and_then(|n| usize::try_from(n).ok()).ok_or_else(too_many)?;
        let channels = usize::try_from(channels).map_err(|_| too_many())?;
        if !self.obs.channels.is_empty() && self.obs.channels.len() != channels {
            return Err(Error::Sync(format!(
                "the ranks' batches have {channels} channels, the KL windows {}",
                self.obs.channels.len()
            )));
        }
        Ok((channels, numel / channels))
    }

    /// Round 2: this rank's largest `|x|` per channel (nothing from a rank without values), and
    /// the windows' bin counts, which must agree.
    fn ranges(&self, channels: usize) -> Contribution {
        let maxs = match &self.local {
            Ok(Some((_, _, e))) => {
                (0..channels).map(|c| if e.abs_max(c) == 0.0 { 0.0 } else { e.abs_max(c) }).collect()
            }
            _ => vec![f32::NEG_INFINITY; channels],
        };
        let checks = self.obs.channels.iter().map(|w| w.hist.len() as u64).collect();
        Contribution { maxs, checks, ..Default::default() }
    }

    /// After round 2: each channel's plan, and this rank's histograms on it (Round 3).
    fn histograms(&mut self, ranges: Reduced, values: usize) -> Result<Option<Contribution>> {
        if !ranges.checks_differ.is_empty() {
            return Err(Error::Sync(format!(
                "the ranks' KL windows differ in their bin counts (this rank differs from {})",
                name_ranks(&ranges.checks_differ)
            )));
        }
        let amax = ranges.maxs;
        if let Some(a) = amax.iter().find(|a| !(**a >= 0.0 && a.is_finite())) {
            return Err(Error::Sync(format!("the ranks agreed on a largest |x| of {a}")));
        }
        let obs = &self.obs;
        let fresh;
        let windows: &[KlWindow] = if obs.channels.is_empty() {
            fresh = vec![KlWindow::default(); amax.len()];
            &fresh
        } else {
            &obs.channels
        };
        let plans = windows
            .iter()
            .zip(&amax)
            .enumerate()
            .map(|(c, (w, &a))| {
                w.plan(obs.bins, a).map_err(|err| match err {
                    Error::TooLarge(why) => {
                        Error::TooLarge(format!("channel {c} (ch_axis {}): {why}", obs.core.quant.ch_axis))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let counters = plans.iter().map(|p| p.map_or(obs.bins, |(b, _)| b)).sum();
        let shape = match &self.local {
            Ok(Some(_)) => self.x.shape().to_vec(),
            _ => vec![amax.len()],
        };
        check_counters("KL", &obs.core.quant, &shape, amax.len(), counters)?;
        let (bins, hi): (Vec<usize>, Vec<f32>) = plans.iter().map(|p| p.unwrap_or((0, 0.0))).unzip();
        let total: usize = bins.iter().sum();
        let mine = match &self.local {
            Ok(Some((l, axis, _))) => obs.core.engine.abs_histograms(l, *axis, &bins, &hi, false).and_then(|(_, h)| {
                if h.len() == total {
                    Ok(h)
                } else {
                    Err(Error::Device(format!("histograms of {} counters instead of {total}", h.len())))
                }
            }),
            _ => Ok(vec![0; total]),
        };
        let (sums, failed) = match &mine {
            Ok(h) => (h.clone(), 0),
            Err(_) => (vec![0; total], 1),
        };
        self.stage = Stage::Histograms { plans, amax, values, mine: mine.map(|_| ()) };
        Ok(Some(Contribution { sums, gathered: vec![failed], ..Default::default() }))
    }
}

impl SyncTask for SyncedChannels<'_, '_> {
    fn next(&mut self, previous: Option<Reduced>) -> Result<Option<Contribution>> {
        match (std::mem::replace(&mut self.stage, Stage::Done), previous) {
            (Stage::Start, _) => {
                self.load();
                self.stage = Stage::Counts;
                Ok(Some(self.counts()))
            }
            (Stage::Counts, Some(counts)) => {
                let (channels, values) = self.agree(&counts)?;
                if channels == 0 {
                    return Ok(None); // every batch is empty
                }
                self.stage = Stage::Ranges { values };
                Ok(Some(self.ranges(channels)))
            }
            (Stage::Ranges { values }, Some(ranges)) => self.histograms(ranges, values),
            (Stage::Histograms { plans, amax, values, mine }, Some(summed)) => {
                let failed: Vec<usize> =
                    summed.gathered.iter().enumerate().filter(|(_, g)| g.first() != Some(&0)).map(|(r, _)| r).collect();
                mine?;
                if !failed.is_empty() {
                    return Err(Error::Sync(format!(
                        "the histograms failed on {}; the KL state is unchanged on every rank",
                        name_ranks(&failed)
                    )));
                }
                let total: usize = plans.iter().map(|p| p.map_or(0, |(b, _)| b)).sum();
                if summed.sums.len() != total {
                    return Err(Error::Sync("the summed histograms have another length".into()));
                }
                // Each channel's histogram counts every value of the channel whose range covers
                // the agreed largest |x| (the others: at most every value).
                let mut at = 0;
                for (c, plan) in plans.iter().enumerate() {
                    let Some((b, hi)) = *plan else { continue };
                    let counted = summed.sums[at..at + b].iter().try_fold(0u64, |acc, &s| acc.checked_add(s));
                    at += b;
                    let plausible =
                        counted.is_some_and(|n| if hi >= amax[c] { n == values as u64 } else { n <= values as u64 });
                    if !plausible {
                        return Err(Error::Sync(format!(
                            "the summed histograms of channel {c} count {} values where the ranks' batches hold {values}: \
                             a rank sent histograms that do not match its batch; the KL state is unchanged on every rank",
                            counted.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
                        )));
                    }
                }
                let obs = &mut *self.obs;
                let mut windows =
                    if obs.channels.is_empty() { vec![KlWindow::default(); plans.len()] } else { obs.channels.clone() };
                let mut at = 0;
                for (c, w) in windows.iter_mut().enumerate() {
                    let n = plans[c].map_or(0, |(b, _)| b);
                    w.apply(obs.bins, amax[c], values, plans[c], &summed.sums[at..at + n]);
                    at += n;
                }
                obs.end_batch_channels(windows)?;
                Ok(None)
            }
            (Stage::Done, _) => Ok(None),
            (_, None) => Err(Error::Sync("a round of the per-channel KL synchronisation returned nothing".into())),
        }
    }
}
