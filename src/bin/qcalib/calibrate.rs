//! `qcalib calibrate`: one observer per tensor (per name for `.safetensors`), batches in the
//! order given, then the qparams. With `--state FILE`, resumes from FILE and writes the state
//! back after each batch. A multi-rank run (`--is-sync-quantize` with torchrun's variables) goes
//! to [`crate::ranks`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use qcalib::Observer;
use qcalib::sync::Rendezvous;

use crate::CalibrateArgs;
use crate::report::Report;
use crate::state_file::{Observers, StateFile, StateLock, resolve_links};
use qcalib::TensorView;
use qcalib::io::{Batch, Tensors};

/// Files from which a progress bar is drawn (when stderr is a terminal).
const PROGRESS_FROM: usize = 8;

pub fn run(args: &CalibrateArgs) -> Result<Report, String> {
    let spec = args.spec();
    if args.is_sync_quantize
        && let Some(rv) = Rendezvous::from_env().map_err(|e| e.to_string())?
    {
        // Fail on a bad configuration before joining the other ranks.
        spec.build().map_err(|e| e.to_string())?;
        if args.state.is_some() {
            return Err("--state is for a single rank: a multi-rank run (--is-sync-quantize with WORLD_SIZE > 1) \
                        cannot be saved and resumed yet"
                .into());
        }
        return crate::ranks::run(args, &spec, &rv);
    }
    let new_observer = || -> Result<Box<dyn Observer>, String> {
        let mut obs = spec.build().map_err(|e| e.to_string())?;
        obs.set_device(args.device).map_err(|e| e.to_string())?;
        Ok(obs)
    };
    // Fail on a bad configuration before reading any file.
    new_observer()?;

    // One process at a time per state file, for the whole run (whatever links lead to it).
    let state = args.state.as_deref().map(resolve_links).transpose()?;
    let _lock = state.as_deref().map(StateLock::acquire).transpose()?;
    let (mut observers, mut files_observed) = match &state {
        Some(path) if path.exists() => {
            let saved = StateFile::read(path)?;
            let files_observed = saved.files_observed;
            (saved.restore(path, new_observer)?, files_observed)
        }
        _ => (Observers::Empty, 0),
    };
    if args.files.is_empty() && matches!(observers, Observers::Empty) {
        let state = state.as_deref().map_or("".into(), |p| p.display().to_string());
        return Err(format!("nothing to calibrate: no FILE given and no saved state in {state:?}"));
    }

    let progress = (args.files.len() >= PROGRESS_FROM && std::io::stderr().is_terminal())
        .then(|| indicatif::ProgressBar::new(args.files.len() as u64));
    for path in &args.files {
        // The whole file is read and checked before any observer sees it; on an error the state
        // file keeps the state after the previous batch.
        let batch = crate::batch_file::open(path)?;
        observe(&mut observers, &batch, path, &new_observer)?;
        files_observed = files_observed.saturating_add(1);
        if let Some(state) = &state {
            StateFile::of(&observers, files_observed, path).write(state)?;
        }
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }

    match observers {
        Observers::Empty => Err("no batch has been observed".into()),
        Observers::Single(obs) => Report::of(Some(obs), BTreeMap::new()),
        Observers::Named(named) => Report::of(None, named),
    }
}

/// Observes one batch file: a `.npy` tensor with the single observer, the tensors of a
/// `.safetensors` file each with the observer of its name (new names get a new observer).
fn observe(
    observers: &mut Observers,
    batch: &Batch,
    path: &Path,
    new_observer: &impl Fn() -> Result<Box<dyn Observer>, String>,
) -> Result<(), String> {
    let at = |e: String| format!("{}: {e}", path.display());
    match batch.tensors().map_err(|e| e.to_string())? {
        Tensors::Single(t) => {
            if matches!(observers, Observers::Empty) {
                *observers = Observers::Single(new_observer()?);
            }
            let Observers::Single(obs) = observers else {
                return Err(at("a .npy batch among .safetensors batches".into()));
            };
            obs.observe_tensor(&t).map_err(|e| at(e.to_string()))
        }
        Tensors::Named(tensors) => {
            if matches!(observers, Observers::Empty) {
                *observers = Observers::Named(BTreeMap::new());
            }
            let Observers::Named(named) = observers else {
                return Err(at("a .safetensors batch among .npy batches".into()));
            };
            observe_named(named, tensors, new_observer, &at)
        }
    }
}

/// Observes the tensors of a `.safetensors` batch, each with the observer of its name (a new
/// name gets a new observer); `at` puts the file in front of an error.
fn observe_named(
    named: &mut BTreeMap<String, Box<dyn Observer>>,
    tensors: Vec<(&str, TensorView<'_>)>,
    new_observer: &impl Fn() -> Result<Box<dyn Observer>, String>,
    at: &impl Fn(String) -> String,
) -> Result<(), String> {
    for (name, t) in tensors {
        let obs = match named.get_mut(name) {
            Some(o) => o,
            None => named.entry(name.to_string()).or_insert(new_observer()?),
        };
        obs.observe_tensor(&t).map_err(|e| at(format!("tensor {name:?}: {e}")))?;
    }
    Ok(())
}
