//! The crate's error type.

/// Everything that can go wrong in qcalib.
///
/// Every fallible call returns one of these; an observer that returns an error leaves its state
/// exactly as it was before the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter of an observer is out of its domain (SPEC §6).
    #[error("invalid configuration: `{parameter}` {reason}")]
    InvalidConfig {
        /// The plugin's name of the parameter, e.g. `bins`.
        parameter: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The batch holds NaN or ±infinity (SPEC §6). The observer state is unchanged.
    #[error("the batch holds {count} non-finite value(s) (NaN or infinity); the observer state is unchanged")]
    NonFinite {
        /// How many elements of the batch are NaN or infinite.
        count: u64,
    },

    /// `qparams` was asked for before any statistics exist (SPEC §2).
    #[error("no statistics yet: {0}")]
    NoStatistics(&'static str),

    /// `ch_axis` does not name a dimension of the tensor.
    #[error("`ch_axis` {ch_axis} is out of range for a tensor with {ndim} dimension(s)")]
    ChannelAxis {
        /// The configured channel axis.
        ch_axis: isize,
        /// The number of dimensions of the tensor observed.
        ndim: usize,
    },

    /// A per-channel observer saw a different channel count than in earlier batches.
    #[error("the channel count changed from {expected} to {found} (axis {axis}); the observer state is unchanged")]
    ChannelCountChanged {
        /// The channel count of the statistics kept so far.
        expected: usize,
        /// The channel count of this batch.
        found: usize,
        /// The channel axis, counted from the first dimension.
        axis: usize,
    },

    /// A tensor too large for the arithmetic of the engine that was asked to observe it.
    #[error("tensor too large: {0}")]
    TooLarge(String),

    /// A tensor's shape does not fit its data (a device buffer of another length).
    #[error("tensor shape: {0}")]
    Shape(String),

    /// The requested device is not available, or the device failed.
    #[error("device: {0}")]
    Device(String),

    /// A collective operation across ranks failed (`is_sync_quantize`).
    #[error("sync across ranks: {0}")]
    Sync(String),

    /// A calibration file could not be read.
    #[error("{path}: {reason}")]
    Input {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A saved observer state could not be used: not a state, a future format version, or
    /// contents that contradict each other.
    #[error("observer state: {0}")]
    State(String),

    /// A saved observer state belongs to another observer kind, or was saved with other
    /// parameters than the observer it is loaded into.
    #[error("observer state: saved with `{parameter}` = {saved}, but this observer has `{parameter}` = {current}")]
    StateMismatch {
        /// The parameter that differs (`observer` for the kind).
        parameter: String,
        /// Its value in the state.
        saved: String,
        /// Its value in the observer.
        current: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidConfig`] for `parameter`.
    pub(crate) fn config(parameter: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { parameter, reason: reason.into() }
    }
}
