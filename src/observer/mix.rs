//! MixObserver (SPEC §4): nine percentile clips, the one with the smallest fake-quantization
//! error on the batch wins; per tensor, or per channel (SPEC §8, an extension).

use crate::arith;
use crate::config::QuantConfig;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::per_channel::{channels_and_values, check_counters};
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::search::candidates::{TieBreak, pick_smallest};
use crate::search::percentile::{bin_centre, clip_range, fraction_target};

/// The histogram bins of MixObserver (fixed; it has no `bins` parameter).
pub const MIX_BINS: usize = 2048;

/// The candidate fractions of `|x|` MixObserver tries.
pub const MIX_FRACTIONS: [f64; 9] = [0.999, 0.9995, 0.9999, 0.99993, 0.99995, 0.99997, 0.99999, 0.999995, 0.999999];

/// `MixObserver`: the percentile clips of [`MIX_FRACTIONS`](crate::observer::MIX_FRACTIONS) (on
/// a 2048-bin histogram of `|x|`) are fake-quantized against the whole batch; the clip with the
/// smallest L2 error wins (errors within a relative 1e-6 are tied and the smaller clip wins), and
/// its range goes through the moving average.
///
/// **Extension** (SPEC §8): with `per_channel_symmetric` and a `ch_axis`, every channel is
/// calibrated on its own values, exactly as a per-tensor observer that sees only that channel:
/// its own histogram and clips, errors summed over the channel, its own winner and scale (at most
/// [`MAX_CHANNEL_COUNTERS`](crate::observer::MAX_CHANNEL_COUNTERS) / 2048 channels).
///
/// ```
/// use qcalib::{MixObserver, Observer, QuantConfig};
/// let mut x: Vec<f32> = (0..10_000).map(|i| ((i as f32) * 0.37).sin()).collect();
/// x[0] = 40.0; // one outlier: clipping it is cheaper than a coarse scale
/// let mut obs = MixObserver::new(QuantConfig::default())?;
/// obs.observe(&x)?;
/// assert!(obs.max_val().unwrap()[0] < 40.0);
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Debug)]
pub struct MixObserver {
    core: Core,
}

impl MixObserver {
    /// The observer with `quant` (per tensor or per channel).
    pub fn new(quant: QuantConfig) -> Result<Self> {
        let range = quant.validate()?;
        Ok(MixObserver { core: Core::new(quant, range)? })
    }

    fn reset_own_state(&mut self) {}

    fn observer_config(&self) -> ObserverConfig {
        ObserverConfig::Mix(self.core.quant.clone())
    }

    fn save_own_state(&self, _: &mut ObserverState) {}

    fn load_own_state(&mut self, _: &ObserverState) {}
}

impl Observer for MixObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Mix
    }

    fn observe_input(&mut self, x: &Input<'_>) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        let axis = self.core.channel_axis(x)?;
        let (channels, values) = channels_and_values(x.shape(), axis);
        if axis.is_some() {
            check_counters("Mix", &self.core.quant, x.shape(), channels, channels.saturating_mul(MIX_BINS))?;
        }
        let x = self.core.engine.load(x)?;
        let targets: Vec<f32> = MIX_FRACTIONS.iter().map(|&f| fraction_target(f, values)).collect();
        let (e, found) = self.core.engine.extremes_and_percentile_bins(&x, axis, MIX_BINS, &targets)?;
        if found.len() != channels * targets.len() || e.min.len() != channels {
            return Err(Error::Device(format!(
                "internal error in qcalib: {} bins and {} extremes for {channels} channel(s) and {} targets",
                found.len(),
                e.min.len(),
                targets.len()
            )));
        }
        // Each channel's candidates: its distinct bins, ascending, as clipped ranges.
        let candidates: Vec<Vec<(f32, f32)>> = found
            .chunks_exact(targets.len())
            .enumerate()
            .map(|(c, bins)| {
                let mut bins = bins.to_vec();
                bins.sort_unstable();
                bins.dedup();
                let range = e.abs_max(c);
                bins.iter().map(|&i| clip_range(e.min[c], e.max[c], bin_centre(i, range, MIX_BINS))).collect()
            })
            .collect();
        // Scales `[k][channel]`, a channel with fewer candidates repeating its last (whose errors
        // are then ignored).
        let k = candidates.iter().map(Vec::len).max().unwrap_or(0);
        let r = self.core.range;
        let scales: Vec<f32> = (0..k)
            .flat_map(|kk| {
                candidates.iter().map(move |cands| {
                    let (lo, hi) = cands[kk.min(cands.len() - 1)];
                    arith::scale(lo, hi, &r)
                })
            })
            .collect();
        let sums = self.core.engine.fake_quant_errors(&x, axis, &scales, k, r.min_f32(), r.max_f32())?;
        let (lo, hi): (Vec<f32>, Vec<f32>) = candidates
            .iter()
            .enumerate()
            .map(|(c, cands)| {
                let errors: Vec<f64> = (0..cands.len()).map(|kk| sums[kk * channels + c].sqrt()).collect();
                cands[pick_smallest(&errors, TieBreak::First).unwrap_or(0)]
            })
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

impl_observe!(MixObserver);
impl_restore!(MixObserver, Mix);
