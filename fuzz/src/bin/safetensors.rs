//! Fuzz target: `.safetensors` batch files (see `qcalib_fuzz::batch`).

fn main() {
    afl::fuzz!(|data: &[u8]| qcalib_fuzz::batch(data, qcalib::io::Format::Safetensors));
}
