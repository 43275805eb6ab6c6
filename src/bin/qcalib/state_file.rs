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
//! It is replaced atomically: written to a temporary file of a name no other write uses
//! (`.NAME.PID.N.tmp`) in the same directory, flushed to disk, then renamed over `NAME`, so a
//! crash leaves either the previous state or the new one.
//!
//! One run at a time: a run holds an exclusive advisory lock ([`StateLock`]) on `.NAME.lock`
//! beside the state for its whole duration; a second run on the same state stops at once,
//! naming the process that holds it. The lock is on a file of its own because the state file is
//! replaced by each write (a lock on it would stay with the replaced file).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qcalib::observer::state::parse_json_strict;
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
        let value: Value = parse_json_strict(&text).map_err(|e| match e {
            qcalib::Error::State(m) => at(m),
            e => at(e.to_string()),
        })?;
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
        // Each file adds at most one batch to each observer.
        let states = file.tensor.iter().map(|s| (None, s));
        let states = states.chain(file.tensors.iter().flatten().map(|(name, s)| (Some(name), s)));
        for (name, state) in states {
            if state.batches > file.files_observed {
                let tensor = name.map_or(String::new(), |n| format!("tensor {n:?}: "));
                return Err(at(format!(
                    "{tensor}`batches` {} is more than `files_observed` {} (each file is one batch)",
                    state.batches, file.files_observed
                )));
            }
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

/// The file that the state path `path` names, its symbolic links followed (also a link to a
/// state not written yet): every name of one state file then shares its lock, and each write
/// replaces the file the link leads to, not the link. Anything but a regular file is refused
/// (a device would be read without end, `/dev/zero`; a FIFO would block the run).
pub fn resolve_links(path: &Path) -> Result<PathBuf, String> {
    let not_regular = |at: &Path| std::fs::metadata(at).is_ok_and(|m| !m.is_file());
    let mut at = path.to_path_buf();
    // As the kernel's limit on the links followed in one path (ELOOP).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&at).map_err(|e| format!("state file {}: {e}", path.display()))?;
                // A relative target is relative to the link's directory.
                at = at.parent().map_or(target.clone(), |dir| dir.join(&target));
            }
            _ if not_regular(&at) => {
                return Err(format!(
                    "state file {}: not a regular file (a state file is one that qcalib wrote)",
                    path.display()
                ));
            }
            _ => return Ok(at),
        }
    }
    Err(format!("state file {}: too many levels of symbolic links", path.display()))
}

/// The directory of `path` and the name of a hidden file beside it: `.NAME` + `suffix`.
fn beside(path: &Path, suffix: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut hidden = OsString::from(".");
    hidden.push(name);
    hidden.push(suffix);
    Ok((dir.to_path_buf(), dir.join(hidden)))
}

/// Temporary files written by this process so far (part of their unique names).
static TEMPORARIES: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a new temporary file next to `path` (`.NAME.PID.N.tmp`, created only if no
/// such file exists), flushes it to disk and renames it over `path` (then flushes the directory,
/// so that the rename survives a power loss).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, mut f, tmp) = loop {
        let n = TEMPORARIES.fetch_add(1, Ordering::Relaxed);
        let (dir, tmp) = beside(path, &format!(".{}.{n}.tmp", std::process::id()))?;
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (dir, f, tmp),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let written = (|| {
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

/// Whether `name` is a temporary file of the state file `state_name`: `.NAME.tmp` (older
/// qcalib) or `.NAME.PID.N.tmp`.
fn is_temporary_of(name: &std::ffi::OsStr, state_name: &std::ffi::OsStr) -> bool {
    let (Some(name), Some(state)) = (name.to_str(), state_name.to_str()) else {
        return false;
    };
    let Some(middle) = name.strip_prefix('.').and_then(|n| n.strip_prefix(state)).and_then(|n| n.strip_suffix(".tmp"))
    else {
        return false;
    };
    if middle.is_empty() {
        return true;
    }
    let parts: Vec<&str> = middle.split('.').collect();
    parts.len() == 3
        && parts[0].is_empty()
        && parts[1..].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// An exclusive advisory lock on a state file, held from [`StateLock::acquire`] until dropped:
/// one `qcalib calibrate` per state file at a time.
///
/// The lock is `flock` on `.NAME.lock` beside the state (std's [`File::try_lock`]), which holds
/// the holder's process id. The holder removes the file when it is done, while still holding
/// the lock; a process that opened the file before its removal finds, once it has the lock, that
/// the path no longer names the file it locked, and starts over. A killed holder's lock ends with
/// its process (the file stays, and the next run takes it over).
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Locks the state file `state`, or fails at once when another process holds it. With the
    /// lock held, the temporary files of killed runs on this state are removed.
    pub fn acquire(state: &Path) -> Result<StateLock, String> {
        let at = |e: String| format!("state file {}: {e}", state.display());
        let (dir, path) = beside(state, ".lock").map_err(|e| at(e.to_string()))?;
        let mut attempts = 0;
        let mut file = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| at(format!("cannot open the lock file {}: {e}", path.display())))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let holder = wait_for_holder(&file).map_or("pid unknown".to_string(), |pid| format!("pid {pid}"));
                    return Err(format!("{} is in use by another qcalib process ({holder})", state.display()));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(at(format!("cannot lock {}: {e}", path.display())));
                }
            }
            if still_at(&file, &path) {
                break file;
            }
            attempts += 1;
            if attempts == 100 {
                return Err(at(format!("the lock file {} keeps being replaced", path.display())));
            }
        };
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| at(format!("{}: {e}", path.display())))?;
        remove_temporaries(&dir, state);
        Ok(StateLock { file, path })
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Removed while still locked, then unlocked (see the type's documentation).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// How long a run that found the state locked waits for the holder's process id to appear in
/// the lock file: the holder writes it just after it takes the lock.
const HOLDER_PID_WAIT: Duration = Duration::from_secs(2);

/// The process id written in the lock file `file` that another process holds, read again until
/// it is there (the holder may have the lock and not yet have written it) or
/// [`HOLDER_PID_WAIT`] has passed.
fn wait_for_holder(file: &File) -> Option<u32> {
    let start = Instant::now();
    loop {
        if let Some(pid) = holder_of(file) {
            return Some(pid);
        }
        if start.elapsed() >= HOLDER_PID_WAIT {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The process id written in a lock file, if it holds one (read from its start).
fn holder_of(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Whether `path` still names the file `file` is open on.
fn still_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Removes the temporary files of earlier runs on `state` in `dir` (runs that were killed
/// between writing a temporary and renaming it). Only called with the state's lock held, so no
/// live run is writing one; a file that cannot be removed is left (it is never read).
fn remove_temporaries(dir: &Path, state: &Path) {
    let (Some(state_name), Ok(entries)) = (state.file_name(), std::fs::read_dir(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        if is_temporary_of(&entry.file_name(), state_name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_recognised_by_name() {
        let is = |n: &str| is_temporary_of(n.as_ref(), "calib.json".as_ref());
        assert!(is(".calib.json.tmp") && is(".calib.json.123.0.tmp") && is(".calib.json.9.42.tmp"));
        assert!(!is("calib.json.1.2.tmp") && !is(".calib.json.lock") && !is(".calib.json.x.1.tmp"));
        assert!(!is(".calib.json.1.tmp") && !is(".calib.json..1.2.tmp") && !is(".calib.jsonx.1.2.tmp"));
        assert!(!is(".other.json.1.2.tmp") && !is(".calib.json.1.2.3.tmp"));
    }
}
