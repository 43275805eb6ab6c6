//! Per-channel Percentile, KL and Mix (SPEC §8), tested by their defining rule: channel `c` of a
//! per-channel observer holds exactly the state, and gives exactly the `min_val`, `max_val` and
//! scale, of a per-tensor observer with the same parameters that has seen, batch after batch,
//! only channel `c`'s values. The CPU engine is its own reference: the per-tensor observers run on
//! each channel's slice.
//!
//! Random shapes, channel axes (negative too), memory layouts, f32/f16/bf16, batch sequences
//! (empty batches, NaN/inf, a changed channel count), parameters, KL windows over several batches
//! that widen per channel and channels that start all-zero; then a run interrupted after every
//! batch and resumed from JSON. Bounded like `tests/properties.rs`: a fixed seed
//! (`PROPTEST_RNG_SEED=N` picks another), `QCALIB_PROPTEST_CASES=N` cases, and a later batch of a
//! generated KL window reaches at most [`KL_WIDENING_CAP`] times that channel's first range.

mod common;

use common::layout::{Layout, layout, with_layout};
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::RngSeed;
use qcalib::{
    Error, KlConfig, KlObserver, MAX_BINS, MixObserver, Observer, ObserverConfig, ObserverState, PercentileConfig,
    PercentileObserver, QScheme, QuantConfig, QuantDType, TensorView,
};

// ---- strategies ---------------------------------------------------------------------------------

fn with_sign(v: f32, negative: bool) -> f32 {
    if negative { -v } else { v }
}

/// Finite values of every kind: ordinary, ±0, subnormal, huge, any finite bit pattern.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        12 => -3.0f32..3.0,
        2 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (1u32..0x0080_0000, any::<bool>()).prop_map(|(b, neg)| with_sign(f32::from_bits(b), neg)),
        1 => (0x7e80_0000u32..0x7f80_0000, any::<bool>()).prop_map(|(b, neg)| with_sign(f32::from_bits(b), neg)),
        1 => any::<u32>().prop_map(f32::from_bits).prop_filter("finite", |v| v.is_finite()),
        1 => select(vec![f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 1e-45, 65504.0, -65520.0, 3.0e38]),
    ]
}

/// A tensor of `shape`, now and then with one NaN or infinity.
fn tensor_of(shape: Vec<usize>) -> impl Strategy<Value = ArrayD<f32>> {
    let n: usize = shape.iter().product();
    let poison = prop::option::weighted(0.1, (any::<Index>(), select(vec![f32::NAN, f32::INFINITY, -f32::INFINITY])));
    (prop::collection::vec(value(), n), poison).prop_map(move |(mut values, poison)| {
        if let Some((i, v)) = poison
            && !values.is_empty()
        {
            let at = i.index(values.len());
            values[at] = v;
        }
        ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap()
    })
}

/// A shape of rank 1 to 4 with some room per channel (one long axis now and then).
fn shape() -> impl Strategy<Value = Vec<usize>> {
    (1usize..=4).prop_flat_map(|ndim| {
        let dims = prop::collection::vec(prop_oneof![6 => 0usize..=5, 1 => 6usize..=60], ndim);
        dims.prop_filter("not too many values", |d| d.iter().product::<usize>() <= 4000)
    })
}

/// 1 to 4 batches of one rank: mostly of one shape, sometimes of another (a changed channel
/// count), some channels all zero for the first batches (a KL window that starts late).
fn batches() -> impl Strategy<Value = Vec<ArrayD<f32>>> {
    shape().prop_flat_map(|base| {
        let ndim = base.len();
        let one = prop_oneof![6 => Just(base.clone()), 1 => prop::collection::vec(0usize..=5, ndim)];
        prop::collection::vec(one.prop_flat_map(tensor_of), 1..=4)
    })
}

/// Which float type the batches are given in.
#[derive(Clone, Copy, Debug)]
enum Float {
    F32,
    F16,
    BF16,
}

/// A per-channel configuration of Percentile, KL or Mix for tensors of rank `ndim`.
fn config(ndim: usize) -> impl Strategy<Value = ObserverConfig> {
    let n = ndim as isize;
    let quant = (
        select(QuantDType::ALL.to_vec()),
        prop_oneof![select(vec![0.0f32, 0.01, 0.5, 1.0]), 0.0f32..=1.0],
        -n..n,
        prop::option::weighted(0.2, Just(())),
    );
    let own = (
        256usize..600,
        1usize..=3,
        prop_oneof![select(vec![1usize, 7, 2048]), 1usize..3000],
        prop_oneof![select(vec![0.0, 50.0, 99.0, 99.99, 100.0]), 0.0f64..=100.0],
    );
    (0usize..3, quant, own).prop_map(
        |(kind, (dtype, averaging_constant, ch_axis, narrow), (kl_bins, ui, bins, pct))| {
            let (lo, hi) = dtype.range();
            let quant = QuantConfig {
                averaging_constant,
                ch_axis,
                dtype,
                qscheme: QScheme::PerChannelSymmetric,
                quant_min: narrow.map(|_| lo),
                quant_max: narrow.map(|_| hi - 1),
                is_sync_quantize: false,
            };
            match kind {
                0 => ObserverConfig::Percentile(PercentileConfig { percentile: pct, bins, quant }),
                1 => ObserverConfig::Kl(KlConfig { bins: kl_bins, update_interval: ui, sync_histograms: false, quant }),
                _ => ObserverConfig::Mix(quant),
            }
        },
    )
}

/// A case: a configuration, its batches (bounded for KL), a layout per batch, the float type,
/// and for each channel how many leading batches it is all zeros in.
fn case() -> impl Strategy<Value = (ObserverConfig, Vec<ArrayD<f32>>, Vec<Layout>, Float, Vec<usize>)> {
    batches().prop_flat_map(|batches| {
        let ndim = batches[0].ndim();
        let float = select(vec![Float::F32, Float::F32, Float::F16, Float::BF16]);
        let zeros = prop::collection::vec(prop_oneof![3 => Just(0usize), 1 => 1usize..=3], 64);
        (config(ndim), Just(batches), prop::collection::vec(layout(ndim), 4), float, zeros).prop_map(
            |(config, batches, layouts, float, zeros)| {
                let batches = zero_leading(&config, batches, &zeros);
                let batches = bounded(&config, batches);
                (config, batches, layouts, float, zeros)
            },
        )
    })
}

/// The channel axis of `config` for a tensor of rank `ndim`.
fn axis_of(config: &ObserverConfig, ndim: usize) -> usize {
    let a = config.quant().ch_axis;
    if a < 0 { (ndim as isize + a) as usize } else { a as usize }
}

/// Channel `c` is all zeros in its first `zeros[c % 64]` batches.
fn zero_leading(config: &ObserverConfig, mut batches: Vec<ArrayD<f32>>, zeros: &[usize]) -> Vec<ArrayD<f32>> {
    let axis = axis_of(config, batches[0].ndim());
    for (b, batch) in batches.iter_mut().enumerate() {
        for (c, mut lane) in batch.axis_iter_mut(Axis(axis)).enumerate() {
            if b < zeros[c % zeros.len()] {
                lane.fill(0.0);
            }
        }
    }
    batches
}

/// How many times its window's first range a later batch of a generated KL window may reach, per
/// channel (a widening to many thousand bins makes a KL search, and so a case, slow in a debug
/// build; `tests/robustness.rs` covers the growth limit).
const KL_WIDENING_CAP: f32 = 2.0;

/// `batches` with every channel's values clamped to [`KL_WIDENING_CAP`] times the first range of
/// that channel's window, following the windows as the observer does (a batch with NaN or
/// infinity, or of another channel count, fails and counts for nothing; an empty one is ignored;
/// an all-zero start leaves a channel's range open). Other observers: unchanged.
fn bounded(config: &ObserverConfig, mut batches: Vec<ArrayD<f32>>) -> Vec<ArrayD<f32>> {
    let ObserverConfig::Kl(kl) = config else { return batches };
    let axis = axis_of(config, batches[0].ndim());
    let mut ranges: Vec<Option<f32>> = Vec::new();
    let (mut step, mut channels) = (0, None);
    for batch in &mut batches {
        let c = batch.shape()[axis];
        if batch.is_empty() || batch.iter().any(|v| !v.is_finite()) || channels.is_some_and(|n| n != c) {
            continue;
        }
        channels = Some(c);
        if ranges.len() != c {
            ranges = vec![None; c];
        }
        for (range, mut lane) in ranges.iter_mut().zip(batch.axis_iter_mut(Axis(axis))) {
            match *range {
                None => {
                    let amax = lane.iter().fold(0f32, |m, v| m.max(v.abs()));
                    *range = (amax > 0.0).then_some(amax);
                }
                Some(r) => {
                    let cap = (r * KL_WIDENING_CAP).min(f32::MAX);
                    lane.mapv_inplace(|v| v.clamp(-cap, cap));
                }
            }
        }
        step += 1;
        if step == kl.update_interval {
            step = 0;
            ranges.iter_mut().for_each(|r| *r = None);
        }
    }
    batches
}

// ---- the reference: per-tensor observers on each channel's slice -------------------------------

/// The per-tensor configuration with the same parameters.
fn per_tensor(config: &ObserverConfig) -> ObserverConfig {
    let mut c = config.clone();
    let q = match &mut c {
        ObserverConfig::Percentile(p) => &mut p.quant,
        ObserverConfig::Kl(k) => &mut k.quant,
        ObserverConfig::Mix(q) => q,
        other => panic!("not a per-channel Percentile, KL or Mix configuration: {other:?}"),
    };
    q.qscheme = QScheme::PerTensorSymmetric;
    q.ch_axis = -1;
    c
}

/// Channel `c`'s values along `axis`, in the order of the `[C, N]` view.
fn channel<T: Clone>(x: &ArrayD<T>, axis: usize, c: usize) -> ArrayD<T> {
    let lane = x.index_axis(Axis(axis), c);
    ArrayD::from_shape_vec(IxDyn(&[lane.len()]), lane.iter().cloned().collect()).unwrap()
}

/// Equal bits, or both zeros: the sign of a zero minimum depends on which zero a pass meets
/// first, i.e. on the memory layout.
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (*x == 0.0 && *y == 0.0))
}

/// Runs the per-channel observer of `config` over `batches` (each in its layout) and the
/// per-tensor reference over every channel's slices, and checks the rule of SPEC §8.
fn check_against_channels<T>(
    config: &ObserverConfig,
    batches: &[ArrayD<T>],
    layouts: &[Layout],
) -> Result<(), TestCaseError>
where
    T: Clone + Default + Copy + Into<f32>,
    for<'a> TensorView<'a>: From<ArrayViewD<'a, T>>,
{
    let mut obs = config.build().unwrap();
    let reference_config = per_tensor(config);
    let mut refs: Vec<Box<dyn Observer>> = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let before = obs.save_state();
        let result = with_layout(batch, &layouts[i % layouts.len()], |v| obs.observe_tensor(&v.into()));
        let axis = axis_of(config, batch.ndim());
        let c = batch.shape()[axis];
        let finite = batch.iter().all(|&v| Into::<f32>::into(v).is_finite());
        let mut expected_ok = batch.is_empty() || (finite && (refs.is_empty() || refs.len() == c));
        if expected_ok && !batch.is_empty() {
            // Every channel's observer takes its slice, or (a channel's KL window would widen
            // past the limits) none does: the batch is refused as a whole.
            if refs.is_empty() {
                refs = (0..c).map(|_| reference_config.build().unwrap()).collect();
            }
            let saved: Vec<ObserverState> = refs.iter().map(|r| r.save_state()).collect();
            let all = refs.iter_mut().enumerate().all(|(k, r)| {
                let slice = channel(batch, axis, k);
                r.observe_tensor(&TensorView::from(slice.view())).is_ok()
            });
            if !all {
                for (r, s) in refs.iter_mut().zip(&saved) {
                    r.load_state(s).unwrap();
                }
                if obs_is_new(&before) {
                    refs.clear(); // the channel count is still open
                }
                expected_ok = false;
            }
        }
        prop_assert_eq!(result.is_ok(), expected_ok, "batch {}: {:?}", i, result.as_ref().err().map(Error::to_string));
        if result.is_err() {
            prop_assert_eq!(obs.save_state(), before, "a failed batch changed the state");
        }
    }
    let state = obs.save_state();
    if refs.is_empty() {
        prop_assert!(obs.min_val().is_none());
        return Ok(());
    }
    let column =
        |f: &dyn Fn(&dyn Observer) -> Option<f32>| -> Option<Vec<f32>> { refs.iter().map(|r| f(r.as_ref())).collect() };
    let (min, max) = (column(&|r| r.min_val().map(|v| v[0])), column(&|r| r.max_val().map(|v| v[0])));
    match (obs.min_val(), obs.max_val(), &min, &max) {
        (Some(a), Some(b), Some(min), Some(max)) => {
            prop_assert!(same(a, min), "min_val {:?} vs the channels' {:?}", a, min);
            prop_assert!(same(b, max), "max_val {:?} vs the channels' {:?}", b, max);
        }
        (None, None, None, None) => {}
        other => prop_assert!(false, "statistics on one side only: {:?}", other),
    }
    for r in &refs {
        prop_assert_eq!(r.batches(), obs.batches());
    }
    // KL: every channel's window is the reference's window.
    if let Some(windows) = &state.kl_channels {
        let want: Vec<_> = refs.iter().map(|r| r.save_state().kl_window.unwrap()).collect();
        if windows.is_empty() {
            prop_assert!(want.iter().all(|w| w.step == 0 && w.hist.is_empty() && w.zeros == 0), "{:?}", want);
        } else {
            prop_assert_eq!(windows, &want);
        }
    }
    let q = obs.qparams();
    let scales: Result<Vec<f32>, String> =
        refs.iter_mut().map(|r| r.qparams().map(|q| q.scale[0]).map_err(|e| e.to_string())).collect();
    match (q, scales) {
        (Ok(q), Ok(s)) => prop_assert_eq!(
            q.scale.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            s.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        ),
        (Err(_), Err(_)) => {}
        (q, s) => prop_assert!(false, "qparams {:?} vs the channels' {:?}", q, s),
    }
    Ok(())
}

/// Whether `state` is that of an observer that has taken no batch yet (its channel count is
/// still open).
fn obs_is_new(state: &ObserverState) -> bool {
    state.batches == 0 && state.min_val.is_empty()
}

/// The whole run as text: per batch `Ok` or the error, the state as JSON, the scales as bits.
fn run_bits(config: &ObserverConfig, batches: &[ArrayD<f32>], cut: Option<usize>) -> String {
    let mut obs = config.build().unwrap();
    let mut per_batch = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        if cut == Some(i) {
            let json = obs.save_state().to_json().unwrap();
            obs = ObserverState::from_json(&json).unwrap().into_observer().unwrap();
        }
        per_batch.push(obs.observe(b).map_err(|e| e.to_string()));
    }
    if cut == Some(batches.len()) {
        let json = obs.save_state().to_json().unwrap();
        obs = ObserverState::from_json(&json).unwrap().into_observer().unwrap();
    }
    let state = obs.save_state().to_json().unwrap();
    let q = obs.qparams().map(|q| q.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>());
    format!("{per_batch:?}\n{state}\n{:?}", q.map_err(|e| e.to_string()))
}

// ---- the properties -----------------------------------------------------------------------------

fn cases(default: u32) -> u32 {
    std::env::var("QCALIB_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn settings(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    let rng_seed = match default.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x8c4a_77e1),
        seed => seed,
    };
    ProptestConfig { cases, rng_seed, ..default }
}

proptest! {
    #![proptest_config(settings(cases(64)))]

    /// SPEC §8: each channel equals a per-tensor observer on that channel's values, bit for bit
    /// (states, `min_val`/`max_val`, scales), in any layout and float type.
    #[test]
    fn every_channel_equals_a_per_tensor_observer_on_its_values(
        (config, batches, layouts, float, _) in case(),
    ) {
        match float {
            Float::F32 => check_against_channels(&config, &batches, &layouts)?,
            Float::F16 => {
                let h: Vec<ArrayD<f16>> = batches.iter().map(|b| b.mapv(f16::from_f32)).collect();
                check_against_channels(&config, &h, &layouts)?;
            }
            Float::BF16 => {
                let h: Vec<ArrayD<bf16>> = batches.iter().map(|b| b.mapv(bf16::from_f32)).collect();
                check_against_channels(&config, &h, &layouts)?;
            }
        }
    }

    /// Saving after any batch, reading the state back from JSON and going on gives every bit of
    /// the uninterrupted run; every cut point of the case is tried.
    #[test]
    fn an_interrupted_per_channel_run_resumes_bit_for_bit((config, batches, _, _, _) in case()) {
        let whole = run_bits(&config, &batches, None);
        for cut in 0..=batches.len() {
            prop_assert_eq!(run_bits(&config, &batches, Some(cut)), whole.clone(), "cut before batch {}", cut);
        }
    }
}

// ---- limits and explicit cases ------------------------------------------------------------------

/// More than 2^27 counters in all is refused with an error naming `ch_axis` and the channel count,
/// and the state is unchanged; so is a KL widening of one channel past 2^20 bins.
#[test]
fn the_counter_limit_names_the_axis_and_the_channel_count() {
    let x = ArrayD::<f32>::from_elem(IxDyn(&[70_000, 2]), 0.5);
    let percentile = PercentileConfig { bins: 2048, quant: QuantConfig::per_channel(0), ..Default::default() };
    let mut obs = PercentileObserver::new(percentile).unwrap();
    let err = obs.observe(&x).unwrap_err().to_string();
    assert!(err.contains("ch_axis 0") && err.contains("70000 channels"), "{err}");
    assert!(obs.min_val().is_none());
    let mut mix = MixObserver::new(QuantConfig::per_channel(0)).unwrap();
    assert!(mix.observe(&x).unwrap_err().to_string().contains("ch_axis 0"));
    let mut kl =
        KlObserver::new(KlConfig { bins: 4096, quant: QuantConfig::per_channel(-2), ..Default::default() }).unwrap();
    let err = kl.observe(&x).unwrap_err().to_string();
    assert!(err.contains("ch_axis -2") && err.contains("70000 channels"), "{err}");
    assert!(kl.channel_windows().is_empty());

    // After widening: 200 channels whose windows start at 512 bins, then one batch that would
    // widen them all to 2^20 bins (2^27.6 counters in all).
    let config = KlConfig { update_interval: 2, quant: QuantConfig::per_channel(0), ..Default::default() };
    let mut kl = KlObserver::new(config).unwrap();
    kl.observe(&ArrayD::<f32>::from_elem(IxDyn(&[200, 4]), 1.0)).unwrap();
    let before = kl.save_state();
    let wide = ArrayD::<f32>::from_elem(IxDyn(&[200, 4]), 2047.0);
    let err = kl.observe(&wide).unwrap_err().to_string();
    assert!(err.contains("ch_axis 0") && err.contains("200 channels"), "{err}");
    assert_eq!(kl.save_state(), before);
    // One channel past 2^20 bins.
    let mut far = ArrayD::<f32>::from_elem(IxDyn(&[200, 4]), 1.0);
    far[[7, 0]] = 1e7;
    let err = kl.observe(&far).unwrap_err().to_string();
    assert!(err.contains("channel 7") && err.contains(&MAX_BINS.to_string()), "{err}");
    assert_eq!(kl.save_state(), before);
}

/// A per-channel KL window whose channels start at different batches, widen differently and
/// complete together; channel 1 is all zeros throughout (scale eps).
#[test]
fn kl_channels_start_and_widen_on_their_own() {
    let config = KlConfig { update_interval: 3, quant: QuantConfig::per_channel(1), ..Default::default() };
    let mut obs = KlObserver::new(config.clone()).unwrap();
    let batch = |b: usize| {
        ArrayD::from_shape_fn(IxDyn(&[400, 3]), |i| match i[1] {
            0 => ((i[0] * 7 + b) as f32 * 0.1).sin() * (b + 1) as f32,
            1 => 0.0,
            _ if b == 0 => 0.0,
            _ => ((i[0] + b) as f32 * 0.37).cos() * 0.01 * (3 * b) as f32,
        })
    };
    let mut single: Vec<KlObserver> = (0..3)
        .map(|_| KlObserver::new(KlConfig { quant: QuantConfig::default(), ..config.clone() }).unwrap())
        .collect();
    for b in 0..3 {
        let x = batch(b);
        obs.observe(&x).unwrap();
        for (c, s) in single.iter_mut().enumerate() {
            s.observe(&channel(&x, 1, c)).unwrap();
        }
        if b < 2 {
            let windows = obs.channel_windows();
            assert_eq!(windows.len(), 3);
            for (c, s) in single.iter().enumerate() {
                assert_eq!(&windows[c], s.window(), "batch {b} channel {c}");
            }
        }
    }
    assert!(obs.channel_windows().is_empty());
    let q = obs.qparams().unwrap();
    for (c, s) in single.iter_mut().enumerate() {
        assert_eq!(q.scale[c].to_bits(), s.qparams().unwrap().scale[0].to_bits(), "channel {c}");
    }
    assert_eq!(q.scale[1], f32::EPSILON);
    assert!(single[0].window().hist.is_empty());
}

/// A per-channel KL state of format version 2 reads back; one claiming version 1, or whose
/// channels are at different steps, is refused.
#[test]
fn per_channel_kl_states_are_version_2_and_checked() {
    let config = KlConfig { update_interval: 2, quant: QuantConfig::per_channel(0), ..Default::default() };
    let mut obs = KlObserver::new(config).unwrap();
    obs.observe(&ArrayD::from_shape_fn(IxDyn(&[3, 50]), |i| (i[0] + 1) as f32 * (i[1] as f32 * 0.3).sin())).unwrap();
    let state = obs.save_state();
    assert_eq!(state.version, 2);
    let json = state.to_json().unwrap();
    let back = ObserverState::from_json(&json).unwrap();
    assert_eq!(back, state);
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["version"] = 1.into();
    let err = ObserverState::from_json(&value.to_string()).unwrap_err().to_string();
    assert!(err.contains("version 2"), "{err}");
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["kl_channels"][1]["step"] = 5.into();
    assert!(ObserverState::from_json(&value.to_string()).is_err());
    // Per-tensor states stay version 1.
    let mut pt = KlObserver::new(KlConfig::default()).unwrap();
    pt.observe(&[1.0f32, -2.0][..]).unwrap();
    assert_eq!(pt.save_state().version, 1);
}

/// Tensors large enough for every path of the CPU engine (channels cut into pieces, blocks of
/// channels walked through many rows, runs of a middle axis, f16): each channel still equals the
/// per-tensor observer on its values, bit for bit.
#[test]
fn large_tensors_in_every_layout_match_their_channels() {
    let cases: [(&[usize], isize); 4] = [(&[20, 9000], 0), (&[9000, 40], -1), (&[3, 24, 700], 1), (&[2, 300, 33], 2)];
    let configs = [
        ObserverConfig::Percentile(PercentileConfig { percentile: 99.9, bins: 2048, quant: QuantConfig::default() }),
        ObserverConfig::Kl(KlConfig { bins: 1024, update_interval: 2, ..Default::default() }),
        ObserverConfig::Mix(QuantConfig::default()),
    ];
    for (shape, ch_axis) in cases {
        let n: usize = shape.iter().product();
        // Two batches, the second wider (a KL window widens).
        let batches: Vec<ArrayD<f32>> = (0..2)
            .map(|b| {
                let values = common::random_values(n, 11 + b as u64).into_iter().map(|v| v * (1.0 + b as f32 * 0.7));
                ArrayD::from_shape_vec(IxDyn(shape), values.collect()).unwrap()
            })
            .collect();
        for config in &configs {
            let mut config = config.clone();
            match &mut config {
                ObserverConfig::Percentile(c) => c.quant = QuantConfig::per_channel(ch_axis),
                ObserverConfig::Kl(c) => c.quant = QuantConfig::per_channel(ch_axis),
                ObserverConfig::Mix(q) => *q = QuantConfig::per_channel(ch_axis),
                _ => unreachable!(),
            }
            let layouts = [Layout::standard(shape.len())];
            check_against_channels(&config, &batches, &layouts)
                .unwrap_or_else(|e| panic!("{shape:?} axis {ch_axis}: {e}"));
            let halves: Vec<ArrayD<f16>> = batches.iter().map(|b| b.mapv(f16::from_f32)).collect();
            check_against_channels(&config, &halves, &layouts)
                .unwrap_or_else(|e| panic!("f16 {shape:?} axis {ch_axis}: {e}"));
        }
    }
}
