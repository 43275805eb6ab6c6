//! The fuzz targets: each takes any bytes and checks what must hold for every input. A panic (a
//! failed check, or a bug in qcalib) is what the fuzzer reports. `src/bin/*` run them under
//! AFL++ (`cargo afl fuzz`); the tests replay the seed corpus.

use qcalib::io::{Batch, Format, Tensors};
use qcalib::{ObserverConfig, ObserverState, TensorView};

/// States of KL observers with more bins than this are read, loaded and saved, but not observed:
/// one batch would cost a threshold search over that many bins (a second or more here, which
/// AFL++ reports as a hang), while the reader under test is the same.
pub const OBSERVE_MAX_KL_BINS: usize = 1 << 16;

/// A batch file of `format`: read or refused with an error, never a panic; the tensors of a batch
/// that is read are views of exactly their shape's size, every value readable.
pub fn batch(data: &[u8], format: Format) {
    let Ok(batch) = Batch::from_bytes(data.to_vec(), format) else { return };
    let tensors = match batch.tensors() {
        Ok(Tensors::Single(t)) => vec![t],
        Ok(Tensors::Named(named)) => named.into_iter().map(|(_, t)| t).collect(),
        Err(e) => panic!("a batch that was read gives no tensors: {e}"),
    };
    if format == Format::Safetensors {
        assert!(!tensors.is_empty(), "a .safetensors batch without tensors was read");
    }
    for t in tensors {
        let numel: usize = t.shape().iter().product();
        assert_eq!(t.len(), numel, "a view of another size than its shape");
        let sum = match &t {
            TensorView::F32(v) => v.iter().map(|&x| x as f64).sum::<f64>(),
            TensorView::F16(v) => v.iter().map(|x| x.to_f64()).sum(),
            TensorView::BF16(v) => v.iter().map(|x| x.to_f64()).sum(),
        };
        std::hint::black_box(sum);
    }
}

/// An observer state as JSON: refused with an error, or it is a state an observer takes, keeps
/// working from, and saves back (in the oldest format version that holds it) to JSON it reads
/// again as the same state.
pub fn state(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(state) = ObserverState::from_json(text) else { return };
    let mut obs = match state.clone().into_observer() {
        Ok(obs) => obs,
        Err(e) => panic!("a state that was read does not load: {e}"),
    };
    // The same state, in the oldest format version that holds it: a version-2 state without
    // per-channel KL windows saves as version 1, which every reader takes.
    let saved = obs.save_state();
    assert_eq!(ObserverState { version: saved.version, ..state.clone() }, saved, "a loaded state saves as another");
    assert!(saved.version <= state.version, "a state read as version {} saves as {}", state.version, saved.version);
    let json = state.to_json().expect("a state that was read writes as JSON");
    assert_eq!(ObserverState::from_json(&json).ok(), Some(state.clone()), "the written state reads back otherwise");
    let _ = obs.qparams();
    if matches!(&state.config, ObserverConfig::Kl(kl) if kl.bins > OBSERVE_MAX_KL_BINS) {
        return;
    }
    let batch = [0.5f32, -1.25, 3.0, 0.0, 7.5, -0.125, 2.0, 1.0];
    if obs.observe(&batch[..]).is_ok() {
        let after = obs.save_state();
        if let Err(e) = after.validate() {
            panic!("an observer resumed from a state saves an invalid state: {e}");
        }
    }
    let _ = obs.qparams();
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn seeds(dir: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {dir:?}");
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    #[test]
    fn the_seeds_pass_every_target() {
        for s in seeds("npy") {
            batch(&s, Format::Npy);
            assert!(Batch::from_bytes(s, Format::Npy).is_ok(), "a seed .npy is refused");
        }
        for s in seeds("safetensors") {
            batch(&s, Format::Safetensors);
            assert!(Batch::from_bytes(s, Format::Safetensors).is_ok(), "a seed .safetensors is refused");
        }
        for s in seeds("state") {
            state(&s);
            assert!(ObserverState::from_json(std::str::from_utf8(&s).unwrap()).is_ok(), "a seed state is refused");
        }
    }
}
