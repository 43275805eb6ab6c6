//! `qcalib demo`: every observer on built-in synthetic tensors, with the SQNR of the result.

use std::time::Instant;

use qcalib::synthetic::{Distribution, generate};
use qcalib::{Device, ObserverKind, ObserverSpec, QScheme, arith};

use crate::DemoArgs;

/// Batches per tensor: each observer sees the tensor as this many batches.
const BATCHES: usize = 4;

pub fn run(args: &DemoArgs, out: &mut dyn std::io::Write) -> Result<(), crate::output::Failure> {
    let per_batch = (args.elements / BATCHES).max(256);
    writeln!(
        out,
        "qcalib demo: {} observers x {} synthetic tensors, {BATCHES} batches of {per_batch} values each, qint8",
        ObserverKind::ALL.len(),
        Distribution::ALL.len()
    )?;
    writeln!(
        out,
        "{:<40} {:<17} {:>11} {:>22} {:>9} {:>10}",
        "observer", "tensor", "scale", "clip range", "SQNR dB", "time"
    )?;
    let mut device = String::new();
    let mut warning = None;
    for dist in Distribution::ALL {
        // Activations come in batches; the weight is one tensor, per channel on its rows.
        let (batches, per_channel) = match dist {
            Distribution::ChannelWeights => (vec![generate(dist, &[1536, 384], 1)], true),
            _ => ((0..BATCHES as u64).map(|b| generate(dist, &[per_batch / 64, 64], 100 + b)).collect(), false),
        };
        // The weight per channel where the plugin has it; Percentile, KL and Mix both per tensor
        // and per channel (SPEC §8), one row after the other.
        let variants: Vec<(ObserverKind, bool)> = ObserverKind::ALL
            .into_iter()
            .flat_map(|kind| match kind {
                ObserverKind::MovingAveragePerChannelMinMax if !per_channel => vec![],
                ObserverKind::MinMax | ObserverKind::MovingAveragePerChannelMinMax | ObserverKind::Mse => {
                    vec![(kind, per_channel)]
                }
                ObserverKind::Percentile | ObserverKind::Kl | ObserverKind::Mix if per_channel => {
                    vec![(kind, false), (kind, true)]
                }
                _ => vec![(kind, false)],
            })
            .collect();
        for (kind, channel_wise) in variants {
            let mut quant = kind.default_config();
            if channel_wise {
                quant.qscheme = QScheme::PerChannelSymmetric;
                quant.ch_axis = 0;
            }
            let spec = ObserverSpec {
                kind,
                quant,
                bins: None,
                percentile: None,
                update_interval: (kind == ObserverKind::Kl).then_some(batches.len()),
                stride: None,
                sync_histograms: false,
            };
            let mut obs = spec.build().map_err(|e| e.to_string())?;
            obs.set_device(args.device).map_err(|e| e.to_string())?;
            if args.device == Device::Auto || device.is_empty() {
                device = obs.device().to_string();
                warning = crate::bench::softgpu_warning(obs.device());
            }
            let start = Instant::now();
            for b in &batches {
                obs.observe_tensor(&b.into()).map_err(|e| e.to_string())?;
            }
            let q = obs.qparams().map_err(|e| e.to_string())?;
            let elapsed = start.elapsed();
            let (lo, hi) = (obs.min_val().unwrap_or_default(), obs.max_val().unwrap_or_default());
            let sqnr = sqnr_db(&batches, &q.scale, q.quant_min as f32, q.quant_max as f32);
            let (scale, clip) = if q.scale.len() == 1 {
                (format!("{:.4e}", q.scale[0]), format!("[{:.4}, {:.4}]", lo[0], hi[0]))
            } else {
                let amax = lo.iter().zip(hi).map(|(l, h)| (-l).max(*h)).fold(0f32, f32::max);
                (format!("{} ch", q.scale.len()), format!("max |range| {amax:.4}"))
            };
            let label = if q.scale.len() > 1 { format!("{kind} /ch") } else { kind.to_string() };
            writeln!(
                out,
                "{label:<40} {:<17} {scale:>11} {clip:>22} {sqnr:>9.2} {:>8.2}ms",
                dist.name(),
                elapsed.as_secs_f64() * 1e3
            )?;
        }
    }
    writeln!(out, "device: {device}; SQNR = 10 log10(sum x^2 / sum (x - fake_quant(x))^2) over all batches")?;
    if let Some(warning) = warning {
        writeln!(out, "{warning}")?;
    }
    Ok(())
}

/// The signal-to-quantization-noise ratio of fake quantization with `scales` (one per tensor,
/// or one per row of 2-D batches).
fn sqnr_db(batches: &[ndarray::ArrayD<f32>], scales: &[f32], qmin: f32, qmax: f32) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for b in batches {
        let rows = b.shape()[0].max(1);
        let per_row = b.len() / rows;
        for (i, &x) in b.iter().enumerate() {
            let s = if scales.len() == 1 { scales[0] } else { scales[(i / per_row).min(scales.len() - 1)] };
            signal += (x as f64).powi(2);
            noise += arith::fake_quant_sq_err(x, s, qmin, qmax);
        }
    }
    10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10()
}
