//! `qcalib calibrate --is-sync-quantize` with torchrun's variables: one rank of a data-parallel
//! calibration.
//!
//! The ranks join a group (NCCL for cuda ranks, rank 0's TCP store for cpu ranks) and go through
//! the longest file list in steps: at step `i` each rank observes its `i`-th file (a rank with
//! fewer files observes nothing, which still takes part in `--sync-histograms`), then computes
//! the qparams of every tensor, which reduces `min_val`/`max_val` over the ranks (as the plugin's
//! fake-quantize modules do after every calibration batch). Before each phase of a step the
//! ranks agree that every rank succeeded and holds the same tensors, so that they fail together,
//! each naming the rank at fault, instead of waiting for one another.

use std::collections::BTreeMap;
use std::sync::Arc;

use qcalib::io::Tensors;
use qcalib::sync::{NcclGroup, ProcessGroup, ReduceOp, Rendezvous};
use qcalib::{Device, Error, Input, Observer, ObserverSpec, TensorView, observe_all, qparams_all};

use crate::CalibrateArgs;
use crate::report::Report;

/// One rank's run: join, observe in steps, and give the (common) qparams to print.
pub fn run(args: &CalibrateArgs, spec: &ObserverSpec, rv: &Rendezvous) -> Result<Report, String> {
    // `--device cuda` ranks reduce through NCCL; the others (cpu, auto) through the TCP store.
    let nccl = matches!(args.device, Device::Cuda(_));
    let device = match rank_device(args.device, rv) {
        Device::Auto => {
            let mut probe = spec.build().map_err(|e| e.to_string())?;
            probe.set_device(Device::Auto).map_err(|e| e.to_string())?;
            match probe.device() {
                Device::Cuda(_) => Device::Cuda(rv.local_rank),
                _ => Device::Cpu,
            }
        }
        d => d,
    };
    let tcp: Arc<dyn ProcessGroup> = Arc::new(rv.connect().map_err(|e| e.to_string())?);

    // The ranks agree on the settings, on NCCL, and on the number of steps.
    let settings = fnv1a(format!("{spec:?}").as_bytes());
    let mut header = [settings, !settings, u64::from(nccl), u64::from(!nccl), args.files.len() as u64];
    tcp.all_reduce_u64(&mut header, ReduceOp::Max).map_err(|e| e.to_string())?;
    if header[0] != !header[1] {
        return Err("the ranks were started with different observer settings".into());
    }
    if header[2] == header[3] {
        return Err("some ranks were started with --device cuda (NCCL) and others without: give every rank the \
                    same --device"
            .into());
    }
    let steps = usize::try_from(header[4]).map_err(|_| "too many files".to_string())?;
    let group: Arc<dyn ProcessGroup> = match device {
        Device::Cuda(ordinal) if nccl => Arc::new(NcclGroup::new(tcp, ordinal, rv.timeout).map_err(|e| e.to_string())?),
        _ => tcp,
    };
    let ranks = Agreement { group: group.clone() };
    let new_observer = || -> Result<Box<dyn Observer>, String> {
        let mut obs = spec.build().map_err(|e| e.to_string())?;
        obs.set_device(device).map_err(|e| e.to_string())?;
        obs.set_process_group(group.clone());
        Ok(obs)
    };

    let mut single: Option<Box<dyn Observer>> = None;
    let mut named: BTreeMap<String, Box<dyn Observer>> = BTreeMap::new();
    for step in 0..steps {
        let path = args.files.get(step);
        let at = |e: String| match path {
            Some(p) => format!("{}: {e}", p.display()),
            None => e,
        };
        // Read, and agree that every rank holds the same tensors.
        let file = path.map(|p| crate::batch_file::open(p)).transpose();
        let batch = file
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|f| f.as_ref().map(|b| b.tensors().map_err(|e| e.to_string())).transpose());
        let layout = batch.as_ref().map_err(Clone::clone).and_then(|b| match b {
            Some(Tensors::Single(_)) if !named.is_empty() => Err(at("a .npy batch among .safetensors batches".into())),
            Some(Tensors::Named(_)) if single.is_some() => Err(at("a .safetensors batch among .npy batches".into())),
            Some(Tensors::Single(_)) => Ok(layout_of(None)),
            Some(Tensors::Named(tensors)) => Ok(layout_of(Some(tensors.iter().map(|(n, _)| *n).collect()))),
            None if single.is_some() => Ok(layout_of(None)),
            None => Ok(layout_of(Some(named.keys().map(String::as_str).collect()))),
        });
        ranks.agree(step, "read its batch", layout)?;

        // Observe every tensor (a rank without a file observes nothing, together with the
        // others): the KL observers of --sync-histograms in two collectives for all tensors.
        let observed = batch.and_then(|batch| {
            let tensors: Vec<(&str, TensorView<'_>)> = match batch {
                Some(Tensors::Single(t)) => {
                    if single.is_none() {
                        single = Some(new_observer()?);
                    }
                    vec![("", t)]
                }
                Some(Tensors::Named(tensors)) => {
                    for (name, _) in &tensors {
                        if !named.contains_key(*name) {
                            named.insert(name.to_string(), new_observer()?);
                        }
                    }
                    tensors
                }
                None => Vec::new(),
            };
            observe_step(&mut single, &mut named, &tensors, &at)
        });
        ranks.agree(step, "observe its batch", observed.map(|()| 0))?;

        // The qparams after every batch: the statistics become the ranks' common ones, for all
        // tensors in two collectives.
        let names: Vec<Option<String>> = single.iter().map(|_| None).chain(named.keys().cloned().map(Some)).collect();
        let mut observers: Vec<&mut dyn Observer> =
            single.iter_mut().chain(named.values_mut()).map(|o| o.as_mut()).collect();
        let outcomes = qparams_all(&mut observers).map_err(|e| e.to_string())?;
        for (name, outcome) in names.into_iter().zip(outcomes) {
            match outcome {
                Ok(_) | Err(Error::NoStatistics(_)) => {}
                Err(e) => {
                    return Err(match name {
                        Some(n) => format!("tensor {n:?}: {e}"),
                        None => e.to_string(),
                    });
                }
            }
        }
    }

    Report::of(single, named)
}

/// Observes one step's tensors (`.npy`: the one tensor, named `""`) with their observers, every
/// observer taking part (an empty tensor where this rank has none), in one call so that the
/// synchronised observers share their collectives.
fn observe_step(
    single: &mut Option<Box<dyn Observer>>,
    named: &mut BTreeMap<String, Box<dyn Observer>>,
    tensors: &[(&str, TensorView<'_>)],
    at: &impl Fn(String) -> String,
) -> Result<(), String> {
    let by_name: BTreeMap<&str, &TensorView<'_>> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let nothing: &[f32] = &[];
    let names: Vec<Option<String>> = single.iter().map(|_| None).chain(named.keys().cloned().map(Some)).collect();
    let inputs: Vec<Input<'_>> = names
        .iter()
        .map(|name| match by_name.get(name.as_deref().unwrap_or("")) {
            Some(t) => Input::Host((*t).clone()),
            None => Input::Host(TensorView::from(nothing)),
        })
        .collect();
    let mut observers: Vec<&mut dyn Observer> =
        single.iter_mut().chain(named.values_mut()).map(|o| o.as_mut()).collect();
    let outcomes = observe_all(&mut observers, &inputs).map_err(|e| e.to_string())?;
    for (name, outcome) in names.iter().zip(outcomes) {
        outcome.map_err(|e| match name {
            Some(n) => at(format!("tensor {n:?}: {e}")),
            None => at(e.to_string()),
        })?;
    }
    Ok(())
}

/// The device of this rank: `--device cuda` (or `cuda:0`) means `cuda:LOCAL_RANK`, torchrun's
/// one GPU per rank; other devices are taken as given.
fn rank_device(device: Device, rv: &Rendezvous) -> Device {
    match device {
        Device::Cuda(0) => Device::Cuda(rv.local_rank),
        d => d,
    }
}

/// What a rank holds at a step, as a number the ranks compare: `.npy` (one tensor), or the
/// names of the `.safetensors` tensors.
fn layout_of(names: Option<Vec<&str>>) -> u64 {
    match names {
        None => fnv1a(b"npy"),
        Some(names) => {
            let mut text = b"safetensors".to_vec();
            for n in names {
                text.push(0);
                text.extend(n.as_bytes());
            }
            fnv1a(&text)
        }
    }
}

/// The 64-bit FNV-1a hash: the same on every machine and build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The collectives by which the ranks fail together.
struct Agreement {
    group: Arc<dyn ProcessGroup>,
}

impl Agreement {
    /// Every rank learns which ranks failed to `what` at `step` (this rank's own error, or one
    /// naming the ranks that failed), then whether all ranks hold the same tensors (`Ok(layout)`).
    fn agree(&self, step: usize, what: &str, outcome: Result<u64, String>) -> Result<(), String> {
        let (rank, world) = (self.group.rank(), self.group.world_size());
        let layout = *outcome.as_ref().unwrap_or(&0);
        let mut seen = vec![0u64; 2 + world];
        seen[0] = layout;
        seen[1] = !layout;
        if outcome.is_err() {
            seen[2 + rank] = 1;
        }
        self.group.all_reduce_u64(&mut seen, ReduceOp::Max).map_err(|e| e.to_string())?;
        let culprits: Vec<String> = (0..world).filter(|&r| seen[2 + r] != 0).map(|r| r.to_string()).collect();
        outcome?;
        if !culprits.is_empty() {
            return Err(format!(
                "rank(s) {} could not {what} at step {} (see the error there); every rank stops",
                culprits.join(", "),
                step + 1
            ));
        }
        if seen[0] != !seen[1] {
            return Err(format!(
                "the ranks hold different tensors at step {}: with --is-sync-quantize every rank's files are all \
                 .npy, or all .safetensors with the same tensor names",
                step + 1
            ));
        }
        Ok(())
    }
}
