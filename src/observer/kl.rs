//! KLObserver (SPEC §4): a histogram of `|x|` accumulated over a window of batches, then the
//! threshold with the smallest KL divergence between the clipped and the quantized distribution.

use serde::{Deserialize, Serialize};

use crate::config::{KlConfig, MAX_BINS};
use crate::error::{Error, Result};
use crate::observer::core::Core;
use crate::observer::{Observer, ObserverKind, QParams, delegate_to_core, impl_observe};
use crate::search::kl::threshold_index;
use crate::tensor::TensorView;

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
    /// window sum is finite, and 0 when the range never started (all batches were zeros).
    fn threshold(&self, levels: u64) -> f32 {
        if self.edges.is_empty() {
            return 0.0;
        }
        match threshold_index(&self.hist, levels) {
            Some(t) => self.edges[t.min(self.edges.len() - 1)],
            None => self.top(),
        }
    }
}

/// `KLObserver` (per-tensor): the histogram of `|x|` is accumulated over `update_interval`
/// batches (widening, with a fixed bin width, when a batch exceeds it); at the end of each window
/// the threshold with the smallest KL divergence (TensorRT's entropy calibration, with the
/// plugin's smoothing over 9 candidates) becomes `±amax` and goes through the moving average.
///
/// There are no statistics before the first window completes.
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
}

impl Observer for KlObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Kl
    }

    fn observe_tensor(&mut self, x: &TensorView<'_>) -> Result<()> {
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
        let amax = if -e.min[0] > e.max[0] { -e.min[0] } else { e.max[0] };
        let mut window = self.window.clone();
        window.add(self.bins, amax, x.len(), |b, hi| match early.take() {
            Some(h) if b == bins && hi == top => Ok(h),
            _ => engine.abs_histogram(&x, b, hi),
        })?;
        window.step += 1;
        if window.step == self.update_interval {
            let amax_kl = window.threshold(self.core.quant.dtype.kl_levels());
            self.core.update(&[-amax_kl], &[amax_kl]);
            window = KlWindow::default();
        }
        self.window = window;
        self.core.batches += 1;
        Ok(())
    }

    fn qparams(&mut self) -> Result<QParams> {
        self.core.qparams("no KL window has completed (update_interval batches)")
    }

    delegate_to_core!();
}

impl_observe!(KlObserver);
