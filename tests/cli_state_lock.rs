//! One process at a time per state file: concurrent runs on one `--state` either complete alone
//! or fail at once naming the other process, and the state is always one whole run's; the
//! temporaries of killed runs are removed.
#![cfg(all(feature = "cli", unix))]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn scratch(test: &str) -> PathBuf {
    common::scratch("cli-lock", test)
}

fn write_npy(path: &Path, shape: (usize, usize), values: &[f32]) {
    common::write_npy_f32(path, &[shape.0, shape.1], values);
}

/// `count` batches of `per` values in `dir`, each different.
fn batches(dir: &Path, count: usize, per: usize) -> Vec<String> {
    (0..count)
        .map(|b| {
            let values: Vec<f32> =
                (0..per).map(|i| ((i * (b + 3)) as f32 * 0.0137).sin() * (1.0 + b as f32 * 0.3)).collect();
            let path = dir.join(format!("b{b}.npy"));
            write_npy(&path, (16, per / 16), &values);
            path.display().to_string()
        })
        .collect()
}

/// A KL observer whose windows span 3 batches: a run of 8 batches ends in a window.
const KL: &[&str] = &["--observer", "kl", "--update-interval", "3", "--bins", "2048", "--device", "cpu"];
const MIN_MAX: &[&str] = &["--observer", "min-max", "--device", "cpu"];

fn command(options: &[&str], state: &Path, files: &[String]) -> Command {
    let mut c = Command::new(common::qcalib_bin());
    c.arg("calibrate").args(options).args(["--format", "json", "--state"]).arg(state).args(files);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run(options: &[&str], state: &Path, files: &[String]) -> Output {
    command(options, state, files).output().unwrap()
}

fn read_state(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The files beside the state other than the state and the batches (temporaries, a lock file).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn concurrent_runs_on_one_state_never_mix() {
    let dir = scratch("concurrent");
    let files = batches(&dir, 8, 1 << 16);
    // What one run gives, and two runs one after the other (the second resumes the first).
    let once = dir.join("once.json");
    assert!(run(KL, &once, &files).status.success());
    let twice = dir.join("twice.json");
    assert!(run(KL, &twice, &files).status.success());
    assert!(run(KL, &twice, &files).status.success());
    let (once, twice) = (read_state(&once), read_state(&twice));
    assert_eq!((once["files_observed"].as_u64(), twice["files_observed"].as_u64()), (Some(8), Some(16)));

    let mut overlapped = 0;
    for (trial, stagger_ms) in [0u64, 2, 5, 10, 20, 40].into_iter().enumerate() {
        let state = dir.join(format!("state-{trial}.json"));
        let first: Child = command(KL, &state, &files).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(stagger_ms));
        let second: Child = command(KL, &state, &files).spawn().unwrap();
        let pids = [first.id(), second.id()];
        let outs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
        let mut completed = 0;
        for (i, o) in outs.iter().enumerate() {
            let err = String::from_utf8_lossy(&o.stderr);
            if o.status.success() {
                completed += 1;
                continue;
            }
            // The run that lost fails at once, naming the state and the other process.
            let other = pids[1 - i];
            let want = format!("{} is in use by another qcalib process (pid {other})", state.display());
            assert_eq!(o.status.code(), Some(1), "trial {trial} run {i}: {err}");
            assert_eq!(err.trim(), format!("error: {want}"), "trial {trial} run {i}");
            assert!(o.stdout.is_empty());
            overlapped += 1;
        }
        assert!(completed >= 1, "trial {trial}: no run completed");
        eprintln!("trial {trial}: second run {stagger_ms} ms after the first, {completed} of 2 completed");
        let got = read_state(&state);
        let want = if completed == 1 { &once } else { &twice };
        assert_eq!(&got, want, "trial {trial}: the state is not one run's (or two runs' one after the other)");
        assert_eq!(leftovers(&dir), Vec::<String>::new(), "trial {trial}: files left beside the state");
    }
    assert!(overlapped > 0, "no trial overlapped: the runs are too short to test the lock");
}

#[test]
fn a_held_state_fails_at_once_naming_the_holder_and_changes_nothing() {
    let dir = scratch("held");
    let files = batches(&dir, 2, 1 << 12);
    let state = dir.join("calib.json");
    assert!(run(MIN_MAX, &state, &files[..1]).status.success());
    let before = std::fs::read(&state).unwrap();
    // Hold the lock as a qcalib run does: `.calib.json.lock`, locked, holding the pid.
    let lock_path = dir.join(".calib.json.lock");
    let lock = File::create(&lock_path).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(&lock_path, "4242\n").unwrap();
    let start = Instant::now();
    let o = run(MIN_MAX, &state, &files[1..]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{} is in use by another qcalib process (pid 4242)", state.display())), "{err}");
    assert_eq!(std::fs::read(&state).unwrap(), before, "the state changed");
    // Printing the saved qparams needs the lock too.
    assert!(!run(MIN_MAX, &state, &[]).status.success());
    // Released: the next run goes on and removes the lock file when it is done.
    drop(lock);
    let o = run(MIN_MAX, &state, &files[1..]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_state(&state)["files_observed"], 2);
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn a_state_reached_through_a_link_shares_its_lock_and_stays_a_link() {
    // Through a symbolic link a second run took another lock (`.link.json.lock`), resumed from
    // the first run's partial state and replaced the link with a file: a mix of two runs.
    let dir = scratch("link");
    let files = batches(&dir, 2, 1 << 12);
    std::fs::create_dir(dir.join("sub")).unwrap();
    let (real, link) = (dir.join("sub").join("calib.json"), dir.join("link.json"));
    std::os::unix::fs::symlink("sub/calib.json", &link).unwrap();
    // The first run writes the state through the link (which leads nowhere yet).
    let o = run(MIN_MAX, &link, &files[..1]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_eq!(read_state(&real)["files_observed"], 1);
    let before = std::fs::read(&real).unwrap();
    // A run on the file itself holds the lock: a run through the link fails at once.
    let lock_path = dir.join("sub").join(".calib.json.lock");
    let lock = File::create(&lock_path).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(&lock_path, "4242\n").unwrap();
    let o = run(MIN_MAX, &link, &files[1..]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is in use by another qcalib process (pid 4242)"), "{err}");
    assert_eq!(std::fs::read(&real).unwrap(), before, "the state changed");
    drop(lock);
    let o = run(MIN_MAX, &link, &files[1..]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_state(&real)["files_observed"], 2);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
}

#[test]
fn temporaries_of_killed_runs_are_ignored_and_removed() {
    let dir = scratch("stale");
    let files = batches(&dir, 3, 1 << 12);
    let state = dir.join("calib.json");
    let want = {
        let clean = dir.join("clean.json");
        assert!(run(MIN_MAX, &clean, &files).status.success());
        let mut v = read_state(&clean);
        v["last_file"] = Value::Null;
        v
    };
    // What a run killed between writing its temporary and renaming it leaves: an older qcalib's
    // fixed name, and this one's unique names. A lock file of a killed run (not locked).
    for stale in [".calib.json.tmp", ".calib.json.999999.0.tmp", ".calib.json.12.7.tmp"] {
        std::fs::write(dir.join(stale), "{\"format\": \"qcalib-calibrate-state\", \"version\": 1, \"garbage\"")
            .unwrap();
    }
    std::fs::write(dir.join(".calib.json.lock"), "999999\n").unwrap();
    // Not a temporary of this state: left alone.
    std::fs::write(dir.join(".other.json.1.2.tmp"), "x").unwrap();
    assert!(run(MIN_MAX, &state, &files[..1]).status.success());
    assert_eq!(leftovers(&dir), vec![".other.json.1.2.tmp".to_string()]);
    assert!(run(MIN_MAX, &state, &files[1..]).status.success());
    let mut got = read_state(&state);
    got["last_file"] = Value::Null;
    assert_eq!(got, want);
}

/// A state file edited into a contradiction is refused naming the field, and left as it is: the
/// issue's cases (a KL top edge of 3.4e38, a repeated key, `min_val` 100 with `max_val` -100
/// after one batch) and more observer batches than files.
#[test]
fn an_edited_state_file_is_refused_naming_the_field() {
    let dir = scratch("edited");
    let files = batches(&dir, 2, 1 << 12);
    let kl = dir.join("kl.json");
    // One batch of a window of 3: the window holds that batch's histogram.
    assert!(!run(KL, &kl, &files[..1]).status.success());
    let mm = dir.join("mm.json");
    assert!(run(MIN_MAX, &mm, &files[..1]).status.success());
    type Edit = fn(&mut Value);
    let cases: [(&Path, &[&str], &str, Edit); 4] = [
        (&kl, KL, "the top edge `edges[2048]` 340000000000000000000000000000000000000", |v| {
            v["tensor"]["kl_window"]["edges"][2048] = serde_json::json!(3.4e38)
        }),
        (&mm, MIN_MAX, "`min_val[0]` 100 is greater than `max_val[0]` -100", |v| {
            v["tensor"]["min_val"][0] = serde_json::json!(100.0);
            v["tensor"]["max_val"][0] = serde_json::json!(-100.0);
        }),
        (&mm, MIN_MAX, "`batches` 1 is more than `files_observed` 0", |v| v["files_observed"] = serde_json::json!(0)),
        (&mm, MIN_MAX, "duplicate key \"batches\"", |_| {}),
    ];
    for (state, options, needle, edit) in cases {
        let good = std::fs::read_to_string(state).unwrap();
        let mut v: Value = serde_json::from_str(&good).unwrap();
        edit(&mut v);
        let mut text = v.to_string();
        if needle.starts_with("duplicate") {
            text = text.replacen("\"batches\":1", "\"batches\":1,\"batches\":1", 1);
        }
        std::fs::write(state, &text).unwrap();
        let o = run(options, state, &files[1..]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{needle}: {err}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert_eq!(std::fs::read_to_string(state).unwrap(), text, "{needle}: the state changed");
        std::fs::write(state, good).unwrap();
    }
}
