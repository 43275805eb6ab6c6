//! `qcalib calibrate --qscheme per-channel-symmetric --ch-axis N` for Percentile, KL and Mix
//! (SPEC §8) on real MiniLM-L6 data: every channel's scale is the scale of the per-tensor
//! observer (the library) on that channel's values, batch after batch.
#![cfg(feature = "cli")]

mod common;

use std::process::Command;

use ndarray::{ArrayD, Axis, IxDyn};
use qcalib::io::{OwnedTensor, read_npy_file};
use qcalib::{ObserverKind, ObserverSpec, QuantConfig, QuantDType, TensorView};
use serde_json::Value;

fn load(name: &str) -> ArrayD<f32> {
    match read_npy_file(&common::fixtures().join(name)).unwrap() {
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
    for (kind, files, ch_axis, dtype, update_interval) in cases {
        let paths: Vec<String> = files.iter().map(|f| common::fixtures().join(f).display().to_string()).collect();
        let mut args: Vec<String> = ["calibrate", "--observer", kind.name(), "--qscheme", "per-channel-symmetric"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--ch-axis".into(), ch_axis.to_string(), "--dtype".into(), dtype.name().into()]);
        args.extend(["--device".into(), "cpu".into(), "--format".into(), "json".into()]);
        if let Some(ui) = update_interval {
            args.extend(["--update-interval".into(), ui.to_string()]);
        }
        args.extend(paths);
        let out = Command::new(common::qcalib_bin()).args(&args).output().expect("run qcalib");
        let what = format!("{kind} ch_axis {ch_axis} {}", dtype.name());
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<f32> = json["scale"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();

        let batches: Vec<ArrayD<f32>> = files.iter().map(|f| load(f)).collect();
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
            let mut obs = spec.build().unwrap();
            for b in &batches {
                obs.observe_tensor(&TensorView::from(&channel(b, axis, c))).unwrap();
            }
            let want = obs.qparams().unwrap().scale[0];
            assert_eq!(scale.to_bits(), want.to_bits(), "{what}, channel {c}: {scale} vs {want}");
        }
    }
}
