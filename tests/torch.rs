//! qcalib against PyTorch itself: a `torch.distributed.TCPStore` client on qcalib's store, qcalib
//! on a store PyTorch serves, qcalib ranks under `torchrun` (standalone, and two agents with c10d
//! rendezvous on loopback).
//!
//! They need `python3` that imports `torch.distributed` (CI installs a pinned torch and puts it
//! on `PYTHONPATH`, see `.ci/run`). Without it each test prints `SKIPPED` and passes, unless
//! `QCALIB_REQUIRE_TORCH=1`, which makes them fail instead.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qcalib::sync::{StoreServer, TcpStore};

use common::{qcalib_bin, random_values};

const PATIENT: Duration = Duration::from_secs(60);

/// Whether a missing torch is a failure (CI with torch installed sets it).
fn torch_required() -> bool {
    std::env::var("QCALIB_REQUIRE_TORCH").is_ok_and(|v| v == "1")
}

/// `true` when `python3` imports `torch.distributed`; else prints why the test is skipped (or
/// fails, with `QCALIB_REQUIRE_TORCH=1`).
fn have_torch(test: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import torch.distributed as d; assert d.is_available(); print(__import__('torch').__version__)"])
        .output();
    match probe {
        Ok(o) if o.status.success() => true,
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string(),
                Err(e) => e.to_string(),
            };
            assert!(!torch_required(), "QCALIB_REQUIRE_TORCH=1 but python3 cannot import torch.distributed: {why}");
            eprintln!(
                "SKIPPED {test}: python3 cannot import torch.distributed ({why}); set PYTHONPATH to a torch install"
            );
            false
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scratch(test: &str) -> PathBuf {
    common::scratch("torch", test)
}

/// The magic, version, length and header of a `.npy` file of `len` f32 values.
fn npy_prefix(len: usize) -> Vec<u8> {
    common::npy_bytes("<f4", &common::shape_text(&[len]), &[])
}

fn write_npy(path: &Path, values: &[f32]) {
    common::write_npy_f32(path, &[values.len()], values);
}

/// A batch of 128 MB of zeros (a sparse file): long enough to observe that a rank can be killed
/// while it does (its `/proc/PID/maps` names the file then).
fn write_large_npy(path: &Path) {
    let elements = 32usize << 20;
    let prefix = npy_prefix(elements);
    std::fs::write(path, &prefix).unwrap();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len((prefix.len() + 4 * elements) as u64).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// Runs a Python script (with `args`), `None`-terminated waiting at most `PATIENT`.
fn python(script: &str, args: &[String]) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) -> Output {
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    o
}

// ---------------------------------------------------------------- the store, both ways

#[test]
fn a_python_client_uses_qcalibs_store() {
    if !have_torch("a_python_client_uses_qcalibs_store") {
        return;
    }
    let server = StoreServer::serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = server.local_addr().port();
    let ours = TcpStore::connect(&server.local_addr().to_string(), PATIENT).unwrap();
    ours.set("from/rust", b"hello from qcalib").unwrap();
    let script = r#"
import sys, datetime
from torch.distributed import TCPStore, PrefixStore
port = int(sys.argv[1])
s = TCPStore("127.0.0.1", port, world_size=None, is_master=False, timeout=datetime.timedelta(seconds=30))
assert s.get("from/rust") == b"hello from qcalib", s.get("from/rust")
s.set("from/python", b"hello from torch")
assert s.add("counter", 5) == 5
assert s.add("counter", -2) == 3
assert s.check(["from/python", "counter"])
assert not s.check(["missing"])
assert s.compare_set("cas", b"", b"first") == b"first"
assert s.compare_set("cas", b"wrong", b"second") == b"first"
assert s.compare_set("cas", b"first", b"second") == b"second"
assert s.multi_get(["from/python", "cas"]) == [b"hello from torch", b"second"]
s.multi_set(["m1", "m2"], [b"1", b"2"])
assert s.delete_key("m1") and not s.delete_key("m1")
s.set_timeout(datetime.timedelta(seconds=1))
try:
    s.wait(["never/set"])
    raise SystemExit("a wait for a missing key returned")
except SystemExit:
    raise
except Exception as e:
    pass  # timed out, as it should
s.set_timeout(datetime.timedelta(seconds=30))
s.wait(["from/rust/late"])  # set by qcalib after this script said "ready"
p = PrefixStore("/worker/attempt_3", s)
p.set("qcalib/x", b"prefixed")
print(s.num_keys(), flush=True)
"#;
    let child = python(script, &[port.to_string()]);
    // The script waits for this key: set it once it has had time to start waiting.
    std::thread::sleep(Duration::from_millis(300));
    ours.set("from/rust/late", b"").unwrap();
    let out = finish(child, "the Python client");
    assert_eq!(ours.get("from/python").unwrap(), b"hello from torch");
    assert_eq!(ours.get("counter").unwrap(), b"3");
    assert_eq!(ours.get("m2").unwrap(), b"2");
    assert!(!ours.check(&["m1"]).unwrap());
    let prefixed =
        TcpStore::connect(&server.local_addr().to_string(), PATIENT).unwrap().with_prefix("/worker/attempt_3");
    assert_eq!(prefixed.get("qcalib/x").unwrap(), b"prefixed");
    let keys: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(keys, ours.num_keys().unwrap());
}

#[test]
fn qcalib_uses_a_store_python_serves() {
    if !have_torch("qcalib_uses_a_store_python_serves") {
        return;
    }
    let script = r#"
import sys, datetime
from torch.distributed import TCPStore
s = TCPStore("127.0.0.1", 0, world_size=None, is_master=True, timeout=datetime.timedelta(seconds=60))
s.set("from/python", b"served by torch")
print(s.port, flush=True)
s.wait(["from/rust/done"])
assert s.get("from/rust") == b"x" * 3000000
assert s.get("counter") == b"42"
print(s.get("cas").decode(), flush=True)
"#;
    let mut child = python(script, &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let store = TcpStore::connect(&format!("127.0.0.1:{port}"), PATIENT).unwrap();
    store.ping().unwrap();
    assert_eq!(store.get("from/python").unwrap(), b"served by torch");
    store.set("from/rust", &vec![b'x'; 3_000_000]).unwrap();
    assert_eq!(store.add("counter", 40).unwrap(), 40);
    assert_eq!(store.add("counter", 2).unwrap(), 42);
    assert!(store.check(&["from/python", "counter"]).unwrap());
    assert!(!store.check(&["nothing"]).unwrap());
    assert_eq!(store.compare_set("cas", b"", b"a").unwrap(), b"a");
    assert_eq!(store.compare_set("cas", b"a", b"b").unwrap(), b"b");
    assert_eq!(store.multi_get(&["from/python", "cas"]).unwrap(), vec![b"served by torch".to_vec(), b"b".to_vec()]);
    store.multi_set(&["d1", "d2"], &[b"1", b"2"]).unwrap();
    assert!(store.delete("d1").unwrap());
    assert!(!store.delete("d1").unwrap());
    let start = Instant::now();
    let e = store.wait(&["never"], Duration::from_millis(300)).unwrap_err().to_string();
    assert!(e.contains("were not set") && start.elapsed() < Duration::from_secs(5), "{e}");
    // The connection is still usable after a cancelled wait.
    assert_eq!(store.get("d2").unwrap(), b"2");
    assert!(store.num_keys().unwrap() >= 5);
    store.set("from/rust/done", b"").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rest, vec!["b".to_string()]);
}

// ---------------------------------------------------------------- ranks

/// Shards of `steps` batches for `world` ranks in `dir/shard{r}/b{s}.npy`, and the
/// concatenation of each step's batches in `dir/all/b{s}.npy`.
fn shards(dir: &Path, world: usize, steps: usize) {
    std::fs::create_dir_all(dir.join("all")).unwrap();
    for r in 0..world {
        std::fs::create_dir_all(dir.join(format!("shard{r}"))).unwrap();
    }
    for s in 0..steps {
        let mut all = Vec::new();
        for r in 0..world {
            let scale = 1.0 + r as f32 * 0.7 + s as f32 * 0.3;
            let v: Vec<f32> = random_values(3000 + 500 * r, (10 * s + r) as u64).iter().map(|x| x * scale).collect();
            write_npy(&dir.join(format!("shard{r}/b{s}.npy")), &v);
            all.extend(v);
        }
        write_npy(&dir.join(format!("all/b{s}.npy")), &all);
    }
}

fn files(dir: &Path, shard: &str, steps: usize) -> Vec<String> {
    (0..steps).map(|s| dir.join(format!("{shard}/b{s}.npy")).display().to_string()).collect()
}

fn calibrate_args(extra: &[&str], files: &[String]) -> Vec<String> {
    let mut a: Vec<String> = ["calibrate", "--observer", "kl", "--device", "cpu", "--format", "json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(files.iter().cloned());
    a
}

/// The ranks launched with the plain variables (rank 0 serves the store): their outputs.
fn plain_launch(dir: &Path, world: usize, steps: usize, extra: &[&str]) -> Vec<serde_json::Value> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| {
            Command::new(qcalib_bin())
                .args(calibrate_args(extra, &files(dir, &format!("shard{r}"), steps)))
                .envs([
                    ("RANK", r.to_string()),
                    ("WORLD_SIZE", world.to_string()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", port.to_string()),
                ])
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = finish(c, "a rank");
            serde_json::from_slice(&o.stdout).unwrap()
        })
        .collect()
}

fn single_rank(dir: &Path, steps: usize, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(qcalib_bin()).args(calibrate_args(extra, &files(dir, "all", steps))).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn same_qparams(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    for key in ["scale", "zero_point", "min_val", "max_val"] {
        assert_eq!(a[key], b[key], "{what}: {key}");
    }
}

#[test]
fn ranks_as_clients_of_a_store_python_serves_match_the_plain_launch() {
    if !have_torch("ranks_as_clients_of_a_store_python_serves_match_the_plain_launch") {
        return;
    }
    let dir = scratch("agent");
    let (world, steps) = (3, 3);
    shards(&dir, world, steps);
    let plain = plain_launch(&dir, world, steps, &["--is-sync-quantize"]);
    // The store of a torchrun agent, played by Python: it checks qcalib's keys afterwards.
    let script = r#"
import sys, datetime
from torch.distributed import TCPStore
s = TCPStore("127.0.0.1", 0, world_size=None, is_master=True, timeout=datetime.timedelta(seconds=60))
print(s.port, flush=True)
sys.stdin.readline()
for r in range(int(sys.argv[1])):
    assert s.get(f"/worker/attempt_7/qcalib/0/join/{r}") == sys.argv[1].encode()
    assert s.get(f"/worker/attempt_7/qcalib/runs/{r}") == b"1"
print("keys ok", flush=True)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &world.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let ranks: Vec<Child> = (0..world)
        .map(|r| {
            Command::new(qcalib_bin())
                .args(calibrate_args(&["--is-sync-quantize"], &files(&dir, &format!("shard{r}"), steps)))
                .envs([
                    ("RANK", r.to_string()),
                    ("WORLD_SIZE", world.to_string()),
                    ("MASTER_ADDR", "localhost".into()),
                    ("MASTER_PORT", port.to_string()),
                    ("TORCHELASTIC_USE_AGENT_STORE", "True".into()),
                    ("TORCHELASTIC_RESTART_COUNT", "7".into()),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<serde_json::Value> =
        ranks.into_iter().map(|c| serde_json::from_slice(&finish(c, "a rank").stdout).unwrap()).collect();
    for o in &outs {
        same_qparams(o, &plain[0], "agent store vs plain launch");
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    out.read_line(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rest.trim(), "keys ok");
}

#[test]
fn a_killed_rank_on_a_store_python_serves_is_named_by_the_others() {
    if !have_torch("a_killed_rank_on_a_store_python_serves_is_named_by_the_others") {
        return;
    }
    let dir = scratch("agent-kill");
    write_npy(&dir.join("a.npy"), &[1.0, -2.0]);
    let large = dir.join("large.npy");
    write_large_npy(&large);
    let script = r#"
import sys, datetime
from torch.distributed import TCPStore
s = TCPStore("127.0.0.1", 0, world_size=None, is_master=True, timeout=datetime.timedelta(seconds=60))
print(s.port, flush=True)
sys.stdin.readline()
"#;
    let mut server = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let a = dir.join("a.npy").display().to_string();
    let spawn = |r: usize, second: &Path| {
        Command::new(qcalib_bin())
            .args(calibrate_args(&["--is-sync-quantize"], &[a.clone(), second.display().to_string()]))
            .envs([
                ("RANK", r.to_string()),
                ("WORLD_SIZE", "2".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                ("MASTER_PORT", port.to_string()),
                ("TORCHELASTIC_USE_AGENT_STORE", "True".into()),
                ("QCALIB_SYNC_TIMEOUT", "120".into()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let start = Instant::now();
    let survivor = spawn(0, &dir.join("a.npy"));
    let mut victim = spawn(1, &large);
    // Killed while it observes its large second batch (the survivor waits for it then).
    let maps = format!("/proc/{}/maps", victim.id());
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("large.npy")) {
        assert!(start.elapsed() < PATIENT, "the victim never mapped its large batch");
        std::thread::sleep(Duration::from_millis(1));
    }
    victim.kill().unwrap();
    let _ = victim.wait();
    let o = survivor.wait_with_output().unwrap();
    let took = start.elapsed();
    server.stdin.take().unwrap().write_all(b"\n").unwrap();
    let _ = server.wait();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("rank 1 left"), "{}", stderr(&o));
    assert!(took < Duration::from_secs(40), "the survivor waited for the timeout: {took:?}");
}

// ---------------------------------------------------------------- torchrun

fn torchrun(dir: &Path, args: &[&str], worker: &str) -> Output {
    Command::new("python3")
        .args(["-m", "torch.distributed.run"])
        .args(args)
        .args(["--no-python", "bash", "-c", worker])
        .current_dir(dir)
        .env("QCALIB", qcalib_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn torchrun_standalone_matches_the_plain_launch() {
    if !have_torch("torchrun_standalone_matches_the_plain_launch") {
        return;
    }
    let dir = scratch("standalone");
    let (world, steps) = (2, 3);
    shards(&dir, world, steps);
    let plain = plain_launch(&dir, world, steps, &["--is-sync-quantize"]);
    let worker = r#""$QCALIB" calibrate --observer kl --is-sync-quantize --device cpu --format json shard$RANK/*.npy > out$RANK.json"#;
    let o = torchrun(&dir, &["--standalone", "--nproc-per-node", "2"], worker);
    assert!(o.status.success(), "torchrun failed:\n{}", stderr(&o));
    for r in 0..world {
        same_qparams(&json_file(&dir.join(format!("out{r}.json"))), &plain[0], "torchrun vs plain launch");
    }
    // --sync-histograms: the ranks equal one rank on each step's batches concatenated.
    let worker = r#""$QCALIB" calibrate --observer kl --is-sync-quantize --sync-histograms --device cpu --format json shard$RANK/*.npy > hist$RANK.json"#;
    let o = torchrun(&dir, &["--standalone", "--nproc-per-node", "2"], worker);
    assert!(o.status.success(), "torchrun failed:\n{}", stderr(&o));
    let one = single_rank(&dir, steps, &[]);
    for r in 0..world {
        same_qparams(&json_file(&dir.join(format!("hist{r}.json"))), &one, "--sync-histograms vs the concatenation");
    }
}

#[test]
fn torchrun_with_two_agents_and_c10d_rendezvous_matches_the_plain_launch() {
    if !have_torch("torchrun_with_two_agents_and_c10d_rendezvous_matches_the_plain_launch") {
        return;
    }
    let dir = scratch("c10d");
    let (world, steps) = (4, 2);
    shards(&dir, world, steps);
    let plain = plain_launch(&dir, world, steps, &["--is-sync-quantize"]);
    let endpoint = format!("127.0.0.1:{}", free_port());
    let worker = r#""$QCALIB" calibrate --observer kl --is-sync-quantize --device cpu --format json shard$RANK/*.npy > out$RANK.json"#;
    let agents: Vec<_> = (0..2)
        .map(|node| {
            let dir = dir.clone();
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                torchrun(
                    &dir,
                    &[
                        "--nnodes",
                        "2",
                        "--nproc-per-node",
                        "2",
                        "--node-rank",
                        &node.to_string(),
                        "--rdzv-backend",
                        "c10d",
                        "--rdzv-endpoint",
                        &endpoint,
                        "--rdzv-id",
                        "qcalib-test",
                    ],
                    worker,
                )
            })
        })
        .collect();
    for a in agents {
        let o = a.join().unwrap();
        assert!(o.status.success(), "an agent failed:\n{}", stderr(&o));
    }
    for r in 0..world {
        same_qparams(&json_file(&dir.join(format!("out{r}.json"))), &plain[0], "two agents vs plain launch");
    }
}

#[test]
fn a_rank_that_fails_under_torchrun_ends_the_job_and_is_named() {
    if !have_torch("a_rank_that_fails_under_torchrun_ends_the_job_and_is_named") {
        return;
    }
    let dir = scratch("torchrun-fail");
    shards(&dir, 2, 2);
    // Rank 1 is killed (SIGKILL) while it observes its large second batch; torchrun's agent then
    // stops rank 0 and names rank 1 in its report, well within qcalib's timeout.
    write_large_npy(&dir.join("large.npy"));
    let worker = r#"if [ "$RANK" = 1 ]; then "$QCALIB" calibrate --observer kl --is-sync-quantize --device cpu shard1/b0.npy large.npy & pid=$!; while ! grep -qs large.npy /proc/$pid/maps; do sleep 0.001; done; kill -9 $pid; wait $pid; exit 137; else exec "$QCALIB" calibrate --observer kl --is-sync-quantize --device cpu shard0/b0.npy shard0/b1.npy; fi"#;
    let start = Instant::now();
    let o = Command::new("python3")
        .args([
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "--no-python",
            "bash",
            "-c",
            worker,
        ])
        .current_dir(&dir)
        .env("QCALIB", qcalib_bin())
        .env("QCALIB_SYNC_TIMEOUT", "120")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(text.contains(": 1 (local_rank: 1)") && text.contains("exitcode"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
}

#[test]
fn torchrun_prints_the_error_a_rank_wrote_to_its_error_file() {
    if !have_torch("torchrun_prints_the_error_a_rank_wrote_to_its_error_file") {
        return;
    }
    let dir = scratch("torchrun-error-file");
    shards(&dir, 2, 1);
    // Rank 1 names a file that does not exist: qcalib writes its error to TORCHELASTIC_ERROR_FILE
    // and torchrun shows it in its summary instead of "To enable traceback see: …".
    let worker = r#"if [ "$RANK" = 1 ]; then f=no-such-batch.npy; else f=shard0/b0.npy; fi; exec "$QCALIB" calibrate --observer min-max --is-sync-quantize --device cpu "$f""#;
    let o = torchrun(&dir, &["--standalone", "--nproc-per-node", "2"], worker);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(text.contains("qcalib: error:") && text.contains("no-such-batch.npy"), "{text}");
    assert!(!text.contains("To enable traceback see"), "{text}");
}
