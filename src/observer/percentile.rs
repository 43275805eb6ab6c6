//! PercentileObserver (SPEC §4): the clip value is a percentile of `|x|`, read off a fresh
//! histogram every batch; per tensor, or per channel (SPEC §8, an extension).

use crate::config::PercentileConfig;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::per_channel::{channels_and_values, check_counters};
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::search::percentile::{bin_centre, clip_range, percentile_target};

/// `PercentileObserver`: per batch, the `percentile` of `|x|` from a histogram of `bins` bins on
/// `[0, max|x|]` becomes the clip value (the centre of the bin that reaches it); the range
/// clipped to it (a one-sided tensor stays one-sided) goes through the moving average.
///
/// **Extension** (SPEC §8): with `per_channel_symmetric` and a `ch_axis`, every channel is
/// calibrated on its own values, exactly as a per-tensor observer that sees only that channel
/// (its own range, its own histogram, `numel` the channel's), and gets its own scale. Their
/// histograms may hold at most [`MAX_CHANNEL_COUNTERS`](crate::observer::MAX_CHANNEL_COUNTERS)
/// counters in all (channels × bins).
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
///
/// Per channel: the weight's rows with `ch_axis = 0`, each clipped at its own percentile.
///
/// ```
/// use ndarray::Array2;
/// use qcalib::{Observer, PercentileConfig, PercentileObserver, QuantConfig};
/// let w = Array2::from_shape_fn((4, 1000), |(r, i)| (r + 1) as f32 * ((i as f32) * 0.37).sin());
/// let mut obs = PercentileObserver::new(PercentileConfig { percentile: 99.0, quant: QuantConfig::per_channel(0), ..Default::default() })?;
/// obs.observe(&w)?;
/// let scales = obs.qparams()?.scale;
/// assert_eq!(scales.len(), 4);
/// // Row 1 on its own gives row 1's scale.
/// let mut one = PercentileObserver::new(PercentileConfig { percentile: 99.0, ..Default::default() })?;
/// one.observe(w.row(1))?;
/// assert_eq!(one.qparams()?.scale[0], scales[1]);
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
        let axis = self.core.channel_axis(x)?;
        let (channels, values) = channels_and_values(x.shape(), axis);
        if axis.is_some() {
            check_counters("Percentile", &self.core.quant, x.shape(), channels, channels.saturating_mul(self.bins))?;
        }
        let x = self.core.engine.load(x)?;
        let target = percentile_target(self.percentile, values);
        let (e, found) = self.core.engine.extremes_and_percentile_bins(&x, axis, self.bins, &[target])?;
        if found.len() != channels || e.min.len() != channels {
            return Err(Error::Device(format!(
                "internal error in qcalib: {} bins and {} extremes for {channels} channel(s) and one target",
                found.len(),
                e.min.len()
            )));
        }
        let (lo, hi): (Vec<f32>, Vec<f32>) = (0..channels)
            .map(|c| clip_range(e.min[c], e.max[c], bin_centre(found[c], e.abs_max(c), self.bins)))
            .unzip();
        self.core.update(&lo, &hi);
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
