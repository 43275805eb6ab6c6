//! What `qcalib calibrate` prints: JSON for programs, a table for people.

use std::fmt::Write as _;
use std::io;

use qcalib::Observer;
use serde_json::{Value, json};

use crate::Format;
use crate::output::escape_controls;

/// The result of one observer.
pub struct TensorReport {
    observer: String,
    dtype: String,
    qscheme: String,
    device: String,
    batches: u64,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    min_val: Vec<f32>,
    max_val: Vec<f32>,
    quant_min: i64,
    quant_max: i64,
}

impl TensorReport {
    /// Computes the observer's qparams.
    pub fn of(obs: &mut dyn Observer) -> Result<TensorReport, String> {
        let q = obs.qparams().map_err(|e| e.to_string())?;
        let cfg = obs.quant_config();
        Ok(TensorReport {
            observer: obs.kind().name().to_string(),
            dtype: cfg.dtype.name().to_string(),
            qscheme: cfg.qscheme.name().to_string(),
            device: obs.device().to_string(),
            batches: obs.batches(),
            scale: q.scale,
            zero_point: q.zero_point,
            min_val: obs.min_val().unwrap_or_default().to_vec(),
            max_val: obs.max_val().unwrap_or_default().to_vec(),
            quant_min: q.quant_min,
            quant_max: q.quant_max,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "observer": self.observer,
            "dtype": self.dtype,
            "qscheme": self.qscheme,
            "device": self.device,
            "batches": self.batches,
            "quant_min": self.quant_min,
            "quant_max": self.quant_max,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "min_val": self.min_val,
            "max_val": self.max_val,
        })
    }

    fn write_table(&self, out: &mut String, name: Option<&str>) {
        // A tensor name is the file's: escaped, so that it cannot drive the terminal.
        let title = name.map(|n| format!("{}: ", escape_controls(n))).unwrap_or_default();
        let _ = writeln!(
            out,
            "{title}{} {} {} [{}, {}] on {}, {} batch(es)",
            self.observer, self.dtype, self.qscheme, self.quant_min, self.quant_max, self.device, self.batches
        );
        let _ = writeln!(out, "  {:>8}  {:>14}  {:>14}  {:>14}  zero_point", "channel", "scale", "min_val", "max_val");
        const SHOWN: usize = 16;
        for c in 0..self.scale.len().min(SHOWN) {
            let label = if self.scale.len() == 1 { "-".to_string() } else { c.to_string() };
            let _ = writeln!(
                out,
                "  {label:>8}  {:>14.7e}  {:>14.7e}  {:>14.7e}  {}",
                self.scale[c], self.min_val[c], self.max_val[c], self.zero_point[c]
            );
        }
        if self.scale.len() > SHOWN {
            let (lo, hi) = self.scale.iter().fold((f32::INFINITY, 0f32), |(l, h), &s| (l.min(s), h.max(s)));
            let _ = writeln!(
                out,
                "  … {} more channels (scales from {lo:.7e} to {hi:.7e}; --format json lists all)",
                self.scale.len() - SHOWN
            );
        }
    }
}

/// Everything `calibrate` prints.
pub enum Report {
    /// `.npy` input: one tensor.
    Single(TensorReport),
    /// `.safetensors` input: by tensor name.
    Named(Vec<(String, TensorReport)>),
}

impl Report {
    /// The qparams of a run's observers: the one of `.npy` input, else those of `.safetensors`
    /// input by tensor name.
    pub fn of(
        single: Option<Box<dyn Observer>>,
        named: std::collections::BTreeMap<String, Box<dyn Observer>>,
    ) -> Result<Report, String> {
        match single {
            Some(mut obs) => Ok(Report::Single(TensorReport::of(obs.as_mut())?)),
            None => Ok(Report::Named(
                named
                    .into_iter()
                    .map(|(name, mut obs)| {
                        TensorReport::of(obs.as_mut())
                            .map(|r| (name.clone(), r))
                            .map_err(|e| format!("tensor {name:?}: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            )),
        }
    }

    /// Writes the report to `out` in `format`, and flushes it.
    pub fn write(&self, format: Format, out: &mut dyn io::Write) -> io::Result<()> {
        match format {
            Format::Json => writeln!(out, "{}", self.to_json())?,
            Format::Table => out.write_all(self.to_table().as_bytes())?,
        }
        out.flush()
    }

    /// One JSON object: the tensor's, or one per name keyed by name.
    pub fn to_json(&self) -> String {
        let v = match self {
            Report::Single(r) => r.to_json(),
            Report::Named(rs) => Value::Object(rs.iter().map(|(n, r)| (n.clone(), r.to_json())).collect()),
        };
        v.to_string()
    }

    /// Aligned text (tensor names escaped: see [`escape_controls`]).
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        match self {
            Report::Single(r) => r.write_table(&mut out, None),
            Report::Named(rs) => {
                for (n, r) in rs {
                    r.write_table(&mut out, Some(n));
                }
            }
        }
        out
    }
}
