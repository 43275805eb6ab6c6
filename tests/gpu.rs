//! Every observer on the GPU against the same observer on the CPU engine: the golden fixtures,
//! random tensors of awkward sizes (0, 1, 31, 2^20 + 3 elements) and layouts (per-channel on
//! every axis), f32, f16 and bf16, host and device-resident input, and the CLI's
//! `--device cuda` against `--device cpu`.
//!
//! Min/max and histograms must be identical (so must everything derived from them alone:
//! MinMax, Percentile, KL), the searches over fake-quantization errors (MSE, Mix) must pick the
//! same candidate (scales within a relative 1e-6). Without a usable GPU the GPU tests print that
//! they are skipped and pass; with `QCALIB_REQUIRE_GPU=1` a missing or failing GPU fails them.
//! The tests of the no-GPU behaviour (the probe, `cuda` as an error, `auto` falling back) run
//! everywhere.

mod common;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use qcalib::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use qcalib::{
    CudaStatus, CudaTensorView, Device, Error, Input, KlConfig, KlObserver, MinMaxObserver, Observer, ObserverKind,
    ObserverSpec, QScheme, QuantConfig, QuantDType, TensorView,
};
use std::sync::Arc;

/// Whether the GPU tests run: true with a usable GPU; false (after saying so) without one,
/// unless `QCALIB_REQUIRE_GPU` is set, which makes a missing GPU a failure.
fn gpu(test: &str) -> bool {
    let required = std::env::var("QCALIB_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0");
    match qcalib::cuda_status() {
        CudaStatus::Ready { .. } => true,
        status if required => panic!("{test}: QCALIB_REQUIRE_GPU is set but CUDA is not usable: {status}"),
        status => {
            eprintln!("{test}: skipped (no usable GPU: {status})");
            false
        }
    }
}

fn spec(kind: ObserverKind, quant: QuantConfig) -> ObserverSpec {
    ObserverSpec {
        kind,
        quant,
        bins: None,
        percentile: None,
        update_interval: None,
        stride: None,
        sync_histograms: false,
    }
}

/// The observers to compare on a tensor of `ndim` dimensions: every kind per tensor, every
/// per-channel one on every axis, a few dtypes and parameters.
fn specs(ndim: usize) -> Vec<ObserverSpec> {
    let ma = QuantConfig { averaging_constant: 0.3, ..QuantConfig::default() };
    let mut out = vec![
        spec(ObserverKind::MinMax, ma.clone()),
        spec(ObserverKind::MovingAverageMinMax, QuantConfig::default()),
        spec(ObserverKind::Percentile, ma.clone()),
        ObserverSpec {
            bins: Some(300),
            percentile: Some(99.0),
            ..spec(ObserverKind::Percentile, QuantConfig::default())
        },
        spec(ObserverKind::Kl, ma.clone()),
        ObserverSpec {
            bins: Some(2048),
            update_interval: Some(2),
            ..spec(ObserverKind::Kl, QuantConfig { dtype: QuantDType::QInt4, ..QuantConfig::default() })
        },
        spec(ObserverKind::Mse, ma.clone()),
        ObserverSpec {
            stride: Some(5),
            ..spec(ObserverKind::Mse, QuantConfig { dtype: QuantDType::QInt4, ..ma.clone() })
        },
        spec(ObserverKind::Mix, ma.clone()),
        spec(ObserverKind::Mix, QuantConfig { dtype: QuantDType::QInt16, ..QuantConfig::default() }),
    ];
    for axis in 0..ndim as isize {
        let pc = QuantConfig { averaging_constant: 0.3, ..QuantConfig::per_channel(axis) };
        out.push(spec(ObserverKind::MinMax, pc.clone()));
        out.push(spec(ObserverKind::MovingAveragePerChannelMinMax, pc.clone()));
        out.push(spec(ObserverKind::Mse, pc.clone()));
    }
    if ndim > 0 {
        let last = QuantConfig { qscheme: QScheme::PerChannelSymmetric, ch_axis: -1, ..QuantConfig::default() };
        out.push(spec(ObserverKind::Mse, QuantConfig { dtype: QuantDType::QInt4, ..last }));
    }
    out
}

fn on(spec: &ObserverSpec, device: Device) -> Box<dyn Observer> {
    let mut obs = spec.build().unwrap();
    obs.set_device(device).unwrap();
    assert_eq!(obs.device(), if device == Device::Cpu { Device::Cpu } else { device });
    obs
}

/// Values of awkward magnitudes: normal, zeros and negative zeros, repeats, a few outliers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut v = common::random_values(n, seed);
    for i in (3..n).step_by(17) {
        v[i] = -0.0;
        v[i - 1] = v[i - 2];
    }
    v
}

struct Batch {
    f32: ArrayD<f32>,
    f16: ArrayD<f16>,
    bf16: ArrayD<bf16>,
}

impl Batch {
    fn new(shape: &[usize], seed: u64) -> Batch {
        Batch::of(ArrayD::from_shape_vec(IxDyn(shape), values(shape.iter().product(), seed)).unwrap())
    }

    fn of(a: ArrayD<f32>) -> Batch {
        Batch { f16: a.mapv(f16::from_f32), bf16: a.mapv(bf16::from_f32), f32: a }
    }

    fn views(&self) -> [TensorView<'_>; 3] {
        [(&self.f32).into(), (&self.f16).into(), (&self.bf16).into()]
    }
}

/// Asserts that the GPU observer holds what the CPU observer holds.
fn assert_same(what: &str, kind: ObserverKind, cpu: &mut dyn Observer, gpu: &mut dyn Observer) {
    assert_eq!(cpu.batches(), gpu.batches(), "{what}: batches");
    let exact = !matches!(kind, ObserverKind::Mse | ObserverKind::Mix);
    let close = |a: &[f32], b: &[f32], name: &str| {
        assert_eq!(a.len(), b.len(), "{what}: {name} length");
        for (c, (x, y)) in a.iter().zip(b).enumerate() {
            let ok = if exact { x == y } else { (x - y).abs() <= 1e-6 * x.abs().max(y.abs()) };
            assert!(ok, "{what}: {name}[{c}]: cpu {x} gpu {y}");
        }
    };
    match (cpu.min_val(), gpu.min_val()) {
        (Some(a), Some(b)) => {
            close(a, b, "min_val");
            close(cpu.max_val().unwrap(), gpu.max_val().unwrap(), "max_val");
            let (qa, qb) = (cpu.qparams().unwrap(), gpu.qparams().unwrap());
            close(&qa.scale, &qb.scale, "scale");
            for (x, y) in qa.scale.iter().zip(&qb.scale) {
                assert!((x - y).abs() <= 1e-6 * x.abs(), "{what}: scale {x} vs {y}");
            }
        }
        (None, None) => assert!(cpu.qparams().is_err() && gpu.qparams().is_err(), "{what}: qparams without statistics"),
        (a, b) => panic!("{what}: statistics on one engine only: {a:?} vs {b:?}"),
    }
}

/// Both observers see the same batches (through `feed`) and must end up alike.
fn compare(what: &str, spec: &ObserverSpec, batches: &[TensorView<'_>]) {
    let (mut cpu, mut gpu) = (on(spec, Device::Cpu), on(spec, Device::Cuda(0)));
    for (i, x) in batches.iter().enumerate() {
        let (a, b) = (cpu.observe_tensor(x), gpu.observe_tensor(x));
        match (&a, &b) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(f)) => assert_eq!(e.to_string(), f.to_string(), "{what}: batch {i}"),
            _ => panic!("{what} ({:?}): batch {i}: cpu {a:?}, gpu {b:?}", spec.kind),
        }
    }
    assert_same(
        &format!("{what} {:?} {:?} axis {}", spec.kind, spec.quant.dtype, spec.quant.ch_axis),
        spec.kind,
        cpu.as_mut(),
        gpu.as_mut(),
    );
}

#[test]
fn every_observer_on_random_tensors_of_awkward_sizes() {
    if !gpu("every_observer_on_random_tensors_of_awkward_sizes") {
        return;
    }
    let shapes: &[&[usize]] = &[&[0], &[1], &[31], &[3, 7, 5], &[64, 33, 2], &[7, 149_797], &[(1 << 20) + 3]];
    for (s, shape) in shapes.iter().enumerate() {
        let (first, second) = (Batch::new(shape, 10 + s as u64), Batch::new(shape, 50 + s as u64));
        for (dtype, (a, b)) in first.views().into_iter().zip(second.views()).enumerate() {
            for spec in specs(shape.len()) {
                compare(&format!("{shape:?} dtype #{dtype}"), &spec, &[a.clone(), b.clone()]);
            }
        }
    }
}

/// Per-channel Percentile, KL and Mix (SPEC §8) on both layouts: channels outermost (rows
/// contiguous), innermost (one value per channel per row) and in the middle, negative axes,
/// qint8 and qint16, KL windows that widen and that search every batch or every second one.
#[test]
fn per_channel_percentile_kl_and_mix_match_the_cpu() {
    if !gpu("per_channel_percentile_kl_and_mix_match_the_cpu") {
        return;
    }
    let cases: &[(&[usize], isize)] = &[(&[12, 700], 0), (&[700, 12], -1), (&[5, 9, 40], 1), (&[5, 9, 40], -3)];
    for (s, &(shape, axis)) in cases.iter().enumerate() {
        let first = Batch::new(shape, 900 + s as u64);
        // The second batch widens every channel's range (a KL window is re-binned).
        let second = Batch::of(Batch::new(shape, 950 + s as u64).f32.mapv(|v| v * 3.0));
        let pc = |dtype| QuantConfig { dtype, averaging_constant: 0.3, ..QuantConfig::per_channel(axis) };
        let specs = [
            spec(ObserverKind::Percentile, pc(QuantDType::QInt8)),
            ObserverSpec {
                bins: Some(300),
                percentile: Some(99.0),
                ..spec(ObserverKind::Percentile, pc(QuantDType::QInt16))
            },
            ObserverSpec { bins: Some(512), ..spec(ObserverKind::Kl, pc(QuantDType::QInt8)) },
            ObserverSpec {
                bins: Some(512),
                update_interval: Some(2),
                ..spec(ObserverKind::Kl, pc(QuantDType::QInt16))
            },
            spec(ObserverKind::Mix, pc(QuantDType::QInt8)),
            spec(ObserverKind::Mix, pc(QuantDType::QInt16)),
        ];
        for (dtype, (a, b)) in first.views().into_iter().zip(second.views()).enumerate() {
            for spec in &specs {
                compare(&format!("{shape:?} dtype #{dtype}"), spec, &[a.clone(), b.clone()]);
            }
        }
        // A channel of zeros (and one of negative zeros): a range of 0 (f32 only).
        if s == 1 {
            let mut zeros = first.f32.clone();
            zeros.index_axis_mut(ndarray::Axis(1), 2).fill(0.0);
            zeros.index_axis_mut(ndarray::Axis(1), 5).fill(-0.0);
            for spec in &specs {
                compare(
                    &format!("{shape:?} zero channels"),
                    spec,
                    &[TensorView::from(&zeros), second.views()[0].clone()],
                );
            }
        }
        // KL's default 2048 bins, searched once (f32 only: softgpu's time).
        let kl = ObserverSpec { update_interval: Some(2), ..spec(ObserverKind::Kl, pc(QuantDType::QInt8)) };
        compare(&format!("{shape:?} f32"), &kl, &[first.views()[0].clone(), second.views()[0].clone()]);
    }
}

#[test]
fn kl_histograms_are_identical() {
    if !gpu("kl_histograms_are_identical") {
        return;
    }
    for (seed, n) in [(1u64, 31usize), (2, 5000), (3, (1 << 20) + 3)] {
        let (a, b) = (Batch::new(&[n], seed), Batch::new(&[n], seed + 100));
        let mut wide = b.f32.clone();
        wide.mapv_inplace(|v| v * 3.0); // the second batch widens the histogram
        let config = KlConfig { bins: 512, update_interval: 3, ..KlConfig::default() };
        let (mut cpu, mut gpu) = (KlObserver::new(config.clone()).unwrap(), KlObserver::new(config).unwrap());
        cpu.set_device(Device::Cpu).unwrap();
        gpu.set_device(Device::Cuda(0)).unwrap();
        for x in [TensorView::from(&a.f32), TensorView::from(&wide)] {
            cpu.observe_tensor(&x).unwrap();
            gpu.observe_tensor(&x).unwrap();
            assert_eq!(cpu.window(), gpu.window(), "n {n}: the KL window's histogram");
        }
    }
}

#[test]
fn the_golden_fixtures_give_the_same_statistics() {
    if !gpu("the_golden_fixtures_give_the_same_statistics") {
        return;
    }
    let text = std::fs::read_to_string(common::fixtures().join("cases.json")).expect("cases.json");
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let args: Vec<&str> = case["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let get = |name: &str| args.iter().position(|a| *a == name).map(|i| args[i + 1]);
        let kind: ObserverKind = get("--observer").unwrap().parse().unwrap();
        let mut quant = kind.default_config();
        if let Some(v) = get("--averaging-constant") {
            quant.averaging_constant = v.parse().unwrap();
        }
        if let Some(v) = get("--ch-axis") {
            quant.ch_axis = v.parse().unwrap();
        }
        if let Some(v) = get("--dtype") {
            quant.dtype = v.parse().unwrap();
        }
        if let Some(v) = get("--qscheme") {
            quant.qscheme = v.parse().unwrap();
        }
        let spec = ObserverSpec {
            bins: get("--bins").map(|v| v.parse().unwrap()),
            percentile: get("--percentile").map(|v| v.parse().unwrap()),
            update_interval: get("--update-interval").map(|v| v.parse().unwrap()),
            stride: get("--stride").map(|v| v.parse().unwrap()),
            ..spec(kind, quant)
        };
        let arrays: Vec<ArrayD<f32>> = case["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| read_npy_f32(&common::fixtures().join(f.as_str().unwrap())))
            .collect();
        let views: Vec<TensorView<'_>> = arrays.iter().map(TensorView::from).collect();
        compare(case["id"].as_str().unwrap(), &spec, &views);
    }
}

/// A little-endian f32 `.npy` file in C order (the fixtures' format).
fn read_npy_f32(path: &std::path::Path) -> ArrayD<f32> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'<f4'") && header.contains("'fortran_order': False"), "{header}");
    let dims = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = dims[..dims.find(')').unwrap()].split(',').filter_map(|d| d.trim().parse().ok()).collect();
    let data: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
}

/// Device buffers of a batch's f32, f16 and bf16 values.
fn upload(stream: &Arc<CudaStream>, b: &Batch) -> DeviceBatch {
    let f = stream.clone_htod(b.f32.as_slice().unwrap()).unwrap();
    let h = stream.clone_htod(b.f16.as_slice().unwrap()).unwrap();
    let bf = stream.clone_htod(b.bf16.as_slice().unwrap()).unwrap();
    (f, h, bf)
}

type DeviceBatch = (CudaSlice<f32>, CudaSlice<f16>, CudaSlice<bf16>);

/// The device buffer of element type #`dtype` (f32, f16, bf16) of `d` as a tensor of `shape`.
fn device_view<'a>(d: &'a DeviceBatch, shape: &[usize], dtype: usize) -> CudaTensorView<'a> {
    match dtype {
        0 => CudaTensorView::from_slice(&d.0, shape).unwrap(),
        1 => CudaTensorView::from_slice(&d.1, shape).unwrap(),
        _ => CudaTensorView::from_slice(&d.2, shape).unwrap(),
    }
}

#[test]
fn device_resident_tensors_give_the_same_statistics() {
    if !gpu("device_resident_tensors_give_the_same_statistics") {
        return;
    }
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.new_stream().unwrap();
    for (s, shape) in [&[1usize][..], &[31], &[3, 7, 5], &[7, 149_797]].iter().enumerate() {
        let (first, second) = (Batch::new(shape, 70 + s as u64), Batch::new(shape, 90 + s as u64));
        let (d1, d2) = (upload(&stream, &first), upload(&stream, &second));
        for spec in specs(shape.len()) {
            for dtype in 0..3 {
                let what = format!("device {shape:?} dtype #{dtype}");
                let host = [first.views()[dtype].clone(), second.views()[dtype].clone()];
                // The reference: the CPU engine on the host copies.
                let mut cpu = on(&spec, Device::Cpu);
                for x in &host {
                    cpu.observe_tensor(x).unwrap();
                }
                // The GPU engine on the device buffers, and the CPU engine on them (a copy each).
                let mut gpu = on(&spec, Device::Cuda(0));
                let mut cpu_from_device = on(&spec, Device::Cpu);
                for d in [&d1, &d2] {
                    gpu.observe(device_view(d, shape, dtype)).unwrap();
                    cpu_from_device.observe(device_view(d, shape, dtype)).unwrap();
                }
                assert_same(&what, spec.kind, cpu.as_mut(), gpu.as_mut());
                assert_same(&format!("{what} (cpu engine)"), spec.kind, cpu.as_mut(), cpu_from_device.as_mut());
            }
        }
    }
}

#[test]
fn device_batches_with_nan_are_refused_and_change_nothing() {
    if !gpu("device_batches_with_nan_are_refused_and_change_nothing") {
        return;
    }
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let mut x = values(1000, 3);
    let good = stream.clone_htod(&x).unwrap();
    x[10] = f32::NAN;
    x[20] = f32::NEG_INFINITY;
    let bad = stream.clone_htod(&x).unwrap();
    for kind in ObserverKind::ALL {
        let mut obs = on(&spec(kind, kind.default_config()), Device::Cuda(0));
        let shape = [1000];
        obs.observe(CudaTensorView::from_slice(&good, &shape).unwrap()).unwrap();
        let before = (obs.min_val().map(<[f32]>::to_vec), obs.max_val().map(<[f32]>::to_vec), obs.batches());
        let err = obs.observe(CudaTensorView::from_slice(&bad, &shape).unwrap()).unwrap_err();
        assert!(matches!(err, Error::NonFinite { count: 2 }), "{kind}: {err}");
        let after = (obs.min_val().map(<[f32]>::to_vec), obs.max_val().map(<[f32]>::to_vec), obs.batches());
        assert_eq!(before, after, "{kind}: the state changed");
    }
    assert!(matches!(CudaTensorView::from_slice(&good, &[999]), Err(Error::Shape(_))));
}

#[test]
fn the_cli_gives_the_same_json_on_cuda_and_cpu() {
    if !gpu("the_cli_gives_the_same_json_on_cuda_and_cpu") {
        return;
    }
    let text = std::fs::read_to_string(common::fixtures().join("cases.json")).expect("cases.json");
    let mut cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Per-channel Percentile, KL and Mix (SPEC §8) on the activations, channels in the middle and
    // innermost (KL on the 128 channels of the middle axis, 256 bins: softgpu's time).
    let activations = ["l2_ffn_out.b0.npy", "l2_ffn_out.b1.npy"];
    for (id, args) in [
        ("per-channel kl axis 1", "--observer kl --bins 256 --qscheme per-channel-symmetric --ch-axis 1"),
        (
            "per-channel kl axis -2",
            "--observer kl --bins 256 --dtype qint16 --qscheme per-channel-symmetric --ch-axis -2",
        ),
        ("per-channel percentile", "--observer percentile --qscheme per-channel-symmetric --ch-axis -1"),
        ("per-channel mix", "--observer mix --qscheme per-channel-symmetric --ch-axis 1"),
    ] {
        let case = serde_json::json!({ "id": id, "args": args.split(' ').collect::<Vec<_>>(), "files": activations });
        cases["cases"].as_array_mut().unwrap().push(case);
    }
    for case in cases["cases"].as_array().unwrap() {
        let run = |device: &str| -> serde_json::Value {
            let out = std::process::Command::new(common::qcalib_bin())
                .arg("calibrate")
                .args(case["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()))
                .args(["--device", device, "--format", "json"])
                .args(case["files"].as_array().unwrap().iter().map(|f| common::fixtures().join(f.as_str().unwrap())))
                .output()
                .expect("run qcalib");
            assert!(out.status.success(), "{} on {device}: {}", case["id"], String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let (mut cpu, mut cuda) = (run("cpu"), run("cuda"));
        assert_eq!((cpu["device"].as_str(), cuda["device"].as_str()), (Some("cpu"), Some("cuda:0")));
        cpu["device"] = serde_json::Value::Null;
        cuda["device"] = serde_json::Value::Null;
        assert_eq!(cpu, cuda, "{}", case["id"]);
    }
}

#[test]
fn the_probe_never_panics_and_is_remembered() {
    let first = qcalib::cuda_status();
    assert_eq!(first, qcalib::cuda_status());
    assert!(!first.to_string().is_empty());
}

#[test]
fn cuda_without_a_usable_gpu_is_an_error_and_auto_falls_back() {
    let mut obs = MinMaxObserver::new(QuantConfig::default()).unwrap();
    match qcalib::cuda_status() {
        CudaStatus::Ready { devices, .. } => {
            let err = obs.set_device(Device::Cuda(devices)).unwrap_err();
            assert!(matches!(&err, Error::Device(m) if m.contains(&format!("cuda:{devices}"))), "{err}");
            assert_eq!(obs.device(), Device::Cuda(0), "auto picks the GPU");
        }
        status => {
            assert_eq!(obs.device(), Device::Cpu, "auto falls back to the CPU");
            let err = obs.set_device(Device::Cuda(0)).unwrap_err();
            assert!(
                matches!(&err, Error::Device(m) if m.contains("cuda:0") && m.contains(&status.to_string())),
                "{err}"
            );
            assert_eq!(obs.device(), Device::Cpu, "the observer stays where it was");
            obs.set_device(Device::Auto).unwrap();
            assert_eq!(obs.device(), Device::Cpu);
            obs.observe(&[1.0f32, -2.0][..]).unwrap();
            assert_eq!(obs.qparams().unwrap().scale, vec![2.0 / 127.5]);
        }
    }
    // The input type says where a tensor is.
    let host: Input<'_> = (&[1.0f32][..]).into();
    assert!(!host.is_on_device());
}
