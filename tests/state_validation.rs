//! The contradictions a saved observer state is checked for (`ObserverState::validate`, run by
//! `from_json` and by every load): repeated JSON keys, KL edges other than the observer's,
//! a window step and counts that do not follow from the batches, statistics without batches,
//! `min_val > max_val` where the observer cannot produce it. And the states the observers do
//! produce, which must all be accepted, including the ones where `min_val > max_val`.

mod common;

use common::random_values;
use qcalib::{
    Error, KlConfig, KlObserver, MinMaxObserver, MseConfig, MseObserver, Observer, ObserverState, PercentileConfig,
    PercentileObserver, QuantConfig,
};
use serde_json::{Value, json};

fn refused(v: &Value) -> String {
    match ObserverState::from_json(&v.to_string()) {
        Err(e @ Error::State(_)) => e.to_string(),
        other => panic!("expected a state error, got {other:?}"),
    }
}

fn json_of(obs: &dyn Observer) -> Value {
    serde_json::from_str(&obs.save_state().to_json().unwrap()).unwrap()
}

/// A KL observer in its second window (update_interval 3, 4 batches): a completed range and a
/// window of one batch.
fn kl_in_a_window() -> Value {
    let mut kl = KlObserver::new(KlConfig { update_interval: 3, ..Default::default() }).unwrap();
    for b in 1..=4 {
        kl.observe(&random_values(2000, b)).unwrap();
    }
    json_of(&kl)
}

#[test]
fn repeated_keys_are_refused_naming_the_key() {
    let good = kl_in_a_window().to_string();
    assert!(ObserverState::from_json(&good).is_ok());
    // At the top, in `config`, in `kl_window`: the first occurrence of a key, repeated.
    for key in ["\"batches\":", "\"bins\":", "\"width\":"] {
        let at = good.find(key).unwrap();
        let end = at + good[at..].find([',', '}']).unwrap();
        let repeated = format!("{},{}{}", &good[..end], &good[at..end], &good[end..]);
        let message = ObserverState::from_json(&repeated).unwrap_err().to_string();
        assert!(message.contains(&format!("duplicate key {}", &key[..key.len() - 1])), "{key}: {message}");
    }
    // The same key in different objects is not a repetition.
    assert!(qcalib::observer::state::parse_json_strict(r#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
}

#[test]
fn kl_edges_must_be_the_observers() {
    let good = kl_in_a_window();
    let n = good["kl_window"]["hist"].as_array().unwrap().len();
    assert_eq!(n, 512);
    let width = good["kl_window"]["width"].as_f64().unwrap() as f32;
    // The top edge of a first window is the batch's amax: its width is amax / bins.
    let top = good["kl_window"]["edges"][n].as_f64().unwrap() as f32;
    assert_eq!(top / 512.0, width);

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        refused(&v)
    };
    // The issue's case: a top edge of 3.4e38.
    let m = with(&|v| v["kl_window"]["edges"][n] = json!(3.4e38));
    assert!(m.contains(&format!("the top edge `edges[{n}]` 340000000000000000000000000000000000000")), "{m}");
    let m = with(&|v| v["kl_window"]["edges"][7] = json!(7.5 * width));
    assert!(m.contains("`edges[7]`"), "{m}");
    // Another width: every edge above 0 disagrees.
    let m = with(&|v| v["kl_window"]["width"] = json!(width * 2.0));
    assert!(m.contains("`edges[1]`") && m.contains("`width`"), "{m}");
    // A widened window ends at bins x width exactly.
    let widened = {
        let mut kl = KlObserver::new(KlConfig { update_interval: 3, ..Default::default() }).unwrap();
        kl.observe(&random_values(2000, 1)).unwrap();
        kl.observe(&random_values(2000, 2).iter().map(|v| v * 3.0).collect::<Vec<_>>()).unwrap();
        json_of(&kl)
    };
    let n = widened["kl_window"]["hist"].as_array().unwrap().len();
    assert!(n > 512, "the second batch widens the window");
    assert!(ObserverState::from_json(&widened.to_string()).is_ok());
    let mut v = widened.clone();
    v["kl_window"]["edges"][n] = json!(widened["kl_window"]["edges"][n].as_f64().unwrap() * 1.5);
    assert!(refused(&v).contains(&format!("`edges[{n}]`")));
}

#[test]
fn the_window_follows_from_the_batches() {
    let good = kl_in_a_window();
    assert_eq!((good["batches"].as_u64(), good["kl_window"]["step"].as_u64()), (Some(4), Some(1)));
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        refused(&v)
    };
    assert!(with(&|v| v["kl_window"]["step"] = json!(2)).contains("`step` 2 does not follow from `batches` 4"));
    assert!(with(&|v| v["batches"] = json!(5)).contains("`step` 1 does not follow from `batches` 5"));
    // One batch in the window adds at least one count.
    let m = with(&|v| {
        let zeros = vec![0u64; 512];
        v["kl_window"]["hist"] = json!(zeros);
    });
    assert!(m.contains("0 count(s) for `step` 1"), "{m}");
    // An empty window (step 0) holds nothing.
    let mut done = good.clone();
    done["batches"] = json!(3);
    done["kl_window"]["step"] = json!(0);
    assert!(refused(&done).contains("`step` 0 (no batch in the window)"));
    let mut empty = done.clone();
    empty["kl_window"] = json!({"hist": [], "edges": [], "width": 0.5, "zeros": 0, "step": 0});
    assert!(refused(&empty).contains("`width` 0.5 before the range has started"));
    empty["kl_window"]["width"] = json!(0.0);
    assert!(ObserverState::from_json(&empty.to_string()).is_ok());
}

/// Found by the fuzzer: parameters outside their domain were read, and failed only when the
/// state was loaded.
#[test]
fn parameters_outside_their_domain_are_refused_naming_them() {
    let good = kl_in_a_window();
    let mut v = good.clone();
    v["config"]["averaging_constant"] = json!(1.01);
    assert!(refused(&v).contains("`config`: invalid configuration: `averaging_constant` 1.01 is outside [0, 1]"));
    let mut v = good.clone();
    v["config"]["bins"] = json!(156);
    assert!(refused(&v).contains("`bins` 156 is less than 256"));
}

#[test]
fn statistics_need_their_batches() {
    let mut mm = MinMaxObserver::new(QuantConfig::default()).unwrap();
    mm.observe(&[1.0f32, -1.0][..]).unwrap();
    let good = json_of(&mm);
    let mut v = good.clone();
    v["batches"] = json!(0);
    assert!(refused(&v).contains("hold statistics but `batches` is 0"));
    let mut v = good.clone();
    v["min_val"] = json!([]);
    v["max_val"] = json!([]);
    assert!(refused(&v).contains("`batches` 1 but `min_val` and `max_val` are empty"));
    // KL: before the first window completes there are none.
    let kl = kl_in_a_window();
    let mut v = kl.clone();
    v["batches"] = json!(1);
    v["min_val"] = json!([]);
    v["max_val"] = json!([]);
    assert!(ObserverState::from_json(&v.to_string()).is_ok());
    v["min_val"] = kl["min_val"].clone();
    v["max_val"] = kl["max_val"].clone();
    assert!(refused(&v).contains("they need 3 batch(es)"));
    // With is_sync_quantize a rank can hold the others' statistics before its own batch.
    let mut v = good.clone();
    v["batches"] = json!(0);
    v["config"]["is_sync_quantize"] = json!(true);
    assert!(ObserverState::from_json(&v.to_string()).is_ok());
}

#[test]
fn min_above_max_is_refused_where_no_observer_produces_it() {
    // One batch of a min-max observer: the batch's own range.
    let mut mm = MinMaxObserver::new(QuantConfig::per_channel(0)).unwrap();
    mm.observe(&ndarray::array![[1.0f32, -1.0], [2.0, 0.5], [-3.0, -4.0]]).unwrap();
    let mut v = json_of(&mm);
    v["min_val"][2] = json!(100.0);
    v["max_val"][2] = json!(-100.0);
    assert!(refused(&v).contains("`min_val[2]` 100 is greater than `max_val[2]` -100"));
    // MSE, one batch.
    let mut mse = MseObserver::new(MseConfig::default()).unwrap();
    mse.observe(&random_values(500, 3)).unwrap();
    let mut v = json_of(&mse);
    v["min_val"][0] = json!(100.0);
    v["max_val"][0] = json!(-100.0);
    assert!(refused(&v).contains("`min_val[0]` 100 is greater than `max_val[0]` -100"));
    // Any number of batches with averaging_constant 0: the first batch's range stays.
    let mut frozen = MinMaxObserver::new(QuantConfig { averaging_constant: 0.0, ..Default::default() }).unwrap();
    for b in 1..=3 {
        frozen.observe(&random_values(100, b)).unwrap();
    }
    let mut v = json_of(&frozen);
    v["min_val"][0] = json!(100.0);
    v["max_val"][0] = json!(-100.0);
    assert!(refused(&v).contains("`min_val[0]` 100"));
    // KL: the range is ±amax.
    let mut v = kl_in_a_window();
    v["min_val"][0] = json!(100.0);
    v["max_val"][0] = json!(-100.0);
    assert!(refused(&v).contains("`min_val[0]` 100 and `max_val[0]` -100 are not `-amax` and `amax`"));
    let mut v = kl_in_a_window();
    v["min_val"][0] = json!(v["min_val"][0].as_f64().unwrap() * 0.5);
    assert!(refused(&v).contains("symmetric"));
}

/// The observers' own arithmetic can leave `min_val > max_val` (so a state holding it is not a
/// contradiction there): the moving average rounds in f32 (SPEC §2), and Percentile clips a
/// one-sided batch to a range whose ends cross (SPEC §4, step 5). These states are accepted and
/// resume bit for bit.
#[test]
fn states_the_observers_produce_with_min_above_max_are_accepted() {
    // averaging_constant 1: min = old + (cur - old) rounds to 0 when old is far larger than cur.
    let mut mm = MinMaxObserver::new(QuantConfig { averaging_constant: 1.0, ..Default::default() }).unwrap();
    mm.observe(&[-4.316_377_5e6f32, -5.542_816_7e-8][..]).unwrap();
    mm.observe(&[-3.413_237_7e-6f32][..]).unwrap();
    let (lo, hi) = (mm.min_val().unwrap()[0], mm.max_val().unwrap()[0]);
    assert!(lo > hi, "min {lo} max {hi}");
    // Percentile 0 of a batch in [0.5, 2]: the clip is the centre of bin 0, below the minimum.
    let mut p = PercentileObserver::new(PercentileConfig { percentile: 0.0, ..Default::default() }).unwrap();
    p.observe(&[0.5f32, 1.0, 2.0][..]).unwrap();
    let (plo, phi) = (p.min_val().unwrap()[0], p.max_val().unwrap()[0]);
    assert!(plo > phi, "min {plo} max {phi}");
    for obs in [&mut mm as &mut dyn Observer, &mut p] {
        let json = obs.save_state().to_json().unwrap();
        let mut resumed = ObserverState::from_json(&json).unwrap().into_observer().unwrap();
        resumed.observe(&[0.25f32, -0.75][..]).unwrap();
        obs.observe(&[0.25f32, -0.75][..]).unwrap();
        assert_eq!(resumed.save_state(), obs.save_state());
    }
}
