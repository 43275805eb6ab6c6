//! `qcalib calibrate --qscheme per-channel-symmetric --ch-axis N` for Percentile, KL and Mix
//! (SPEC §8) on real MiniLM-L6 data: every channel's scale is the scale of the per-tensor
//! observer (the library) on that channel's values, batch after batch.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, Axis, IxDyn};
use qcalib::io::{OwnedTensor, read_npy_file};
use qcalib::{Device, ObserverKind, ObserverSpec, QuantConfig, QuantDType, TensorView};
use serde_json::Value;

fn load(dir: &Path, name: &str) -> ArrayD<f32> {
    match read_npy_file(&dir.join(name)).unwrap() {
        OwnedTensor::F32(a) => a,
        other => panic!("{name}: not f32: {other:?}"),
    }
}

/// Channel `c`'s values along `axis`, in the order of the `[C, N]` view.
fn channel(x: &ArrayD<f32>, axis: usize, c: usize) -> ArrayD<f32> {
    let lane = x.index_axis(Axis(axis), c);
    ArrayD::from_shape_vec(IxDyn(&[lane.len()]), lane.iter().copied().collect()).unwrap()
}

/// One CLI run: the observer, its batch files, `--ch-axis`, `--dtype` and `--update-interval`.
type Case<'a> = (ObserverKind, &'a [&'a str], isize, QuantDType, Option<usize>);

#[test]
fn per_channel_scales_from_the_cli_equal_per_tensor_observers_on_each_channel() {
    const WEIGHT: &str = "w_l2_intermediate_dense_weight.npy"; // [1536, 384]
    const ACT: [&str; 2] = ["l2_ffn_out.b0.npy", "l2_ffn_out.b1.npy"]; // [1, 128, 384]
    let cases: [Case<'_>; 9] = [
        (ObserverKind::Percentile, &[WEIGHT], 0, QuantDType::QInt8, None),
        (ObserverKind::Percentile, &[WEIGHT], -1, QuantDType::QInt4, None),
        (ObserverKind::Percentile, &ACT, 2, QuantDType::QInt16, None),
        (ObserverKind::Kl, &[WEIGHT], 0, QuantDType::QInt8, None),
        (ObserverKind::Kl, &ACT, -1, QuantDType::QInt16, Some(2)),
        (ObserverKind::Kl, &ACT, 1, QuantDType::QInt4, Some(1)),
        (ObserverKind::Mix, &[WEIGHT], 1, QuantDType::QInt8, None),
        (ObserverKind::Mix, &ACT, 2, QuantDType::QInt8, None),
        (ObserverKind::Mix, &ACT, -2, QuantDType::QInt4, None),
    ];
    for case in cases {
        check(&common::fixtures(), case);
    }
}

/// The golden data of the shared folder (`QCALIB_SHARED`, else `../shared` beside the
/// repository), when it is there: `.ci/run` runs this test in a release build with it.
fn shared_golden() -> Option<PathBuf> {
    let shared =
        std::env::var_os("QCALIB_SHARED").map(PathBuf::from).unwrap_or_else(|| common::repo_root().join("../shared"));
    let dir = shared.join("golden");
    dir.join("l2_attn_probs.b0.npy").is_file().then_some(dir)
}

/// Issue 14's check, whole: MiniLM-L6's weight and three activations (attention heads
/// included) per channel through the CLI, Percentile, KL and Mix, every `ch_axis` of each
/// (negative ones too), qint4/8/16, KL windows of 1 and 2 batches and the whole run (four
/// batches); every channel's scale must be the per-tensor observer's on that channel's values,
/// bit for bit (issue 14 asks for a relative 1e-5).
/// Needs the shared golden data (not in the repository: 6 MB); runs only in release builds,
/// where it takes about a minute (`cargo test --release --test cli_per_channel`).
/// `QCALIB_MATRIX_DEVICE=cuda` runs the CLI with `--device cuda` instead (on softgpu, tens of
/// minutes on two cores: the KL searches of up to 1536 channels are interpreted PTX); the
/// references stay the CPU's per-tensor observers (pinned: on a GPU machine `Auto` would pick it).
#[test]
fn per_channel_matrix_on_the_shared_golden_data() {
    let Some(dir) = shared_golden() else {
        eprintln!("SKIPPED: no golden data at QCALIB_SHARED/golden or ../shared/golden");
        return;
    };
    if cfg!(debug_assertions) {
        eprintln!("SKIPPED in a debug build (minutes of per-tensor reference searches): run it with --release");
        return;
    }
    // The weight [1536, 384] four times; the activations' four batches b0, b1, b1, b0: KL windows
    // of 1, 2 and 4 batches (the whole run) differ.
    const WEIGHT: [&str; 4] = ["w_l2_intermediate_dense_weight.npy"; 4];
    let four = |name: &str| [0, 1, 1, 0].map(|b| format!("l2_{name}.b{b}.npy"));
    let (ffn, gelu, attn) = (four("ffn_out"), four("gelu"), four("attn_probs"));
    let (ffn, gelu, attn) =
        (ffn.each_ref().map(String::as_str), gelu.each_ref().map(String::as_str), attn.each_ref().map(String::as_str));
    // [1, 128, 384], [1, 128, 1536], [1, 12, 128, 128] (axis 1: the attention heads).
    let data: [(&[&str], &[isize]); 4] =
        [(&WEIGHT, &[0, 1, -1, -2]), (&ffn, &[0, 1, 2, -1]), (&gelu, &[1, -1]), (&attn, &[1, 2, 3, -1])];
    let mut checked = 0;
    for (files, axes) in data {
        for &ch_axis in axes {
            for dtype in [QuantDType::QInt4, QuantDType::QInt8, QuantDType::QInt16] {
                check(&dir, (ObserverKind::Percentile, files, ch_axis, dtype, None));
                check(&dir, (ObserverKind::Mix, files, ch_axis, dtype, None));
                for ui in [1, 2, files.len()] {
                    check(&dir, (ObserverKind::Kl, files, ch_axis, dtype, Some(ui)));
                }
                checked += 5;
            }
        }
    }
    eprintln!("{checked} per-channel CLI runs equal the per-tensor observers on every channel");
}

/// Runs one case through the CLI and compares every channel's scale, bit for bit, with the
/// per-tensor observer of the library on that channel's values.
fn check(dir: &Path, (kind, files, ch_axis, dtype, update_interval): Case<'_>) {
    let paths: Vec<String> = files.iter().map(|f| dir.join(f).display().to_string()).collect();
    let mut args: Vec<String> = ["calibrate", "--observer", kind.name(), "--qscheme", "per-channel-symmetric"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--ch-axis".into(), ch_axis.to_string(), "--dtype".into(), dtype.name().into()]);
    let device = std::env::var("QCALIB_MATRIX_DEVICE").unwrap_or_else(|_| "cpu".into());
    args.extend(["--device".into(), device.clone(), "--format".into(), "json".into()]);
    if let Some(ui) = update_interval {
        args.extend(["--update-interval".into(), ui.to_string()]);
    }
    args.extend(paths);
    let out = Command::new(common::qcalib_bin()).args(&args).output().expect("run qcalib");
    let what = format!(
        "{kind} on {} ch_axis {ch_axis} {} update_interval {update_interval:?} (--device {device})",
        files[0],
        dtype.name()
    );
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<f32> = json["scale"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();

    let batches: Vec<ArrayD<f32>> = files.iter().map(|f| load(dir, f)).collect();
    let ndim = batches[0].ndim();
    let axis = if ch_axis < 0 { (ndim as isize + ch_axis) as usize } else { ch_axis as usize };
    let channels = batches[0].shape()[axis];
    assert_eq!(got.len(), channels, "{what}");
    let spec = ObserverSpec {
        quant: QuantConfig { dtype, ..QuantConfig::default() },
        update_interval,
        ..ObserverSpec::new(kind)
    };
    for (c, &scale) in got.iter().enumerate() {
        // The reference is the CPU engine's, whatever device the CLI ran on (on a machine with a
        // GPU, `Auto` would pick it).
        let mut obs = spec.build().unwrap();
        obs.set_device(Device::Cpu).unwrap();
        for b in &batches {
            obs.observe_tensor(&TensorView::from(&channel(b, axis, c))).unwrap();
        }
        let want = obs.qparams().unwrap().scale[0];
        assert_eq!(scale.to_bits(), want.to_bits(), "{what}, channel {c}: {scale} vs {want}");
    }
}
