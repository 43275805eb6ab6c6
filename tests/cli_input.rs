//! Batch files that are not what they claim: devices, FIFOs, sockets and directories named like
//! batches (refused at once, by what they are), headers that claim more than the file holds, a
//! `.safetensors` file without tensors; and the memory a large batch takes (about its file's
//! size: the file is memory-mapped, not read and then copied).
#![cfg(all(feature = "cli", target_os = "linux"))]

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(test: &str) -> PathBuf {
    common::scratch("cli-input", test)
}

/// What a finished `qcalib` run gave: exit status, stderr, wall time and peak resident memory.
struct Run {
    code: Option<i32>,
    stderr: String,
    took: Duration,
    peak_rss_bytes: u64,
}

/// Runs qcalib with `args` (stdout discarded) and measures the child alone (`wait4`).
fn run(args: &[&str]) -> Run {
    run_command(Command::new(common::qcalib_bin()).args(args))
}

/// [`run`] with the child's address space limited to 2 GiB, for inputs that could make a broken
/// qcalib take all the machine's memory.
fn run_limited(args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(common::qcalib_bin());
    command.args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 2 << 30, rlim_max: 2 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_command(&mut command)
}

#[allow(clippy::zombie_processes, reason = "the child is reaped by wait4, which also gives its resource usage")]
fn run_command(command: &mut Command) -> Run {
    let start = Instant::now();
    let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for the child we started.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run { code, stderr: text, took: start.elapsed(), peak_rss_bytes: usage.ru_maxrss as u64 * 1024 }
}

fn calibrate(file: &Path) -> Run {
    run(&["calibrate", "--observer", "min-max", "--device", "cpu", file.to_str().unwrap()])
}

fn refused(file: &Path, needle: &str) {
    let r = calibrate(file);
    assert_eq!(r.code, Some(1), "{file:?}: {}", r.stderr);
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(r.stderr.contains(needle) && r.stderr.contains(name), "{file:?}: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

fn npy_prefix(shape: &str, header_len: Option<u16>) -> Vec<u8> {
    common::npy_with_header(&common::npy_header("<f4", shape), header_len, &[])
}

#[test]
fn a_device_behind_a_batch_name_fails_at_once_in_little_memory() {
    let dir = scratch("devices");
    for (device, name) in [("/dev/zero", "x.safetensors"), ("/dev/zero", "z.npy"), ("/dev/urandom", "u.safetensors")] {
        if !Path::new(device).exists() {
            continue;
        }
        let link = dir.join(name);
        std::os::unix::fs::symlink(device, &link).unwrap();
        let r = calibrate(&link);
        assert_eq!(r.code, Some(1), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(name) && r.stderr.contains("is a character device"), "{}", r.stderr);
        assert!(r.took < Duration::from_secs(5), "{name}: took {:?}", r.took);
        assert!(r.peak_rss_bytes < 300 << 20, "{name}: peak {} MB", r.peak_rss_bytes >> 20);
    }
}

#[test]
fn fifos_sockets_and_directories_are_refused_by_what_they_are() {
    let dir = scratch("special");
    let fifo = dir.join("pipe.npy");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let socket = dir.join("sock.safetensors");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let directory = dir.join("dir.npy");
    std::fs::create_dir(&directory).unwrap();
    let start = Instant::now();
    refused(&fifo, "is a FIFO (named pipe)");
    refused(&socket, "is a socket");
    refused(&directory, "is a directory");
    // Opening a FIFO for reading would block until a writer came: it is never opened.
    assert!(start.elapsed() < Duration::from_secs(10));
    // Followed through a symbolic link too.
    let link = dir.join("link.npy");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    refused(&link, "is a FIFO");
}

#[test]
fn a_state_file_that_is_a_device_a_fifo_or_a_directory_is_refused_at_once() {
    // `--state` on /dev/zero read until memory ran out; on a FIFO it waited for a writer forever.
    let dir = scratch("state");
    let batch = dir.join("b.npy");
    let mut bytes = npy_prefix("(2,)", None);
    bytes.extend([1.0f32, -2.0].iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(&batch, bytes).unwrap();
    let zero = dir.join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.join("pipe.json");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    // Should a run open the FIFO, a writer comes after 8 s, so that the test fails rather than hangs.
    let unblock = fifo.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        let _ = std::fs::OpenOptions::new().write(true).open(unblock);
    });
    let directory = dir.join("dir.json");
    std::fs::create_dir(&directory).unwrap();
    for state in [&zero, &fifo, &directory] {
        let state = state.to_str().unwrap();
        let r = run_limited(&["calibrate", "--observer", "min-max", "--state", state, batch.to_str().unwrap()]);
        assert_eq!(r.code, Some(1), "{state:?}: {}", r.stderr);
        assert!(r.stderr.contains("not a regular file"), "{state:?}: {}", r.stderr);
        assert!(r.took < Duration::from_secs(5), "{state:?}: took {:?}", r.took);
        assert!(r.peak_rss_bytes < 300 << 20, "{state:?}: peak {} MB", r.peak_rss_bytes >> 20);
    }
}

#[test]
fn headers_that_claim_more_than_the_file_holds_are_errors() {
    let dir = scratch("claims");
    // A .npy header length beyond the end of the file.
    let npy = dir.join("long-header.npy");
    std::fs::write(&npy, npy_prefix("(2,)", Some(60_000))).unwrap();
    refused(&npy, "claims 60000 bytes");
    // A .npy shape that needs more data than there is.
    let short = dir.join("short.npy");
    let mut bytes = npy_prefix("(1000000,)", None);
    bytes.extend([0u8; 16]);
    std::fs::write(&short, bytes).unwrap();
    refused(&short, "truncated");
    // A .safetensors header length of 2^40.
    let st = dir.join("long-header.safetensors");
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend(br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#);
    std::fs::write(&st, bytes).unwrap();
    refused(&st, "claims 1099511627776 bytes");
    // A .safetensors tensor beyond the end of the data.
    let beyond = dir.join("beyond.safetensors");
    let header = br#"{"a":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend([0u8; 64]);
    std::fs::write(&beyond, bytes).unwrap();
    refused(&beyond, "not a valid .safetensors file");
}

#[test]
fn a_safetensors_file_without_tensors_is_an_error_naming_it() {
    let dir = scratch("empty");
    let file = dir.join("nothing.safetensors");
    safetensors::serialize_to_file(Vec::<(&str, safetensors::tensor::TensorView<'_>)>::new(), None, &file).unwrap();
    refused(&file, "holds no tensors");
    // Metadata only.
    let meta = dir.join("meta-only.safetensors");
    let header = br#"{"__metadata__":{"k":"v"}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    std::fs::write(&meta, bytes).unwrap();
    refused(&meta, "holds no tensors");
    // And an empty file, of either kind.
    for name in ["zero.safetensors", "zero.npy"] {
        std::fs::write(dir.join(name), b"").unwrap();
        refused(&dir.join(name), "truncated");
    }
}

/// A 128 MB batch: qcalib's peak resident memory stays near the file's size (its mapped pages),
/// where reading the file and copying its tensors took twice the size.
#[test]
fn a_large_batch_takes_about_its_size_in_memory() {
    let dir = scratch("large");
    let elements = 32usize << 20;
    let values: Vec<f32> = (0..elements).map(|i| ((i % 1999) as f32 - 999.0) * 1e-3).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&values);
    let st = dir.join("large.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![elements / 256, 256], bytes).unwrap();
    safetensors::serialize_to_file(vec![("act", view)], None, &st).unwrap();
    let npy = dir.join("large.npy");
    let mut file = npy_prefix(&format!("({elements},)"), None);
    file.extend_from_slice(bytes);
    std::fs::write(&npy, file).unwrap();
    drop(values);
    let size = std::fs::metadata(&st).unwrap().len();
    // What the process takes without a batch (the binary, the thread pool).
    let empty = dir.join("small.npy");
    let mut small = npy_prefix("(1,)", None);
    small.extend(1f32.to_le_bytes());
    std::fs::write(&empty, small).unwrap();
    let base = calibrate(&empty);
    assert_eq!(base.code, Some(0), "{}", base.stderr);
    for file in [&st, &npy] {
        let r = calibrate(file);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let extra = r.peak_rss_bytes.saturating_sub(base.peak_rss_bytes);
        assert!(
            extra < size + size / 4,
            "{file:?}: {} MB above the baseline for a {} MB file",
            extra >> 20,
            size >> 20
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
