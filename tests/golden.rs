//! The golden cases of `shared/golden` whose batches are copied into `tests/fixtures/golden`:
//! real MiniLM-L6 activations and weights with the qparams an independent implementation of the
//! plugin's algorithms gives. Run through the library and through the CLI.
#![cfg(feature = "io")]

mod common;

use std::path::PathBuf;

use qcalib::io::{OwnedTensor, read_npy_file};
use qcalib::{ObserverKind, ObserverSpec, QScheme};
use serde_json::Value;

const RTOL: f64 = 1e-5;

fn fixtures() -> PathBuf {
    common::fixtures()
}

struct Case {
    id: String,
    args: Vec<String>,
    files: Vec<PathBuf>,
    scale: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    let v: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().unwrap().to_string(),
            args: c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            files: c["files"].as_array().unwrap().iter().map(|f| fixtures().join(f.as_str().unwrap())).collect(),
            scale: c["expected"]["scale"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect(),
        })
        .collect()
}

/// The CLI's arguments of a case as an observer spec.
fn spec(args: &[String]) -> ObserverSpec {
    let get = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].as_str());
    let kind: ObserverKind = get("--observer").unwrap().parse().unwrap();
    let mut quant = kind.default_config();
    if let Some(v) = get("--averaging-constant") {
        quant.averaging_constant = v.parse().unwrap();
    }
    if let Some(v) = get("--ch-axis") {
        quant.ch_axis = v.parse().unwrap();
    }
    if let Some(v) = get("--dtype") {
        quant.dtype = v.parse().unwrap();
    }
    if let Some(v) = get("--qscheme") {
        quant.qscheme = v.parse::<QScheme>().unwrap();
    }
    ObserverSpec {
        kind,
        quant,
        bins: get("--bins").map(|v| v.parse().unwrap()),
        percentile: get("--percentile").map(|v| v.parse().unwrap()),
        update_interval: get("--update-interval").map(|v| v.parse().unwrap()),
        stride: get("--stride").map(|v| v.parse().unwrap()),
        sync_histograms: false,
    }
}

fn check(case: &Case, got: &[f64]) -> Result<(), String> {
    if got.len() != case.scale.len() {
        return Err(format!("{}: {} scales, expected {}", case.id, got.len(), case.scale.len()));
    }
    for (c, (g, e)) in got.iter().zip(&case.scale).enumerate() {
        if (g - e).abs() > RTOL * e.abs() {
            return Err(format!("{}: channel {c}: scale {g} expected {e}", case.id));
        }
    }
    Ok(())
}

#[test]
fn golden_cases_through_the_library() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let mut obs = spec(&case.args).build().unwrap();
        for f in &case.files {
            let OwnedTensor::F32(a) = read_npy_file(f).unwrap() else { panic!("f32 fixtures") };
            obs.observe(&a).unwrap();
        }
        let got: Vec<f64> = obs.qparams().unwrap().scale.iter().map(|&s| s as f64).collect();
        if let Err(e) = check(case, &got) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn golden_cases_through_the_cli() {
    let mut failures = Vec::new();
    for case in &cases() {
        let out = std::process::Command::new(common::qcalib_bin())
            .arg("calibrate")
            .args(&case.args)
            .args(["--device", "cpu", "--format", "json"])
            .args(&case.files)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", case.id, String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<f64> = v["scale"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        if let Err(e) = check(case, &got) {
            failures.push(e);
        }
        for key in ["observer", "dtype", "device", "batches", "zero_point", "min_val", "max_val"] {
            assert!(v.get(key).is_some(), "{}: no {key:?} in {v}", case.id);
        }
        assert_eq!(v["batches"], case.files.len() as u64);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same batches as f16 views of the same values give the same scales as f32 views.
#[test]
fn golden_batches_in_f16_equal_f32_of_the_same_values() {
    for case in cases().iter().filter(|c| c.id.starts_with("l2_ffn_out")) {
        let (mut a, mut b) = (spec(&case.args).build().unwrap(), spec(&case.args).build().unwrap());
        for f in &case.files {
            let OwnedTensor::F32(x) = read_npy_file(f).unwrap() else { panic!("f32 fixtures") };
            let h = x.mapv(half::f16::from_f32);
            let widened = h.mapv(half::f16::to_f32);
            a.observe(&h).unwrap();
            b.observe(&widened).unwrap();
        }
        assert_eq!(a.qparams().unwrap(), b.qparams().unwrap(), "{}", case.id);
    }
}
