//! `qcalib calibrate --state FILE`: resuming, atomic writes after each batch, and bad input that
//! never touches the state (corrupt files, NaN batches, shape changes, a kill mid-run).
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn qcalib(args: &[String]) -> Output {
    Command::new(common::qcalib_bin()).args(args).output().expect("run qcalib")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    common::scratch("cli-state", test)
}

fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    common::npy_bytes(descr, &common::shape_text(shape), data)
}

fn write_npy(path: &Path, shape: &[usize], values: &[f32]) {
    common::write_npy_f32(path, shape, values);
}

/// `n` values of batch `b`: a smooth wave with a few outliers, its amplitude growing with `b`.
fn values(n: usize, b: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v = ((i * (b + 3)) as f32 * 0.0137).sin() * (1.0 + b as f32 * 0.3);
            if i % 997 == 5 { v * 9.0 } else { v }
        })
        .collect()
}

/// `count` `.npy` batches of shape `[8, per / 8]` in `dir`.
fn npy_batches(dir: &Path, count: usize, per: usize) -> Vec<String> {
    (0..count)
        .map(|b| {
            let path = dir.join(format!("b{b}.npy"));
            write_npy(&path, &[8, per / 8], &values(per, b));
            path.display().to_string()
        })
        .collect()
}

/// `count` `.safetensors` batches with the tensors `act` (f32) and `w` (bf16) in `dir`.
fn safetensors_batches(dir: &Path, count: usize) -> Vec<String> {
    use safetensors::tensor::{Dtype, TensorView};
    (0..count)
        .map(|b| {
            let act: Vec<u8> = values(640, b).iter().flat_map(|v| v.to_le_bytes()).collect();
            let w: Vec<u8> = values(96, b + 10).iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
            let tensors = vec![
                ("act", TensorView::new(Dtype::F32, vec![10, 64], &act).unwrap()),
                ("w", TensorView::new(Dtype::BF16, vec![8, 12], &w).unwrap()),
            ];
            let path = dir.join(format!("b{b}.safetensors"));
            safetensors::serialize_to_file(tensors, None, &path).unwrap();
            path.display().to_string()
        })
        .collect()
}

/// `calibrate` with `options`, the state file `state` (if any) and the batches `files`.
fn calibrate(options: &[&str], state: Option<&Path>, files: &[String]) -> Output {
    let mut args: Vec<String> = ["calibrate", "--format", "json"].iter().map(|s| s.to_string()).collect();
    args.extend(options.iter().map(|s| s.to_string()));
    if let Some(s) = state {
        args.push("--state".into());
        args.push(s.display().to_string());
    }
    args.extend(files.iter().cloned());
    qcalib(&args)
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

const OBSERVERS: [&[&str]; 6] = [
    &["--observer", "kl", "--update-interval", "2"],
    &["--observer", "min-max", "--qscheme", "per-channel-symmetric", "--ch-axis", "0", "--averaging-constant", "0.3"],
    &["--observer", "percentile", "--percentile", "99.5", "--bins", "700"],
    &["--observer", "mse", "--stride", "4", "--qscheme", "per-channel-symmetric", "--ch-axis", "-1"],
    &["--observer", "mix", "--dtype", "qint4"],
    &["--observer", "moving-average-per-channel-min-max", "--averaging-constant", "1"],
];

#[test]
fn resuming_after_any_batch_gives_the_uninterrupted_result() {
    let dir = scratch("resume");
    let files = npy_batches(&dir, 5, 4096);
    for options in OBSERVERS {
        let want = json(&calibrate(options, None, &files));
        for cut in 1..=files.len() {
            let state = dir.join(format!("state-{cut}.json"));
            let _ = std::fs::remove_file(&state);
            // The first run may end without qparams (an incomplete KL window): its state is kept.
            let first = calibrate(options, Some(&state), &files[..cut]);
            assert!(state.exists(), "{options:?} cut {cut}: {}", stderr(&first));
            let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
            assert_eq!(saved["files_observed"], cut as u64);
            assert_eq!(saved["last_file"], files[cut - 1].as_str());
            let got = json(&calibrate(options, Some(&state), &files[cut..]));
            assert_eq!(got, want, "{options:?} cut after {cut}");
        }
    }
}

#[test]
fn resuming_safetensors_keeps_one_state_per_tensor() {
    let dir = scratch("resume-safetensors");
    let files = safetensors_batches(&dir, 4);
    let options: &[&str] = &["--observer", "kl", "--update-interval", "2", "--bins", "300"];
    let want = json(&calibrate(options, None, &files));
    assert_eq!(want["act"]["batches"], 4);
    let state = dir.join("state.json");
    json(&calibrate(options, Some(&state), &files[..2]));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let tensors = saved["tensors"].as_object().unwrap();
    assert_eq!(tensors.keys().collect::<Vec<_>>(), ["act", "w"]);
    assert_eq!(tensors["act"]["format"], "qcalib-observer-state");
    assert_eq!(tensors["w"]["batches"], 2);
    assert_eq!(json(&calibrate(options, Some(&state), &files[2..])), want);
    // An .npy batch does not continue a .safetensors state.
    let npy = npy_batches(&dir, 1, 64);
    let o = calibrate(options, Some(&state), &npy);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a .npy batch among .safetensors batches"), "{}", stderr(&o));
}

#[test]
fn a_state_with_no_new_files_prints_its_qparams() {
    let dir = scratch("no-files");
    let files = npy_batches(&dir, 2, 256);
    let state = dir.join("state.json");
    let options: &[&str] = &["--observer", "min-max"];
    let want = json(&calibrate(options, Some(&state), &files));
    assert_eq!(json(&calibrate(options, Some(&state), &[])), want);
    let o = calibrate(options, Some(&dir.join("missing.json")), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing to calibrate"), "{}", stderr(&o));
}

#[test]
fn a_bad_batch_leaves_the_state_of_the_batch_before() {
    let dir = scratch("bad-batch");
    let good = npy_batches(&dir, 3, 512);
    let bad_dir = dir.join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = |name: &str, bytes: Vec<u8>| {
        let path = bad_dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut nan = values(512, 7);
    nan[100] = f32::NAN;
    nan[300] = f32::INFINITY;
    let full = std::fs::read(&good[0]).unwrap();
    let cases = [
        (bad("truncated.npy", full[..full.len() - 10].to_vec()), "truncated"),
        (bad("header-cut.npy", full[..20].to_vec()), "truncated"),
        (bad("f64.npy", npy_bytes("<f8", &[4], &[0; 32])), "unsupported dtype"),
        (bad("big-endian.npy", npy_bytes(">f4", &[4], &[0; 16])), "unsupported dtype"),
        (bad("int.npy", npy_bytes("<i4", &[4], &[0; 16])), "unsupported dtype"),
        (bad("garbage.npy", b"not numpy at all".to_vec()), "bad magic"),
        (bad("empty.npy", Vec::new()), "truncated"),
        (bad("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}".to_vec()), "safetensors"),
        (bad("nan.npy", npy_bytes("<f4", &[8, 64], &f32s(&nan))), "2 non-finite"),
        (bad("shape.npy", npy_bytes("<f4", &[4, 128], &f32s(&values(512, 1)))), "channel count changed from 8 to 4"),
        (dir.join("missing.npy").display().to_string(), "missing.npy"),
    ];
    let options: &[&str] = &["--observer", "mse", "--qscheme", "per-channel-symmetric", "--ch-axis", "0"];
    let reference = dir.join("reference.json");
    json(&calibrate(options, Some(&reference), &good[..2]));
    let want = std::fs::read(&reference).unwrap();
    for (file, needle) in cases {
        let state = dir.join("state.json");
        let _ = std::fs::remove_file(&state);
        let files = vec![good[0].clone(), good[1].clone(), file.clone(), good[2].clone()];
        let o = calibrate(options, Some(&state), &files);
        assert!(!o.status.success(), "{file} succeeded");
        assert!(o.stdout.is_empty(), "{file}: printed {}", String::from_utf8_lossy(&o.stdout));
        let message = stderr(&o);
        assert!(message.contains(needle) && message.contains(&file), "{file}: {message}");
        assert_eq!(std::fs::read(&state).unwrap(), want, "{file}: the state is not that of the two good batches");

        if needle.starts_with("channel count") {
            continue; // a valid first batch on its own
        }
        // A bad first batch writes no state at all.
        let fresh = dir.join("fresh.json");
        let o = calibrate(options, Some(&fresh), std::slice::from_ref(&file));
        assert!(!o.status.success(), "{file} succeeded");
        assert!(!fresh.exists(), "{file}: a state was written");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().ends_with(".tmp")), "{leftovers:?}");
}

#[test]
fn a_state_that_does_not_match_the_command_is_refused_and_kept() {
    let dir = scratch("mismatch");
    let files = npy_batches(&dir, 2, 512);
    let state = dir.join("state.json");
    json(&calibrate(&["--observer", "kl", "--bins", "600"], Some(&state), &files[..1]));
    let saved = std::fs::read(&state).unwrap();
    for (options, needle) in [
        (vec!["--observer", "min-max"], "saved with `observer` = kl, but this observer has `observer` = min-max"),
        (vec!["--observer", "kl"], "saved with `bins` = 600, but this observer has `bins` = 512"),
        (vec!["--observer", "kl", "--bins", "600", "--dtype", "qint4"], "`dtype`"),
        (vec!["--observer", "kl", "--bins", "600", "--averaging-constant", "0.5"], "`averaging_constant`"),
    ] {
        let o = calibrate(&options, Some(&state), &files[1..]);
        assert!(!o.status.success(), "{options:?} succeeded");
        assert!(stderr(&o).contains(needle), "{options:?}: {}", stderr(&o));
        assert_eq!(std::fs::read(&state).unwrap(), saved, "{options:?} changed the state");
    }
    let options: &[&str] = &["--observer", "kl", "--bins", "600"];
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_slice(&saved).unwrap();
        f(&mut v);
        std::fs::write(&state, v.to_string()).unwrap();
    };
    for (f, needle) in [
        (&(|v: &mut Value| v["version"] = 2.into()) as &dyn Fn(&mut Value), "newer qcalib"),
        (&|v: &mut Value| v["tensor"]["version"] = 3.into(), "newer qcalib"),
        (&|v: &mut Value| v["format"] = "other".into(), "not a qcalib calibration state"),
        (&|v: &mut Value| v["tensor"]["kl_window"]["step"] = 1.into(), "`step` 1 is not below `update_interval` 1"),
    ] {
        edit(f);
        let o = calibrate(options, Some(&state), &files[1..]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
    std::fs::write(&state, &saved[..saved.len() / 2]).unwrap();
    let o = calibrate(options, Some(&state), &files[1..]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not valid JSON"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&state).unwrap(), &saved[..saved.len() / 2], "a refused state file was rewritten");
}

#[test]
fn killed_mid_run_then_resumed_gives_the_uninterrupted_result() {
    let dir = scratch("kill");
    let files = npy_batches(&dir, 40, 1 << 16);
    let options: &[&str] = &["--observer", "percentile", "--bins", "4096"];
    let want = json(&calibrate(options, None, &files));
    let state = dir.join("state.json");
    let mut args = vec!["calibrate".to_string(), "--format".into(), "json".into(), "--state".into()];
    args.push(state.display().to_string());
    args.extend(options.iter().map(|s| s.to_string()));
    args.extend(files.iter().cloned());
    let mut child =
        Command::new(common::qcalib_bin()).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !state.exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(30));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    // Whatever the moment of the kill, the state file is a complete state of some batch.
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let done = saved["files_observed"].as_u64().unwrap() as usize;
    assert!((1..=files.len()).contains(&done));
    assert_eq!(saved["last_file"], files[done - 1].as_str());
    assert_eq!(json(&calibrate(options, Some(&state), &files[done..])), want, "killed after {done} file(s)");
}

#[test]
fn a_multi_rank_run_refuses_a_state_file() {
    let dir = scratch("ranks");
    let files = npy_batches(&dir, 1, 64);
    let state = dir.join("state.json");
    let o = Command::new(common::qcalib_bin())
        .args(["calibrate", "--observer", "min-max", "--is-sync-quantize", "--state"])
        .arg(&state)
        .args(&files)
        .envs([
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "1"),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--state is for a single rank"), "{}", stderr(&o));
    assert!(!state.exists());
}
