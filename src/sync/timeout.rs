//! How long a rank waits for the others: `QCALIB_SYNC_TIMEOUT` seconds, 300 by default.

use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable that sets the timeout of every wait across ranks, in seconds
/// (a decimal number above 0 and below 10^9).
pub const TIMEOUT_VAR: &str = "QCALIB_SYNC_TIMEOUT";

/// The timeout without [`TIMEOUT_VAR`]: long enough for ranks whose batches take different
/// times, short enough that a hung rank ends the job the same day.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The timeout of every wait across ranks: [`TIMEOUT_VAR`] when set, else [`DEFAULT_TIMEOUT`].
/// A value that is not a positive number of seconds is an error.
pub fn default_timeout() -> Result<Duration> {
    parse_timeout(std::env::var(TIMEOUT_VAR).ok().as_deref())
}

/// [`default_timeout`] for the value `var` of [`TIMEOUT_VAR`].
pub(crate) fn parse_timeout(var: Option<&str>) -> Result<Duration> {
    let Some(text) = var else { return Ok(DEFAULT_TIMEOUT) };
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| Error::config(TIMEOUT_VAR, format!("`{text}` is not a number of seconds above 0 and below 1e9")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds() {
        assert_eq!(parse_timeout(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(parse_timeout(Some("2.5")).unwrap(), Duration::from_millis(2500));
        for bad in ["0", "-1", "soon", "inf", "", "1e30"] {
            let e = parse_timeout(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("above 0 and below 1e9"), "{bad}: {e}");
        }
    }
}
