//! Saved calibration state: everything an observer has accumulated, in a documented, versioned
//! JSON format, so that a calibration interrupted after any batch resumes exactly where it
//! stopped (bit for bit the result of an uninterrupted run).
//!
//! ```
//! use qcalib::{KlConfig, KlObserver, Observer, ObserverState};
//! let batches: Vec<Vec<f32>> = (0..4).map(|b| (0..5000).map(|i| ((i * (b + 3)) as f32 * 0.01).sin()).collect()).collect();
//! let config = KlConfig { update_interval: 3, ..Default::default() };
//!
//! let mut first = KlObserver::new(config.clone())?;
//! first.observe(&batches[0])?;
//! first.observe(&batches[1])?;
//! let saved: String = first.save_state().to_json()?;      // e.g. written to a file
//!
//! let mut resumed = ObserverState::from_json(&saved)?.into_observer()?; // after a restart
//! resumed.observe(&batches[2])?;
//! resumed.observe(&batches[3])?;
//!
//! let mut uninterrupted = KlObserver::new(config)?;
//! for b in &batches {
//!     uninterrupted.observe(b)?;
//! }
//! assert_eq!(resumed.save_state(), uninterrupted.save_state());
//! assert_eq!(resumed.qparams()?, uninterrupted.qparams()?);
//! # Ok::<(), qcalib::Error>(())
//! ```
//!
//! # Format (versions 1 and 2)
//!
//! One JSON object:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `format` | string | always `"qcalib-observer-state"` |
//! | `version` | integer | the format version: `1`, or `2` for a state that holds `kl_channels` (a reader of version 1 does not know them); this build reads both |
//! | `config` | object | the observer and all its parameters ([`ObserverConfig`]): `"observer"` (the CLI's name, e.g. `"kl"`), then the plugin's parameter names (`averaging_constant`, `ch_axis`, `dtype`, `qscheme`, `quant_min`, `quant_max`, `is_sync_quantize`, and the observer's own: `bins`, `percentile`, `update_interval`, `sync_histograms`, `stride`) |
//! | `batches` | integer | non-empty batches observed |
//! | `min_val`, `max_val` | arrays of numbers | the running minimum and maximum (SPEC §2): empty before any statistics, then one value per tensor or per channel |
//! | `kl_window` | object | KL only: the window in progress ([`KlWindow`]): `hist` (counts per bin), `edges` (`hist.len() + 1` bin edges, empty before the range starts), `width` (the bin width), `zeros` (zeros seen before the range started), `step` (batches in the window) |
//! | `kl_channels` | array of objects | per-channel KL only (SPEC §8; version 2), instead of `kl_window`: the windows in progress, one per channel, each like `kl_window`, all at the same `step`; empty before the first batch of a window |
//!
//! Numbers are written in the shortest form that reads back to the same f32, so a state read
//! back is bit for bit the state saved. Counts are at most `2^63 - 1`.
//!
//! Reading refuses, with an [`Error`] that says why and names the field: text that is not JSON
//! or repeats a key in any object (where JSON readers keep one of the two silently), another
//! `format`, a `version` this build does not know (a newer qcalib's), unknown or missing fields,
//! and every contradiction between the contents and the configuration that can be checked
//! without the batches ([`ObserverState::validate`]):
//!
//! - a configuration no observer takes (a parameter outside its domain, e.g. KL `bins` below
//!   256 or an `averaging_constant` above 1);
//! - `min_val` and `max_val` of different lengths, several values for a per-tensor observer,
//!   non-finite values;
//! - statistics without the batches that make them (`batches` is 0, or for KL fewer than
//!   `update_interval`), or batches without statistics (except that with `is_sync_quantize` a
//!   rank can hold the statistics of others);
//! - `min_val` greater than `max_val` in a channel where the observer cannot produce it: always
//!   for KL (whose range is `±amax`: `min_val` is exactly `-max_val`), and for the min-max
//!   observers and MSE when the range is one batch's (`batches` 1 without `is_sync_quantize`,
//!   or `averaging_constant` 0). After a moving average it is not a contradiction: the update
//!   `old + c * (cur - old)` rounds in f32 (SPEC §2, the plugin's arithmetic), and with `c` near
//!   1 it can leave `min_val` above `max_val`; Percentile and Mix clip a one-sided batch to a
//!   range whose ends can cross (SPEC §4);
//! - a KL window ([`KlWindow`]) whose `step` is not `batches` modulo `update_interval` (both
//!   count the same batches), whose edges are not the ones the observer computes from `width`
//!   and the bin count (SPEC §4: `e[m] = m * w`, the top edge `bins * w`, or the first batch's
//!   `amax` with `w = amax / bins`), with fewer counts than batches in the window (each adds at
//!   least one value), or counts, edges or a width in a window that holds no batch.
//!
//! Batch sizes are not part of the state, so the counts are bounded by the batch count only
//! from below. Loading into an observer also refuses a state of another kind or with other
//! parameters ([`Error::StateMismatch`] names the parameter).
//!
//! What a state does not hold: the device and the process group (set them on the observer
//! after restoring it).

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::MAX_BINS;
use crate::error::{Error, Result};
use crate::observer::core::RangeStats;
use crate::observer::{KlWindow, MAX_CHANNEL_COUNTERS, Observer, ObserverConfig, ObserverKind};

/// The largest count a state holds (what JSON readers of other languages read as an integer).
const MAX_COUNT: u64 = i64::MAX as u64;

/// The full calibration state of one observer (see the [module documentation](self) for the
/// format). Get it with [`Observer::save_state`]; resume with [`ObserverState::into_observer`],
/// [`Observer::load_state`] or the observer type's `restore`.
///
/// It serialises with serde (the derived `Serialize`); deserialising checks `format` and
/// `version` first, so a state of a future version is refused with a clear error whatever its
/// fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct ObserverState {
    /// Always [`ObserverState::FORMAT`].
    pub format: String,
    /// The format version, [`ObserverState::VERSION`].
    pub version: u32,
    /// The observer and its parameters.
    pub config: ObserverConfig,
    /// Non-empty batches observed.
    pub batches: u64,
    /// The running minimum (empty before any statistics).
    pub min_val: Vec<f32>,
    /// The running maximum (empty before any statistics).
    pub max_val: Vec<f32>,
    /// The KL window in progress (KL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_window: Option<KlWindow>,
    /// The KL windows in progress, one per channel (per-channel KL only, format version 2; empty
    /// before the first batch of a window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_channels: Option<Vec<KlWindow>>,
}

/// [`ObserverState`]'s fields as read, before the checks of the header.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    format: String,
    version: u32,
    config: ObserverConfig,
    batches: u64,
    min_val: Vec<f32>,
    max_val: Vec<f32>,
    #[serde(default)]
    kl_window: Option<KlWindow>,
    #[serde(default)]
    kl_channels: Option<Vec<KlWindow>>,
}

impl TryFrom<Value> for ObserverState {
    type Error = Error;

    /// Reads a state and checks it: its configuration (every parameter in its domain, by the
    /// checks of the observer's constructor) and its contents ([`ObserverState::validate`]).
    fn try_from(value: Value) -> Result<Self> {
        check_header(&value)?;
        let f: Fields =
            serde_json::from_value(value).map_err(|e| Error::State(format!("malformed observer state: {e}")))?;
        let state = ObserverState {
            format: f.format,
            version: f.version,
            config: f.config,
            batches: f.batches,
            min_val: f.min_val,
            max_val: f.max_val,
            kl_window: f.kl_window,
            kl_channels: f.kl_channels,
        };
        // Building the observer runs its own checks of the parameters (a state written by qcalib
        // has a configuration an observer was built with; one read may not).
        state.config.build().map_err(|e| Error::State(format!("`config`: {e}")))?;
        state.validate()?;
        Ok(state)
    }
}

/// Checks `format` and `version` of a state read as JSON, before anything else in it.
fn check_header(value: &Value) -> Result<()> {
    let format = value.get("format").and_then(Value::as_str);
    if format != Some(ObserverState::FORMAT) {
        let found = value.get("format").map_or("no `format` field".to_string(), |f| format!("`format` {f}"));
        return Err(Error::State(format!(
            "not a qcalib observer state ({found}, expected {:?})",
            ObserverState::FORMAT
        )));
    }
    check_version(value.get("version").and_then(Value::as_u64))
}

fn check_version(version: Option<u64>) -> Result<()> {
    match version {
        Some(v) if (1..=ObserverState::VERSION as u64).contains(&v) => Ok(()),
        Some(v) if v > ObserverState::VERSION as u64 => Err(Error::State(format!(
            "format version {v} was written by a newer qcalib; this one reads version {}",
            ObserverState::VERSION
        ))),
        Some(v) => Err(Error::State(format!("unknown format version {v}"))),
        None => Err(Error::State("no format `version` (a non-negative integer)".into())),
    }
}

impl ObserverState {
    /// The value of the `format` field.
    pub const FORMAT: &'static str = "qcalib-observer-state";
    /// The newest format version this build writes and reads. It reads every version up to it,
    /// and writes the oldest that holds the state: 2 for the per-channel KL windows
    /// ([`kl_channels`](ObserverState::kl_channels)), which version 1 does not know, else 1.
    pub const VERSION: u32 = 2;

    /// A state of the current format.
    pub(crate) fn new(config: ObserverConfig, stats: &RangeStats, batches: u64, kl_window: Option<KlWindow>) -> Self {
        ObserverState {
            format: Self::FORMAT.to_string(),
            version: 1,
            config,
            batches,
            min_val: stats.min_val.clone(),
            max_val: stats.max_val.clone(),
            kl_window,
            kl_channels: None,
        }
    }

    /// Records the per-channel KL windows (which need format version 2).
    pub(crate) fn set_kl_channels(&mut self, windows: Vec<KlWindow>) {
        self.kl_channels = Some(windows);
        self.version = self.version.max(2);
    }

    /// Which observer the state is of.
    pub fn kind(&self) -> ObserverKind {
        self.config.kind()
    }

    /// The state as compact JSON. An error (instead of a file that could not be read back) if
    /// the state holds a non-finite number, which no observer produces.
    pub fn to_json(&self) -> Result<String> {
        self.validate()?;
        serde_json::to_string(self).map_err(|e| Error::State(format!("cannot write the state as JSON: {e}")))
    }

    /// Reads a state written by [`ObserverState::to_json`] (or any JSON of the format), checking
    /// the format, the version and the consistency of the contents.
    pub fn from_json(text: &str) -> Result<Self> {
        ObserverState::try_from(parse_json_strict(text)?)
    }

    /// A new observer of the state's kind and configuration, holding the state (on the default
    /// device and a single-rank process group).
    ///
    /// ```
    /// use qcalib::{MinMaxObserver, Observer, ObserverKind, QuantConfig};
    /// let mut obs = MinMaxObserver::new(QuantConfig::per_channel(0))?;
    /// obs.observe(&ndarray::array![[1.0f32, -2.0], [0.5, 4.0]])?;
    /// let copy = obs.save_state().into_observer()?;
    /// assert_eq!(copy.kind(), ObserverKind::MinMax);
    /// assert_eq!(copy.max_val(), Some(&[1.0f32, 4.0][..]));
    /// # Ok::<(), qcalib::Error>(())
    /// ```
    pub fn into_observer(self) -> Result<Box<dyn Observer>> {
        self.check_format()?;
        let mut obs = self.config.build()?;
        obs.load_state(&self)?;
        Ok(obs)
    }

    /// Checks the `format` and `version` fields.
    pub(crate) fn check_format(&self) -> Result<()> {
        if self.format != Self::FORMAT {
            return Err(Error::State(format!(
                "not a qcalib observer state (`format` {:?}, expected {:?})",
                self.format,
                Self::FORMAT
            )));
        }
        check_version(Some(self.version as u64))
    }

    /// Checks that the state can be loaded into an observer whose configuration is `current`:
    /// the format, the kind, every parameter, and the contents.
    pub(crate) fn check_for(&self, current: &ObserverConfig) -> Result<()> {
        self.check_format()?;
        check_same_config(&self.config, current)?;
        self.validate()
    }

    /// Checks the format, the version, and that the contents agree with each other and with the
    /// state's configuration (what [`ObserverState::from_json`] and loading check).
    ///
    /// The checks are listed in the [module documentation](self); each error names the field.
    pub fn validate(&self) -> Result<()> {
        self.check_format()?;
        let bad = |what: String| Err(Error::State(what));
        if self.min_val.len() != self.max_val.len() {
            return bad(format!("`min_val` has {} value(s) but `max_val` {}", self.min_val.len(), self.max_val.len()));
        }
        let quant = self.config.quant();
        if !quant.qscheme.is_per_channel() && self.min_val.len() > 1 {
            return bad(format!("a per-tensor observer with {} values in `min_val`", self.min_val.len()));
        }
        if let Some(v) = self.min_val.iter().chain(&self.max_val).find(|v| !v.is_finite()) {
            return bad(format!("`min_val`/`max_val` hold the non-finite value {v}"));
        }
        if self.batches > MAX_COUNT {
            return bad(format!("`batches` {} is more than {MAX_COUNT}", self.batches));
        }
        // The first update: after the first batch, for KL after the first window.
        let first_update = match &self.config {
            ObserverConfig::Kl(c) => c.update_interval as u64,
            _ => 1,
        };
        let has_stats = !self.min_val.is_empty();
        if !has_stats && self.batches >= first_update {
            return bad(format!(
                "`batches` {} but `min_val` and `max_val` are empty (the statistics exist after {first_update} \
                 batch(es))",
                self.batches
            ));
        }
        if has_stats && self.batches < first_update && !quant.is_sync_quantize {
            return bad(format!(
                "`min_val` and `max_val` hold statistics but `batches` is {} (they need {first_update} batch(es))",
                self.batches
            ));
        }
        self.check_order()?;
        if let (ObserverConfig::Kl(config), true) = (&self.config, quant.qscheme.is_per_channel()) {
            return self.check_kl_channels(config.bins, config.update_interval);
        }
        if self.kl_channels.is_some() {
            return bad(format!("`kl_channels` in the state of a per-tensor {} observer", self.kind()));
        }
        match (&self.config, &self.kl_window) {
            (ObserverConfig::Kl(config), Some(window)) => {
                check_kl_window(window, config.bins, config.update_interval, self.batches)
            }
            (ObserverConfig::Kl(_), None) => bad("a KL observer state without its `kl_window`".into()),
            (_, Some(_)) => bad(format!("a `kl_window` in the state of a {} observer", self.kind())),
            (_, None) => Ok(()),
        }
    }

    /// The checks of the windows of a per-channel KL observer (SPEC §8): each as a per-tensor
    /// window, one per channel, all at the same step, within the limit on counters.
    fn check_kl_channels(&self, bins: usize, update_interval: usize) -> Result<()> {
        let bad = |what: String| Err(Error::State(what));
        let Some(windows) = &self.kl_channels else {
            return bad("a per-channel KL observer state without its `kl_channels`".into());
        };
        if self.version < 2 {
            return bad(format!("`kl_channels` needs format version 2, the state says {}", self.version));
        }
        if self.kl_window.is_some() {
            return bad("a `kl_window` in the state of a per-channel KL observer (it keeps `kl_channels`)".into());
        }
        if !windows.is_empty() && !self.min_val.is_empty() && windows.len() != self.min_val.len() {
            return bad(format!("{} channel windows for {} channels in `min_val`", windows.len(), self.min_val.len()));
        }
        // Each as a window of its own (its `step` following from `batches`: all alike); none while
        // no window is in progress.
        for (c, w) in windows.iter().enumerate() {
            check_kl_window(w, bins, update_interval, self.batches)
                .map_err(|e| Error::State(format!("channel {c}: {e}")))?;
        }
        let step = self.batches % update_interval as u64;
        if windows.is_empty() != (step == 0) {
            return bad(format!(
                "{} channel window(s) after `batches` {} (with `update_interval` {update_interval} a window is in \
                 progress exactly when batches are not a multiple of it)",
                windows.len(),
                self.batches
            ));
        }
        let counters = windows.iter().try_fold(0usize, |a, w| a.checked_add(w.hist.len().max(bins)));
        if counters.is_none_or(|n| n > MAX_CHANNEL_COUNTERS) {
            return bad(format!("the channel windows hold more than {MAX_CHANNEL_COUNTERS} counters"));
        }
        Ok(())
    }
}

impl ObserverState {
    /// `min_val[c] <= max_val[c]` where the observer guarantees it (see the module documentation).
    fn check_order(&self) -> Result<()> {
        let quant = self.config.quant();
        let pairs = self.min_val.iter().zip(&self.max_val).enumerate();
        match &self.config {
            ObserverConfig::Kl(_) => {
                for (c, (&lo, &hi)) in pairs {
                    if lo != -hi || hi < 0.0 {
                        return Err(Error::State(format!(
                            "`min_val[{c}]` {lo} and `max_val[{c}]` {hi} are not `-amax` and `amax` (a KL range is \
                             symmetric)"
                        )));
                    }
                }
            }
            ObserverConfig::MinMax(_)
            | ObserverConfig::MovingAverageMinMax(_)
            | ObserverConfig::MovingAveragePerChannelMinMax(_)
            | ObserverConfig::Mse(_)
                if quant.averaging_constant == 0.0 || (self.batches == 1 && !quant.is_sync_quantize) =>
            {
                if let Some((c, (lo, hi))) = pairs.into_iter().find(|(_, (lo, hi))| lo > hi) {
                    return Err(Error::State(format!(
                        "`min_val[{c}]` {lo} is greater than `max_val[{c}]` {hi} (the range of one batch)"
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The checks of a KL window: what keeps the observer's arithmetic sound, and what makes it the
/// window the observer would hold after `batches` batches (SPEC §4).
fn check_kl_window(w: &KlWindow, bins: usize, update_interval: usize, batches: u64) -> Result<()> {
    let bad = |what: String| Err(Error::State(format!("`kl_window`: {what}")));
    if w.step >= update_interval {
        return bad(format!("`step` {} is not below `update_interval` {update_interval}", w.step));
    }
    if w.step as u64 != batches % update_interval as u64 {
        return bad(format!(
            "`step` {} does not follow from `batches` {batches}: with `update_interval` {update_interval} the window \
             in progress holds {} batch(es)",
            w.step,
            batches % update_interval as u64
        ));
    }
    if !w.width.is_finite() || w.width < 0.0 {
        return bad(format!("`width` {} is not a finite non-negative number", w.width));
    }
    if let Some(e) = w.edges.iter().find(|e| !e.is_finite()) {
        return bad(format!("the edge {e} is not finite"));
    }
    if w.edges.is_empty() {
        if !w.hist.is_empty() {
            return bad(format!("{} histogram bins but no edges", w.hist.len()));
        }
        if w.width != 0.0 {
            return bad(format!("`width` {} before the range has started (no edges)", w.width));
        }
    } else {
        if w.edges.len() != w.hist.len() + 1 {
            return bad(format!("{} edges for {} bins (needs bins + 1)", w.edges.len(), w.hist.len()));
        }
        if w.hist.len() < bins || w.hist.len() > MAX_BINS {
            return bad(format!("{} bins, outside {bins} ..= {MAX_BINS}", w.hist.len()));
        }
        if w.zeros != 0 {
            return bad(format!("{} zeros held back after the range started", w.zeros));
        }
        check_kl_edges(w, bins)?;
    }
    let total = w.hist.iter().try_fold(w.zeros, |a, &c| a.checked_add(c));
    let Some(total) = total.filter(|&t| t <= MAX_COUNT) else {
        return bad(format!("the counts add up to more than {MAX_COUNT}"));
    };
    if total < w.step as u64 {
        return bad(format!(
            "the histogram and `zeros` hold {total} count(s) for `step` {} batch(es) (each batch adds at least one)",
            w.step
        ));
    }
    if w.step == 0 && (total > 0 || !w.edges.is_empty()) {
        return bad(format!("`step` 0 (no batch in the window) but {total} count(s) and {} edge(s)", w.edges.len()));
    }
    Ok(())
}

/// The edges of a started KL window are the observer's: `e[m] = m * w` for every bin's lower
/// edge, and the top edge `bins * w`, or, while the window keeps the first batch's bin count,
/// that batch's `amax` with `w = amax / bins` (SPEC §4, steps 2 and 3).
fn check_kl_edges(w: &KlWindow, bins: usize) -> Result<()> {
    let bad = |what: String| Err(Error::State(format!("`kl_window`: {what}")));
    let n = w.hist.len();
    if let Some((m, e)) = w.edges[..n].iter().enumerate().find(|&(m, &e)| e != m as f32 * w.width) {
        return bad(format!(
            "the edge `edges[{m}]` {e} is not {m} x `width` {} = {} (edges are multiples of the bin width)",
            w.width,
            m as f32 * w.width
        ));
    }
    let top = w.edges[n];
    let widened = top == n as f32 * w.width;
    let first = n == bins && top > 0.0 && top / bins as f32 == w.width;
    if !(widened || first) {
        return bad(format!(
            "the top edge `edges[{n}]` {top} is neither {n} x `width` {} = {} nor an `amax` with `width` = amax / \
             {bins} bins",
            w.width,
            n as f32 * w.width
        ));
    }
    Ok(())
}

/// Parses JSON text as a [`Value`], refusing a key repeated in any object (which a plain
/// `serde_json::from_str` would take, keeping the last): a state file edited by hand or merged
/// badly is an error naming the key, not a silent choice.
///
/// ```
/// use qcalib::observer::state::parse_json_strict;
/// assert!(parse_json_strict(r#"{"a": 1, "b": {"a": 2}}"#).is_ok());
/// let e = parse_json_strict(r#"{"batches": 1, "batches": 2}"#).unwrap_err();
/// assert!(e.to_string().contains("duplicate key \"batches\""));
/// ```
pub fn parse_json_strict(text: &str) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut de).and_then(|v| de.end().map(|()| v.0));
    value.map_err(|e| Error::State(format!("not valid JSON: {e}")))
}

/// A JSON value whose objects hold each key once.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// An [`Error::StateMismatch`] naming the first parameter in which `saved` and `current` differ.
fn check_same_config(saved: &ObserverConfig, current: &ObserverConfig) -> Result<()> {
    if saved == current {
        return Ok(());
    }
    let mismatch = |parameter: &str, saved: String, current: String| {
        Err(Error::StateMismatch { parameter: parameter.to_string(), saved, current })
    };
    if saved.kind() != current.kind() {
        return mismatch("observer", saved.kind().to_string(), current.kind().to_string());
    }
    let (Ok(Value::Object(s)), Ok(Value::Object(c))) = (serde_json::to_value(saved), serde_json::to_value(current))
    else {
        return mismatch("config", format!("{saved:?}"), format!("{current:?}"));
    };
    for (key, sv) in &s {
        let cv = c.get(key).unwrap_or(&Value::Null);
        if sv != cv {
            return mismatch(key, sv.to_string(), cv.to_string());
        }
    }
    match c.iter().find(|(key, _)| !s.contains_key(*key)) {
        Some((key, cv)) => mismatch(key, "(absent)".into(), cv.to_string()),
        // Equal as JSON but not as values: a float that prints alike (never seen; kept exact).
        None => mismatch("config", format!("{saved:?}"), format!("{current:?}")),
    }
}
