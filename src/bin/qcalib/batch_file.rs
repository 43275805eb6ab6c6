//! The batch files of `qcalib calibrate`: memory-mapped, so that a batch takes no memory of its
//! own beyond the pages the observers read (the page cache holds them, and gives them back
//! under pressure).

use std::path::Path;

use qcalib::io::{Batch, map_batch};

/// Maps the batch file at `path` and checks it: an error names the file and what is wrong.
pub fn open(path: &Path) -> Result<Batch, String> {
    // SAFETY: a batch file must not be modified or truncated while `qcalib calibrate` runs: the
    // README's "Command line" section says so, as the safetensors tools do for their mapped
    // files. A file changed anyway can give wrong values, and one truncated under the map ends
    // the process with SIGBUS; no batch outlives the run.
    unsafe { map_batch(path) }.map_err(|e| e.to_string())
}
