//! What `qcalib` writes when it cannot write: stdout on a full disk (`/dev/full`), stdout into a
//! pipe whose reader is gone, stderr on a full disk; and names that hold control characters,
//! escaped in text output and in error messages (JSON keeps them, escaped as JSON escapes).
#![cfg(all(feature = "cli", unix))]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    common::scratch("cli-output", test)
}

fn write_npy(path: &Path, values: &[f32]) {
    common::write_npy_f32(path, &[values.len()], values);
}

fn dev_full() -> Option<File> {
    match std::fs::OpenOptions::new().write(true).open("/dev/full") {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("SKIPPED: /dev/full cannot be opened ({e})");
            None
        }
    }
}

/// Whether the child panicked (Rust's panic message, or its exit status 101).
fn panicked(o: &Output) -> bool {
    o.status.code() == Some(101) || String::from_utf8_lossy(&o.stderr).contains("panicked")
}

fn calibrate_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let batch = dir.join("b.npy");
    write_npy(&batch, &[0.5, -1.25, 3.0, 0.0]);
    let mut args: Vec<String> = ["calibrate", "--observer", "min-max"].map(String::from).to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(batch.display().to_string());
    args
}

#[test]
fn stdout_on_a_full_disk_is_one_line_on_stderr_and_a_failure() {
    let dir = scratch("full");
    let Some(_) = dev_full() else { return };
    let state = dir.join("s.json").display().to_string();
    for extra in [&["--format", "table"][..], &["--format", "json"], &["--state", &state]] {
        let args = calibrate_args(&dir, extra);
        let o = Command::new(common::qcalib_bin())
            .args(&args)
            .stdout(dev_full().unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!panicked(&o), "{extra:?}: {err}");
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(err.starts_with("error: cannot write the output: "), "{extra:?}: {err}");
    }
    // The state was written before the output: the batches are not lost.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("s.json")).unwrap()).unwrap();
    assert_eq!(state["files_observed"], 1);
    // The other commands too.
    for args in [&["demo", "--elements", "4096", "--device", "cpu"][..], &["--help"], &["--version"]] {
        let o = Command::new(common::qcalib_bin())
            .args(args)
            .stdout(dev_full().unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!panicked(&o) && o.status.code() == Some(1), "{args:?}: {:?} {err}", o.status);
        assert!(err.contains("No space left") || err.contains("os error 28"), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_pipe_ends_quietly_with_status_141() {
    let dir = scratch("pipe");
    let state = dir.join("s.json").display().to_string();
    for extra in [&["--format", "table"][..], &["--format", "json"], &["--state", &state]] {
        let args = calibrate_args(&dir, extra);
        // The reader is closed before qcalib starts, so its first write meets a broken pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(common::qcalib_bin()).args(&args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        assert_eq!(o.status.code(), Some(141), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stderr.is_empty(), "{extra:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Every batch was committed to the state before the output was written, and nothing after.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("s.json")).unwrap()).unwrap();
    assert_eq!(state["files_observed"], 1);
    // As in a shell: `qcalib demo | true`.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(common::qcalib_bin())
        .args(["demo", "--elements", "4096", "--device", "cpu"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(141));
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    if Path::new("/bin/sh").exists() {
        let script = "\"$0\" demo --elements 4096 --device cpu | true; echo $?";
        let o = Command::new("/bin/sh").args(["-c", script]).arg(common::qcalib_bin()).output().unwrap();
        let status = String::from_utf8_lossy(&o.stdout);
        // `true` may exit before or after qcalib's first write: either it ends quietly (141) or
        // it had written everything (0); never a panic.
        assert!(matches!(status.trim(), "141" | "0"), "{status} {}", String::from_utf8_lossy(&o.stderr));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
}

#[test]
fn stderr_on_a_full_disk_still_fails_without_a_panic() {
    let dir = scratch("stderr-full");
    let Some(_) = dev_full() else { return };
    let missing = dir.join("missing.npy").display().to_string();
    for (args, stdout_full) in [
        (vec!["calibrate", "--observer", "min-max", missing.as_str()], false),
        (vec!["calibrate", "--observer", "nope", missing.as_str()], false),
        (vec!["calibrate", "--observer", "min-max", missing.as_str()], true),
    ] {
        let stdout = if stdout_full { Stdio::from(dev_full().unwrap()) } else { Stdio::piped() };
        let o =
            Command::new(common::qcalib_bin()).args(&args).stdout(stdout).stderr(dev_full().unwrap()).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: panicked");
        assert!(o.status.code().is_some(), "{args:?}: ended by a signal");
    }
    // Both unwritable, with output to write.
    let args = calibrate_args(&dir, &[]);
    let o = Command::new(common::qcalib_bin())
        .args(&args)
        .stdout(dev_full().unwrap())
        .stderr(dev_full().unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

/// `name` with an escape sequence that colours the terminal and a newline that would forge an
/// output line.
const HOSTILE: &str =
    "act\x1b[31mRED\nfake: min-max qint8 per_tensor_symmetric [-128, 127] on cpu, 9 batch(es)\u{202e}";

fn hostile_safetensors(path: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let data: Vec<u8> = [1.0f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![(HOSTILE, TensorView::new(Dtype::F32, vec![2], &data).unwrap())];
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

fn has_raw_controls(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.contains('\x1b') || text.contains('\u{202e}') || text.contains("RED\n")
}

#[test]
fn control_characters_in_names_are_escaped_in_text_but_kept_in_json() {
    let dir = scratch("names");
    let file = dir.join("batch.safetensors");
    hostile_safetensors(&file);
    let f = file.display().to_string();
    let table = Command::new(common::qcalib_bin()).args(["calibrate", "--observer", "min-max", &f]).output().unwrap();
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(!has_raw_controls(&table.stdout), "{:?}", String::from_utf8_lossy(&table.stdout));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(r"act\u{1b}[31mRED\nfake: min-max"), "{text}");
    assert!(text.contains(r"\u{202e}: min-max"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("batch(es)")).count(), 1, "{text}");

    // JSON is unchanged: the name is the key, as JSON escapes it.
    let json = Command::new(common::qcalib_bin())
        .args(["calibrate", "--observer", "min-max", "--format", "json", &f])
        .output()
        .unwrap();
    assert!(!json.stdout.contains(&0x1b));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[HOSTILE]["max_val"][0], 1.0);

    // In error messages: a tensor name (a NaN in the tensor) and a file name.
    let nan_file = dir.join("nan.safetensors");
    {
        use safetensors::tensor::{Dtype, TensorView};
        let data: Vec<u8> = [1.0f32, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = vec![(HOSTILE, TensorView::new(Dtype::F32, vec![2], &data).unwrap())];
        safetensors::serialize_to_file(tensors, None, &nan_file).unwrap();
    }
    let hostile_path = dir.join(format!("{}.npy", HOSTILE.replace('/', "_")));
    std::fs::write(&hostile_path, b"not a .npy").unwrap();
    for file in [nan_file, hostile_path.clone(), dir.join("missing\x1b[2J.npy")] {
        let o = Command::new(common::qcalib_bin())
            .arg("calibrate")
            .arg("--observer")
            .arg("min-max")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(!has_raw_controls(&o.stderr), "{:?}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(r"\u{1b}["));
    }
    // As the state file's name too.
    let state = dir.join("state\x1b[31m.json");
    std::fs::write(&state, "{").unwrap();
    let o = Command::new(common::qcalib_bin())
        .args(["calibrate", "--observer", "min-max", "--state"])
        .arg(&state)
        .arg(&f)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!has_raw_controls(&o.stderr), "{:?}", String::from_utf8_lossy(&o.stderr));
}
