//! The configuration of an observer of any kind, as one value: what a saved
//! [`ObserverState`](crate::ObserverState) records, and what rebuilds the observer.

use serde::{Deserialize, Serialize};

use crate::config::{KlConfig, MseConfig, PercentileConfig, QuantConfig};
use crate::error::Result;
use crate::observer::{
    KlObserver, MinMaxObserver, MixObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    MseObserver, Observer, ObserverKind, PercentileObserver,
};

/// Which observer, with every one of its parameters (nothing is left to a default).
///
/// In JSON the kind is the field `"observer"` (the CLI's name), next to the parameters with the
/// plugin's names:
///
/// ```
/// use qcalib::{KlConfig, ObserverConfig, ObserverKind};
/// let config = ObserverConfig::Kl(KlConfig::default());
/// let json = serde_json::to_value(&config).unwrap();
/// assert_eq!(json["observer"], "kl");
/// assert_eq!(json["bins"], 512);
/// assert_eq!(json["dtype"], "qint8");
/// assert_eq!(config.kind(), ObserverKind::Kl);
/// let mut obs = config.build()?;
/// obs.observe(&[0.5f32, -1.0][..])?;
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "observer", rename_all = "kebab-case")]
pub enum ObserverConfig {
    /// [`MinMaxObserver`].
    MinMax(QuantConfig),
    /// [`MovingAverageMinMaxObserver`].
    MovingAverageMinMax(QuantConfig),
    /// [`MovingAveragePerChannelMinMaxObserver`].
    MovingAveragePerChannelMinMax(QuantConfig),
    /// [`PercentileObserver`].
    Percentile(PercentileConfig),
    /// [`KlObserver`].
    Kl(KlConfig),
    /// [`MseObserver`].
    Mse(MseConfig),
    /// [`MixObserver`].
    Mix(QuantConfig),
}

impl ObserverConfig {
    /// Which observer.
    pub fn kind(&self) -> ObserverKind {
        match self {
            ObserverConfig::MinMax(_) => ObserverKind::MinMax,
            ObserverConfig::MovingAverageMinMax(_) => ObserverKind::MovingAverageMinMax,
            ObserverConfig::MovingAveragePerChannelMinMax(_) => ObserverKind::MovingAveragePerChannelMinMax,
            ObserverConfig::Percentile(_) => ObserverKind::Percentile,
            ObserverConfig::Kl(_) => ObserverKind::Kl,
            ObserverConfig::Mse(_) => ObserverKind::Mse,
            ObserverConfig::Mix(_) => ObserverKind::Mix,
        }
    }

    /// The shared parameters.
    pub fn quant(&self) -> &QuantConfig {
        match self {
            ObserverConfig::MinMax(q)
            | ObserverConfig::MovingAverageMinMax(q)
            | ObserverConfig::MovingAveragePerChannelMinMax(q)
            | ObserverConfig::Mix(q) => q,
            ObserverConfig::Percentile(c) => &c.quant,
            ObserverConfig::Kl(c) => &c.quant,
            ObserverConfig::Mse(c) => &c.quant,
        }
    }

    /// A new observer with this configuration (validated: an invalid parameter is an error).
    pub fn build(&self) -> Result<Box<dyn Observer>> {
        Ok(match self {
            ObserverConfig::MinMax(q) => Box::new(MinMaxObserver::new(q.clone())?),
            ObserverConfig::MovingAverageMinMax(q) => Box::new(MovingAverageMinMaxObserver::new(q.clone())?),
            ObserverConfig::MovingAveragePerChannelMinMax(q) => {
                Box::new(MovingAveragePerChannelMinMaxObserver::new(q.clone())?)
            }
            ObserverConfig::Percentile(c) => Box::new(PercentileObserver::new(c.clone())?),
            ObserverConfig::Kl(c) => Box::new(KlObserver::new(c.clone())?),
            ObserverConfig::Mse(c) => Box::new(MseObserver::new(c.clone())?),
            ObserverConfig::Mix(q) => Box::new(MixObserver::new(q.clone())?),
        })
    }
}
