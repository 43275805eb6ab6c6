//! The error file of torchrun's agent (`TORCHELASTIC_ERROR_FILE`): when a rank fails, torchrun
//! prints what the rank wrote there in its failure summary, in place of "To enable traceback see:
//! …". PyTorch's own workers write it from `@record`; qcalib writes the same JSON itself.
//!
//! The format is the one of `torch.distributed.elastic.multiprocessing.errors.ErrorHandler
//! .record_exception`:
//! `{"message": {"message": TEXT, "extraInfo": {"py_callstack": TEXT, "timestamp": "SECONDS"}}}`;
//! torchrun shows `py_callstack`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

/// The variable torchrun sets to the path of each worker's error file.
const ERROR_FILE_VARIABLE: &str = "TORCHELASTIC_ERROR_FILE";

/// Writes `message` as the error file of torchrun's agent when `TORCHELASTIC_ERROR_FILE` names
/// one (nothing otherwise). A failure to write it is ignored: the error is on stderr anyway.
pub fn record(message: &str) {
    let Some(path) = std::env::var_os(ERROR_FILE_VARIABLE).filter(|p| !p.is_empty()) else {
        return;
    };
    let _ = std::fs::write(path, error_file_json(message, SystemTime::now()));
}

/// The contents of the error file for `message`, failed at `now`.
fn error_file_json(message: &str, now: SystemTime) -> String {
    let seconds = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let text = format!("qcalib: error: {message}");
    json!({"message": {"message": text, "extraInfo": {"py_callstack": text, "timestamp": seconds.to_string()}}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_what_torchrun_reads() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let v: serde_json::Value = serde_json::from_str(&error_file_json("rank 1: \"bad\"\nbatch", at)).unwrap();
        assert_eq!(v["message"]["message"], "qcalib: error: rank 1: \"bad\"\nbatch");
        assert_eq!(v["message"]["extraInfo"]["py_callstack"], v["message"]["message"]);
        assert_eq!(v["message"]["extraInfo"]["timestamp"], "1700000000");
    }
}
