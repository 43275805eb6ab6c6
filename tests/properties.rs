//! Property tests over random shapes, memory layouts, channel axes, input float types, values
//! (subnormals, ±0, huge magnitudes, NaN/inf) and configurations:
//!
//! - nothing panics, and a batch that fails leaves the observer's state exactly as it was;
//! - the same logical values in another memory layout give the same results;
//! - the thread count changes no bit (rayon pools of 1 and 3 threads);
//! - f16 and bf16 inputs give bit for bit the results of the same values in f32;
//! - a run interrupted after any batch and resumed from its saved state (through JSON) gives
//!   bit for bit the result of an uninterrupted run.
//!
//! Case counts are bounded so that `cargo test` stays fast in debug builds; set
//! `QCALIB_PROPTEST_CASES=N` to run N cases of each property instead (e.g. in a release build:
//! `QCALIB_PROPTEST_CASES=5000 cargo test --release --test properties`). So is each case's cost:
//! a later batch of a generated KL window exceeds the window's first range (per channel: the
//! channel's) at most [`KL_WIDENING_CAP`] times (a widening to many thousand bins makes one KL search, and so one
//! case, take minutes in a debug build; `tests/robustness.rs` covers the growth limit). The cases
//! are the same on every run (a fixed seed; `PROPTEST_RNG_SEED=N` picks another).

mod common;

use std::sync::OnceLock;

use common::layout::{Layout, layout, with_layout};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::RngSeed;
use qcalib::{
    Error, KlConfig, MseConfig, Observer, ObserverConfig, ObserverKind, ObserverSpec, ObserverState, PercentileConfig,
    QParams, QScheme, QuantConfig, QuantDType, TensorView,
};

// ---- what a run gives ------------------------------------------------------------------------

/// The results of one observer over a list of batches.
#[derive(Debug)]
struct Outcome {
    /// Per batch: `Ok` or the error's message.
    per_batch: Vec<Result<(), String>>,
    state: ObserverState,
    qparams: Result<QParams, String>,
}

impl Outcome {
    /// Every bit of the outcome, as text (JSON tells -0.0 from 0.0).
    fn bits(&self) -> String {
        let q = self.qparams.as_ref().map(|q| (q.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), q.quant_min));
        format!("{:?}\n{}\n{:?}", self.per_batch, self.state.to_json().unwrap(), q)
    }

    /// Equal values: the same errors, and states and qparams equal as numbers (±0 alike: the
    /// sign of a zero minimum depends on which zero comes first, i.e. on the layout).
    fn same_values(&self, other: &Outcome) -> bool {
        self.per_batch == other.per_batch && self.state == other.state && self.qparams == other.qparams
    }
}

/// Runs an observer of `config` over `n` batches, `observe(obs, i)` feeding batch `i`; checks
/// that every failing batch leaves the state unchanged.
fn run(
    config: &ObserverConfig,
    n: usize,
    mut observe: impl FnMut(&mut dyn Observer, usize) -> qcalib::Result<()>,
) -> Outcome {
    let mut obs = config.build().unwrap();
    let mut per_batch = Vec::new();
    for i in 0..n {
        let before = obs.save_state().to_json().unwrap();
        let r = observe(obs.as_mut(), i);
        if r.is_err() {
            assert_eq!(obs.save_state().to_json().unwrap(), before, "a failed batch changed the state: {r:?}");
        }
        per_batch.push(r.map_err(|e| e.to_string()));
    }
    let state = obs.save_state();
    let qparams = obs.qparams().map_err(|e| e.to_string());
    Outcome { per_batch, state, qparams }
}

fn run_standard<T>(config: &ObserverConfig, batches: &[ArrayD<T>]) -> Outcome
where
    for<'a> TensorView<'a>: From<&'a ArrayD<T>>,
{
    run(config, batches.len(), |obs, i| obs.observe_tensor(&TensorView::from(&batches[i])))
}

fn run_laid_out<T: Clone + Default>(config: &ObserverConfig, batches: &[ArrayD<T>], layouts: &[Layout]) -> Outcome
where
    for<'a> TensorView<'a>: From<ndarray::ArrayViewD<'a, T>>,
{
    run(config, batches.len(), |obs, i| with_layout(&batches[i], &layouts[i], |v| obs.observe_tensor(&v.into())))
}

fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: [OnceLock<rayon::ThreadPool>; 2] = [OnceLock::new(), OnceLock::new()];
    POOLS[usize::from(threads > 1)]
        .get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap())
}

// ---- strategies --------------------------------------------------------------------------------

fn with_sign(v: f32, negative: bool) -> f32 {
    if negative { -v } else { v }
}

/// Finite values of every kind: ordinary, ±0, subnormal, huge, any finite bit pattern.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        10 => -3.0f32..3.0,
        2 => Just(0.0f32),
        2 => Just(-0.0f32),
        2 => (1u32..0x0080_0000, any::<bool>()).prop_map(|(b, neg)| with_sign(f32::from_bits(b), neg)),
        2 => (0x7e80_0000u32..0x7f80_0000, any::<bool>()).prop_map(|(b, neg)| with_sign(f32::from_bits(b), neg)),
        2 => any::<u32>().prop_map(f32::from_bits).prop_filter("finite", |v| v.is_finite()),
        1 => select(vec![f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 1e-45, 65504.0, -65520.0, 3.0e38]),
    ]
}

/// A tensor of `shape`, now and then with one NaN or infinity.
fn tensor_of(shape: Vec<usize>) -> impl Strategy<Value = ArrayD<f32>> {
    let n: usize = shape.iter().product();
    let poison =
        prop::option::weighted(0.12, (any::<Index>(), select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY])));
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

/// 1 to 4 batches of rank `ndim`: mostly of one shape, sometimes of another (a changed channel
/// count for per-channel observers).
fn batches(ndim: usize) -> impl Strategy<Value = Vec<ArrayD<f32>>> {
    prop::collection::vec(0usize..=5, ndim).prop_flat_map(move |base| {
        let shape = prop_oneof![4 => Just(base), 1 => prop::collection::vec(0usize..=5, ndim)];
        prop::collection::vec(shape.prop_flat_map(tensor_of), 1..=4)
    })
}

/// A valid configuration of any observer, for tensors of rank `ndim` (the channel axis may still
/// be out of range for them: that is an error at observe time).
fn config(ndim: usize) -> impl Strategy<Value = ObserverConfig> {
    let n = ndim as isize;
    let quant = (
        select(QuantDType::ALL.to_vec()),
        prop_oneof![select(vec![0.0f32, 0.01, 0.5, 1.0]), 0.0f32..=1.0],
        any::<bool>(),
        -n - 1..=n,
        prop::option::weighted(0.2, Just(())),
    );
    let own = (
        256usize..700,
        1usize..3000,
        prop_oneof![select(vec![0.0, 50.0, 99.99, 100.0]), 0.0f64..=100.0],
        1usize..=3,
        1usize..100,
    );
    (0..ObserverKind::ALL.len(), quant, own).prop_map(
        |(k, (dtype, averaging_constant, per_channel, ch_axis, narrow), (kl_bins, bins, percentile, ui, stride))| {
            let kind = ObserverKind::ALL[k];
            let per_channel = match kind {
                ObserverKind::MovingAverageMinMax => false,
                ObserverKind::MovingAveragePerChannelMinMax => true,
                _ => per_channel,
            };
            let (lo, hi) = dtype.range();
            let quant = QuantConfig {
                averaging_constant,
                ch_axis: if per_channel { ch_axis } else { -1 },
                dtype,
                qscheme: if per_channel { QScheme::PerChannelSymmetric } else { QScheme::PerTensorSymmetric },
                quant_min: narrow.map(|_| lo),
                quant_max: narrow.map(|_| hi - 1),
                is_sync_quantize: false,
            };
            match kind {
                ObserverKind::MinMax => ObserverConfig::MinMax(quant),
                ObserverKind::MovingAverageMinMax => ObserverConfig::MovingAverageMinMax(quant),
                ObserverKind::MovingAveragePerChannelMinMax => ObserverConfig::MovingAveragePerChannelMinMax(quant),
                ObserverKind::Percentile => ObserverConfig::Percentile(PercentileConfig { percentile, bins, quant }),
                ObserverKind::Kl => {
                    ObserverConfig::Kl(KlConfig { bins: kl_bins, update_interval: ui, sync_histograms: false, quant })
                }
                ObserverKind::Mse => ObserverConfig::Mse(MseConfig { stride, quant }),
                ObserverKind::Mix => ObserverConfig::Mix(quant),
            }
        },
    )
}

/// A configuration, batches and one layout per batch.
fn case() -> impl Strategy<Value = (ObserverConfig, Vec<ArrayD<f32>>, Vec<Layout>)> {
    (0usize..=4).prop_flat_map(|ndim| {
        (config(ndim), batches(ndim), prop::collection::vec(layout(ndim), 4))
            .prop_map(|(config, batches, layouts)| (config.clone(), bounded(&config, batches), layouts))
    })
}

/// How many times the first range of a KL window a later batch of that window may reach in a
/// generated case.
const KL_WIDENING_CAP: f32 = 2.0;

/// `batches`, with the finite values of every batch that would widen a KL window past
/// [`KL_WIDENING_CAP`] times its first range clamped to that (other observers: unchanged); per
/// channel, each channel's values against its own window's first range. Follows the windows as
/// the observer does: a batch with NaN or infinity, or whose channel count changed, fails and
/// counts for nothing, an empty one is ignored, an all-zero start leaves the range open.
fn bounded(config: &ObserverConfig, mut batches: Vec<ArrayD<f32>>) -> Vec<ArrayD<f32>> {
    let ObserverConfig::Kl(kl) = config else { return batches };
    let (mut ranges, mut step, mut channels) = (Vec::<Option<f32>>::new(), 0, None);
    for batch in &mut batches {
        if batch.is_empty() || batch.iter().any(|v| !v.is_finite()) {
            continue;
        }
        // Per channel along the axis, or the whole batch as one channel.
        let axis = kl.quant.channel_axis(batch.ndim()).ok();
        let Some(axis) = axis else { continue }; // an axis out of range: the batch fails
        let c = axis.map_or(1, |a| batch.shape()[a]);
        if channels.is_some_and(|n| n != c) {
            continue;
        }
        channels = Some(c);
        if ranges.len() != c {
            ranges = vec![None; c];
        }
        let cap_lane = |range: &mut Option<f32>, mut lane: ndarray::ArrayViewMutD<'_, f32>| match *range {
            None => {
                let amax = lane.iter().fold(0f32, |m, v| m.max(v.abs()));
                *range = (amax > 0.0).then_some(amax);
            }
            Some(r) => {
                let cap = (r * KL_WIDENING_CAP).min(f32::MAX);
                lane.mapv_inplace(|v| v.clamp(-cap, cap));
            }
        };
        match axis {
            None => cap_lane(&mut ranges[0], batch.view_mut()),
            Some(a) => {
                for (range, lane) in ranges.iter_mut().zip(batch.axis_iter_mut(ndarray::Axis(a))) {
                    cap_lane(range, lane);
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

// ---- the properties -----------------------------------------------------------------------------

/// `QCALIB_PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("QCALIB_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// `cases` cases from a fixed seed, unless `PROPTEST_RNG_SEED` names one.
fn settings(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    let rng_seed = match default.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x71ca_11b5),
        seed => seed,
    };
    ProptestConfig { cases, rng_seed, ..default }
}

proptest! {
    #![proptest_config(settings(cases(48)))]

    /// Layouts change no value; thread counts and f16/bf16 inputs change no bit.
    #[test]
    fn layout_threads_and_float_type_do_not_change_results((config, batches, layouts) in case()) {
        for (b, l) in batches.iter().zip(&layouts) {
            with_layout(b, l, |v| assert_eq!(v.shape(), b.shape()));
        }
        let standard = run_standard(&config, &batches);
        let laid_out = run_laid_out(&config, &batches, &layouts);
        prop_assert!(standard.same_values(&laid_out), "standard\n{standard:?}\nlaid out {layouts:?}\n{laid_out:?}");
        for threads in [1, 3] {
            let pooled = pool(threads).install(|| run_laid_out(&config, &batches, &layouts));
            prop_assert_eq!(pooled.bits(), laid_out.bits(), "{} thread(s)", threads);
        }

        let halves: Vec<ArrayD<f16>> = batches.iter().map(|b| b.mapv(f16::from_f32)).collect();
        let widened: Vec<ArrayD<f32>> = halves.iter().map(|b| b.mapv(f16::to_f32)).collect();
        prop_assert_eq!(run_standard(&config, &halves).bits(), run_standard(&config, &widened).bits(), "f16");
        prop_assert_eq!(
            run_laid_out(&config, &halves, &layouts).bits(),
            run_laid_out(&config, &widened, &layouts).bits(),
            "f16 laid out"
        );
        let brains: Vec<ArrayD<bf16>> = batches.iter().map(|b| b.mapv(bf16::from_f32)).collect();
        let widened: Vec<ArrayD<f32>> = brains.iter().map(|b| b.mapv(bf16::to_f32)).collect();
        prop_assert_eq!(run_standard(&config, &brains).bits(), run_standard(&config, &widened).bits(), "bf16");
        prop_assert_eq!(
            run_laid_out(&config, &brains, &layouts).bits(),
            run_laid_out(&config, &widened, &layouts).bits(),
            "bf16 laid out"
        );
    }

    /// Saving after any batch, reading the state back from JSON and going on gives every bit of
    /// the uninterrupted run (per batch, the state and the qparams).
    #[test]
    fn an_interrupted_run_resumes_bit_for_bit((config, batches, _) in case(), cut in any::<Index>()) {
        let whole = run_standard(&config, &batches);
        let k = cut.index(batches.len() + 1);
        let first = run_standard(&config, &batches[..k]);
        let json = first.state.to_json().unwrap();
        let mut resumed = ObserverState::from_json(&json).unwrap().into_observer().unwrap();
        let mut per_batch = first.per_batch.clone();
        for b in &batches[k..] {
            per_batch.push(resumed.observe(b).map_err(|e| e.to_string()));
        }
        let state = resumed.save_state();
        let qparams = resumed.qparams().map_err(|e| e.to_string());
        prop_assert_eq!(Outcome { per_batch, state, qparams }.bits(), whole.bits(), "cut after {} batch(es)", k);
    }

    /// A broadcast view (zero strides) gives the results of its dense copy.
    #[test]
    fn broadcast_views_equal_their_dense_copies(
        (config, base) in (1usize..=4)
            .prop_flat_map(|ndim| (config(ndim), batches(ndim)))
            .prop_map(|(config, batches)| (config.clone(), bounded(&config, batches))),
        repeat in prop::collection::vec(1usize..=4, 4),
    ) {
        let full: Vec<Vec<usize>> = base
            .iter()
            .map(|b| b.shape().iter().zip(&repeat).map(|(&d, &r)| if d == 1 { r } else { d }).collect())
            .collect();
        let dense: Vec<ArrayD<f32>> =
            base.iter().zip(&full).map(|(b, s)| b.broadcast(IxDyn(s)).unwrap().to_owned()).collect();
        let broadcast = run(&config, base.len(), |obs, i| {
            obs.observe_tensor(&base[i].broadcast(IxDyn(&full[i])).unwrap().into())
        });
        let want = run_standard(&config, &dense);
        prop_assert!(broadcast.same_values(&want), "broadcast\n{broadcast:?}\ndense\n{want:?}");
    }

    /// Any parameters, valid or not, give an observer or a configuration error that names the
    /// parameter; never a panic. A valid observer then takes a batch.
    #[test]
    fn any_parameters_give_an_observer_or_a_named_error(
        k in 0..ObserverKind::ALL.len(),
        averaging_constant in prop_oneof![any::<f32>(), -0.5f32..1.5],
        ch_axis in prop_oneof![any::<isize>(), -3isize..3],
        per_channel in any::<bool>(),
        dtype in select(QuantDType::ALL.to_vec()),
        quant_min in prop::option::of(prop_oneof![any::<i64>(), -300i64..300]),
        quant_max in prop::option::of(prop_oneof![any::<i64>(), -300i64..300]),
        bins in prop::option::of(prop_oneof![any::<usize>(), 0usize..3000]),
        percentile in prop::option::of(prop_oneof![any::<f64>(), -1.0f64..101.0]),
        update_interval in prop::option::of(prop_oneof![any::<usize>(), 0usize..4]),
        stride in prop::option::of(prop_oneof![any::<usize>(), 0usize..200]),
        batch in tensor_of(vec![3, 4]),
    ) {
        let kind = ObserverKind::ALL[k];
        let qscheme = if per_channel { QScheme::PerChannelSymmetric } else { QScheme::PerTensorSymmetric };
        let quant = QuantConfig { averaging_constant, ch_axis, dtype, qscheme, quant_min, quant_max, is_sync_quantize: false };
        let spec = ObserverSpec { kind, quant, bins, percentile, update_interval, stride, sync_histograms: false };
        match spec.build() {
            Ok(mut obs) => {
                let before = obs.save_state();
                if obs.observe(&batch).is_err() {
                    prop_assert_eq!(obs.save_state(), before);
                }
                let _ = obs.qparams();
            }
            Err(Error::InvalidConfig { parameter, reason }) => {
                let message = Error::InvalidConfig { parameter, reason }.to_string();
                prop_assert!(message.contains(&format!("`{parameter}`")), "{}", message);
            }
            Err(e) => prop_assert!(false, "not a configuration error: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(settings(cases(6).min(50)))]

    /// Tensors large enough to be cut into several pieces per channel: every thread count gives
    /// the same bits.
    #[test]
    fn large_tensors_give_the_same_bits_on_any_thread_count(
        k in 0..ObserverKind::ALL.len(),
        channels in 1usize..=3,
        inner in 140_000usize..300_000,
        seed in any::<u64>(),
        axis_last in any::<bool>(),
        channel_wise in any::<bool>(),
    ) {
        let kind = ObserverKind::ALL[k];
        let per_channel = match kind {
            ObserverKind::MovingAverageMinMax => false,
            ObserverKind::MovingAveragePerChannelMinMax => true,
            _ => channel_wise,
        };
        let mut quant = kind.default_config();
        if per_channel {
            quant = QuantConfig::per_channel(if axis_last { -1 } else { 0 });
        }
        let config = ObserverSpec { kind, quant, bins: None, percentile: None, update_interval: None, stride: Some(7).filter(|_| kind == ObserverKind::Mse), sync_histograms: false }
            .build()
            .unwrap()
            .save_state()
            .config;
        let values = common::random_values(channels * inner, seed);
        let shape = if axis_last { [inner, channels] } else { [channels, inner] };
        let batch = ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap();
        let batches = [batch.clone(), batch.mapv(|v| v * 0.5 - 0.25)];
        let default = run_standard(&config, &batches);
        for threads in [1, 3] {
            let pooled = pool(threads).install(|| run_standard(&config, &batches));
            prop_assert_eq!(pooled.bits(), default.bits(), "{} thread(s)", threads);
        }
    }
}
