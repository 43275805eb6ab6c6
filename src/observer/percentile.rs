//! PercentileObserver (SPEC §4): the clip value is a percentile of `|x|`, read off a fresh
//! histogram every batch.

use crate::config::PercentileConfig;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::search::percentile::{bin_centre, clip_range, percentile_target};

/// `PercentileObserver` (per-tensor): per batch, the `percentile` of `|x|` from a histogram of
/// `bins` bins on `[0, max|x|]` becomes the clip value (the centre of the bin that reaches it);
/// the range clipped to it (a one-sided tensor stays one-sided) goes through the moving average.
///
/// ```
/// use qcalib::{Observer, PercentileConfig, PercentileObserver};
/// let x: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
/// let mut obs = PercentileObserver::new(PercentileConfig { percentile: 50.0, bins: 10, ..Default::default() })?;
/// obs.observe(&x)?;
/// // 500 values reach bin 4 of 10 on [0, 0.999]: its centre clips the top.
/// assert_eq!(obs.max_val(), Some(&[4.5f32 * (0.999 / 10.0)][..]));
/// assert_eq!(obs.min_val(), Some(&[0.0f32][..]));
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Debug)]
pub struct PercentileObserver {
    core: Core,
    percentile: f64,
    bins: usize,
}

impl PercentileObserver {
    /// The observer with `config`.
    pub fn new(config: PercentileConfig) -> Result<Self> {
        let range = config.validate()?;
        Ok(PercentileObserver {
            core: Core::new(config.quant, range)?,
            percentile: config.percentile,
            bins: config.bins,
        })
    }

    /// The configuration.
    pub fn config(&self) -> PercentileConfig {
        PercentileConfig { percentile: self.percentile, bins: self.bins, quant: self.core.quant.clone() }
    }

    fn reset_own_state(&mut self) {}

    fn observer_config(&self) -> ObserverConfig {
        ObserverConfig::Percentile(self.config())
    }

    fn save_own_state(&self, _: &mut ObserverState) {}

    fn load_own_state(&mut self, _: &ObserverState) {}
}

impl Observer for PercentileObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Percentile
    }

    fn observe_input(&mut self, x: &Input<'_>) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        let x = self.core.engine.load(x)?;
        let target = percentile_target(self.percentile, x.len());
        let (e, found) = self.core.engine.extremes_and_percentile_bins(&x, self.bins, &[target])?;
        let (mn, mx) = (e.min[0], e.max[0]);
        let range = e.abs_max(0);
        let i = match found.as_slice() {
            [i] => *i,
            _ => return Err(Error::Device(format!("internal error in qcalib: {} bins for one target", found.len()))),
        };
        let (lo, hi) = clip_range(mn, mx, bin_centre(i, range, self.bins));
        self.core.update(&[lo], &[hi]);
        self.core.batches += 1;
        Ok(())
    }

    fn qparams(&mut self) -> Result<QParams> {
        self.core.qparams("no batch has been observed")
    }

    delegate_to_core!();
}

impl_observe!(PercentileObserver);
impl_restore!(PercentileObserver, Percentile);
