//! Calibration state: every observer saves and restores its full state in the versioned JSON
//! format of `qcalib::observer::state`; a run interrupted after any batch resumes bit for bit;
//! states of another kind, other parameters or another version are refused.

mod common;

use common::random_values;
use ndarray::{Array2, ArrayD, IxDyn};
use qcalib::{
    Error, KlConfig, KlObserver, MinMaxObserver, MixObserver, MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver, MseConfig, MseObserver, Observer, ObserverConfig, ObserverState,
    PercentileConfig, PercentileObserver, QuantConfig, QuantDType,
};
use serde_json::{Value, json};

/// One configuration of every observer, and the KL corner cases (windows over several batches, a
/// window that starts with all-zero batches and widens).
fn configs() -> Vec<ObserverConfig> {
    vec![
        ObserverConfig::MinMax(QuantConfig { averaging_constant: 0.3, ..Default::default() }),
        ObserverConfig::MinMax(QuantConfig::per_channel(1)),
        ObserverConfig::MovingAverageMinMax(QuantConfig { dtype: QuantDType::QInt4, ..Default::default() }),
        ObserverConfig::MovingAveragePerChannelMinMax(QuantConfig::per_channel(0)),
        ObserverConfig::Percentile(PercentileConfig { percentile: 99.0, bins: 300, ..Default::default() }),
        ObserverConfig::Kl(KlConfig::default()),
        ObserverConfig::Kl(KlConfig { update_interval: 3, bins: 256, ..Default::default() }),
        ObserverConfig::Kl(KlConfig {
            update_interval: 4,
            quant: QuantConfig { dtype: QuantDType::QInt16, averaging_constant: 0.5, ..Default::default() },
            ..Default::default()
        }),
        ObserverConfig::Mse(MseConfig { stride: 3, ..Default::default() }),
        ObserverConfig::Mse(MseConfig { stride: 1, quant: QuantConfig::per_channel(-1) }),
        ObserverConfig::Mix(QuantConfig { quant_min: Some(-127), quant_max: Some(127), ..Default::default() }),
    ]
}

/// Seven batches: all zeros first (KL holds them back), then growing magnitudes (KL widens its
/// histogram), an empty batch in the middle (a no-op).
fn batches() -> Vec<ArrayD<f32>> {
    let mut out = vec![ArrayD::zeros(IxDyn(&[4, 96]))];
    for b in 1..7u64 {
        let shape = if b == 4 { vec![4, 0] } else { vec![4, 96] };
        let n = shape.iter().product();
        let values = random_values(n, b).into_iter().map(|v| v * b as f32).collect();
        out.push(ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap());
    }
    out
}

/// The state as JSON and the qparams as bits: equal strings are equal bits.
fn fingerprint(obs: &mut dyn Observer) -> String {
    let state = obs.save_state().to_json().unwrap();
    let q = obs.qparams().map(|q| q.scale.iter().map(|s| s.to_bits()).collect::<Vec<_>>());
    format!("{state} {:?}", q.map_err(|e| e.to_string()))
}

#[test]
fn an_interrupted_run_resumes_bit_for_bit_after_any_batch_for_every_observer() {
    let batches = batches();
    for config in configs() {
        // The uninterrupted run, fingerprinted after every batch.
        let mut whole = config.build().unwrap();
        let mut want = Vec::new();
        for b in &batches {
            whole.observe(b).unwrap();
            want.push(fingerprint(whole.as_mut()));
        }
        for cut in 0..=batches.len() {
            let mut first = config.build().unwrap();
            for b in &batches[..cut] {
                first.observe(b).unwrap();
            }
            let json = first.save_state().to_json().unwrap();
            drop(first); // the process ends here

            let state = ObserverState::from_json(&json).unwrap();
            let mut by_state = state.clone().into_observer().unwrap();
            let mut by_load = config.build().unwrap();
            by_load.load_state(&state).unwrap();
            for resumed in [&mut by_state, &mut by_load] {
                for (i, b) in batches.iter().enumerate().skip(cut) {
                    resumed.observe(b).unwrap();
                    assert_eq!(fingerprint(resumed.as_mut()), want[i], "{config:?}: cut after {cut}, batch {i}");
                }
            }
        }
    }
}

#[test]
fn saving_and_restoring_after_every_batch_changes_nothing() {
    let batches = batches();
    for config in configs() {
        let mut whole = config.build().unwrap();
        let mut chain = config.build().unwrap();
        for b in &batches {
            whole.observe(b).unwrap();
            chain.observe(b).unwrap();
            chain = ObserverState::from_json(&chain.save_state().to_json().unwrap()).unwrap().into_observer().unwrap();
        }
        assert_eq!(fingerprint(chain.as_mut()), fingerprint(whole.as_mut()), "{config:?}");
    }
}

#[test]
fn typed_observers_restore_their_own_states() {
    let x = Array2::from_shape_vec((4, 96), random_values(384, 9)).unwrap();
    macro_rules! check {
        ($ty:ident, $obs:expr) => {{
            let mut obs = $obs;
            obs.observe(&x).unwrap();
            let state = obs.save_state();
            let mut back = $ty::restore(&state).unwrap();
            assert_eq!(back.save_state(), state);
            assert_eq!(back.qparams().map_err(|e| e.to_string()), obs.qparams().map_err(|e| e.to_string()));
            // Another kind's state is refused, naming the kind.
            let other = MinMaxObserver::new(QuantConfig::per_channel(0)).unwrap().save_state();
            if state.kind() != other.kind() {
                let err = $ty::restore(&other).unwrap_err();
                assert!(
                    matches!(&err, Error::StateMismatch { parameter, .. } if parameter == "observer"),
                    "{err}"
                );
            }
        }};
    }
    check!(MinMaxObserver, MinMaxObserver::new(QuantConfig::per_channel(0)).unwrap());
    check!(MovingAverageMinMaxObserver, MovingAverageMinMaxObserver::new(QuantConfig::default()).unwrap());
    check!(
        MovingAveragePerChannelMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver::new(QuantConfig::per_channel(1)).unwrap()
    );
    check!(PercentileObserver, PercentileObserver::new(PercentileConfig::default()).unwrap());
    check!(KlObserver, KlObserver::new(KlConfig { update_interval: 2, ..Default::default() }).unwrap());
    check!(MseObserver, MseObserver::new(MseConfig::default()).unwrap());
    check!(MixObserver, MixObserver::new(QuantConfig::default()).unwrap());
}

#[test]
fn the_json_has_the_documented_fields() {
    let mut kl = KlObserver::new(KlConfig { update_interval: 2, ..Default::default() }).unwrap();
    kl.observe(&random_values(1000, 1)).unwrap();
    let v: Value = serde_json::from_str(&kl.save_state().to_json().unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["batches", "config", "format", "kl_window", "max_val", "min_val", "version"]);
    assert_eq!(v["format"], "qcalib-observer-state");
    assert_eq!(v["version"], 1);
    assert_eq!(v["batches"], 1);
    assert_eq!(v["config"]["observer"], "kl");
    assert_eq!(v["config"]["bins"], 512);
    assert_eq!(v["config"]["update_interval"], 2);
    assert_eq!(v["config"]["dtype"], "qint8");
    assert_eq!(v["min_val"], json!([]));
    let w = &v["kl_window"];
    assert_eq!(w["hist"].as_array().unwrap().len(), 512);
    assert_eq!(w["edges"].as_array().unwrap().len(), 513);
    assert_eq!(w["step"], 1);
    assert_eq!(w["hist"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>(), 1000);

    let mut mm = MinMaxObserver::new(QuantConfig::per_channel(0)).unwrap();
    mm.observe(&Array2::from_shape_vec((2, 2), vec![1.0f32, -2.0, 3.0, 0.5]).unwrap()).unwrap();
    let v: Value = serde_json::from_str(&mm.save_state().to_json().unwrap()).unwrap();
    assert!(v.get("kl_window").is_none());
    assert_eq!(v["config"]["observer"], "min-max");
    assert_eq!(v["config"]["qscheme"], "per_channel_symmetric");
    assert_eq!((v["min_val"].clone(), v["max_val"].clone()), (json!([-2.0, 0.5]), json!([1.0, 3.0])));
}

#[test]
fn every_f32_value_reads_back_bit_for_bit() {
    // min_val = max_val = the values of a [n, 1] tensor, per channel.
    let mut rng = qcalib::synthetic::Rng::new(11);
    let mut values: Vec<f32> =
        (0..50_000).map(|_| f32::from_bits(rng.next_u64() as u32)).filter(|v| v.is_finite()).collect();
    values.extend([0.0, -0.0, f32::MIN_POSITIVE, f32::MAX, -f32::MAX, 1e-45, -1e-45, 0.1, 1.0 / 3.0]);
    let n = values.len();
    let mut obs = MinMaxObserver::new(QuantConfig::per_channel(0)).unwrap();
    obs.observe(&Array2::from_shape_vec((n, 1), values.clone()).unwrap()).unwrap();
    let back = ObserverState::from_json(&obs.save_state().to_json().unwrap()).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.min_val), bits(&values));
    assert_eq!(bits(&back.max_val), bits(&values));
}

#[test]
fn every_f64_parameter_reads_back_bit_for_bit() {
    // The percentile is an f64: a state must give back exactly the configured one, or a resumed
    // run would compute with another and refuse the command's own configuration.
    let mut rng = qcalib::synthetic::Rng::new(12);
    for _ in 0..5000 {
        let percentile = 100.0 * rng.uniform();
        let obs = PercentileObserver::new(PercentileConfig { percentile, ..Default::default() }).unwrap();
        let back = ObserverState::from_json(&obs.save_state().to_json().unwrap()).unwrap();
        let ObserverConfig::Percentile(c) = &back.config else { panic!("{back:?}") };
        assert_eq!(c.percentile.to_bits(), percentile.to_bits(), "{percentile}");
        let mut again = PercentileObserver::new(PercentileConfig { percentile, ..Default::default() }).unwrap();
        again.load_state(&back).unwrap();
    }
}

// ---- refusals ---------------------------------------------------------------------------------

fn kl_state() -> (KlObserver, Value) {
    let mut kl = KlObserver::new(KlConfig { update_interval: 3, ..Default::default() }).unwrap();
    kl.observe(&random_values(2000, 1)).unwrap();
    kl.observe(&random_values(2000, 2)).unwrap();
    kl.observe(&random_values(2000, 3)).unwrap();
    kl.observe(&random_values(2000, 4)).unwrap();
    let v = serde_json::from_str(&kl.save_state().to_json().unwrap()).unwrap();
    (kl, v)
}

fn read(v: &Value) -> qcalib::Result<ObserverState> {
    ObserverState::from_json(&v.to_string())
}

fn state_error(v: &Value) -> String {
    match read(v) {
        Err(e @ Error::State(_)) => e.to_string(),
        other => panic!("expected a state error, got {other:?}"),
    }
}

#[test]
fn other_versions_and_formats_are_refused_with_a_clear_error() {
    let (_, good) = kl_state();
    assert!(read(&good).is_ok());
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v
    };
    // Version 2 (per-channel KL windows) is this build's newest.
    assert!(read(&with("version", json!(2))).is_ok());
    let newer = state_error(&with("version", json!(3)));
    assert!(newer.contains("version 3") && newer.contains("newer qcalib"), "{newer}");
    // A future version may change every field: the version is checked first.
    let future = json!({"format": "qcalib-observer-state", "version": 7, "something": "else"});
    assert!(state_error(&future).contains("newer qcalib"));
    assert!(state_error(&with("version", json!(0))).contains("unknown format version 0"));
    assert!(state_error(&with("version", json!("1"))).contains("version"));
    assert!(state_error(&with("format", json!("something-else"))).contains("not a qcalib observer state"));
    let mut no_format = good.clone();
    no_format.as_object_mut().unwrap().remove("format");
    assert!(state_error(&no_format).contains("no `format` field"));
    assert!(state_error(&json!([1, 2])).contains("not a qcalib observer state"));
    for text in ["", "{", "{\"format\": \"qcalib-observer-state\", \"ver", "null", "nan"] {
        assert!(ObserverState::from_json(text).is_err(), "{text:?}");
    }
    // A truncated file never reads as a state.
    let text = good.to_string();
    for cut in [1, text.len() / 3, text.len() / 2, text.len() - 1] {
        assert!(ObserverState::from_json(&text[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn unknown_and_missing_fields_are_refused() {
    let (_, good) = kl_state();
    let mut extra = good.clone();
    extra["colour"] = json!("blue");
    assert!(state_error(&extra).contains("colour"));
    let mut extra_config = good.clone();
    extra_config["config"]["colour"] = json!("blue");
    assert!(read(&extra_config).is_err());
    let mut no_batches = good.clone();
    no_batches.as_object_mut().unwrap().remove("batches");
    assert!(state_error(&no_batches).contains("batches"));
    let mut bad_kind = good.clone();
    bad_kind["config"]["observer"] = json!("magic");
    assert!(read(&bad_kind).is_err());
}

#[test]
fn contradictory_contents_are_refused_and_leave_the_observer_unchanged() {
    let (mut kl, good) = kl_state();
    let before = kl.save_state();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("`min_val` has 2 value(s) but `max_val` 1", Box::new(|v| v["min_val"] = json!([-1.0, -2.0]))),
        (
            "per-tensor observer with 2 values",
            Box::new(|v| {
                v["min_val"] = json!([-1.0, -2.0]);
                v["max_val"] = json!([1.0, 2.0]);
            }),
        ),
        (
            "without its `kl_window`",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("kl_window");
            }),
        ),
        ("`step` 3 is not below `update_interval` 3", Box::new(|v| v["kl_window"]["step"] = json!(3))),
        (
            "edges for",
            Box::new(|v| {
                v["kl_window"]["edges"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "bins, outside 512",
            Box::new(|v| {
                v["kl_window"]["hist"] = json!([1, 2, 3]);
                v["kl_window"]["edges"] = json!([0.0, 1.0, 2.0, 3.0]);
            }),
        ),
        ("no edges", Box::new(|v| v["kl_window"]["edges"] = json!([]))),
        ("counts add up", Box::new(|v| v["kl_window"]["hist"][0] = json!(u64::MAX))),
        ("held back", Box::new(|v| v["kl_window"]["zeros"] = json!(5))),
        ("`width`", Box::new(|v| v["kl_window"]["width"] = json!(-1.0))),
        ("`batches`", Box::new(|v| v["batches"] = json!(u64::MAX))),
    ];
    for (needle, edit) in cases {
        let mut v = good.clone();
        edit(&mut v);
        let message = state_error(&v);
        assert!(message.contains(needle), "{needle}: {message}");
        // Loading the same contents (bypassing from_json) is refused the same way.
        let unchecked: Result<ObserverState, _> = serde_json::from_value(v);
        if let Ok(state) = unchecked {
            assert!(kl.load_state(&state).is_err(), "{needle}");
            assert_eq!(kl.save_state(), before, "{needle}");
        }
    }
    // A KL window in another observer's state.
    let mut mm = MinMaxObserver::new(QuantConfig::default()).unwrap();
    mm.observe(&[1.0f32, -1.0][..]).unwrap();
    let mut state = mm.save_state();
    state.kl_window = before.kl_window.clone();
    assert!(mm.load_state(&state).unwrap_err().to_string().contains("`kl_window` in the state of a min-max"));
}

#[test]
fn a_state_of_another_kind_or_other_parameters_is_refused_naming_it() {
    let (_, good) = kl_state();
    let state = read(&good).unwrap();
    let mismatch = |obs: &mut dyn Observer| -> (String, String) {
        let before = obs.save_state();
        match obs.load_state(&state) {
            Err(Error::StateMismatch { parameter, saved, current }) => {
                assert_eq!(obs.save_state(), before, "the observer changed");
                (parameter, format!("{saved} / {current}"))
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    };
    let mut mm = MinMaxObserver::new(QuantConfig::default()).unwrap();
    mm.observe(&[3.0f32, -1.0][..]).unwrap();
    assert_eq!(mismatch(&mut mm), ("observer".into(), "kl / min-max".into()));
    let kl = |c: KlConfig| KlObserver::new(c).unwrap();
    let base = KlConfig { update_interval: 3, ..Default::default() };
    assert_eq!(mismatch(&mut kl(KlConfig { bins: 1024, ..base.clone() })), ("bins".into(), "512 / 1024".into()));
    assert_eq!(mismatch(&mut kl(KlConfig { update_interval: 2, ..base.clone() })).0, "update_interval");
    let q = |quant: QuantConfig| KlConfig { quant, ..base.clone() };
    assert_eq!(
        mismatch(&mut kl(q(QuantConfig { dtype: QuantDType::QInt4, ..Default::default() }))),
        ("dtype".into(), "\"qint8\" / \"qint4\"".into())
    );
    assert_eq!(
        mismatch(&mut kl(q(QuantConfig { averaging_constant: 0.5, ..Default::default() }))).0,
        "averaging_constant"
    );
    assert_eq!(
        mismatch(&mut kl(q(QuantConfig { quant_min: Some(-127), quant_max: Some(127), ..Default::default() }))).0,
        "quant_max"
    );
    let message = KlObserver::new(KlConfig { bins: 1024, ..base }).unwrap().load_state(&state).unwrap_err().to_string();
    assert_eq!(message, "observer state: saved with `bins` = 512, but this observer has `bins` = 1024");
}

#[test]
fn reset_observers_save_an_empty_state() {
    let (mut kl, _) = kl_state();
    kl.reset();
    let state = kl.save_state();
    assert_eq!((state.batches, state.min_val.len()), (0, 0));
    let mut back = state.into_observer().unwrap();
    assert!(matches!(back.qparams(), Err(Error::NoStatistics(_))));
}

/// Ranks of a data-parallel calibration (threads here) each save their state and resume in a
/// new group: `is_sync_quantize` (qparams after every batch, as the CLI's ranks do) and KL's
/// `sync_histograms` give the bits of the uninterrupted run.
#[test]
fn ranks_resume_bit_for_bit_in_a_new_group() {
    use qcalib::sync::ThreadGroup;
    use std::sync::Arc;
    const RANKS: usize = 2;
    let sync = QuantConfig { is_sync_quantize: true, ..Default::default() };
    let configs = [
        ObserverConfig::MinMax(QuantConfig { averaging_constant: 0.25, ..sync.clone() }),
        ObserverConfig::Kl(KlConfig {
            update_interval: 3,
            sync_histograms: true,
            quant: sync.clone(),
            ..Default::default()
        }),
        ObserverConfig::Kl(KlConfig { update_interval: 2, quant: sync, ..Default::default() }),
    ];
    let batch = |rank: usize, b: usize| {
        let v: Vec<f32> =
            random_values(500, (10 * rank + b) as u64).iter().map(|v| v * (1 + b + rank) as f32).collect();
        ArrayD::from_shape_vec(IxDyn(&[5, 100]), v).unwrap()
    };
    // Every rank runs `steps` batches from `first` on, starting from `saved` (or fresh); returns
    // each rank's state JSON and fingerprint.
    let run = |config: &ObserverConfig, saved: Option<Vec<String>>, steps: std::ops::Range<usize>| {
        let groups = ThreadGroup::new(RANKS).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .into_iter()
                .enumerate()
                .map(|(rank, group)| {
                    let (saved, steps) = (saved.clone(), steps.clone());
                    s.spawn(move || {
                        let mut obs = match &saved {
                            Some(states) => ObserverState::from_json(&states[rank]).unwrap().into_observer().unwrap(),
                            None => config.build().unwrap(),
                        };
                        obs.set_process_group(Arc::new(group));
                        for b in steps {
                            obs.observe(&batch(rank, b)).unwrap();
                            let _ = obs.qparams();
                        }
                        (obs.save_state().to_json().unwrap(), fingerprint(obs.as_mut()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        })
    };
    for config in &configs {
        let whole = run(config, None, 0..5);
        for cut in [1, 2, 4] {
            let first: Vec<String> = run(config, None, 0..cut).into_iter().map(|(json, _)| json).collect();
            let resumed = run(config, Some(first), cut..5);
            let want: Vec<&String> = whole.iter().map(|(_, f)| f).collect();
            let got: Vec<&String> = resumed.iter().map(|(_, f)| f).collect();
            assert_eq!(got, want, "{config:?}: cut after {cut}");
        }
    }
}
