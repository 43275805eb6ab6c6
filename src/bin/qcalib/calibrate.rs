//! `qcalib calibrate`: one observer per tensor (per name for `.safetensors`), batches in the
//! order given, then the qparams. A multi-rank run (`--is-sync-quantize` with torchrun's
//! variables) goes to [`crate::ranks`].

use std::collections::BTreeMap;
use std::io::IsTerminal;

use qcalib::Observer;
use qcalib::sync::Rendezvous;

use crate::report::{Report, TensorReport};
use crate::{CalibrateArgs, Format};
use qcalib::io::{Batch, read_batch};

/// Files from which a progress bar is drawn (when stderr is a terminal).
const PROGRESS_FROM: usize = 8;

pub fn run(args: &CalibrateArgs) -> Result<(), String> {
    let spec = args.spec();
    if args.is_sync_quantize
        && let Some(rv) = Rendezvous::from_env().map_err(|e| e.to_string())?
    {
        // Fail on a bad configuration before joining the other ranks.
        spec.build().map_err(|e| e.to_string())?;
        return crate::ranks::run(args, &spec, &rv);
    }
    let new_observer = || -> Result<Box<dyn Observer>, String> {
        let mut obs = spec.build().map_err(|e| e.to_string())?;
        obs.set_device(args.device).map_err(|e| e.to_string())?;
        Ok(obs)
    };
    // Fail on a bad configuration before reading any file.
    new_observer()?;

    let progress = (args.files.len() >= PROGRESS_FROM && std::io::stderr().is_terminal())
        .then(|| indicatif::ProgressBar::new(args.files.len() as u64));
    let mut single: Option<Box<dyn Observer>> = None;
    let mut named: BTreeMap<String, Box<dyn Observer>> = BTreeMap::new();
    for path in &args.files {
        let at = |e: String| format!("{}: {e}", path.display());
        match read_batch(path).map_err(|e| e.to_string())? {
            Batch::Single(t) => {
                if !named.is_empty() {
                    return Err(at("a .npy batch among .safetensors batches".into()));
                }
                let obs = match &mut single {
                    Some(o) => o,
                    None => single.insert(new_observer()?),
                };
                obs.observe_tensor(&t.view()).map_err(|e| at(e.to_string()))?;
            }
            Batch::Named(tensors) => {
                if single.is_some() {
                    return Err(at("a .safetensors batch among .npy batches".into()));
                }
                for (name, t) in tensors {
                    let obs = match named.get_mut(&name) {
                        Some(o) => o,
                        None => named.entry(name.clone()).or_insert(new_observer()?),
                    };
                    obs.observe_tensor(&t.view()).map_err(|e| at(format!("tensor {name:?}: {e}")))?;
                }
            }
        }
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }

    let report = match single {
        Some(mut obs) => Report::Single(TensorReport::of(obs.as_mut())?),
        None => Report::Named(
            named
                .into_iter()
                .map(|(name, mut obs)| {
                    TensorReport::of(obs.as_mut())
                        .map(|r| (name.clone(), r))
                        .map_err(|e| format!("tensor {name:?}: {e}"))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    match args.format {
        Format::Json => println!("{}", report.to_json()),
        Format::Table => print!("{}", report.to_table()),
    }
    Ok(())
}
