//! MSEObserver (SPEC §4): the range shrunk by the factor whose fake quantization has the smallest
//! L2 error, per tensor or per channel.

use crate::arith;
use crate::config::MseConfig;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};
use crate::search::candidates::{TieBreak, mse_candidates, pick_smallest};

/// The most `channels x candidates` error sums an MSE batch may need (each takes a scale and an
/// f64 sum): beyond it, a per-channel MSE is refused rather than allocating gigabytes, which
/// almost always means the wrong `ch_axis`.
pub const MAX_CANDIDATE_ERRORS: usize = 1 << 26;

/// `MSEObserver`: per batch, the candidates `(mn * f_i, mx * f_i)` with `f_i = 1 - 0.01 i`,
/// `i = 0, stride, … < 95`, are fake-quantized against the tensor (or each channel); the one with
/// the smallest L2 error wins, ties (within a relative 1e-6) going to the largest `i`. Per-tensor
/// or per-channel.
///
/// **Deviation** (SPEC): with `stride > 1` the plugin reports a factor it never evaluated;
/// qcalib reports the evaluated candidate's.
///
/// ```
/// use qcalib::{MseConfig, MseObserver, Observer};
/// let x: Vec<f32> = (0..4096).map(|i| ((i as f32) * 0.01).sin()).collect();
/// let mut obs = MseObserver::new(MseConfig::default())?;
/// obs.observe(&x)?;
/// let (lo, hi) = (obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]);
/// assert!(hi <= 1.0 && lo >= -1.0);
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Debug)]
pub struct MseObserver {
    core: Core,
    stride: usize,
}

impl MseObserver {
    /// The observer with `config`.
    pub fn new(config: MseConfig) -> Result<Self> {
        let range = config.validate()?;
        Ok(MseObserver { core: Core::new(config.quant, range)?, stride: config.stride })
    }

    /// The configuration.
    pub fn config(&self) -> MseConfig {
        MseConfig { stride: self.stride, quant: self.core.quant.clone() }
    }

    fn reset_own_state(&mut self) {}

    fn observer_config(&self) -> ObserverConfig {
        ObserverConfig::Mse(self.config())
    }

    fn save_own_state(&self, _: &mut ObserverState) {}

    fn load_own_state(&mut self, _: &ObserverState) {}
}

impl Observer for MseObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Mse
    }

    fn observe_input(&mut self, x: &Input<'_>) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        let axis = self.core.channel_axis(x)?;
        let candidates = mse_candidates(self.stride);
        let channels = axis.map_or(1, |a| x.shape()[a]);
        if channels.saturating_mul(candidates.len()) > MAX_CANDIDATE_ERRORS {
            return Err(Error::TooLarge(format!(
                "MSE over {channels} channels x {} candidates needs more than {MAX_CANDIDATE_ERRORS} error sums \
                 (is ch_axis {} the channel axis of this {:?} tensor?)",
                candidates.len(),
                self.core.quant.ch_axis,
                x.shape()
            )));
        }
        let x = self.core.engine.load(x)?;
        let e = self.core.extremes(&x, axis)?;
        let divisor = self.core.range.scale_divisor();
        // [candidate][channel]
        let scales: Vec<f32> = candidates
            .iter()
            .flat_map(|&(_, f)| {
                e.min.iter().zip(&e.max).map(move |(&lo, &hi)| arith::scale_with_divisor(lo * f, hi * f, divisor))
            })
            .collect();
        let r = self.core.range;
        let k = candidates.len();
        let sums = self.core.engine.fake_quant_errors(&x, axis, &scales, k, r.min_f32(), r.max_f32())?;
        let (mut lo, mut hi) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
        for c in 0..channels {
            let errors: Vec<f64> = (0..k).map(|kk| sums[kk * channels + c].sqrt()).collect();
            let best = pick_smallest(&errors, TieBreak::Last).unwrap_or(0);
            let f = candidates[best].1;
            lo.push(e.min[c] * f);
            hi.push(e.max[c] * f);
        }
        self.core.update(&lo, &hi);
        self.core.batches += 1;
        Ok(())
    }

    fn qparams(&mut self) -> Result<QParams> {
        self.core.qparams("no batch has been observed")
    }

    delegate_to_core!();
}

impl_observe!(MseObserver);
impl_restore!(MseObserver, Mse);
