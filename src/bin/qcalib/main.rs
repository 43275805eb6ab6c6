//! `qcalib`: calibrate quantization parameters from `.npy` / `.safetensors` batches, or run the
//! built-in demo.

mod batch_file;
mod bench;
mod calibrate;
mod demo;
mod elastic_error;
mod output;
mod ranks;
mod report;
mod state_file;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use qcalib::{Device, ObserverKind, ObserverSpec, QScheme, QuantDType};

/// Quantization calibration: scale and zero point per tensor or channel, as
/// horizon_plugin_pytorch's observers compute them.
#[derive(Parser, Debug)]
#[command(name = "qcalib", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Observe the batches FILE... in order and print the qparams.
    Calibrate(CalibrateArgs),
    /// Run every observer on built-in synthetic tensors and print a table.
    Demo(DemoArgs),
    /// Time every observer on generated data against the measured memory bandwidth.
    Bench(BenchArgs),
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned text for people.
    Table,
    /// One JSON object on stdout.
    Json,
}

/// `qscheme` in kebab case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SchemeArg {
    PerTensorSymmetric,
    PerChannelSymmetric,
}

#[derive(Args, Debug)]
struct CalibrateArgs {
    /// The observer.
    #[arg(long, value_parser = parse_kind)]
    observer: ObserverKind,
    /// Weight of the current batch in the moving average, in [0, 1].
    #[arg(long)]
    averaging_constant: Option<f32>,
    /// Channel axis for per-channel schemes (negative counts from the last dimension).
    #[arg(long, allow_hyphen_values = true)]
    ch_axis: Option<isize>,
    /// Quantized dtype.
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<QuantDType>,
    /// Quantization scheme.
    #[arg(long, value_enum)]
    qscheme: Option<SchemeArg>,
    /// Lower end of the integer range (with --quant-max).
    #[arg(long, allow_hyphen_values = true)]
    quant_min: Option<i64>,
    /// Upper end of the integer range (with --quant-min).
    #[arg(long, allow_hyphen_values = true)]
    quant_max: Option<i64>,
    /// Histogram bins (percentile, kl).
    #[arg(long)]
    bins: Option<usize>,
    /// Percentile of |x| (percentile).
    #[arg(long)]
    percentile: Option<f64>,
    /// Batches per KL window (kl).
    #[arg(long)]
    update_interval: Option<usize>,
    /// Step between MSE candidates (mse).
    #[arg(long)]
    stride: Option<usize>,
    /// Device: auto (CUDA when usable, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Reduce min_val/max_val over all ranks before every scale (is_sync_quantize). Run one
    /// qcalib per rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set (as
    /// torchrun does); every rank prints the same qparams. --device cuda ranks use NCCL (on
    /// cuda:LOCAL_RANK), the others rank 0's TCP store. Without those variables (or with WORLD_SIZE=1) there is one rank.
    #[arg(long)]
    is_sync_quantize: bool,
    /// KL only (needs --is-sync-quantize): agree on the histogram range and sum the histograms
    /// across ranks every batch, so that N ranks calibrate like one rank on all their batches.
    #[arg(long)]
    sync_histograms: bool,
    /// Calibration state: resume from this file when it exists (it must match the observer and
    /// its options), and write the state back to it after each batch (atomically). The FILEs
    /// given are the new batches; with none, prints the qparams of the saved state.
    #[arg(long, value_name = "STATE")]
    state: Option<std::path::PathBuf>,
    /// Calibration batches, in order: .npy (one tensor) or .safetensors (named tensors).
    #[arg(required_unless_present = "state", value_name = "FILE")]
    files: Vec<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Elements per synthetic activation tensor.
    #[arg(long, default_value_t = 1 << 20)]
    elements: usize,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Device: cpu, cuda or cuda:N (auto: CUDA when usable).
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Elements of the generated f32 tensor.
    #[arg(long, default_value_t = 1 << 26)]
    elements: usize,
    /// Timed runs per case (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn parse_kind(s: &str) -> Result<ObserverKind, String> {
    s.parse().map_err(|e: qcalib::Error| e.to_string())
}

fn parse_dtype(s: &str) -> Result<QuantDType, String> {
    s.parse().map_err(|e: qcalib::Error| e.to_string())
}

fn parse_device(s: &str) -> Result<Device, String> {
    s.parse().map_err(|e: qcalib::Error| e.to_string())
}

impl CalibrateArgs {
    /// The observer's parameters: its defaults, overridden by what was given.
    fn spec(&self) -> ObserverSpec {
        let mut quant = self.observer.default_config();
        if let Some(v) = self.averaging_constant {
            quant.averaging_constant = v;
        }
        if let Some(v) = self.ch_axis {
            quant.ch_axis = v;
        }
        if let Some(v) = self.dtype {
            quant.dtype = v;
        }
        if let Some(v) = self.qscheme {
            quant.qscheme = match v {
                SchemeArg::PerTensorSymmetric => QScheme::PerTensorSymmetric,
                SchemeArg::PerChannelSymmetric => QScheme::PerChannelSymmetric,
            };
        }
        quant.quant_min = self.quant_min;
        quant.quant_max = self.quant_max;
        quant.is_sync_quantize = self.is_sync_quantize;
        ObserverSpec {
            kind: self.observer,
            quant,
            bins: self.bins,
            percentile: self.percentile,
            update_interval: self.update_interval,
            stride: self.stride,
            sync_histograms: self.sync_histograms,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Calibrate(args) => calibrate::run(&args)
            .map_err(output::Failure::from)
            .and_then(|report| Ok(report.write(args.format, &mut out)?)),
        Command::Demo(args) => demo::run(&args, &mut out),
        Command::Bench(args) => bench::run(&args, &mut out),
    };
    match result.and_then(|()| Ok(out.flush()?)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// What clap's `Error::exit` does (help and version on stdout with status 0, usage errors on
/// stderr with status 2), except that a failed write is not ignored: a broken pipe ends quietly
/// and any other failure says so.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let printed = e.print().and_then(|()| std::io::stdout().flush());
    match printed {
        Err(err) if !e.use_stderr() => output::Failure::Output(err).report(),
        _ => ExitCode::from(e.exit_code().clamp(0, 255) as u8),
    }
}
