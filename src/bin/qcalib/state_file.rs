//! `qcalib calibrate --state FILE`: the calibration state of every tensor, written after each
//! batch so that an interrupted calibration resumes where it stopped.
//!
//! The file is one JSON object (format `qcalib-calibrate-state`, version 1):
//!
//! - `format`: `"qcalib-calibrate-state"`; `version`: `1`;
//! - `files_observed`: the batch files observed so far, over all runs; `last_file`: the last one
//!   (as given on the command line), to tell where to resume;
//! - `tensor`: the observer state of `.npy` input (one tensor), or `tensors`: an object of observer
//!   states by tensor name (`.safetensors` input). Each is a `qcalib-observer-state` (see the
//!   library's `qcalib::observer::state`).
//!
//! It is replaced atomically: written to `.NAME.tmp` in the same directory, flushed to disk, then
//! renamed over `NAME`, so a crash leaves either the previous state or the new one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use qcalib::{Observer, ObserverState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The observers of one calibration run.
pub enum Observers {
    /// No batch yet.
    Empty,
    /// `.npy` input: one tensor.
    Single(Box<dyn Observer>),
    /// `.safetensors` input: one observer per tensor name.
    Named(BTreeMap<String, Box<dyn Observer>>),
}

/// The content of a state file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    format: String,
    version: u32,
    /// Batch files observed, over all runs.
    pub files_observed: u64,
    /// The last batch file observed.
    pub last_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tensor: Option<ObserverState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tensors: Option<BTreeMap<String, ObserverState>>,
}

impl StateFile {
    const FORMAT: &'static str = "qcalib-calibrate-state";
    const VERSION: u32 = 1;

    /// The state of `observers` after `files_observed` files, the last one `last_file`.
    pub fn of(observers: &Observers, files_observed: u64, last_file: &Path) -> StateFile {
        let (tensor, tensors) = match observers {
            Observers::Empty => (None, None),
            Observers::Single(obs) => (Some(obs.save_state()), None),
            Observers::Named(named) => {
                (None, Some(named.iter().map(|(name, obs)| (name.clone(), obs.save_state())).collect()))
            }
        };
        StateFile {
            format: Self::FORMAT.to_string(),
            version: Self::VERSION,
            files_observed,
            last_file: Some(last_file.display().to_string()),
            tensor,
            tensors,
        }
    }

    /// Reads and checks a state file (not yet against the command's observer).
    pub fn read(path: &Path) -> Result<StateFile, String> {
        let at = |e: String| format!("state file {}: {e}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| at(format!("not valid JSON ({e})")))?;
        if value.get("format").and_then(Value::as_str) != Some(Self::FORMAT) {
            return Err(at(format!("not a qcalib calibration state (expected \"format\": {:?})", Self::FORMAT)));
        }
        match value.get("version").and_then(Value::as_u64) {
            Some(v) if v == Self::VERSION as u64 => {}
            Some(v) if v > Self::VERSION as u64 => {
                return Err(at(format!(
                    "format version {v} was written by a newer qcalib; this one reads version {}",
                    Self::VERSION
                )));
            }
            v => return Err(at(format!("unknown format version {v:?}"))),
        }
        let file: StateFile = serde_json::from_value(value).map_err(|e| at(e.to_string()))?;
        if file.tensor.is_some() && file.tensors.is_some() {
            return Err(at("holds both `tensor` and `tensors`".into()));
        }
        Ok(file)
    }

    /// The observers of the state, each built by `new_observer` (from the command's options)
    /// and loaded with its saved state: an error when a saved state does not match.
    pub fn restore(
        self,
        path: &Path,
        new_observer: impl Fn() -> Result<Box<dyn Observer>, String>,
    ) -> Result<Observers, String> {
        let at = |e: String| format!("state file {}: {e}", path.display());
        let load = |state: &ObserverState| -> Result<Box<dyn Observer>, String> {
            let mut obs = new_observer()?;
            obs.load_state(state).map_err(|e| e.to_string())?;
            Ok(obs)
        };
        Ok(match (self.tensor, self.tensors) {
            (Some(state), _) => Observers::Single(load(&state).map_err(at)?),
            (None, Some(states)) => Observers::Named(
                states
                    .iter()
                    .map(|(name, state)| {
                        Ok((name.clone(), load(state).map_err(|e| at(format!("tensor {name:?}: {e}")))?))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            (None, None) => Observers::Empty,
        })
    }

    /// Replaces the file at `path` atomically with this state.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let at = |e: String| format!("state file {}: {e}", path.display());
        for state in self.tensor.iter().chain(self.tensors.iter().flat_map(|t| t.values())) {
            // Never writes a state that could not be read back.
            state.validate().map_err(|e| at(e.to_string()))?;
        }
        let text = serde_json::to_string(self).map_err(|e| at(e.to_string()))?;
        write_atomically(path, text.as_bytes()).map_err(|e| at(e.to_string()))
    }
}

/// Writes `bytes` to a temporary file next to `path`, flushes it to disk and renames it over
/// `path` (then flushes the directory, so that the rename survives a power loss).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}
