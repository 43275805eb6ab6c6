//! Per-channel Percentile, KL and Mix across ranks (SPEC §8), with ranks as threads
//! (`ThreadGroup`):
//!
//! - `is_sync_quantize`: every rank ends with the elementwise minimum of the ranks' `min_val` and
//!   maximum of their `max_val`, channel by channel;
//! - `sync_histograms` (KL): N ranks give exactly what one rank gives on the ranks' batches
//!   concatenated, per channel, window after window (states and qparams, bit for bit); a NaN
//!   on one rank, or ranks whose channel counts differ, fail every rank and change nothing.

mod common;

use std::sync::Arc;

use ndarray::{ArrayD, Axis, IxDyn, concatenate};
use qcalib::sync::ThreadGroup;
use qcalib::{
    KlConfig, KlObserver, Observer, ObserverConfig, ObserverState, PercentileConfig, QuantConfig, QuantDType,
    observe_all, qparams_all,
};

/// Runs `f(rank, group)` on `world` threads, one rank each; the results in rank order.
fn on_threads<T: Send>(world: usize, f: impl Fn(usize, ThreadGroup) -> T + Sync) -> Vec<T> {
    let ranks = ThreadGroup::new(world).unwrap();
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ranks.into_iter().enumerate().map(|(r, g)| s.spawn(move || f(r, g))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Rank `rank`'s batch `step`: `[rows, 5]` with channels on the last axis, each channel of its
/// own scale; channel 3 is all zeros in the first step (a KL window that starts late), and the
/// second step is wider (the windows widen).
fn shard(rank: usize, step: usize, rows: usize) -> ArrayD<f32> {
    let seed = 1000 * step as u64 + rank as u64;
    let values = common::random_values(rows * 5, seed);
    ArrayD::from_shape_fn(IxDyn(&[rows, 5]), |i| {
        let (r, c) = (i[0], i[1]);
        if c == 3 && step == 0 {
            return 0.0;
        }
        values[r * 5 + c] * (c + 1) as f32 * (1.0 + 0.4 * step as f32)
    })
}

fn bits(v: Option<&[f32]>) -> Vec<u32> {
    v.unwrap_or(&[]).iter().map(|x| x.to_bits()).collect()
}

/// `is_sync_quantize`: the elementwise minimum and maximum over the ranks of what each rank
/// would hold alone, for per-channel Percentile, KL and Mix.
#[test]
fn is_sync_quantize_reduces_each_channel() {
    let world = 3;
    let quant = QuantConfig { is_sync_quantize: true, ..QuantConfig::per_channel(-1) };
    let configs = [
        ObserverConfig::Percentile(PercentileConfig { percentile: 99.0, bins: 512, quant: quant.clone() }),
        ObserverConfig::Kl(KlConfig { update_interval: 2, quant: quant.clone(), ..Default::default() }),
        ObserverConfig::Mix(quant.clone()),
    ];
    for config in &configs {
        // Alone: each rank's statistics, with a per-channel observer of its own.
        let alone: Vec<(Vec<f32>, Vec<f32>)> = (0..world)
            .map(|rank| {
                let mut obs = config.build().unwrap();
                for step in 0..2 {
                    obs.observe(&shard(rank, step, 300 + 50 * rank)).unwrap();
                }
                (obs.min_val().unwrap().to_vec(), obs.max_val().unwrap().to_vec())
            })
            .collect();
        let want_min: Vec<f32> = (0..5).map(|c| alone.iter().map(|a| a.0[c]).fold(f32::INFINITY, f32::min)).collect();
        let want_max: Vec<f32> =
            (0..5).map(|c| alone.iter().map(|a| a.1[c]).fold(f32::NEG_INFINITY, f32::max)).collect();
        let synced = on_threads(world, |rank, group| {
            let mut obs = config.build().unwrap();
            obs.set_process_group(Arc::new(group));
            for step in 0..2 {
                obs.observe(&shard(rank, step, 300 + 50 * rank)).unwrap();
            }
            let q = obs.qparams().unwrap();
            (bits(obs.min_val()), bits(obs.max_val()), q.scale)
        });
        for (min, max, scale) in &synced {
            assert_eq!(min, &bits(Some(&want_min)), "{config:?}");
            assert_eq!(max, &bits(Some(&want_max)), "{config:?}");
            assert_eq!(scale, &synced[0].2);
        }
    }
}

/// `sync_histograms` per channel: three ranks (one of them with an empty batch in one step)
/// equal one rank on their batches concatenated along the rows, over two KL windows of two steps
/// (a channel that starts all-zero, widening), for qint8 and qint16.
#[test]
fn synced_histograms_equal_one_rank_on_the_concatenation_per_channel() {
    let world = 3;
    for dtype in [QuantDType::QInt8, QuantDType::QInt16] {
        let quant = QuantConfig { is_sync_quantize: true, dtype, ..QuantConfig::per_channel(1) };
        let config = KlConfig { update_interval: 2, sync_histograms: true, quant, ..Default::default() };
        let rows = |rank: usize, step: usize| if rank == 2 && step == 1 { 0 } else { 200 + 37 * rank };
        let steps = 4;
        let synced = on_threads(world, |rank, group| {
            let mut obs = KlObserver::new(config.clone()).unwrap();
            obs.set_process_group(Arc::new(group));
            let mut states = Vec::new();
            for step in 0..steps {
                obs.observe(&shard(rank, step % 2 + step / 2, rows(rank, step))).unwrap();
                states.push(obs.save_state());
            }
            (states, obs.qparams().unwrap().scale)
        });
        // One rank on the concatenation.
        let single = KlConfig { sync_histograms: false, quant: QuantConfig::per_channel(1), ..config.clone() };
        let single = KlConfig { quant: QuantConfig { dtype, ..single.quant }, ..single };
        let mut one = KlObserver::new(single).unwrap();
        for step in 0..steps {
            let parts: Vec<ArrayD<f32>> = (0..world).map(|r| shard(r, step % 2 + step / 2, rows(r, step))).collect();
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            one.observe(&concatenate(Axis(0), &views).unwrap()).unwrap();
            let want = one.save_state();
            for (rank, (states, _)) in synced.iter().enumerate() {
                let got = &states[step];
                assert_eq!(got.kl_channels, want.kl_channels, "{dtype:?} rank {rank} step {step}");
                assert_eq!(
                    (bits(Some(&got.min_val)), bits(Some(&got.max_val))),
                    (bits(Some(&want.min_val)), bits(Some(&want.max_val)))
                );
                assert_eq!(got.batches, want.batches);
            }
        }
        let want = one.qparams().unwrap().scale;
        for (_, scale) in &synced {
            assert_eq!(scale, &want, "{dtype:?}");
        }
    }
}

/// A NaN on one rank, or ranks whose batches have different channel counts, fail every rank's
/// batch and leave every state as it was; observe_all with per-channel and per-tensor observers
/// together works in the same rounds.
#[test]
fn a_bad_batch_on_one_rank_fails_every_rank_and_changes_nothing() {
    let quant = QuantConfig { is_sync_quantize: true, ..QuantConfig::per_channel(-1) };
    let config = KlConfig { update_interval: 3, sync_histograms: true, quant, ..Default::default() };
    let outcomes = on_threads(2, |rank, group| {
        let mut obs = KlObserver::new(config.clone()).unwrap();
        obs.set_process_group(Arc::new(group));
        obs.observe(&shard(rank, 0, 100)).unwrap();
        let before = obs.save_state();
        let mut nan = shard(rank, 1, 100);
        if rank == 1 {
            nan[[7, 2]] = f32::NAN;
        }
        let e1 = obs.observe(&nan).unwrap_err().to_string();
        let unchanged1 = obs.save_state() == before;
        let wrong = if rank == 0 { shard(rank, 1, 100) } else { ArrayD::zeros(IxDyn(&[100, 4])) };
        let e2 = obs.observe(&wrong).unwrap_err().to_string();
        let unchanged2 = obs.save_state() == before;
        (e1, unchanged1, e2, unchanged2)
    });
    for (rank, (e1, u1, e2, u2)) in outcomes.iter().enumerate() {
        assert!(*u1 && *u2, "rank {rank}: the state changed");
        assert!(e1.contains("non-finite"), "rank {rank}: {e1}");
        // Rank 1 holds the batch of another channel count; rank 0 hears that rank 1 failed.
        assert!(
            if rank == 1 { e2.contains("channel count") } else { e2.contains("rank 1 failed") },
            "rank {rank}: {e2}"
        );
    }

    // Per-channel and per-tensor KL observers of two tensors, observed and reduced together.
    let per_tensor = KlConfig {
        sync_histograms: true,
        quant: QuantConfig { is_sync_quantize: true, ..Default::default() },
        ..Default::default()
    };
    let per_channel = KlConfig { update_interval: 1, ..config.clone() };
    let results = on_threads(2, |rank, group| {
        let group = Arc::new(group);
        let mut a = KlObserver::new(per_channel.clone()).unwrap();
        let mut b = KlObserver::new(per_tensor.clone()).unwrap();
        a.set_process_group(group.clone());
        b.set_process_group(group);
        let (xa, xb) = (shard(rank, 1, 120), shard(rank, 0, 80));
        let mut observers: [&mut dyn Observer; 2] = [&mut a, &mut b];
        let outcomes = observe_all(&mut observers, &[(&xa).into(), (&xb).into()]).unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let q = qparams_all(&mut observers).unwrap();
        (q[0].as_ref().unwrap().scale.clone(), a.save_state())
    });
    assert_eq!(results[0].0.len(), 5);
    assert_eq!(results[0].0, results[1].0);
    let json = results[0].1.to_json().unwrap();
    assert_eq!(ObserverState::from_json(&json).unwrap(), results[0].1);
}
