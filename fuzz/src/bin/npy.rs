//! Fuzz target: `.npy` batch files (see `qcalib_fuzz::batch`).

fn main() {
    afl::fuzz!(|data: &[u8]| qcalib_fuzz::batch(data, qcalib::io::Format::Npy));
}
