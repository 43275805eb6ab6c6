//! Fuzz target: observer states as JSON (see `qcalib_fuzz::state`).

fn main() {
    afl::fuzz!(|data: &[u8]| qcalib_fuzz::state(data));
}
