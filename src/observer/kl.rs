//! KLObserver (SPEC §4): a histogram of `|x|` accumulated over a window of batches, then the
//! threshold with the smallest KL divergence between the clipped and the quantized distribution.

use serde::{Deserialize, Serialize};

use crate::config::{KlConfig, MAX_BINS};
use crate::engine::Engine;
use crate::engine::{Extremes, Loaded};
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::sync::{Contribution, Reduced, SyncTask, run_together};

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
        if self.edges.is_empty() {
            if amax == 0.0 {
                self.zeros += numel as u64;
                return Ok(());
            }
            // The window's range starts: width amax / bins, edges m * w, the top edge amax.
            let w = amax / bins as f32;
            let mut edges: Vec<f32> = (0..bins).map(|m| m as f32 * w).collect();
            edges.push(amax);
            let mut hist = histogram(bins, amax)?;
            hist[0] += self.zeros;
            *self = KlWindow { hist, edges, width: w, zeros: 0, step: self.step };
            return Ok(());
        }
        if amax > self.top() {
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
            self.edges = (0..=bins).map(|m| self.width * m as f32).collect();
            self.hist.resize(bins, 0);
        }
        let batch = histogram(self.hist.len(), self.top())?;
        for (h, b) in self.hist.iter_mut().zip(batch) {
            *h += b;
        }
        Ok(())
    }

    /// The KL threshold of the window (SPEC §4): the edge `k* + 132`, the top edge when no
    /// window sum is finite, and 0 when the range never started (all batches were zeros). The
    /// search runs on `engine`.
    fn threshold(&self, engine: &Engine, levels: u64) -> Result<f32> {
        if self.edges.is_empty() {
            return Ok(0.0);
        }
        Ok(match engine.kl_threshold_index(&self.hist, levels)? {
            Some(t) => self.edges[t.min(self.edges.len() - 1)],
            None => self.top(),
        })
    }
}

/// `KLObserver` (per-tensor): the histogram of `|x|` is accumulated over `update_interval`
/// batches (widening, with a fixed bin width, when a batch exceeds it); at the end of each window
/// the threshold with the smallest KL divergence (TensorRT's entropy calibration, with the
/// plugin's smoothing over 9 candidates) becomes `±amax` and goes through the moving average.
///
/// There are no statistics before the first window completes.
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
#[derive(Debug)]
pub struct KlObserver {
    core: Core,
    bins: usize,
    update_interval: usize,
    sync_histograms: bool,
    window: KlWindow,
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

    /// The histogram of the window in progress.
    pub fn window(&self) -> &KlWindow {
        &self.window
    }

    fn reset_own_state(&mut self) {
        self.window = KlWindow::default();
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
        state.kl_window = Some(self.window.clone());
    }

    /// `state` has been checked: it holds a window.
    fn load_own_state(&mut self, state: &ObserverState) {
        self.window = state.kl_window.clone().unwrap_or_default();
    }
}

impl Observer for KlObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Kl
    }

    fn observe_input(&mut self, x: &Input<'_>) -> Result<()> {
        if self.observes_synced() {
            let group = self.core.group.clone();
            return run_together(&*group, &mut [&mut SyncedObserve::new(self, x)])?.pop().unwrap_or(Ok(()));
        }
        if x.is_empty() {
            return Ok(());
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
        self.observes_synced().then(|| Box::new(SyncedObserve::new(self, x)) as Box<dyn SyncTask + 's>)
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
