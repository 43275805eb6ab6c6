//! The `qcalib` command line: outputs, inputs and errors.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn qcalib(args: &[&str]) -> Output {
    Command::new(common::qcalib_bin()).args(args).output().expect("run qcalib")
}

fn golden(name: &str) -> String {
    common::fixtures().join(name).display().to_string()
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    common::scratch("cli", test)
}

fn write_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    std::fs::write(path, common::npy_bytes(descr, shape, data)).unwrap();
}

use common::f32_bytes;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn json_for_npy_has_the_documented_keys() {
    let o = qcalib(&["calibrate", "--observer", "kl", "--format", "json", &golden("l2_ffn_out.b0.npy")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["observer"], "kl");
    assert_eq!(v["dtype"], "qint8");
    // `auto`: the GPU when one is usable, else the CPU.
    assert!(v["device"] == "cpu" || v["device"] == "cuda:0", "{}", v["device"]);
    assert_eq!(v["batches"], 1);
    for key in ["scale", "zero_point", "min_val", "max_val"] {
        assert_eq!(v[key].as_array().map(Vec::len), Some(1), "{key}");
    }
}

#[test]
fn table_is_for_people() {
    let o = qcalib(&[
        "calibrate",
        "--observer",
        "mse",
        "--ch-axis",
        "-1",
        "--qscheme",
        "per-channel-symmetric",
        &golden("w_l2_intermediate_dense_weight.npy"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("mse qint8 per_channel_symmetric"), "{text}");
    assert!(text.contains("more channels"), "{text}");
}

#[test]
fn safetensors_batches_are_keyed_by_name() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = scratch("safetensors");
    let a = f32_bytes(&[1.0, -2.0, 3.0, 0.5]);
    let b: Vec<u8> = [0.25f32, -0.75].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    let tensors = vec![
        ("act", TensorView::new(Dtype::F32, vec![2, 2], &a).unwrap()),
        ("w", TensorView::new(Dtype::BF16, vec![2], &b).unwrap()),
    ];
    let path = dir.join("batch.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let p = path.display().to_string();
    let o = qcalib(&["calibrate", "--observer", "min-max", "--format", "json", &p, &p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["act"]["max_val"][0], 3.0);
    assert_eq!(v["act"]["batches"], 2);
    assert_eq!(v["w"]["min_val"][0], -0.75);
}

#[test]
fn bad_files_fail_with_a_message() {
    let dir = scratch("bad-files");
    let truncated = dir.join("truncated.npy");
    write_npy(&truncated, "<f4", "(4,)", &f32_bytes(&[1.0, 2.0]));
    let f64_file = dir.join("f64.npy");
    write_npy(&f64_file, "<f8", "(1,)", &1.0f64.to_le_bytes());
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"not numpy at all").unwrap();
    let garbage_st = dir.join("garbage.safetensors");
    std::fs::write(&garbage_st, b"\xff\xff\xff\xff\xff\xff\xff\x7f{").unwrap();
    let nan = dir.join("nan.npy");
    write_npy(&nan, "<f4", "(3,)", &f32_bytes(&[1.0, f32::NAN, 2.0]));
    for (file, needle) in [
        (truncated, "truncated"),
        (f64_file, "unsupported dtype"),
        (garbage, "bad magic"),
        (garbage_st, "safetensors"),
        (nan, "non-finite"),
        (dir.join("missing.npy"), "missing.npy"),
        (dir.join("batch.txt"), "not a .npy or .safetensors"),
    ] {
        let o = qcalib(&["calibrate", "--observer", "min-max", &file.display().to_string()]);
        assert!(!o.status.success(), "{file:?} succeeded");
        assert!(stderr(&o).contains(needle), "{file:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{file:?}: printed {:?}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn bad_options_fail_with_a_message() {
    let f = golden("l2_ffn_out.b0.npy");
    for (args, needle) in [
        (vec!["--observer", "kl", "--bins", "100"], "bins"),
        (vec!["--observer", "min-max", "--bins", "100"], "bins"),
        (vec!["--observer", "nope"], "nope"),
        (vec!["--observer", "min-max", "--quant-min", "-5"], "quant_max"),
        (vec!["--observer", "min-max", "--ch-axis", "7", "--qscheme", "per-channel-symmetric"], "ch_axis"),
        (
            vec!["--observer", "moving-average-min-max", "--qscheme", "per-channel-symmetric", "--ch-axis", "0"],
            "per-tensor",
        ),
    ] {
        let mut all = vec!["calibrate"];
        all.extend(args.iter().copied());
        all.push(&f);
        let o = qcalib(&all);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn cuda_without_a_usable_gpu_is_an_error_and_auto_falls_back() {
    let f = golden("l2_ffn_out.b0.npy");
    let o = qcalib(&["calibrate", "--observer", "min-max", "--device", "auto", "--format", "json", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    if std::env::var_os("QCALIB_REQUIRE_GPU").is_none() {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        if v["device"] == "cpu" {
            let o = qcalib(&["calibrate", "--observer", "min-max", "--device", "cuda", &f]);
            assert!(!o.status.success());
            assert!(stderr(&o).contains("cuda"), "{}", stderr(&o));
        }
    }
}

#[test]
fn demo_runs_every_observer() {
    let o = qcalib(&["demo", "--device", "cpu", "--elements", "20000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for kind in qcalib::ObserverKind::ALL {
        assert!(text.contains(kind.name()), "{kind} missing from\n{text}");
    }
    assert!(text.contains("SQNR"));
}
