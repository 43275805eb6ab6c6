//! The CUDA engine starts on the device asked for, and only there: an observer that is built and
//! moved to the CPU or to GPU 1 before it sees data retains no context on GPU 0 (the default
//! device, `Auto`, is resolved on first use), and `Auto` starts GPU 0 only when it is used.
//!
//! A test binary of its own: no other test of the process may touch GPU 0. Without a usable GPU
//! the test prints that it is skipped; with `QCALIB_REQUIRE_GPU=1` a missing GPU fails it.

use qcalib::cudarc::driver::sys;
use qcalib::{CudaStatus, Device, ObserverKind, ObserverSpec, QuantConfig};

/// Whether the primary context of GPU `ordinal` is active in this process.
fn active(ordinal: i32) -> bool {
    let (mut flags, mut active) = (0u32, 0i32);
    // SAFETY: two out-parameters; the driver is loaded (the probe found it).
    unsafe { sys::cuDevicePrimaryCtxGetState(ordinal, &mut flags, &mut active) }.result().unwrap();
    active != 0
}

fn spec(kind: ObserverKind) -> ObserverSpec {
    ObserverSpec {
        kind,
        quant: QuantConfig::default(),
        bins: None,
        percentile: None,
        update_interval: None,
        stride: None,
        sync_histograms: false,
    }
}

#[test]
fn the_engine_starts_only_on_the_device_asked_for() {
    let required = std::env::var("QCALIB_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0");
    let devices = match qcalib::cuda_status() {
        CudaStatus::Ready { devices, .. } => devices,
        status if required => panic!("QCALIB_REQUIRE_GPU is set but CUDA is not usable: {status}"),
        status => return eprintln!("skipped (no usable GPU: {status})"),
    };
    let batch: Vec<f32> = (0..4096).map(|i| (i as f32 * 0.37).sin()).collect();
    assert!(!active(0), "the probe made a context on GPU 0");

    for kind in [ObserverKind::MinMax, ObserverKind::Kl, ObserverKind::Mse] {
        let mut obs = spec(kind).build().unwrap();
        obs.set_device(Device::Cpu).unwrap();
        obs.observe(&batch).unwrap();
        obs.qparams().unwrap();
        assert!(!active(0), "{kind}: an observer moved to the CPU started GPU 0");
    }
    if devices >= 2 {
        let mut obs = spec(ObserverKind::MinMax).build().unwrap();
        obs.set_device(Device::Cuda(1)).unwrap();
        obs.observe(&batch).unwrap();
        assert!(active(1), "the observer runs on GPU 1");
        assert!(!active(0), "an observer moved to GPU 1 started GPU 0");
    } else {
        eprintln!("one GPU: the case of GPU 1 is skipped");
    }
    let mut obs = spec(ObserverKind::MinMax).build().unwrap();
    assert!(!active(0), "building an observer started GPU 0");
    assert_eq!(obs.device(), Device::Cuda(0), "Auto is GPU 0 when a GPU is usable");
    obs.observe(&batch).unwrap();
    assert!(active(0), "Auto runs on GPU 0");
}
