//! MixObserver (SPEC §4): nine percentile clips, the one with the smallest fake-quantization
//! error on the batch wins.

use crate::arith;
use crate::config::QuantConfig;
use crate::error::Result;
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::search::candidates::{TieBreak, pick_smallest};
use crate::search::percentile::{bin_centre, clip_range, fraction_target};

/// The histogram bins of MixObserver (fixed; it has no `bins` parameter).
pub const MIX_BINS: usize = 2048;

/// The candidate fractions of `|x|` MixObserver tries.
pub const MIX_FRACTIONS: [f64; 9] = [0.999, 0.9995, 0.9999, 0.99993, 0.99995, 0.99997, 0.99999, 0.999995, 0.999999];

/// `MixObserver` (per-tensor): the percentile clips of [`MIX_FRACTIONS`](crate::observer::MIX_FRACTIONS) (on a 2048-bin
/// histogram of `|x|`) are fake-quantized against the whole batch; the clip with the smallest L2
/// error wins (errors within a relative 1e-6 are tied and the smaller clip wins), and its range
/// goes through the moving average.
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
    /// The observer with `quant` (per-tensor).
    pub fn new(quant: QuantConfig) -> Result<Self> {
        let range = quant.validate()?;
        quant.require_per_tensor("MixObserver")?;
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
        let x = self.core.engine.load(x)?;
        let targets: Vec<f32> = MIX_FRACTIONS.iter().map(|&f| fraction_target(f, x.len())).collect();
        let (e, mut bins) = self.core.engine.extremes_and_percentile_bins(&x, MIX_BINS, &targets)?;
        let (mn, mx) = (e.min[0], e.max[0]);
        let range = e.abs_max(0);
        bins.sort_unstable();
        bins.dedup();
        let ranges: Vec<(f32, f32)> =
            bins.iter().map(|&i| clip_range(mn, mx, bin_centre(i, range, MIX_BINS))).collect();
        let scales: Vec<f32> = ranges.iter().map(|&(lo, hi)| arith::scale(lo, hi, &self.core.range)).collect();
        let r = self.core.range;
        let sums = self.core.engine.fake_quant_errors(&x, None, &scales, scales.len(), r.min_f32(), r.max_f32())?;
        let errors: Vec<f64> = sums.iter().map(|s| s.sqrt()).collect();
        let best = pick_smallest(&errors, TieBreak::First).unwrap_or(0);
        let (lo, hi) = ranges[best];
        self.core.update(&[lo], &[hi]);
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
