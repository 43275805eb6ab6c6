//! KLObserver (SPEC §4): a histogram of `|x|` accumulated over a window of batches, then the
//! threshold with the smallest KL divergence between the clipped and the quantized distribution.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{KlConfig, MAX_BINS};
use crate::engine::Engine;
use crate::engine::{Extremes, Loaded};
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::per_channel::{channels_and_values, check_counters};
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::sync::{Contribution, Reduced, SyncTask, run_together};

mod sync_channels;

use sync_channels::SyncedChannels;

/// The histogram of the current KL window.
///
/// Empty (`hist` and `edges` empty) until the window's first batch with a non-zero value; the
/// zeros of all-zero batches before it wait in `zeros` and join bin 0 when the range starts
/// (**Deviation**: the plugin crashes on such a window).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KlWindow {
    /// Counts per bin.
    pub hist: Vec<u64>,
    /// `hist.len() + 1` bin edges once the range has started.
    pub edges: Vec<f32>,
    /// The bin width `w`, fixed for the window.
    pub width: f32,
    /// Zeros seen before the range started.
    pub zeros: u64,
    /// Batches in the window so far.
    pub step: usize,
}

impl KlWindow {
    /// The upper edge of the histogram; 0 before the range has started.
    pub fn top(&self) -> f32 {
        self.edges.last().copied().unwrap_or(0.0)
    }

    /// Adds one batch whose largest `|x|` is `amax`. `histogram(bins, hi)` computes the batch's
    /// histogram of `|x|` on `[0, hi]`.
    fn add(
        &mut self,
        bins: usize,
        amax: f32,
        numel: usize,
        histogram: impl FnOnce(usize, f32) -> Result<Vec<u64>>,
    ) -> Result<()> {
        let plan = self.plan(bins, amax)?;
        let counts = match plan {
            Some((b, hi)) => histogram(b, hi)?,
            None => Vec::new(),
        };
        self.apply(bins, amax, numel, plan, &counts);
        Ok(())
    }

    /// The histogram a batch whose largest `|x|` is `amax` is counted in, `(bins, hi)`: the
    /// window's range once it has started (widened, keeping the width, when `amax` exceeds it),
    /// else `[0, amax]` in `bins` bins; `None` while the range has not started and the batch is all
    /// zeros (they are held back). An error when the widening would pass [`MAX_BINS`] bins or the
    /// range of f32.
    fn plan(&self, bins: usize, amax: f32) -> Result<Option<(usize, f32)>> {
        if self.edges.is_empty() {
            return Ok((amax != 0.0).then_some((bins, amax)));
        }
        if amax <= self.top() {
            return Ok(Some((self.hist.len(), self.top())));
        }
        // Widen, keeping the width: ceil(f32(amax / w)) bins (never fewer than now).
        let wanted = (amax / self.width).ceil();
        if wanted.is_nan() || wanted > MAX_BINS as f32 {
            return Err(Error::TooLarge(format!(
                "max |x| = {amax} would widen the KL histogram (bin width {}) to {wanted} bins, more than {MAX_BINS}",
                self.width
            )));
        }
        let bins = (wanted as usize).max(self.hist.len());
        let top = self.width * bins as f32;
        if !top.is_finite() {
            return Err(Error::TooLarge(format!(
                "max |x| = {amax} would widen the KL histogram (bin width {}) past the largest f32",
                self.width
            )));
        }
        Ok(Some((bins, top)))
    }

    /// Adds the batch of [`plan`](KlWindow::plan) `plan`: `numel` values whose largest `|x|` is
    /// `amax`, counted as `counts` in the planned histogram.
    fn apply(&mut self, bins: usize, amax: f32, numel: usize, plan: Option<(usize, f32)>, counts: &[u64]) {
        let Some((planned, _)) = plan else {
            self.zeros += numel as u64;
            return;
        };
        if self.edges.is_empty() {
            // The window's range starts: width amax / bins, edges m * w, the top edge amax.
            let w = amax / bins as f32;
            let mut edges: Vec<f32> = (0..bins).map(|m| m as f32 * w).collect();
            edges.push(amax);
            let mut hist = counts.to_vec();
            hist[0] += self.zeros;
            *self = KlWindow { hist, edges, width: w, zeros: 0, step: self.step };
            return;
        }
        if amax > self.top() {
            // Widened (the edges are recomputed even when rounding keeps the bin count).
            self.edges = (0..=planned).map(|m| self.width * m as f32).collect();
            self.hist.resize(planned, 0);
        }
        for (h, b) in self.hist.iter_mut().zip(counts) {
            *h += *b;
        }
    }

    /// The KL threshold of the window (SPEC §4): the edge `k* + 132`, the top edge when no
    /// window sum is finite, and 0 when the range never started (all batches were zeros). The
    /// search runs on `engine`.
    fn threshold(&self, engine: &Engine, levels: u64) -> Result<f32> {
        if self.edges.is_empty() {
            return Ok(0.0);
        }
        Ok(self.threshold_at(engine.kl_threshold_index(&self.hist, levels)?))
    }

    /// The threshold for the search's result `found` on this window's histogram (see
    /// [`threshold`](KlWindow::threshold)).
    fn threshold_at(&self, found: Option<usize>) -> f32 {
        match found {
            _ if self.edges.is_empty() => 0.0,
            Some(t) => self.edges[t.min(self.edges.len() - 1)],
            None => self.top(),
        }
    }
}

/// `KLObserver`: the histogram of `|x|` is accumulated over `update_interval` batches
/// (widening, with a fixed bin width, when a batch exceeds it); at the end of each window the
/// threshold with the smallest KL divergence (TensorRT's entropy calibration, with the plugin's
/// smoothing over 9 candidates) becomes `±amax` and goes through the moving average.
///
/// There are no statistics before the first window completes.
///
/// **Extension** (SPEC §8): with `per_channel_symmetric` and a `ch_axis`, every channel keeps a
/// window of its own (histogram, edges, width, bin count, held-back zeros, widened on its own),
/// exactly as a per-tensor observer that sees only that channel; the batch count of the window
/// is shared, so every channel's search runs at the same batch (the channels in parallel). The
/// windows may hold at most [`MAX_CHANNEL_COUNTERS`](crate::observer::MAX_CHANNEL_COUNTERS)
/// counters in all (channels × bins, after widening).
///
/// **Extension** `sync_histograms` ([`KlConfig::sync_histograms`], with `is_sync_quantize` and a
/// process group of several ranks): every batch, the ranks agree on the histogram range and sum
/// their histograms, so that N ranks give exactly the qparams of one rank observing, batch by
/// batch, their batches concatenated (no other calibrator does this; the plugin syncs only
/// `min_val`/`max_val`). Every rank then calls `observe` once per step, with an empty tensor if
/// it has no batch.
///
/// ```
/// use qcalib::{KlConfig, KlObserver, Observer};
/// let x: Vec<f32> = (0..100_000).map(|i| ((i as f32) * 0.618).sin().powi(3)).collect();
/// let mut obs = KlObserver::new(KlConfig { update_interval: 2, ..Default::default() })?;
/// obs.observe(&x)?;
/// assert!(obs.qparams().is_err()); // the window is not complete yet
/// obs.observe(&x)?;
/// let amax = obs.max_val().unwrap()[0];
/// assert!(amax > 0.0 && amax <= 1.0);
/// # Ok::<(), qcalib::Error>(())
/// ```
///
/// Per channel, on the last axis of activations:
///
/// ```
/// use ndarray::Array2;
/// use qcalib::{KlConfig, KlObserver, Observer, QuantConfig};
/// let x = Array2::from_shape_fn((5000, 3), |(i, c)| (c + 1) as f32 * ((i as f32) * 0.618).sin().powi(3));
/// let mut obs = KlObserver::new(KlConfig { quant: QuantConfig::per_channel(-1), ..Default::default() })?;
/// obs.observe(&x)?;
/// assert_eq!(obs.qparams()?.scale.len(), 3);
/// // Channel 2 on its own gives channel 2's range.
/// let mut one = KlObserver::new(KlConfig::default())?;
/// one.observe(&x.column(2).to_owned())?;
/// assert_eq!(one.max_val().unwrap()[0], obs.max_val().unwrap()[2]);
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Debug)]
pub struct KlObserver {
    core: Core,
    bins: usize,
    update_interval: usize,
    sync_histograms: bool,
    /// The window in progress (per tensor).
    window: KlWindow,
    /// The windows in progress, one per channel (per channel; empty before a window's first
    /// batch).
    channels: Vec<KlWindow>,
    /// Per channel: the buffer the first pass over a batch counts into (all zeros between
    /// batches), kept so that no batch allocates and faults in the counters of every channel.
    early_counts: ZeroedCounts,
}

/// A buffer of counters that are all zero between batches (not part of the state), shown by its
/// length only.
#[derive(Default)]
struct ZeroedCounts(Vec<u64>);

impl std::fmt::Debug for ZeroedCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZeroedCounts({} counters)", self.0.len())
    }
}

impl KlObserver {
    /// The observer with `config`.
    pub fn new(config: KlConfig) -> Result<Self> {
        let range = config.validate()?;
        Ok(KlObserver {
            core: Core::new(config.quant, range)?,
            bins: config.bins,
            update_interval: config.update_interval,
            sync_histograms: config.sync_histograms,
            window: KlWindow::default(),
            channels: Vec::new(),
            early_counts: ZeroedCounts::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> KlConfig {
        KlConfig {
            bins: self.bins,
            update_interval: self.update_interval,
            sync_histograms: self.sync_histograms,
            quant: self.core.quant.clone(),
        }
    }

    /// The histogram of the window in progress (per tensor).
    pub fn window(&self) -> &KlWindow {
        &self.window
    }

    /// The windows in progress, one per channel (per channel; empty per tensor, and before the
    /// first batch of a window).
    pub fn channel_windows(&self) -> &[KlWindow] {
        &self.channels
    }

    fn reset_own_state(&mut self) {
        self.window = KlWindow::default();
        self.channels = Vec::new();
    }

    /// One batch of a per-channel observer (SPEC §8): every channel's window as a per-tensor
    /// window of that channel's values, from one pass over the data once every channel's range
    /// exists (a second only for channels that widen or start).
    fn observe_per_channel(&mut self, x: &Input<'_>, axis: usize) -> Result<()> {
        let shape = x.shape().to_vec();
        let (channels, values) = channels_and_values(&shape, Some(axis));
        if !self.channels.is_empty() && self.channels.len() != channels {
            return Err(Error::ChannelCountChanged { expected: self.channels.len(), found: channels, axis });
        }
        let engine = &self.core.engine;
        let x = engine.load(x)?;
        let fresh;
        let windows: &[KlWindow] = if self.channels.is_empty() {
            fresh = vec![KlWindow::default(); channels];
            &fresh
        } else {
            &self.channels
        };
        let current: Vec<(usize, f32)> = windows.iter().map(|w| (w.hist.len(), w.top())).collect();
        // The first pass counts into the observer's buffer, zero between batches; it is only put
        // back (zeroed) when the batch succeeds, else dropped.
        let mut early = std::mem::take(&mut self.early_counts.0);
        let counted_early = windows.iter().all(|w| w.top() > 0.0);
        let e = if counted_early {
            let (bins, hi): (Vec<usize>, Vec<f32>) = current.iter().copied().unzip();
            early.resize(bins.iter().sum(), 0);
            match engine.add_abs_histograms(&x, axis, &bins, &hi, true, &mut early)? {
                Some(e) => e,
                None => {
                    return Err(Error::Device("internal error in qcalib: no extremes from the histogram pass".into()));
                }
            }
        } else {
            early.clear();
            engine.extremes(&x, Some(axis))?
        };
        e.check_finite()?;
        let plans = windows
            .iter()
            .enumerate()
            .map(|(c, w)| {
                w.plan(self.bins, e.abs_max(c)).map_err(|err| match err {
                    Error::TooLarge(why) => {
                        Error::TooLarge(format!("channel {c} (ch_axis {}): {why}", self.core.quant.ch_axis))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // A channel whose range has not started will hold at least `bins` counters.
        let counters = plans.iter().map(|p| p.map_or(self.bins, |(b, _)| b)).sum();
        check_counters("KL", &self.core.quant, &shape, channels, counters)?;
        // The channels whose histogram is not the one counted in the first pass (a range that
        // starts or widens) are counted again, alone.
        let again: Vec<(usize, f32)> = plans
            .iter()
            .zip(&current)
            .map(|(p, now)| match p {
                Some(plan) if !counted_early || plan != now => *plan,
                _ => (0, 0.0),
            })
            .collect();
        let recounted = if again.iter().any(|&(b, _)| b > 0) {
            let (bins, hi): (Vec<usize>, Vec<f32>) = again.iter().copied().unzip();
            engine.abs_histograms(&x, axis, &bins, &hi, false)?.1
        } else {
            Vec::new()
        };
        // Nothing can fail from here on but the search of a window that completes: the windows
        // change in place, unless the window completes (then a copy, kept only on success).
        let completes = windows.first().is_some_and(|w| w.step + 1 == self.update_interval);
        let mut windows =
            if completes || self.channels.is_empty() { windows.to_vec() } else { std::mem::take(&mut self.channels) };
        // Each channel's counts: those of the first pass (zeroed once added), or recounted.
        let mut early_rest = early.as_mut_slice();
        let mut recounted_rest = recounted.as_slice();
        let counts: Vec<(&mut [u64], &[u64])> = current
            .iter()
            .zip(&again)
            .map(|(now, again)| {
                let first = if counted_early { now.0 } else { 0 };
                let (e, rest) = std::mem::take(&mut early_rest).split_at_mut(first);
                early_rest = rest;
                let (r, rest) = recounted_rest.split_at(again.0);
                recounted_rest = rest;
                (e, r)
            })
            .collect();
        let bins = self.bins;
        windows.par_iter_mut().zip(counts).enumerate().for_each(|(c, (w, (early, recounted)))| {
            let counts = if again[c].0 > 0 {
                recounted
            } else if plans[c].is_some() {
                &*early
            } else {
                &[]
            };
            w.apply(bins, e.abs_max(c), values, plans[c], counts);
            early.fill(0);
        });
        self.early_counts = ZeroedCounts(early);
        self.end_batch_channels(windows)
    }

    /// [`end_batch`](KlObserver::end_batch) for the windows of every channel: the searches of
    /// a window that completes run on all channels at once.
    fn end_batch_channels(&mut self, mut windows: Vec<KlWindow>) -> Result<()> {
        for w in &mut windows {
            w.step += 1;
        }
        if windows.first().is_some_and(|w| w.step == self.update_interval) {
            let hists: Vec<&[u64]> = windows.iter().map(|w| w.hist.as_slice()).collect();
            let found = self.core.engine.kl_threshold_indices(&hists, self.core.quant.dtype.kl_levels())?;
            let amax: Vec<f32> = windows.iter().zip(found).map(|(w, t)| w.threshold_at(t)).collect();
            let neg: Vec<f32> = amax.iter().map(|a| -a).collect();
            self.core.update(&neg, &amax);
            windows = Vec::new();
        }
        self.channels = windows;
        self.core.batches += 1;
        Ok(())
    }

    /// Whether observing needs the other ranks (`sync_histograms` with several ranks).
    fn observes_synced(&self) -> bool {
        self.sync_histograms && self.core.group.world_size() > 1
    }

    /// Counts the batch in `window`, closes the window after `update_interval` batches (the
    /// threshold goes through the update rule), and keeps the window. On error (the search
    /// failed on the device) nothing changes.
    fn end_batch(&mut self, mut window: KlWindow) -> Result<()> {
        window.step += 1;
        if window.step == self.update_interval {
            let amax_kl = window.threshold(&self.core.engine, self.core.quant.dtype.kl_levels())?;
            self.core.update(&[-amax_kl], &[amax_kl]);
            window = KlWindow::default();
        }
        self.window = window;
        self.core.batches += 1;
        Ok(())
    }

    fn observer_config(&self) -> ObserverConfig {
        ObserverConfig::Kl(self.config())
    }

    fn save_own_state(&self, state: &mut ObserverState) {
        if self.core.quant.qscheme.is_per_channel() {
            state.set_kl_channels(self.channels.clone());
        } else {
            state.kl_window = Some(self.window.clone());
        }
    }

    /// `state` has been checked: it holds a window, or per channel the channels' windows.
    fn load_own_state(&mut self, state: &ObserverState) {
        self.window = state.kl_window.clone().unwrap_or_default();
        self.channels = state.kl_channels.clone().unwrap_or_default();
    }
}

impl Observer for KlObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Kl
    }

    fn observe_input(&mut self, x: &Input<'_>) -> Result<()> {
        if self.observes_synced() {
            let group = self.core.group.clone();
            let outcome = if self.core.quant.qscheme.is_per_channel() {
                run_together(&*group, &mut [&mut SyncedChannels::new(self, x)])?
            } else {
                run_together(&*group, &mut [&mut SyncedObserve::new(self, x)])?
            };
            return outcome.into_iter().next().unwrap_or(Ok(()));
        }
        if x.is_empty() {
            return Ok(());
        }
        if let Some(axis) = self.core.channel_axis(x)? {
            return self.observe_per_channel(x, axis);
        }
        let engine = &self.core.engine;
        let x = engine.load(x)?;
        // Once the window's range exists, the batch's histogram on it comes in the same pass as
        // its extremes; it is only redone when the batch turns out to exceed the range.
        let (top, bins) = (self.window.top(), self.window.hist.len());
        let (e, mut early) = if top > 0.0 {
            let (e, h) = engine.extremes_and_abs_histogram(&x, bins, top)?;
            (e, Some(h))
        } else {
            (engine.extremes(&x, None)?, None)
        };
        e.check_finite()?;
        let amax = e.abs_max(0);
        let mut window = self.window.clone();
        window.add(self.bins, amax, x.len(), |b, hi| match early.take() {
            Some(h) if b == bins && hi == top => Ok(h),
            _ => engine.abs_histogram(&x, b, hi),
        })?;
        self.end_batch(window)
    }

    fn qparams(&mut self) -> Result<QParams> {
        self.core.qparams("no KL window has completed (update_interval batches)")
    }

    fn observe_sync<'s>(&'s mut self, x: &'s Input<'_>) -> Option<Box<dyn SyncTask + 's>> {
        if !self.observes_synced() {
            return None;
        }
        Some(if self.core.quant.qscheme.is_per_channel() {
            Box::new(SyncedChannels::new(self, x))
        } else {
            Box::new(SyncedObserve::new(self, x))
        })
    }

    delegate_to_core!();
}

impl_observe!(KlObserver);
impl_restore!(KlObserver, Kl);

/// **Extension** `sync_histograms` (no other calibrator has it): the ranks observe one batch
/// together, as one rank would observe their batches concatenated. The rounds, whose decisions
/// are all taken on reduced values (so that all ranks succeed or fail together and keep
/// identical windows):
///
/// 1. each rank contributes its batch's largest `|x|` (a maximum), the window's settings and
///    position (which must agree), and gathers every rank's element count, non-finite count and
///    failure;
/// 2. when the histogram is due, each rank histograms its batch on the agreed range and the
///    histograms are summed (with every rank's failure gathered beside).
///
/// A rank whose batch is empty takes part with nothing; a step where every batch is empty is a
/// no-op. The window changes only at the end of the last round.
struct SyncedObserve<'s, 'x> {
    obs: &'s mut KlObserver,
    x: &'s Input<'x>,
    /// The batch and its extremes (`None`: empty), or why it could not be read (from round 1).
    local: Result<Option<(Loaded<'x>, Extremes)>>,
    stage: KlStage,
}

enum KlStage {
    Start,
    /// The header was asked for.
    Header,
    /// The histograms on `bins` bins up to `hi` were asked for; `window` is the window with the
    /// new range and this batch's zeros, waiting for the summed histogram; `mine` this rank's
    /// histogram outcome; `numel` the ranks' elements, which the summed histogram must count.
    Histogram {
        window: KlWindow,
        mine: Result<()>,
        numel: usize,
    },
    Done,
}

impl<'s, 'x> SyncedObserve<'s, 'x> {
    fn new(obs: &'s mut KlObserver, x: &'s Input<'x>) -> Self {
        SyncedObserve { obs, x, local: Ok(None), stage: KlStage::Start }
    }

    /// Reads the batch: its extremes.
    fn load(&mut self) {
        let engine = &self.obs.core.engine;
        self.local = if self.x.is_empty() {
            Ok(None)
        } else {
            engine.load(self.x).and_then(|l| {
                let e = engine.extremes(&l, None)?;
                Ok(Some((l, e)))
            })
        };
    }

    /// Round 1: the largest `|x|`, the settings that must agree, the gathered counts.
    fn header(&self) -> Contribution {
        let w = &self.obs.window;
        let checks = [self.obs.bins, self.obs.update_interval, w.step, w.hist.len()].map(|v| v as u64).to_vec();
        let (amax, gathered) = match &self.local {
            Ok(Some((l, e))) if e.non_finite == 0 => {
                let a = e.abs_max(0);
                (if a == 0.0 { 0.0 } else { a }, vec![l.len() as u64, 0, 0])
            }
            Ok(Some((l, e))) => (0.0, vec![l.len() as u64, e.non_finite, 0]),
            Ok(None) => (0.0, vec![0, 0, 0]),
            Err(_) => (0.0, vec![0, 0, 1]),
        };
        Contribution { maxs: vec![amax], checks, gathered, ..Default::default() }
    }

    /// After round 1: fails every rank when a rank failed or its batch holds non-finite values,
    /// or when the settings differ; else the total element count and the agreed `|x|` maximum.
    fn agree(&mut self, header: &Reduced) -> Result<(usize, f32)> {
        let refused: Vec<String> = header
            .gathered
            .iter()
            .enumerate()
            .filter_map(|(r, g)| match g.as_slice() {
                [_, _, f] if *f != 0 => Some(format!("rank {r} failed")),
                [_, n, _] if *n != 0 => Some(format!("rank {r} holds {n} non-finite value(s)")),
                [_, _, _] => None,
                _ => Some(format!("rank {r} sent a malformed header")),
            })
            .collect();
        if !refused.is_empty() {
            return Err(match std::mem::replace(&mut self.local, Ok(None)) {
                Err(e) => e,
                Ok(Some((_, e))) if e.non_finite > 0 => Error::NonFinite { count: e.non_finite },
                Ok(_) => Error::Sync(format!(
                    "the ranks' batches cannot be observed together ({}); the KL state is unchanged on every rank",
                    refused.join(", ")
                )),
            });
        }
        if !header.checks_differ.is_empty() {
            return Err(Error::Sync(format!(
                "the ranks' KL observers differ in bins, update_interval or the position in the window (this rank \
                 differs from {}); with sync_histograms every rank observes the same number of batches with the \
                 same settings",
                crate::sync::name_ranks(&header.checks_differ)
            )));
        }
        let numel = header.gathered.iter().try_fold(0u64, |acc, g| acc.checked_add(g[0]));
        let numel = numel
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::TooLarge("the ranks' batches hold more elements than this machine counts".into()))?;
        let amax = header.maxs.first().copied().unwrap_or(f32::NAN);
        if !(amax >= 0.0 && amax.is_finite()) {
            return Err(Error::Sync(format!("the ranks agreed on a largest |x| of {amax}")));
        }
        Ok((numel, amax))
    }
}

impl SyncTask for SyncedObserve<'_, '_> {
    fn next(&mut self, previous: Option<Reduced>) -> Result<Option<Contribution>> {
        match (std::mem::replace(&mut self.stage, KlStage::Done), previous) {
            (KlStage::Start, _) => {
                self.load();
                self.stage = KlStage::Header;
                Ok(Some(self.header()))
            }
            (KlStage::Header, Some(header)) => {
                let (numel, amax) = self.agree(&header)?;
                if numel == 0 {
                    return Ok(None);
                }
                // The window with the agreed range (and the zeros of an all-zero start), with an
                // empty histogram for this batch: the summed one is added after round 2.
                let mut window = self.obs.window.clone();
                let mut due = None;
                window.add(self.obs.bins, amax, numel, |bins, hi| {
                    due = Some((bins, hi));
                    Ok(vec![0; bins])
                })?;
                let Some((bins, hi)) = due else {
                    self.obs.end_batch(window)?;
                    return Ok(None);
                };
                let engine = &self.obs.core.engine;
                let mine = match &self.local {
                    Ok(Some((l, _))) => engine.abs_histogram(l, bins, hi).and_then(|h| {
                        if h.len() == bins {
                            Ok(h)
                        } else {
                            Err(Error::Device(format!("a histogram of {} bins instead of {bins}", h.len())))
                        }
                    }),
                    _ => Ok(vec![0; bins]),
                };
                let (sums, failed) = match &mine {
                    Ok(h) => (h.clone(), 0),
                    Err(_) => (vec![0; bins], 1),
                };
                self.stage = KlStage::Histogram { window, mine: mine.map(|_| ()), numel };
                Ok(Some(Contribution { sums, gathered: vec![failed], ..Default::default() }))
            }
            (KlStage::Histogram { mut window, mine, numel }, Some(summed)) => {
                let failed: Vec<usize> =
                    summed.gathered.iter().enumerate().filter(|(_, g)| g.first() != Some(&0)).map(|(r, _)| r).collect();
                mine?;
                if !failed.is_empty() {
                    let failed: Vec<String> = failed.iter().map(usize::to_string).collect();
                    return Err(Error::Sync(format!(
                        "the histogram failed on rank(s) {}; the KL state is unchanged on every rank",
                        failed.join(", ")
                    )));
                }
                if summed.sums.len() != window.hist.len() {
                    return Err(Error::Sync("the summed histogram has another length".into()));
                }
                // Every element of every rank's batch falls in one bin.
                let counted = summed.sums.iter().try_fold(0u64, |acc, &s| acc.checked_add(s));
                if counted != Some(numel as u64) {
                    let counted = counted.map_or_else(|| "more than 2^64".to_string(), |c| c.to_string());
                    return Err(Error::Sync(format!(
                        "the summed histograms count {counted} values where the ranks' batches hold {numel}: a rank \
                         sent a histogram that does not match its batch; the KL state is unchanged on every rank"
                    )));
                }
                for (h, s) in window.hist.iter_mut().zip(summed.sums) {
                    *h = h.checked_add(s).ok_or_else(|| Error::TooLarge("a histogram count overflows u64".into()))?;
                }
                self.obs.end_batch(window)?;
                Ok(None)
            }
            (KlStage::Done, _) => Ok(None),
            (_, None) => Err(Error::Sync("a round of the KL synchronisation returned nothing".into())),
        }
    }
}
