//! KLObserver (SPEC §4): a histogram of `|x|` accumulated over a window of batches, then the
//! threshold with the smallest KL divergence between the clipped and the quantized distribution.

use serde::{Deserialize, Serialize};

use crate::config::{KlConfig, MAX_BINS};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::sync::ReduceOp;

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

    /// **Extension** `sync_histograms` (no other calibrator has it): the ranks observe one
    /// batch together, as one rank would observe their batches concatenated. Every rank runs
    /// the same collectives, and every decision is taken on reduced values, so that all ranks
    /// succeed or fail together and keep identical windows:
    ///
    /// 1. one MAX over a header: the largest `|x|` (its bits: a finite `|x|` orders as its bits
    ///    do), the window's settings and position (largest and smallest, to catch ranks that
    ///    differ), and each rank's element count, non-finite count and failure in its own slot;
    /// 2. when the histogram is due, each rank histograms its batch on the agreed range and one
    ///    SUM adds the histograms (with a slot per rank for a failure).
    ///
    /// A rank whose batch is empty takes part with nothing; a step where every batch is empty
    /// is a no-op.
    fn observe_synced(&mut self, x: &Input<'_>) -> Result<()> {
        let group = self.core.group.clone();
        let (rank, world) = (group.rank(), group.world_size());
        let engine = &self.core.engine;
        let local = if x.is_empty() {
            Ok(None)
        } else {
            engine.load(x).and_then(|l| {
                let e = engine.extremes(&l, None)?;
                Ok(Some((l, e)))
            })
        };

        // 1. The header.
        let settings = [self.bins, self.update_interval, self.window.step, self.window.hist.len()].map(|v| v as u64);
        const SLOTS: usize = 1 + 2 * 4;
        let mut header = vec![0u64; SLOTS + 3 * world];
        for (i, v) in settings.iter().enumerate() {
            header[1 + 2 * i] = *v;
            header[2 + 2 * i] = !*v;
        }
        match &local {
            Ok(Some((l, e))) => {
                let amax = e.abs_max(0);
                header[0] = u64::from(if amax == 0.0 { 0.0f32 } else { amax }.to_bits());
                header[SLOTS + 3 * rank] = l.len() as u64;
                header[SLOTS + 3 * rank + 1] = e.non_finite;
            }
            Ok(None) => {}
            Err(_) => header[SLOTS + 3 * rank + 2] = 1,
        }
        group.all_reduce_u64(&mut header, ReduceOp::Max)?;
        let slot = |r: usize, k: usize| header[SLOTS + 3 * r + k];
        let refused: Vec<String> = (0..world)
            .filter_map(|r| match (slot(r, 1), slot(r, 2)) {
                (_, f) if f != 0 => Some(format!("rank {r} failed")),
                (n, _) if n != 0 => Some(format!("rank {r} holds {n} non-finite value(s)")),
                _ => None,
            })
            .collect();
        if !refused.is_empty() {
            return Err(match local {
                Err(e) => e,
                Ok(Some((_, e))) if e.non_finite > 0 => Error::NonFinite { count: e.non_finite },
                Ok(_) => Error::Sync(format!(
                    "the ranks' batches cannot be observed together ({}); the KL state is unchanged on every rank",
                    refused.join(", ")
                )),
            });
        }
        if (0..settings.len()).any(|i| header[1 + 2 * i] != !header[2 + 2 * i]) {
            return Err(Error::Sync(
                "the ranks' KL observers differ in bins, update_interval or the position in the window; with \
                 sync_histograms every rank observes the same number of batches with the same settings"
                    .into(),
            ));
        }
        let numel = (0..world).try_fold(0u64, |acc, r| acc.checked_add(slot(r, 0)));
        let numel = numel
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::TooLarge("the ranks' batches hold more elements than this machine counts".into()))?;
        if numel == 0 {
            return Ok(());
        }
        let amax = u32::try_from(header[0]).map(f32::from_bits).unwrap_or(f32::NAN);

        // 2. The histogram, on the agreed range.
        let mut window = self.window.clone();
        window.add(self.bins, amax, numel, |bins, hi| {
            let mine = match &local {
                Ok(Some((l, _))) => engine.abs_histogram(l, bins, hi),
                _ => Ok(vec![0; bins]),
            };
            let mut sums = vec![0u64; bins + world];
            match &mine {
                Ok(h) if h.len() == bins => sums[..bins].copy_from_slice(h),
                _ => sums[bins + rank] = 1,
            }
            group.all_reduce_u64(&mut sums, ReduceOp::Sum)?;
            let failed: Vec<usize> = (0..world).filter(|&r| sums[bins + r] != 0).collect();
            match mine {
                Err(e) => Err(e),
                Ok(_) if !failed.is_empty() => {
                    let failed: Vec<String> = failed.iter().map(usize::to_string).collect();
                    Err(Error::Sync(format!(
                        "the histogram failed on rank(s) {}; the KL state is unchanged on every rank",
                        failed.join(", ")
                    )))
                }
                Ok(_) => {
                    sums.truncate(bins);
                    Ok(sums)
                }
            }
        })?;
        self.end_batch(window)
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
        if self.sync_histograms && self.core.group.world_size() > 1 {
            return self.observe_synced(x);
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

    delegate_to_core!();
}

impl_observe!(KlObserver);
impl_restore!(KlObserver, Kl);
