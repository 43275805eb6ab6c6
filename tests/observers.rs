//! Each observer's arithmetic on hand-computed cases and against the plain reference of
//! `common::reference`, on awkward shapes and layouts.

mod common;

use common::random_values;
use common::reference as r;
use half::{bf16, f16};
use ndarray::{Array, Array3, ArrayD, Axis, IxDyn, ShapeBuilder, s};
use qcalib::{
    Error, KlConfig, KlObserver, MinMaxObserver, MixObserver, MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver, MseConfig, MseObserver, Observer, ObserverKind, ObserverSpec,
    PercentileConfig, PercentileObserver, QScheme, QuantConfig, QuantDType, QuantRange,
};

fn range(dtype: QuantDType) -> QuantRange {
    QuantRange::resolve(dtype, None, None).unwrap()
}

fn spec(kind: ObserverKind) -> ObserverSpec {
    ObserverSpec::new(kind)
}

// ---- SPEC §2: the update rule and the scale -------------------------------------------------

#[test]
fn first_batch_is_stored_then_the_moving_average_follows() {
    let mut obs = MinMaxObserver::new(QuantConfig { averaging_constant: 0.25, ..Default::default() }).unwrap();
    obs.observe(&[-1.0f32, 3.0][..]).unwrap();
    assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (-1.0, 3.0));
    obs.observe(&[-5.0f32, 7.0][..]).unwrap();
    assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (-2.0, 4.0));
    // f32 at every step: 4 + 0.01 * (0.1 - 4) rounds like this, not like f64.
    let mut obs = MinMaxObserver::new(QuantConfig::default()).unwrap();
    obs.observe(&[4.0f32][..]).unwrap();
    obs.observe(&[0.1f32][..]).unwrap();
    let want = 4.0f32 + 0.01f32 * (0.1f32 - 4.0f32);
    assert_eq!(obs.max_val().unwrap()[0], want);
}

#[test]
fn averaging_constant_zero_freezes_and_one_keeps_the_last() {
    for (c, want) in [(0.0f32, 2.0f32), (1.0, 9.0)] {
        let mut obs = MinMaxObserver::new(QuantConfig { averaging_constant: c, ..Default::default() }).unwrap();
        obs.observe(&[2.0f32][..]).unwrap();
        obs.observe(&[9.0f32][..]).unwrap();
        assert_eq!(obs.max_val().unwrap()[0], want);
    }
}

#[test]
fn scale_divisor_follows_the_dtype_and_the_user_range() {
    for (dtype, div) in [
        (QuantDType::QInt4, 7.5f32),
        (QuantDType::QUInt4, 7.5),
        (QuantDType::QInt8, 127.5),
        (QuantDType::QInt16, 32767.5),
        (QuantDType::QInt32, 2147483647.5),
    ] {
        let mut obs = MinMaxObserver::new(QuantConfig { dtype, ..Default::default() }).unwrap();
        obs.observe(&[-3000.0f32, 1.5][..]).unwrap();
        assert_eq!(obs.qparams().unwrap().scale, vec![3000.0 / div], "{dtype}");
    }
    let mut obs =
        MinMaxObserver::new(QuantConfig { quant_min: Some(-127), quant_max: Some(127), ..Default::default() }).unwrap();
    obs.observe(&[-3.0f32, 1.5][..]).unwrap();
    let q = obs.qparams().unwrap();
    assert_eq!((q.scale, q.zero_point, q.quant_min, q.quant_max), (vec![3.0 / 127.0], vec![0], -127, 127));
}

#[test]
fn all_zero_tensor_gives_eps_and_constant_tensor_its_value() {
    let mut obs = MinMaxObserver::new(QuantConfig::default()).unwrap();
    obs.observe(&[0.0f32; 5][..]).unwrap();
    assert_eq!(obs.qparams().unwrap().scale, vec![f32::EPSILON]);
    for kind in ObserverKind::ALL.into_iter().filter(|k| *k != ObserverKind::MovingAveragePerChannelMinMax) {
        let mut obs = spec(kind).build().unwrap();
        obs.observe(&vec![0.0f32; 1000]).unwrap();
        assert_eq!(obs.qparams().unwrap().scale, vec![f32::EPSILON], "{kind}");
        let mut obs = spec(kind).build().unwrap();
        obs.observe(&vec![-2.5f32; 1000]).unwrap();
        let s = obs.qparams().unwrap().scale[0];
        assert!(s > 0.0 && s <= 2.5 / 127.5 * 1.0001, "{kind}: {s}");
    }
}

// ---- SPEC §3: per-channel on every axis and layout ------------------------------------------

fn per_channel_reference(x: &ArrayD<f32>, axis: usize) -> (Vec<f32>, Vec<f32>) {
    x.axis_iter(Axis(axis)).map(|ch| r::min_max(&ch.iter().copied().collect::<Vec<_>>())).unzip()
}

#[test]
fn per_channel_min_max_on_every_axis_and_layout() {
    let data = random_values(5 * 7 * 3 * 4, 11);
    let c_order = Array::from_shape_vec(IxDyn(&[5, 7, 3, 4]), data.clone()).unwrap();
    let f_order = Array::from_shape_vec(IxDyn(&[5, 7, 3, 4]).f(), data).unwrap();
    for x in [&c_order, &f_order] {
        let views = [
            x.view(),
            x.slice(s![.., 1..6, .., ..]).into_dyn(),
            x.slice(s![..;-1, .., ..;2, ..]).into_dyn(),
            x.view().permuted_axes(IxDyn(&[2, 0, 3, 1])),
        ];
        for v in views {
            let owned = v.to_owned();
            for axis in 0..v.ndim() as isize {
                for ch_axis in [axis, axis - v.ndim() as isize] {
                    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(ch_axis)).unwrap();
                    obs.observe(v.view()).unwrap();
                    let (lo, hi) = per_channel_reference(&owned, axis as usize);
                    assert_eq!(obs.min_val().unwrap(), &lo[..], "axis {ch_axis} shape {:?}", v.shape());
                    assert_eq!(obs.max_val().unwrap(), &hi[..]);
                }
            }
        }
    }
}

#[test]
fn per_channel_moving_average_defaults_to_axis_zero() {
    let x = Array3::from_shape_fn((3, 2, 2), |(c, i, j)| (c as f32 + 1.0) * if i == j { 1.0 } else { -0.5 });
    let mut obs =
        MovingAveragePerChannelMinMaxObserver::new(ObserverKind::MovingAveragePerChannelMinMax.default_config())
            .unwrap();
    obs.observe(&x).unwrap();
    assert_eq!(obs.max_val().unwrap(), &[1.0, 2.0, 3.0]);
    assert_eq!(obs.min_val().unwrap(), &[-0.5, -1.0, -1.5]);
}

#[test]
fn channel_count_change_is_an_error_and_keeps_the_state() {
    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(1)).unwrap();
    obs.observe(&Array3::<f32>::ones((2, 3, 4))).unwrap();
    let err = obs.observe(&Array3::<f32>::ones((2, 5, 4))).unwrap_err();
    assert!(matches!(err, Error::ChannelCountChanged { expected: 3, found: 5, axis: 1 }), "{err}");
    assert_eq!(obs.max_val().unwrap().len(), 3);
    assert_eq!(obs.batches(), 1);
}

#[test]
fn wrong_ch_axis_is_an_error() {
    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(3)).unwrap();
    let err = obs.observe(&Array3::<f32>::ones((2, 3, 4))).unwrap_err();
    assert!(matches!(err, Error::ChannelAxis { ch_axis: 3, ndim: 3 }), "{err}");
    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(-4)).unwrap();
    assert!(obs.observe(&Array3::<f32>::ones((2, 3, 4))).is_err());
    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(0)).unwrap();
    assert!(obs.observe(&ndarray::arr0(1.0f32)).is_err(), "a scalar has no channel axis");
    assert!(obs.min_val().is_none());
}

// ---- SPEC §4: each observer against the reference -------------------------------------------

#[test]
fn percentile_on_a_tiny_tensor_by_hand() {
    // 0..=9, 10 bins on [0, 9]: one value per bin; the 5th value is reached in bin 4,
    // whose centre is 4.5 * 0.9.
    let x: Vec<f32> = (0..10).map(|v| v as f32).collect();
    let mut obs =
        PercentileObserver::new(PercentileConfig { percentile: 50.0, bins: 10, ..Default::default() }).unwrap();
    obs.observe(&x).unwrap();
    assert_eq!(obs.max_val().unwrap()[0], 4.5f32 * (9.0f32 / 10.0));
    assert_eq!(obs.min_val().unwrap()[0], 0.0, "a one-sided tensor stays one-sided");
    // Two-sided: the clip applies to both ends.
    let x: Vec<f32> = (-9..=9).map(|v| v as f32).collect();
    let mut obs =
        PercentileObserver::new(PercentileConfig { percentile: 100.0, bins: 9, ..Default::default() }).unwrap();
    obs.observe(&x).unwrap();
    // Even the 100th percentile clips to the centre of the last bin.
    assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (-8.5, 8.5));
}

#[test]
fn percentile_and_mix_match_the_reference() {
    for (n, seed) in [(1, 1), (31, 2), (1000, 3), (100_003, 4)] {
        let x = random_values(n, seed);
        for (pct, bins) in [(99.99, 2048), (99.9, 1024), (50.0, 7)] {
            let mut obs =
                PercentileObserver::new(PercentileConfig { percentile: pct, bins, ..Default::default() }).unwrap();
            obs.observe(&x).unwrap();
            let (lo, hi) = r::percentile_batch(&x, pct, bins);
            assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (lo, hi), "n {n} pct {pct}");
        }
        for dtype in [QuantDType::QInt8, QuantDType::QInt4, QuantDType::QUInt4] {
            let mut obs = MixObserver::new(QuantConfig { dtype, ..Default::default() }).unwrap();
            obs.observe(&x).unwrap();
            let (lo, hi) = r::mix_batch(&x, &range(dtype));
            assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (lo, hi), "n {n} {dtype}");
        }
    }
}

#[test]
fn mix_prefers_the_smaller_clip_on_ties() {
    // Every candidate clip covers the single non-zero magnitude exactly the same way when all
    // values are equal: errors tie and the smallest clip (the first) wins.
    let x = vec![1.0f32; 4096];
    let mut obs = MixObserver::new(QuantConfig::default()).unwrap();
    obs.observe(&x).unwrap();
    assert_eq!(obs.max_val().unwrap()[0], r::mix_batch(&x, &range(QuantDType::QInt8)).1);
}

#[test]
fn mse_matches_the_reference_per_tensor_and_per_channel_with_strides() {
    let x = random_values(4 * 33 * 5, 21);
    let a = Array::from_shape_vec(IxDyn(&[4, 33, 5]), x.clone()).unwrap();
    for stride in [1, 3, 5, 94, 95, 200] {
        for dtype in [QuantDType::QInt8, QuantDType::QInt4] {
            let mut obs =
                MseObserver::new(MseConfig { stride, quant: QuantConfig { dtype, ..Default::default() } }).unwrap();
            obs.observe(&a).unwrap();
            let (lo, hi) = r::mse_batch(&x, stride, &range(dtype));
            assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (lo, hi), "stride {stride}");
            for axis in 0..3 {
                let quant = QuantConfig { dtype, ..QuantConfig::per_channel(axis as isize) };
                let mut obs = MseObserver::new(MseConfig { stride, quant }).unwrap();
                obs.observe(&a).unwrap();
                for (c, ch) in a.axis_iter(Axis(axis)).enumerate() {
                    let (lo, hi) = r::mse_batch(&ch.iter().copied().collect::<Vec<_>>(), stride, &range(dtype));
                    assert_eq!((obs.min_val().unwrap()[c], obs.max_val().unwrap()[c]), (lo, hi), "axis {axis} c {c}");
                }
            }
        }
    }
}

#[test]
fn mse_ties_go_to_the_most_clipping_candidate_and_strides_report_what_was_evaluated() {
    // All zeros: every candidate has error 0, so the largest i (94, factor 0.06) wins; the
    // range is 0 either way, so check through a tensor whose errors tie at a non-zero range:
    // with stride 47 the candidates are i = 0, 47, 94.
    let x = vec![0.0f32; 64];
    let mut obs = MseObserver::new(MseConfig { stride: 47, ..Default::default() }).unwrap();
    obs.observe(&x).unwrap();
    assert_eq!(obs.max_val().unwrap()[0], 0.0);
    // One value per sign at exactly representable points: factor 1 has zero error, nothing ties.
    let x = [-1.0f32, 1.0, 0.0];
    let mut obs = MseObserver::new(MseConfig { stride: 5, ..Default::default() }).unwrap();
    obs.observe(&x[..]).unwrap();
    let (lo, hi) = r::mse_batch(&x, 5, &range(QuantDType::QInt8));
    assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (lo, hi));
    let f = hi; // the evaluated factor: 1 - 0.01 * i with i a multiple of 5
    let i = ((1.0 - f as f64) / 0.01).round() as usize;
    assert_eq!(i % 5, 0, "factor {f}");
}

#[test]
fn kl_matches_the_reference_with_window_growth_and_update_interval() {
    let batches: Vec<Vec<f32>> =
        (0..3).map(|b| random_values(20_000, 40 + b).into_iter().map(|v| v * (1.0 + b as f32)).collect()).collect();
    for dtype in [QuantDType::QInt8, QuantDType::QInt4, QuantDType::QUInt4, QuantDType::QInt16] {
        for bins in [256, 512] {
            let mut obs = KlObserver::new(KlConfig {
                bins,
                update_interval: 3,
                quant: QuantConfig { dtype, ..Default::default() },
                ..Default::default()
            })
            .unwrap();
            obs.observe(&batches[0]).unwrap();
            assert!(obs.qparams().is_err(), "no statistics before the window completes");
            obs.observe(&batches[1]).unwrap();
            assert!(obs.window().hist.len() > bins, "the second batch (twice as wide) grows the histogram");
            assert_eq!(obs.window().edges.len(), obs.window().hist.len() + 1);
            obs.observe(&batches[2]).unwrap();
            assert_eq!(obs.window().step, 0, "the window was consumed");
            let t = r::kl_window(&batches, bins, dtype);
            assert_eq!(obs.max_val().unwrap()[0], t, "{dtype} bins {bins}");
            assert_eq!(obs.min_val().unwrap()[0], -t);
        }
    }
}

#[test]
fn kl_windows_follow_the_moving_average() {
    let b0 = random_values(10_000, 1);
    let b1: Vec<f32> = random_values(10_000, 2).iter().map(|v| v * 3.0).collect();
    let mut obs = KlObserver::new(KlConfig {
        quant: QuantConfig { averaging_constant: 0.5, ..Default::default() },
        ..Default::default()
    })
    .unwrap();
    obs.observe(&b0).unwrap();
    obs.observe(&b1).unwrap();
    let (t0, t1) = (r::kl_window(&[b0], 512, QuantDType::QInt8), r::kl_window(&[b1], 512, QuantDType::QInt8));
    assert_eq!(obs.max_val().unwrap()[0], r::moving(t0, t1, 0.5));
}

#[test]
fn kl_window_starting_with_zeros_keeps_them_in_bin_zero() {
    let zeros = vec![0.0f32; 1000];
    let x = random_values(5000, 9);
    let mut obs = KlObserver::new(KlConfig { update_interval: 2, ..Default::default() }).unwrap();
    obs.observe(&zeros).unwrap();
    assert!(obs.window().hist.is_empty() && obs.window().zeros == 1000);
    obs.observe(&x).unwrap();
    let t = r::kl_window(&[zeros, x], 512, QuantDType::QInt8);
    assert_eq!(obs.max_val().unwrap()[0], t);
    // A window of only zeros: threshold 0, scale eps.
    let mut obs = KlObserver::new(KlConfig::default()).unwrap();
    obs.observe(&vec![0.0f32; 10]).unwrap();
    assert_eq!(obs.qparams().unwrap().scale, vec![f32::EPSILON]);
}

#[test]
fn min_max_observers_match_the_reference_over_batches() {
    let batches: Vec<Vec<f32>> = (0..4).map(|b| random_values(777, 60 + b)).collect();
    let mut obs =
        MovingAverageMinMaxObserver::new(QuantConfig { averaging_constant: 0.3, ..Default::default() }).unwrap();
    let (mut lo, mut hi) = r::min_max(&batches[0]);
    for (i, b) in batches.iter().enumerate() {
        obs.observe(b).unwrap();
        if i > 0 {
            let (l, h) = r::min_max(b);
            lo = r::moving(lo, l, 0.3);
            hi = r::moving(hi, h, 0.3);
        }
    }
    assert_eq!((obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]), (lo, hi));
    assert_eq!(obs.qparams().unwrap().scale[0], r::scale(lo, hi, &range(QuantDType::QInt8)));
}

// ---- f16 / bf16 -------------------------------------------------------------------------------

#[test]
fn f16_and_bf16_equal_f32_of_the_same_values() {
    let x = random_values(3 * 1003, 5);
    let a = Array::from_shape_vec(IxDyn(&[3, 1003]), x).unwrap();
    let h = a.mapv(f16::from_f32);
    let b = a.mapv(bf16::from_f32);
    let (hw, bw) = (h.mapv(f16::to_f32), b.mapv(bf16::to_f32));
    for kind in ObserverKind::ALL {
        let mut sp = spec(kind);
        if matches!(kind, ObserverKind::MinMax | ObserverKind::Mse | ObserverKind::MovingAveragePerChannelMinMax) {
            sp.quant.qscheme = QScheme::PerChannelSymmetric;
            sp.quant.ch_axis = 1;
        }
        let run = |t: qcalib::TensorView<'_>| {
            let mut o = sp.build().unwrap();
            o.observe_tensor(&t).unwrap();
            o.qparams().unwrap()
        };
        assert_eq!(run((&h).into()), run((&hw).into()), "{kind} f16");
        assert_eq!(run((&b).into()), run((&bw).into()), "{kind} bf16");
    }
}

// ---- SPEC §6: bad input -----------------------------------------------------------------------

#[test]
fn non_finite_values_are_an_error_and_leave_the_state_unchanged() {
    for kind in ObserverKind::ALL {
        let mut sp = spec(kind);
        sp.update_interval = (kind == ObserverKind::Kl).then_some(2);
        let mut obs = sp.build().unwrap();
        let good = random_values(500, 3);
        obs.observe(&Array::from_shape_vec((5, 100), good.clone()).unwrap()).unwrap();
        let before = (obs.min_val().map(<[f32]>::to_vec), obs.batches());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = good.clone();
            x[17] = bad;
            x[400] = bad;
            let err = obs.observe(&Array::from_shape_vec((5, 100), x).unwrap()).unwrap_err();
            assert!(matches!(err, Error::NonFinite { count: 2 }), "{kind}: {err}");
            assert_eq!((obs.min_val().map(<[f32]>::to_vec), obs.batches()), before, "{kind}");
        }
    }
}

#[test]
fn empty_tensors_are_a_no_op() {
    for kind in ObserverKind::ALL {
        let mut obs = spec(kind).build().unwrap();
        obs.observe(&ndarray::Array2::<f32>::zeros((0, 4))).unwrap();
        assert_eq!(obs.batches(), 0, "{kind}");
        assert!(matches!(obs.qparams(), Err(Error::NoStatistics(_))), "{kind}");
    }
}

#[test]
fn invalid_configurations_are_errors_at_construction() {
    let bad_quant = [
        QuantConfig { averaging_constant: 1.5, ..Default::default() },
        QuantConfig { averaging_constant: f32::NAN, ..Default::default() },
        QuantConfig { ch_axis: 0, ..Default::default() },
        QuantConfig { quant_min: Some(-10), ..Default::default() },
        QuantConfig { quant_min: Some(-200), quant_max: Some(127), ..Default::default() },
        QuantConfig { quant_min: Some(1), quant_max: Some(100), ..Default::default() },
        QuantConfig { quant_min: Some(5), quant_max: Some(5), ..Default::default() },
    ];
    for q in bad_quant {
        assert!(matches!(MinMaxObserver::new(q.clone()), Err(Error::InvalidConfig { .. })), "{q:?}");
    }
    assert!(KlObserver::new(KlConfig { bins: 255, ..Default::default() }).is_err());
    assert!(KlObserver::new(KlConfig { update_interval: 0, ..Default::default() }).is_err());
    // Per channel (SPEC §8) is valid for KL, Percentile and Mix; not for MovingAverageMinMax.
    assert!(KlObserver::new(KlConfig { quant: QuantConfig::per_channel(0), ..Default::default() }).is_ok());
    assert!(PercentileObserver::new(PercentileConfig { bins: 0, ..Default::default() }).is_err());
    assert!(PercentileObserver::new(PercentileConfig { percentile: 100.5, ..Default::default() }).is_err());
    assert!(PercentileObserver::new(PercentileConfig { percentile: -1.0, ..Default::default() }).is_err());
    assert!(MseObserver::new(MseConfig { stride: 0, ..Default::default() }).is_err());
    assert!(MixObserver::new(QuantConfig::per_channel(0)).is_ok());
    assert!(MovingAverageMinMaxObserver::new(QuantConfig::per_channel(0)).is_err());
    assert!(MovingAveragePerChannelMinMaxObserver::new(QuantConfig::default()).is_err());
    let mut sp = spec(ObserverKind::MinMax);
    sp.bins = Some(512);
    assert!(sp.build().is_err(), "bins is not a MinMaxObserver parameter");
}
