//! Bad input (SPEC §6) and the edges of f32: every failure is a typed error that names what was
//! wrong and leaves the observer's state exactly as it was; nothing panics.

mod common;

use common::random_values;
use half::{bf16, f16};
use ndarray::{Array2, Array3, ArrayD, IxDyn, s};
use qcalib::{
    Device, Error, KlConfig, KlObserver, MinMaxObserver, MovingAveragePerChannelMinMaxObserver, MseConfig, MseObserver,
    Observer, ObserverConfig, ObserverKind, ObserverSpec, PercentileConfig, PercentileObserver, QScheme, QuantConfig,
    QuantDType, QuantRange, TensorView, arith,
};

/// One observer of every kind (per-channel on axis 0 where the kind allows it).
fn every_observer(per_channel: bool) -> Vec<Box<dyn Observer>> {
    ObserverKind::ALL
        .into_iter()
        .map(|kind| {
            let channel_ok = kind != ObserverKind::MovingAverageMinMax;
            let quant = if per_channel && channel_ok { QuantConfig::per_channel(0) } else { kind.default_config() };
            let spec = ObserverSpec {
                kind,
                quant,
                bins: None,
                percentile: None,
                update_interval: (kind == ObserverKind::Kl).then_some(2),
                stride: None,
                sync_histograms: false,
            };
            spec.build().unwrap()
        })
        .collect()
}

/// Observes `x`, expecting `check(error)`, and that the state is unchanged.
fn refused(obs: &mut dyn Observer, x: &TensorView<'_>, check: impl Fn(&Error) -> bool) {
    let before = obs.save_state();
    let err = obs.observe_tensor(x).expect_err("the batch was accepted");
    assert!(check(&err), "{}: unexpected error {err:?}", obs.kind());
    assert_eq!(obs.save_state(), before, "{}: the state changed", obs.kind());
}

#[test]
fn non_finite_values_are_counted_in_every_dtype_and_layout_and_change_nothing() {
    let good = Array3::from_shape_vec((4, 6, 50), random_values(1200, 5)).unwrap();
    for per_channel in [false, true] {
        for mut obs in every_observer(per_channel) {
            obs.observe(&good).unwrap();
            obs.observe(&good).unwrap();
            for (poison, count) in [(f32::NAN, 3u64), (f32::INFINITY, 1), (f32::NEG_INFINITY, 2)] {
                let mut x = good.clone();
                for v in x.iter_mut().take(count as usize) {
                    *v = poison;
                }
                x[[3, 5, 49]] = poison; // the last value too
                let want = count + 1;
                let is = |e: &Error| matches!(e, Error::NonFinite { count } if *count == want);
                refused(obs.as_mut(), &(&x).into(), is);
                refused(obs.as_mut(), &x.slice(s![..;-1, .., ..]).into(), is);
                refused(obs.as_mut(), &x.slice(s![.., 1.., ..;7]).into(), |e| {
                    matches!(e, Error::NonFinite { count: 1 })
                });
                refused(obs.as_mut(), &x.view().permuted_axes([0, 2, 1]).into(), is);
                refused(obs.as_mut(), &(&x.mapv(f16::from_f32)).into(), is);
                refused(obs.as_mut(), &(&x.mapv(bf16::from_f32)).into(), is);
                let message = obs.observe(&x).unwrap_err().to_string();
                assert!(message.contains(&format!("{want} non-finite")), "{message}");
            }
        }
    }
}

#[test]
fn every_invalid_configuration_of_spec_6_names_its_parameter() {
    fn named<T: std::fmt::Debug>(r: Result<T, Error>, parameter: &str) {
        match r {
            Err(e @ Error::InvalidConfig { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&format!("`{parameter}`")), "{message}");
            }
            other => panic!("expected an error naming `{parameter}`, got {other:?}"),
        }
    }
    let q = QuantConfig::default();
    let build = |c: ObserverConfig| c.build();
    named(build(ObserverConfig::Kl(KlConfig { bins: 255, ..Default::default() })), "bins");
    named(build(ObserverConfig::Kl(KlConfig { bins: usize::MAX, ..Default::default() })), "bins");
    named(build(ObserverConfig::Kl(KlConfig { update_interval: 0, ..Default::default() })), "update_interval");
    named(build(ObserverConfig::Percentile(PercentileConfig { bins: 0, ..Default::default() })), "bins");
    for percentile in [-0.1, 100.1, f64::NAN, f64::INFINITY] {
        named(build(ObserverConfig::Percentile(PercentileConfig { percentile, ..Default::default() })), "percentile");
    }
    named(build(ObserverConfig::Mse(MseConfig { stride: 0, ..Default::default() })), "stride");
    for averaging_constant in [-0.01, 1.01, f32::NAN, f32::NEG_INFINITY] {
        named(build(ObserverConfig::MinMax(QuantConfig { averaging_constant, ..q.clone() })), "averaging_constant");
    }
    named(build(ObserverConfig::MinMax(QuantConfig { ch_axis: 1, ..q.clone() })), "ch_axis");
    named(build(ObserverConfig::MovingAverageMinMax(QuantConfig::per_channel(0))), "qscheme");
    named(build(ObserverConfig::MovingAveragePerChannelMinMax(q.clone())), "qscheme");
    named(
        build(ObserverConfig::MinMax(QuantConfig { quant_min: Some(-129), quant_max: Some(127), ..q.clone() })),
        "quant_min",
    );
    named(
        build(ObserverConfig::MinMax(QuantConfig {
            quant_min: Some(i64::MIN),
            quant_max: Some(i64::MAX),
            ..q.clone()
        })),
        "quant_min",
    );
    named(build(ObserverConfig::MinMax(QuantConfig { quant_max: Some(7), ..q.clone() })), "quant_min");
    named(build(ObserverConfig::MinMax(QuantConfig { quant_min: Some(-7), ..q.clone() })), "quant_max");
    named(
        build(ObserverConfig::MinMax(QuantConfig {
            dtype: QuantDType::QUInt4,
            quant_min: Some(-1),
            quant_max: Some(3),
            ..q
        })),
        "quant_min",
    );
    named("kl2".parse::<ObserverKind>(), "observer");
    named("qint7".parse::<QuantDType>(), "dtype");
    named("per_row".parse::<QScheme>(), "qscheme");
    named("gpu".parse::<Device>(), "device");
}

#[test]
fn a_channel_axis_outside_the_tensor_is_an_error_naming_it() {
    for ch_axis in [2isize, -3, isize::MAX, isize::MIN] {
        let mut obs = MinMaxObserver::new(QuantConfig::per_channel(ch_axis)).unwrap();
        let x = Array2::<f32>::ones((3, 4));
        refused(&mut obs, &(&x).into(), |e| matches!(e, Error::ChannelAxis { ndim: 2, .. }));
        assert!(obs.observe(&x).unwrap_err().to_string().contains(&format!("`ch_axis` {ch_axis}")));
    }
    // A 0-dimensional tensor has no channel axis.
    let mut obs = MseObserver::new(MseConfig { stride: 1, quant: QuantConfig::per_channel(0) }).unwrap();
    let scalar = ArrayD::from_elem(IxDyn(&[]), 1.5f32);
    refused(&mut obs, &(&scalar).into(), |e| matches!(e, Error::ChannelAxis { ndim: 0, .. }));
}

#[test]
fn a_changed_channel_count_names_both_counts_and_changes_nothing() {
    for mut obs in [
        Box::new(MinMaxObserver::new(QuantConfig::per_channel(1)).unwrap()) as Box<dyn Observer>,
        Box::new(MovingAveragePerChannelMinMaxObserver::new(QuantConfig::per_channel(1)).unwrap()),
        Box::new(MseObserver::new(MseConfig { stride: 9, quant: QuantConfig::per_channel(1) }).unwrap()),
    ] {
        obs.observe(&Array2::from_shape_vec((5, 4), random_values(20, 1)).unwrap()).unwrap();
        let x = Array2::from_shape_vec((4, 5), random_values(20, 2)).unwrap();
        refused(obs.as_mut(), &(&x).into(), |e| {
            matches!(e, Error::ChannelCountChanged { expected: 4, found: 5, axis: 1 })
        });
        assert!(obs.observe(&x).unwrap_err().to_string().contains("from 4 to 5 (axis 1)"));
    }
}

#[test]
fn asking_for_a_missing_device_changes_nothing() {
    let mut obs = MinMaxObserver::new(QuantConfig::default()).unwrap();
    obs.observe(&[1.0f32, -2.0][..]).unwrap();
    let (device, state) = (obs.device(), obs.save_state());
    if obs.set_device(Device::Cuda(999)).is_err() {
        assert_eq!((obs.device(), obs.save_state()), (device, state));
    }
}

// ---- the edges of f32 -------------------------------------------------------------------------

/// `n` values of magnitude about `scale`, all of one sign when `sign` is given.
fn magnitudes(n: usize, scale: f32, sign: Option<f32>) -> Vec<f32> {
    random_values(n, 77)
        .into_iter()
        .map(|v| {
            let v = (v.abs().min(1.0) * 0.5 + 0.5) * scale;
            match sign {
                Some(s) => v * s,
                None if v.to_bits().is_multiple_of(2) => -v,
                None => v,
            }
        })
        .collect()
}

#[test]
fn huge_magnitudes_keep_every_observer_finite() {
    // A negative batch near -f32::MAX, then a positive one near +f32::MAX: `cur - old` overflows
    // f32 in the moving average, which must not turn the state into inf or NaN.
    let neg = magnitudes(4096, f32::MAX, Some(-1.0));
    let pos = magnitudes(4096, f32::MAX, Some(1.0));
    let both = magnitudes(4096, f32::MAX, None);
    for averaging_constant in [0.0f32, 0.01, 1.0] {
        for kind in ObserverKind::ALL {
            let mut quant = kind.default_config();
            quant.averaging_constant = averaging_constant;
            let spec = ObserverSpec {
                kind,
                quant,
                bins: None,
                percentile: None,
                update_interval: None,
                stride: None,
                sync_histograms: false,
            };
            let mut obs = spec.build().unwrap();
            let shape = if kind == ObserverKind::MovingAveragePerChannelMinMax { (2, 2048) } else { (1, 4096) };
            for batch in [&neg, &pos, &both] {
                obs.observe(&Array2::from_shape_vec(shape, batch.clone()).unwrap()).unwrap();
                let q = obs.qparams().unwrap();
                assert!(q.scale.iter().all(|s| s.is_finite() && *s > 0.0), "{kind} c={averaging_constant}: {q:?}");
                let state = obs.save_state();
                assert!(state.min_val.iter().chain(&state.max_val).all(|v| v.is_finite()), "{kind}: {state:?}");
                state.to_json().unwrap();
            }
        }
    }
    assert_eq!(arith::moving_average(-f32::MAX, f32::MAX, 0.5), 0.0);
    assert_eq!(arith::moving_average(-f32::MAX, f32::MAX, 0.0), -f32::MAX);
    assert_eq!(arith::moving_average(f32::MAX, -f32::MAX, 1.0), -f32::MAX);
    // `cur - old` fits, but the sum rounds past f32::MAX.
    assert_eq!(arith::moving_average(-9.910844e37, -f32::MAX, 1.0), -f32::MAX);
    // Without overflow the f32 formula of SPEC §2 is kept exactly.
    assert_eq!(arith::moving_average(4.0, 0.1, 0.01), 4.0f32 + 0.01f32 * (0.1f32 - 4.0f32));
}

#[test]
fn subnormal_tensors_calibrate_to_eps() {
    let tiny: Vec<f32> =
        (1..=4096u32).map(|b| f32::from_bits(b * 1000) * if b % 3 == 0 { -1.0 } else { 1.0 }).collect();
    assert!(tiny.iter().all(|v| v.is_subnormal()));
    for per_channel in [false, true] {
        for mut obs in every_observer(per_channel) {
            let x = Array2::from_shape_vec((4, 1024), tiny.clone()).unwrap();
            obs.observe(&x).unwrap();
            obs.observe(&x).unwrap();
            assert!(obs.qparams().unwrap().scale.iter().all(|&s| s == arith::EPS), "{}", obs.kind());
        }
    }
}

#[test]
fn a_kl_histogram_that_cannot_widen_is_an_error_and_changes_nothing() {
    let kl = || KlObserver::new(KlConfig { update_interval: 3, ..Default::default() }).unwrap();
    let too_large = |what: &'static str| move |e: &Error| matches!(e, Error::TooLarge(m) if m.contains(what));
    // More than MAX_BINS bins of the window's width.
    let mut obs = kl();
    obs.observe(&[1e-3f32, -5e-4][..]).unwrap();
    refused(&mut obs, &(&vec![1e6f32]).into(), too_large("more than 1048576"));
    // A top edge past f32::MAX: width f32::MAX / 1000.5, then f32::MAX needs 1001 bins of it.
    let mut obs = kl();
    obs.observe(&[f32::MAX / 1000.5 * 512.0][..]).unwrap();
    refused(&mut obs, &(&vec![f32::MAX]).into(), too_large("past the largest f32"));
    // A window whose first batch is so small that its bin width underflows to 0.
    let mut obs = kl();
    obs.observe(&[1e-44f32][..]).unwrap();
    assert_eq!(obs.window().width, 0.0);
    refused(&mut obs, &(&vec![1.0f32]).into(), too_large("bin width 0"));
    // The window still completes with batches it can hold.
    obs.observe(&[5e-45f32][..]).unwrap();
    obs.observe(&[0.0f32][..]).unwrap();
    assert!(obs.qparams().unwrap().scale[0] == arith::EPS);
}

#[test]
fn hand_built_ranges_and_shapes_never_panic() {
    let r = QuantRange { quant_min: i64::MIN, quant_max: i64::MAX };
    assert_eq!(r.scale_divisor(), 2f32.powi(63));
    assert!(arith::scale(-1.0, 1.0, &r) >= arith::EPS);
    let inverted = QuantRange { quant_min: i64::MAX, quant_max: i64::MIN };
    assert_eq!(arith::scale(-1.0, 1.0, &inverted), arith::EPS);
    use qcalib::synthetic::{Distribution, generate};
    assert_eq!(generate(Distribution::Gaussian, &[usize::MAX, 2], 1).shape(), &[0]);
    assert_eq!(generate(Distribution::Gaussian, &[1 << 62], 1).shape(), &[0]);
    assert_eq!(generate(Distribution::Relu, &[0, 5], 1).shape(), &[0, 5]);
    assert_eq!(generate(Distribution::ChannelWeights, &[], 1).len(), 1);
}

#[test]
fn empty_and_degenerate_tensors() {
    for per_channel in [false, true] {
        for mut obs in every_observer(per_channel) {
            let before = obs.save_state();
            obs.observe(&Array2::<f32>::zeros((0, 7))).unwrap();
            obs.observe(&Array2::<f32>::zeros((7, 0))).unwrap();
            obs.observe(Array3::<f32>::zeros((7, 0, 3)).slice(s![..;-2, .., ..])).unwrap();
            assert_eq!(obs.save_state(), before, "{}: an empty tensor changed the state", obs.kind());
            assert!(matches!(obs.qparams(), Err(Error::NoStatistics(_))), "{}", obs.kind());
            // A single value, then a broadcast constant.
            obs.observe(&Array2::from_elem((1, 1), -0.0f32)).unwrap();
            let c = ndarray::arr1(&[2.5f32]);
            obs.observe(c.broadcast((1, 5)).unwrap()).unwrap();
            obs.observe(c.broadcast((1, 3, 4)).unwrap().permuted_axes([0, 2, 1])).unwrap();
            assert!(obs.qparams().unwrap().scale.iter().all(|s| s.is_finite()), "{}", obs.kind());
        }
    }
}

#[cfg(feature = "io")]
mod files {
    use std::path::PathBuf;

    use qcalib::io::read_batch;

    fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qcalib-robustness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        super::common::npy_with_header(header, None, data)
    }

    fn refused(name: &str, bytes: &[u8], needle: &str) {
        let path = scratch(name, bytes);
        let message = read_batch(&path).expect_err("the file was accepted").to_string();
        assert!(message.contains(needle) && message.contains(name), "{name}: {message}");
    }

    #[test]
    fn npy_headers_that_lie_about_sizes_are_errors() {
        let h = |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
        refused("overflow.npy", &npy(&h("(4294967296, 4294967296, 16)"), &[]), "overflows");
        refused("bytes-overflow.npy", &npy(&h("(4611686018427387904,)"), &[]), "overflows");
        refused("huge.npy", &npy(&h("(1099511627776,)"), &[0; 16]), "truncated");
        refused("negative.npy", &npy(&h("(-1, 4)"), &[]), "bad dimension");
        refused("text.npy", &npy(&h("('a',)"), &[]), "bad dimension");
        refused("no-shape.npy", &npy("{'descr': '<f4', 'fortran_order': False}\n", &[]), "'shape'");
        refused("list-shape.npy", &npy(&h("[2, 2]"), &[0; 16]), "'shape'");
        refused("no-descr.npy", &npy("{'shape': (1,), 'fortran_order': False}\n", &[0; 4]), "'descr'");
        refused(
            "utf8.npy",
            &npy("{'descr': '\u{e9}<f4', 'fortran_order': False, 'shape': (1,), }\n", &[0; 4]),
            "dtype",
        );
        let mut bad_utf8 = npy(&h("(1,)"), &[0; 4]);
        bad_utf8[12] = 0xff;
        // Versions 1.0 and 2.0 are latin-1 (numpy reads them so): the byte is a letter of an unknown key.
        refused("bad-utf8.npy", &bad_utf8, "unknown key");
        // A version 2 header that claims 4 GiB: refused before anything that size is allocated.
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend(u32::MAX.to_le_bytes());
        v2.extend(b"{}");
        refused("v2-huge-header.npy", &v2, "truncated");
        refused("version9.npy", b"\x93NUMPY\x09\x00\x00\x00", "version 9");
        refused("extra-bytes.npy", &npy(&h("(1,)"), &[0; 8]), "holds 8 bytes");
        // numpy reads a comment after the dict (it evaluates the header) but never writes one:
        // the message must not say that numpy would not read it.
        let commented = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } # x\n";
        refused("comment.npy", &npy(commented, &[0; 4]), "is not one numpy writes: text after the closing");
        // A directory named like a batch.
        let dir = scratch("x.npy", b"").with_file_name("dir.npy");
        std::fs::create_dir_all(&dir).unwrap();
        let message = read_batch(&dir).unwrap_err().to_string();
        assert!(message.contains("dir.npy") && !message.contains("truncated"), "{message}");
    }

    #[test]
    fn safetensors_that_lie_about_sizes_are_errors() {
        let st = |header: &str, data: &[u8]| {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend(header.as_bytes());
            bytes.extend(data);
            bytes
        };
        let huge = r#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776,1099511627776],"data_offsets":[0,16]}}"#;
        refused("huge.safetensors", &st(huge, &[0; 16]), "safetensors");
        let short = r#"{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#;
        refused("short.safetensors", &st(short, &[0; 16]), "safetensors");
        let mismatch = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
        refused("mismatch.safetensors", &st(mismatch, &[0; 16]), "safetensors");
        let int = r#"{"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}"#;
        refused("int.safetensors", &st(int, &[0; 16]), "I32");
        let f64s = r#"{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#;
        refused("f64.safetensors", &st(f64s, &[0; 16]), "F64");
        let mut claims_huge_header = u64::MAX.to_le_bytes().to_vec();
        claims_huge_header.extend(b"{}");
        refused("huge-header.safetensors", &claims_huge_header, "safetensors");
        refused("tiny.safetensors", b"\x01", "safetensors");
    }
}

/// Where `|v| * bins` overflows f32 (any `|v| > f32::MAX / bins`, e.g. above 1.7e35 with 2048
/// bins), the histogram computes the position as `f32(f32(|v| / hi) * bins)` instead of letting
/// the overflow put every such value in the last bin (a documented deviation from SPEC §5, equal
/// to it wherever the product is finite).
#[test]
fn huge_values_land_in_their_own_histogram_bin() {
    // 999 values of 1e36 and one of 3e38: with 2048 bins on [0, 3e38], 1e36 is in bin 6.
    let mut x = vec![1e36f32; 999];
    x.push(3e38);
    let mut obs =
        PercentileObserver::new(PercentileConfig { percentile: 50.0, bins: 2048, ..Default::default() }).unwrap();
    obs.observe(&x).unwrap();
    let centre_of_bin_6 = 6.5f32 * (3e38f32 / 2048.0);
    assert_eq!(obs.max_val(), Some(&[centre_of_bin_6][..]));
}

/// A per-channel MSE on what is almost surely the wrong axis (a million channels of one value)
/// is refused before it allocates 95 candidate scales and error sums per channel.
#[test]
fn mse_over_a_million_channels_is_refused_not_allocated() {
    let x = vec![0.5f32; 1 << 20];
    let mut obs = MseObserver::new(MseConfig { stride: 1, quant: QuantConfig::per_channel(0) }).unwrap();
    let err = obs.observe(&x).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    assert!(err.to_string().contains("ch_axis"), "{err}");
    assert_eq!(obs.batches(), 0);
    // With a stride the candidates are fewer and the same tensor is fine.
    let mut obs = MseObserver::new(MseConfig { stride: 50, quant: QuantConfig::per_channel(0) }).unwrap();
    obs.observe(&x).unwrap();
}
