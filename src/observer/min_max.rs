//! MinMaxObserver and its two moving-average forms (SPEC §4): per batch the min and max of the
//! tensor or of each channel, then the update rule.

use crate::config::QuantConfig;
use crate::error::Result;
use crate::input::Input;
use crate::observer::core::Core;
use crate::observer::{
    Observer, ObserverConfig, ObserverKind, ObserverState, QParams, delegate_to_core, impl_observe, impl_restore,
};

/// One batch of any of the three: extremes per tensor or channel, then the update rule.
fn observe_min_max(core: &mut Core, x: &Input<'_>) -> Result<()> {
    if x.is_empty() {
        return Ok(());
    }
    let axis = core.channel_axis(x)?;
    let x = core.engine.load(x)?;
    let e = core.extremes(&x, axis)?;
    core.update(&e.min, &e.max);
    core.batches += 1;
    Ok(())
}

/// Defines one of the three min/max observers: a [`Core`] and a check of the scheme.
macro_rules! min_max_observer {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            core: Core,
        }

        impl $name {
            /// The observer with `quant` (see the type's documentation for the schemes it takes).
            pub fn new(quant: QuantConfig) -> Result<Self> {
                let range = quant.validate()?;
                let check: fn(&QuantConfig) -> Result<()> = $check;
                check(&quant)?;
                Ok($name { core: Core::new(quant, range)? })
            }

            fn reset_own_state(&mut self) {}

            fn observer_config(&self) -> ObserverConfig {
                ObserverConfig::$variant(self.core.quant.clone())
            }

            fn save_own_state(&self, _: &mut ObserverState) {}

            fn load_own_state(&mut self, _: &ObserverState) {}
        }

        impl_observe!($name);
        impl_restore!($name, $variant);

        impl Observer for $name {
            fn kind(&self) -> ObserverKind {
                ObserverKind::$variant
            }

            fn observe_input(&mut self, x: &Input<'_>) -> Result<()> {
                observe_min_max(&mut self.core, x)
            }

            fn qparams(&mut self) -> Result<QParams> {
                self.core.qparams("no batch has been observed")
            }

            delegate_to_core!();
        }
    };
}

min_max_observer!(
    /// `MinMaxObserver`: per batch the min and max of the tensor (per-tensor) or of each channel
    /// (per-channel), then the moving average with `averaging_constant`.
    ///
    /// ```
    /// use ndarray::array;
    /// use qcalib::{MinMaxObserver, Observer, QuantConfig};
    /// let w = array![[0.5f32, -1.0, 0.25], [2.0, 0.0, -0.5]];
    /// let mut obs = MinMaxObserver::new(QuantConfig::per_channel(0))?;
    /// obs.observe(&w)?;
    /// assert_eq!(obs.max_val(), Some(&[0.5f32, 2.0][..]));
    /// assert_eq!(obs.qparams()?.scale, vec![1.0 / 127.5, 2.0 / 127.5]);
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    MinMaxObserver,
    MinMax,
    |_| Ok(())
);

min_max_observer!(
    /// `MovingAverageMinMaxObserver`: the per-tensor MinMaxObserver (a per-channel scheme is a
    /// configuration error).
    ///
    /// ```
    /// use qcalib::{MovingAverageMinMaxObserver, Observer, QuantConfig};
    /// let mut obs = MovingAverageMinMaxObserver::new(QuantConfig { averaging_constant: 0.5, ..Default::default() })?;
    /// obs.observe(&[1.0f32, -4.0][..])?;
    /// obs.observe(&[2.0f32, -2.0][..])?;
    /// assert_eq!((obs.min_val(), obs.max_val()), (Some(&[-3.0f32][..]), Some(&[1.5f32][..])));
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    MovingAverageMinMaxObserver,
    MovingAverageMinMax,
    |q| q.require_per_tensor("MovingAverageMinMaxObserver")
);

min_max_observer!(
    /// `MovingAveragePerChannelMinMaxObserver`: the per-channel MinMaxObserver. Its defaults are
    /// `ch_axis = 0` and a per-channel scheme ([`QuantConfig::per_channel`]); a per-tensor scheme
    /// is a configuration error. A negative `ch_axis` counts from the last dimension.
    ///
    /// ```
    /// use ndarray::Array2;
    /// use qcalib::{MovingAveragePerChannelMinMaxObserver, Observer, QuantConfig};
    /// let w = Array2::from_shape_fn((4, 3), |(r, c)| (r as f32 - 1.5) * (c + 1) as f32);
    /// let mut obs = MovingAveragePerChannelMinMaxObserver::new(QuantConfig::per_channel(-1))?;
    /// obs.observe(&w)?;
    /// assert_eq!(obs.max_val(), Some(&[1.5f32, 3.0, 4.5][..]));
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    MovingAveragePerChannelMinMaxObserver,
    MovingAveragePerChannelMinMax,
    |q| {
        if q.qscheme.is_per_channel() {
            Ok(())
        } else {
            Err(crate::Error::config("qscheme", "MovingAveragePerChannelMinMaxObserver is per-channel only"))
        }
    }
);
