//! `is_sync_quantize` across ranks: ranks as threads (ThreadGroup, and TcpGroup on loopback),
//! ranks as processes (the `qcalib` binary with torchrun's variables), and NCCL (on a GPU when
//! there is one; skipped and printed otherwise, a failure with `QCALIB_REQUIRE_GPU=1`).

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ndarray::Array2;
use qcalib::sync::{
    Contribution, NcclGroup, ProcessGroup, ReduceOp, Rendezvous, SingleRank, StoreRole, TcpGroup, ThreadGroup,
    probe_nccl,
};
use qcalib::{KlConfig, KlObserver, Observer, ObserverKind, ObserverSpec, QuantConfig};

use common::random_values;

/// The timeout of the tests whose ranks all arrive: only a failure waits for it.
const PATIENT: Duration = Duration::from_secs(30);

/// Runs `f(rank, group)` for every rank of a [`ThreadGroup`] of `world`, each on its thread.
fn on_threads<T: Send>(world: usize, timeout: Duration, f: impl Fn(usize, ThreadGroup) -> T + Sync) -> Vec<T> {
    let ranks = ThreadGroup::with_timeout(world, timeout).unwrap();
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ranks.into_iter().enumerate().map(|(r, g)| s.spawn(move || f(r, g))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn sync_config() -> QuantConfig {
    QuantConfig { is_sync_quantize: true, ..Default::default() }
}

// ---------------------------------------------------------------- the groups themselves

#[test]
fn thread_group_reduces_in_place_and_every_rank_agrees() {
    for world in 2..=4 {
        let results = on_threads(world, PATIENT, |rank, g| {
            let r = rank as f32;
            let mut min = [r, -r, 0.5 * r];
            let mut max = min;
            let mut sum = min;
            let mut counts = [rank as u64, 7, u64::MAX - 10];
            g.all_reduce_f32(&mut min, ReduceOp::Min).unwrap();
            g.all_reduce_f32(&mut max, ReduceOp::Max).unwrap();
            g.all_reduce_f32(&mut sum, ReduceOp::Sum).unwrap();
            g.all_reduce_u64(&mut counts[..2], ReduceOp::Sum).unwrap();
            g.all_reduce_u64(&mut counts[2..], ReduceOp::Max).unwrap();
            g.all_reduce_f32(&mut [], ReduceOp::Max).unwrap();
            (min, max, sum, counts)
        });
        let top = (world - 1) as f32;
        let total: f32 = (0..world).map(|r| r as f32).sum();
        for (min, max, sum, counts) in &results {
            assert_eq!(*min, [0.0, -top, 0.0]);
            assert_eq!(*max, [top, 0.0, 0.5 * top]);
            assert_eq!(*sum, [total, -total, 0.5 * total]);
            assert_eq!(*counts, [(world * (world - 1) / 2) as u64, 7 * world as u64, u64::MAX - 10]);
        }
    }
}

#[test]
fn a_rank_that_never_arrives_is_named_within_the_timeout() {
    let start = Instant::now();
    let results = on_threads(3, Duration::from_millis(300), |rank, g| {
        if rank == 2 {
            std::thread::sleep(Duration::from_millis(1500)); // alive, but too late
            return String::new();
        }
        g.all_reduce_u64(&mut [1], ReduceOp::Sum).unwrap_err().to_string()
    });
    assert!(results[0].contains("rank 2 did not reach collective #0 within 0.3 s"), "{}", results[0]);
    assert!(results[1].contains("rank 2"), "{}", results[1]);
    assert!(start.elapsed() < PATIENT);
}

#[test]
fn a_rank_that_leaves_fails_the_others_at_once() {
    let start = Instant::now();
    let results = on_threads(3, PATIENT, |rank, g| {
        g.all_reduce_u64(&mut [1], ReduceOp::Sum).unwrap();
        if rank == 1 {
            return String::new(); // the handle is dropped: the rank leaves
        }
        let e = g.all_reduce_u64(&mut [1], ReduceOp::Sum).unwrap_err().to_string();
        // The group is broken from now on.
        let again = g.all_reduce_u64(&mut [1], ReduceOp::Sum).unwrap_err().to_string();
        assert!(again.contains("broken"), "{again}");
        e
    });
    for e in [&results[0], &results[2]] {
        assert!(e.contains("rank 1 left the group before collective #1"), "{e}");
    }
    assert!(start.elapsed() < PATIENT / 2, "the ranks waited for the timeout");
}

#[test]
fn ranks_that_call_different_collectives_fail_together() {
    let results = on_threads(2, PATIENT, |rank, g| {
        let mut v = vec![1u64; 2 + rank];
        g.all_reduce_u64(&mut v, ReduceOp::Max).unwrap_err().to_string()
    });
    for e in &results {
        assert!(e.contains("different collectives") && e.contains("rank 1: 3 u64 (Max)"), "{e}");
    }
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rendezvous(rank: usize, world: usize, port: u16, timeout: Duration) -> Rendezvous {
    Rendezvous {
        rank,
        world_size: world,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        timeout,
        store: StoreRole::RankZero,
    }
}

#[test]
fn tcp_group_on_loopback_reduces_like_the_thread_group() {
    for world in [2, 4] {
        let port = free_port();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|rank| {
                    s.spawn(move || {
                        let g = rendezvous(rank, world, port, PATIENT).connect().unwrap();
                        assert_eq!((g.rank(), g.world_size()), (rank, world));
                        let mut out = Vec::new();
                        for round in 0..5u64 {
                            let mut x = [rank as f32 - round as f32, (rank * rank) as f32];
                            g.all_reduce_f32(&mut x, ReduceOp::Max).unwrap();
                            let mut n = [rank as u64 + round];
                            g.all_reduce_u64(&mut n, ReduceOp::Sum).unwrap();
                            out.push((x, n));
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let top = (world - 1) as f32;
        for out in &results {
            for (round, (x, n)) in out.iter().enumerate() {
                assert_eq!(*x, [top - round as f32, top * top]);
                assert_eq!(n[0], (world * (world - 1) / 2 + world * round) as u64);
            }
        }
    }
}

#[test]
fn tcp_group_names_the_rank_that_never_joins() {
    let port = free_port();
    let start = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                s.spawn(move || {
                    rendezvous(rank, 3, port, Duration::from_millis(500)).connect().unwrap_err().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in &errors {
        assert!(e.contains("rank 2 did not join"), "{e}");
    }
    assert!(start.elapsed() < PATIENT);
}

#[test]
fn tcp_store_refuses_a_second_process_with_the_same_rank() {
    let port = free_port();
    let (zero, one) = std::thread::scope(|s| {
        let zero = s.spawn(move || rendezvous(0, 2, port, PATIENT).connect().unwrap());
        let one = s.spawn(move || rendezvous(1, 2, port, PATIENT).connect().unwrap());
        (zero.join().unwrap(), one.join().unwrap())
    });
    let twin = rendezvous(1, 2, port, Duration::from_secs(2)).connect().unwrap_err().to_string();
    assert!(twin.contains("two processes were started with RANK=1"), "{twin}");
    drop(one); // rank 0's store waits for rank 1 to finish
    drop(zero);
}

// ---------------------------------------------------------------- observers over the groups

/// A 2-D batch whose magnitude depends on `seed`.
fn batch(seed: u64, scale: f32) -> Array2<f32> {
    let v = random_values(16 * 12, seed);
    Array2::from_shape_vec((16, 12), v.into_iter().map(|x| x * scale).collect()).unwrap()
}

fn spec(kind: ObserverKind, sync: bool) -> ObserverSpec {
    let mut quant = kind.default_config();
    quant.is_sync_quantize = sync;
    ObserverSpec {
        kind,
        quant,
        bins: None,
        percentile: None,
        update_interval: None,
        stride: (kind == ObserverKind::Mse).then_some(4),
        sync_histograms: false,
    }
}

#[test]
fn with_one_batch_per_rank_the_synced_scale_is_the_largest_single_rank_scale() {
    for kind in ObserverKind::ALL {
        for world in 2..=4 {
            let batches: Vec<Array2<f32>> = (0..world).map(|r| batch(r as u64, 0.5 + r as f32 * 0.75)).collect();
            let singles: Vec<Vec<f32>> = batches
                .iter()
                .map(|b| {
                    let mut obs = spec(kind, false).build().unwrap();
                    obs.observe(b).unwrap();
                    obs.qparams().unwrap().scale
                })
                .collect();
            let largest: Vec<f32> =
                (0..singles[0].len()).map(|c| singles.iter().map(|s| s[c]).fold(0.0, f32::max)).collect();
            let synced = on_threads(world, PATIENT, |rank, g| {
                let mut obs = spec(kind, true).build().unwrap();
                obs.set_process_group(Arc::new(g));
                obs.observe(&batches[rank]).unwrap();
                let q = obs.qparams().unwrap();
                (q, obs.min_val().unwrap().to_vec(), obs.max_val().unwrap().to_vec())
            });
            for (q, min, max) in &synced {
                assert_eq!(q.scale, largest, "{kind} with {world} ranks");
                assert_eq!((min, max), (&synced[0].1, &synced[0].2), "{kind}: every rank holds the same range");
            }
        }
    }
}

#[test]
fn a_rank_without_statistics_takes_the_others_and_the_average_continues_from_them() {
    let c = 0.25f32;
    let results = on_threads(3, PATIENT, |rank, g| {
        let quant = QuantConfig { averaging_constant: c, ..sync_config() };
        let mut obs = qcalib::MinMaxObserver::new(quant).unwrap();
        obs.set_process_group(Arc::new(g));
        // Step 1: rank 2 observes nothing.
        let first: [&[f32]; 3] = [&[-1.0, 2.0], &[-4.0, 1.0], &[]];
        obs.observe(first[rank]).unwrap();
        let q1 = obs.qparams().unwrap();
        let after1 = (obs.min_val().unwrap()[0], obs.max_val().unwrap()[0]);
        // Step 2: the moving average continues from the global [-4, 2] on every rank.
        let second: [&[f32]; 3] = [&[-2.0, 6.0], &[0.0, 1.0], &[-8.0, 0.0]];
        obs.observe(second[rank]).unwrap();
        let q2 = obs.qparams().unwrap();
        (q1.scale[0], after1, q2.scale[0], obs.min_val().unwrap()[0], obs.max_val().unwrap()[0])
    });
    let ma = qcalib::arith::moving_average;
    let (min2, max2) = (
        [ma(-4.0, -2.0, c), ma(-4.0, 0.0, c), ma(-4.0, -8.0, c)].into_iter().fold(f32::INFINITY, f32::min),
        [ma(2.0, 6.0, c), ma(2.0, 1.0, c), ma(2.0, 0.0, c)].into_iter().fold(f32::NEG_INFINITY, f32::max),
    );
    for r in &results {
        assert_eq!(r.0, 4.0 / 127.5);
        assert_eq!(r.1, (-4.0, 2.0));
        assert_eq!((r.3, r.4), (min2, max2));
        assert_eq!(r.2, qcalib::arith::scale(min2, max2, &QuantConfig::default().validate().unwrap()));
    }
}

#[test]
fn before_any_rank_has_statistics_every_rank_says_so() {
    let results = on_threads(2, PATIENT, |_, g| {
        let mut obs = qcalib::MinMaxObserver::new(sync_config()).unwrap();
        obs.set_process_group(Arc::new(g));
        let e = obs.qparams().unwrap_err();
        // Then the ranks go on together.
        obs.observe(&[1.0f32, -1.0][..]).unwrap();
        (matches!(e, qcalib::Error::NoStatistics(_)), obs.qparams().is_ok())
    });
    assert_eq!(results, vec![(true, true); 2]);
}

#[test]
fn different_channel_counts_fail_on_every_rank() {
    let results = on_threads(2, PATIENT, |rank, g| {
        let mut obs =
            qcalib::MinMaxObserver::new(QuantConfig { is_sync_quantize: true, ..QuantConfig::per_channel(0) }).unwrap();
        obs.set_process_group(Arc::new(g));
        obs.observe(&Array2::<f32>::ones((2 + rank, 3))).unwrap();
        obs.qparams().unwrap_err().to_string()
    });
    for e in &results {
        assert!(e.contains("different channel counts (2 to 3; rank 0: 2, rank 1: 3)"), "{e}");
    }
}

// ---------------------------------------------------------------- sync_histograms

fn kl_config(update_interval: usize, sync: bool) -> KlConfig {
    KlConfig {
        update_interval,
        sync_histograms: sync,
        quant: QuantConfig { is_sync_quantize: sync, ..Default::default() },
        ..Default::default()
    }
}

/// The batches of one KL scenario: `steps[s][i]` is batch `i` of step `s` (one per rank). Step 0
/// is all zeros (the range has not started), one batch is empty, the range widens at step 2,
/// and a second window starts at step 3 (with `update_interval = 3`).
fn kl_steps(world: usize) -> Vec<Vec<Vec<f32>>> {
    let step = |s: usize, scale: f32| -> Vec<Vec<f32>> {
        (0..world)
            .map(|i| {
                let n = 500 + 300 * i + 100 * s;
                random_values(n, (s * 10 + i) as u64).into_iter().map(|x| x * scale * (1.0 + i as f32 * 0.1)).collect()
            })
            .collect()
    };
    let mut zeros: Vec<Vec<f32>> = (0..world).map(|i| vec![0.0; 100 + i]).collect();
    zeros[world - 1] = vec![];
    let mut first = step(1, 1.0);
    first[0] = vec![];
    vec![zeros, first, step(2, 3.0), step(3, 0.5), step(4, 2.0)]
}

/// Every permutation of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn sync_histograms_equals_one_rank_on_the_concatenation_for_every_batch_order() {
    for world in 2..=4 {
        let steps = kl_steps(world);
        // One rank on the concatenation of each step's batches.
        let mut one = KlObserver::new(kl_config(3, false)).unwrap();
        let mut expected = Vec::new();
        for batches in &steps {
            let all: Vec<f32> = batches.concat();
            one.observe(&all).unwrap();
            expected.push((
                one.window().clone(),
                one.min_val().map(<[f32]>::to_vec),
                one.max_val().map(<[f32]>::to_vec),
            ));
        }
        let q_one = one.qparams().unwrap();
        assert_eq!(one.batches(), steps.len() as u64);

        for order in permutations(world) {
            let results = on_threads(world, PATIENT, |rank, g| {
                let mut obs = KlObserver::new(kl_config(3, true)).unwrap();
                obs.set_process_group(Arc::new(g));
                let mut seen = Vec::new();
                for batches in &steps {
                    obs.observe(&batches[order[rank]]).unwrap();
                    seen.push((
                        obs.window().clone(),
                        obs.min_val().map(<[f32]>::to_vec),
                        obs.max_val().map(<[f32]>::to_vec),
                    ));
                }
                (seen, obs.qparams().unwrap(), obs.batches())
            });
            for (rank, (seen, q, batches)) in results.iter().enumerate() {
                assert_eq!(seen, &expected, "{world} ranks, order {order:?}, rank {rank}");
                assert_eq!(q, &q_one, "{world} ranks, order {order:?}, rank {rank}");
                assert_eq!(*batches, steps.len() as u64);
            }
        }
    }
}

#[test]
fn sync_histograms_without_sync_differs_from_the_concatenation() {
    // The check above can fail: per-rank histograms (no sync_histograms) give another range.
    let steps = kl_steps(2);
    let mut one = KlObserver::new(kl_config(3, false)).unwrap();
    for batches in &steps[..4] {
        one.observe(&batches.concat()).unwrap();
    }
    let plain = on_threads(2, PATIENT, |rank, g| {
        let mut obs = KlObserver::new(KlConfig { sync_histograms: false, ..kl_config(3, true) }).unwrap();
        obs.set_process_group(Arc::new(g));
        for batches in &steps[..4] {
            obs.observe(&batches[rank]).unwrap();
        }
        obs.qparams().unwrap()
    });
    assert_ne!(plain[0], one.qparams().unwrap());
    assert_eq!(plain[0], plain[1], "is_sync_quantize still makes the ranks agree");
}

#[test]
fn sync_histograms_fails_every_rank_on_non_finite_values_and_keeps_the_state() {
    let results = on_threads(3, PATIENT, |rank, g| {
        let mut obs = KlObserver::new(kl_config(2, true)).unwrap();
        obs.set_process_group(Arc::new(g));
        obs.observe(&random_values(300, rank as u64)).unwrap();
        let before = obs.window().clone();
        let mut bad = random_values(300, 10 + rank as u64);
        if rank == 1 {
            bad[7] = f32::NAN;
            bad[8] = f32::INFINITY;
        }
        let e = obs.observe(&bad).unwrap_err();
        assert_eq!(obs.window(), &before, "rank {rank}: the state is unchanged");
        // The ranks go on together.
        obs.observe(&random_values(300, 20 + rank as u64)).unwrap();
        (e, obs.qparams().unwrap())
    });
    assert!(matches!(results[1].0, qcalib::Error::NonFinite { count: 2 }), "{}", results[1].0);
    for r in [0, 2] {
        let e = results[r].0.to_string();
        assert!(e.contains("rank 1 holds 2 non-finite value(s)"), "{e}");
    }
    assert!(results.iter().all(|r| r.1 == results[0].1));
}

#[test]
fn sync_histograms_needs_is_sync_quantize_and_the_same_settings_everywhere() {
    let e = KlObserver::new(KlConfig { sync_histograms: true, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("sync_histograms") && e.contains("is_sync_quantize"), "{e}");
    let results = on_threads(2, PATIENT, |rank, g| {
        let mut obs = KlObserver::new(kl_config(1 + rank, true)).unwrap();
        obs.set_process_group(Arc::new(g));
        obs.observe(&random_values(300, rank as u64)).unwrap_err().to_string()
    });
    for e in &results {
        assert!(e.contains("update_interval"), "{e}");
    }
}

// ---------------------------------------------------------------- many observers, one bucket

/// A group that has only the plain all-reduces, as NCCL: its buckets take the default path.
#[derive(Debug)]
struct PlainAllReduces(ThreadGroup);

impl ProcessGroup for PlainAllReduces {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world_size(&self) -> usize {
        self.0.world_size()
    }
    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> qcalib::Result<()> {
        self.0.all_reduce_f32(data, op)
    }
    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> qcalib::Result<()> {
        self.0.all_reduce_u64(data, op)
    }
}

/// Counts the collectives of a group: buckets and plain all-reduces.
#[derive(Debug)]
struct Counting {
    inner: Box<dyn ProcessGroup>,
    buckets: AtomicUsize,
    plain: AtomicUsize,
}

impl Counting {
    fn new(inner: Box<dyn ProcessGroup>) -> Self {
        Counting { inner, buckets: AtomicUsize::new(0), plain: AtomicUsize::new(0) }
    }
    fn counts(&self) -> (usize, usize) {
        (self.buckets.load(Ordering::SeqCst), self.plain.load(Ordering::SeqCst))
    }
}

impl ProcessGroup for Counting {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn all_reduce_f32(&self, data: &mut [f32], op: ReduceOp) -> qcalib::Result<()> {
        self.plain.fetch_add(1, Ordering::SeqCst);
        self.inner.all_reduce_f32(data, op)
    }
    fn all_reduce_u64(&self, data: &mut [u64], op: ReduceOp) -> qcalib::Result<()> {
        self.plain.fetch_add(1, Ordering::SeqCst);
        self.inner.all_reduce_u64(data, op)
    }
    fn all_reduce_bucket(&self, parts: &[Contribution]) -> qcalib::Result<Vec<qcalib::sync::Reduced>> {
        self.buckets.fetch_add(1, Ordering::SeqCst);
        self.inner.all_reduce_bucket(parts)
    }
}

/// Every rank's KL windows and qparams, one per tensor.
type RankResults = Vec<(Vec<qcalib::observer::KlWindow>, Vec<qcalib::QParams>)>;

/// The KL observers of `tensors` tensors on every rank, observed over `kl_steps` through
/// `observe_all` and `qparams_all`; returns every rank's windows and qparams, and the collectives
/// rank 0 ran.
fn many_kl(world: usize, tensors: usize, plain: bool) -> (RankResults, (usize, usize)) {
    let steps = kl_steps(world);
    let results = on_threads(world, PATIENT, |rank, g| {
        let inner: Box<dyn ProcessGroup> = if plain { Box::new(PlainAllReduces(g)) } else { Box::new(g) };
        let group = Arc::new(Counting::new(inner));
        let mut observers: Vec<KlObserver> = (0..tensors)
            .map(|_| {
                let mut o = KlObserver::new(kl_config(3, true)).unwrap();
                o.set_process_group(group.clone());
                o
            })
            .collect();
        for batches in &steps {
            // Tensor t sees the batch scaled by (1 + t / 8): every tensor its own range.
            let scaled: Vec<Vec<f32>> =
                (0..tensors).map(|t| batches[rank].iter().map(|x| x * (1.0 + t as f32 / 8.0)).collect()).collect();
            let inputs: Vec<qcalib::Input<'_>> = scaled.iter().map(|v| qcalib::Input::from(&v[..])).collect();
            let outcomes = qcalib::observe_all(&mut observers.iter_mut().collect::<Vec<_>>(), &inputs).unwrap();
            assert!(outcomes.iter().all(Result::is_ok));
        }
        let q: Vec<qcalib::QParams> = qcalib::qparams_all(&mut observers.iter_mut().collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        (observers.iter().map(|o| o.window().clone()).collect::<Vec<_>>(), q, group.counts())
    });
    let counts = results[0].2;
    (results.into_iter().map(|(w, q, _)| (w, q)).collect(), counts)
}

#[test]
fn many_observers_share_one_collective_per_round_and_give_what_each_gives_alone() {
    let (world, tensors) = (3, 24);
    let steps = kl_steps(world);
    let (results, (buckets, plain)) = many_kl(world, tensors, false);
    // Two rounds per step for all 24 tensors (one at the first step: its batches are zeros, no
    // histogram is due), two for the qparams; no plain all-reduce.
    let rounds = 2 * steps.len() - 1 + 2;
    assert_eq!((buckets, plain), (rounds, 0));
    // Each tensor as one observer alone on the concatenation of its batches.
    for t in [0, 17, tensors - 1] {
        let mut one = KlObserver::new(kl_config(3, false)).unwrap();
        for batches in &steps {
            let all: Vec<f32> = batches.concat().iter().map(|x| x * (1.0 + t as f32 / 8.0)).collect();
            one.observe(&all).unwrap();
        }
        for (rank, (windows, q)) in results.iter().enumerate() {
            assert_eq!(&windows[t], one.window(), "tensor {t}, rank {rank}");
            assert_eq!(q[t], one.qparams().unwrap(), "tensor {t}, rank {rank}");
        }
    }
    // The path of groups with only plain all-reduces (NCCL's) gives the same bits, in at most
    // three all-reduces per round.
    let (plain_results, (buckets, plain)) = many_kl(world, tensors, true);
    assert_eq!(plain_results, results);
    assert_eq!(buckets, rounds);
    assert!(plain <= 3 * buckets, "{plain} all-reduces for {buckets} buckets");
}

#[test]
fn the_plain_all_reduce_path_names_a_peer_with_invalid_values() {
    let mut ranks = ThreadGroup::with_timeout(2, Duration::from_secs(10)).unwrap();
    let one = PlainAllReduces(ranks.pop().unwrap());
    let zero = PlainAllReduces(ranks.pop().unwrap());
    let errors = std::thread::scope(|s| {
        let h =
            s.spawn(move || one.all_reduce_bucket(&[Contribution { maxs: vec![f32::INFINITY], ..Default::default() }]));
        let e0 = zero.all_reduce_bucket(&[Contribution { maxs: vec![1.0], ..Default::default() }]).unwrap_err();
        (e0.to_string(), h.join().unwrap().unwrap_err().to_string())
    });
    assert!(errors.0.contains("rank 1 sent invalid values"), "{}", errors.0);
    assert!(errors.1.contains("rank 1 sent invalid values (part 0)"), "{}", errors.1);
}

// ---------------------------------------------------------------- hostile or broken peers

/// Runs `honest` on rank 0 and `hostile` on rank 1 of a thread group; returns rank 0's result.
fn against<T: Send>(honest: impl FnOnce(ThreadGroup) -> T + Send, hostile: impl FnOnce(ThreadGroup) + Send) -> T {
    let mut ranks = ThreadGroup::with_timeout(2, Duration::from_secs(10)).unwrap();
    let one = ranks.pop().unwrap();
    let zero = ranks.pop().unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(move || hostile(one));
        let r = honest(zero);
        h.join().unwrap();
        r
    })
}

#[test]
fn a_peer_that_claims_huge_channel_counts_is_refused_naming_it() {
    // Before the fix, a peer's count became `vec![-inf; 2 * count]` on the other ranks.
    for (per_channel, observed, claim, expected) in [
        (
            false,
            false,
            1u64 << 40,
            "rank 1 claims statistics of 1099511627776 channels, more than this observer can hold (1)",
        ),
        (true, false, 1 << 40, "more than this observer can hold (16777216)"),
        (true, true, 1 << 27, "different channel counts (3 to 134217728; rank 0: 3, rank 1: 134217728)"),
    ] {
        let e = against(
            |g| {
                let quant = if per_channel { QuantConfig::per_channel(0) } else { QuantConfig::default() };
                let mut obs = qcalib::MinMaxObserver::new(QuantConfig { is_sync_quantize: true, ..quant }).unwrap();
                obs.set_process_group(Arc::new(g));
                if observed {
                    obs.observe(&Array2::<f32>::ones((3, 2))).unwrap();
                }
                let before = obs.save_state();
                let e = obs.qparams().unwrap_err().to_string();
                assert_eq!(obs.save_state(), before, "the state is unchanged");
                e
            },
            |g| {
                let _ = g.all_reduce_bucket(&[Contribution { gathered: vec![claim], ..Default::default() }]);
            },
        );
        assert!(e.contains(expected), "{e}");
    }
}

#[test]
fn non_finite_values_from_a_peer_are_refused_naming_it() {
    // A peer's +inf maximum or NaN minimum used to end in `scale inf` or `null`, exit 0.
    for (mins, maxs) in [(vec![-1.0f32], vec![f32::INFINITY]), (vec![f32::NAN], vec![1.0])] {
        let e = against(
            |g| {
                let mut obs = qcalib::MinMaxObserver::new(sync_config()).unwrap();
                obs.set_process_group(Arc::new(g));
                obs.observe(&[1.0f32, -2.0][..]).unwrap();
                obs.qparams().unwrap_err().to_string()
            },
            |g| {
                let _ = g.all_reduce_bucket(&[Contribution { gathered: vec![1], ..Default::default() }]);
                let _ = g.all_reduce_bucket(&[Contribution {
                    mins: mins.clone(),
                    maxs: maxs.clone(),
                    ..Default::default()
                }]);
            },
        );
        assert!(e.contains("rank 1 sent invalid values"), "{e}");
    }
    // A NaN largest |x| with sync_histograms.
    let e = against(
        |g| {
            let mut obs = KlObserver::new(kl_config(1, true)).unwrap();
            obs.set_process_group(Arc::new(g));
            let e = obs.observe(&random_values(100, 1)).unwrap_err().to_string();
            assert_eq!(obs.window(), &qcalib::observer::KlWindow::default());
            e
        },
        |g| {
            let header = Contribution {
                maxs: vec![f32::NAN],
                checks: vec![2048, 1, 0, 0],
                gathered: vec![100, 0, 0],
                ..Default::default()
            };
            let _ = g.all_reduce_bucket(&[header]);
        },
    );
    assert!(e.contains("rank 1 sent invalid values"), "{e}");
}

#[test]
fn a_peer_whose_histogram_does_not_count_its_batch_is_refused() {
    // A peer that said its batch held 100 values and sent a histogram of 2^40 counts changed
    // every rank's KL scale, exit 0.
    let bins = KlConfig::default().bins;
    for (claimed, counts) in [(100u64, 1u64 << 40), (100, 99), (0, 1)] {
        let e = against(
            |g| {
                let mut obs = KlObserver::new(kl_config(1, true)).unwrap();
                obs.set_process_group(Arc::new(g));
                let e = obs.observe(&random_values(100, 1)).unwrap_err().to_string();
                assert_eq!(obs.window(), &qcalib::observer::KlWindow::default(), "the state is unchanged");
                e
            },
            |g| {
                let header = Contribution {
                    maxs: vec![0.5],
                    checks: vec![bins as u64, 1, 0, 0],
                    gathered: vec![claimed, 0, 0],
                    ..Default::default()
                };
                let _ = g.all_reduce_bucket(&[header]);
                let mut sums = vec![0u64; bins];
                sums[0] = counts;
                let _ = g.all_reduce_bucket(&[Contribution { sums, gathered: vec![0], ..Default::default() }]);
            },
        );
        let held = format!("hold {}", 100 + claimed);
        assert!(e.contains("the summed histograms count") && e.contains(&held), "{claimed} {counts}: {e}");
    }
}

#[test]
fn a_peer_writing_junk_into_the_store_is_named_and_costs_nothing() {
    for junk_len in [7usize, 1 << 20] {
        let port = free_port();
        let e = std::thread::scope(|s| {
            let zero = s.spawn(move || {
                let g = rendezvous(0, 2, port, Duration::from_secs(20)).connect().unwrap();
                g.all_reduce_u64(&mut [1, 2], ReduceOp::Sum).unwrap_err().to_string()
            });
            // Rank 1 joins by the book, then writes junk as its part of collective #0.
            let store = qcalib::sync::TcpStore::connect(&format!("127.0.0.1:{port}"), PATIENT).unwrap();
            assert_eq!(store.add("qcalib/runs/1", 0).unwrap(), 0);
            store.add("qcalib/0/claim/1", 1).unwrap();
            store.add("qcalib/0/alive/1", 1).unwrap();
            store.set("qcalib/0/join/1", b"2").unwrap();
            let mut junk = vec![0u8; junk_len];
            junk[1] = 9;
            store.set("qcalib/0/ar/0/1/0", &junk).unwrap();
            store.set("qcalib/0/end/1", b"").unwrap(); // so that rank 0 need not linger for it
            zero.join().unwrap()
        });
        let expected = if junk_len > 100 {
            "rank 1 wrote 1048576 bytes under qcalib/0/ar/0/1/0"
        } else {
            "rank 1: 6 malformed bytes"
        };
        assert!(e.contains(expected), "{e}");
    }
}

#[test]
fn rank_0_does_not_linger_for_a_rank_it_saw_leave() {
    // Rank 0 named the rank whose heartbeat stopped, then waited for it once more (another 6 s
    // of heartbeat watching) before its store could close.
    let port = free_port();
    std::thread::scope(|s| {
        let zero = s.spawn(move || {
            let g = rendezvous(0, 2, port, Duration::from_secs(60)).connect().unwrap();
            let e = g.all_reduce_u64(&mut [1, 2], ReduceOp::Sum).unwrap_err().to_string();
            assert!(e.contains("rank 1 left"), "{e}");
            let start = Instant::now();
            drop(g);
            start.elapsed()
        });
        // Rank 1 joins by the book, beats twice, and is gone.
        let store = qcalib::sync::TcpStore::connect(&format!("127.0.0.1:{port}"), PATIENT).unwrap();
        store.add("qcalib/runs/1", 0).unwrap();
        store.add("qcalib/0/claim/1", 1).unwrap();
        store.add("qcalib/0/alive/1", 1).unwrap();
        store.set("qcalib/0/join/1", b"2").unwrap();
        std::thread::sleep(Duration::from_secs(1));
        store.add("qcalib/0/alive/1", 1).unwrap();
        drop(store);
        let dropping = zero.join().unwrap();
        assert!(dropping < Duration::from_secs(3), "rank 0 waited {dropping:?} for a rank it knew was gone");
    });
}

#[test]
fn the_store_closes_junk_connections_and_caps_those_in_their_handshake() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let server = qcalib::sync::StoreServer::serve("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let closed_soon = |mut c: TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 16];
        matches!(c.read(&mut b), Ok(0) | Err(_))
    };
    // Not the handshake: closed at once.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_soon(junk));
    // The handshake, then a key of 2^60 bytes, a value beyond 8 MiB, a count beyond 128 Ki keys,
    // an unknown query: each closed, having allocated nothing for it.
    let hello = [0u8, 0xCE, 0xF7, 0x85, 0x3C];
    for tail in [
        [&[1u8][..], &(1u64 << 60).to_le_bytes()].concat(),
        [&[1u8][..], &1u64.to_le_bytes(), b"k", &(9u64 << 20).to_le_bytes()].concat(),
        [&[11u8][..], &(1u64 << 40).to_le_bytes()].concat(),
        vec![99u8],
    ] {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&hello).unwrap();
        c.write_all(&tail).unwrap();
        assert!(closed_soon(c), "{tail:?}");
    }
    // 40 connections that say nothing: at most 32 wait for their handshake, the others are
    // closed at once; meanwhile a real client still gets in (it tries again).
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let client = qcalib::sync::TcpStore::connect(&addr.to_string(), Duration::from_secs(20)).unwrap();
    client.set("ok", b"1").unwrap();
    let mut refused = 0;
    for mut c in idle {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Ok(0)) {
            refused += 1;
        }
    }
    assert!(refused >= 8, "{refused} of 40 idle connections closed");
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(client.get("ok").unwrap(), b"1");
    assert_eq!(server.connections(), 1);
}

// ---------------------------------------------------------------- ranks as processes (the CLI)

#[cfg(feature = "cli")]
mod processes {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};

    use super::*;

    /// A fresh directory for one test's files.
    fn scratch(test: &str) -> PathBuf {
        common::scratch("sync", test)
    }

    /// The magic, version, length and header of a `.npy` file of `len` f32 values.
    fn npy_prefix(len: usize) -> Vec<u8> {
        common::npy_bytes("<f4", &common::shape_text(&[len]), &[])
    }

    fn write_npy(path: &Path, values: &[f32]) {
        common::write_npy_f32(path, &[values.len()], values);
    }

    /// Starts rank `rank` of `world` with torchrun's variables.
    fn spawn_rank(rank: usize, world: usize, port: u16, timeout_s: f64, args: &[String]) -> Child {
        Command::new(common::qcalib_bin())
            .args(args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("QCALIB_SYNC_TIMEOUT", timeout_s.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qcalib")
    }

    /// Runs one `qcalib` per entry of `args` as the ranks of one job, and waits for all.
    fn run_ranks(args: &[Vec<String>], timeout_s: f64) -> Vec<Output> {
        let port = free_port();
        let children: Vec<Child> =
            args.iter().enumerate().map(|(rank, a)| spawn_rank(rank, args.len(), port, timeout_s, a)).collect();
        children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
    }

    fn single_rank(args: &[String]) -> Output {
        Command::new(common::qcalib_bin()).args(args).env_remove("WORLD_SIZE").output().unwrap()
    }

    fn json(o: &Output) -> serde_json::Value {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn calibrate(observer: &str, extra: &[&str], files: &[PathBuf]) -> Vec<String> {
        let mut a: Vec<String> =
            ["calibrate", "--observer", observer, "--format", "json", "--device", "cpu"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(files.iter().map(|f| f.display().to_string()));
        a
    }

    #[test]
    fn processes_agree_and_take_the_largest_scale() {
        for world in [2, 4] {
            let dir = scratch(&format!("largest-{world}"));
            let files: Vec<PathBuf> = (0..world)
                .map(|r| {
                    let f = dir.join(format!("b{r}.npy"));
                    write_npy(
                        &f,
                        &random_values(2000, 100 + r as u64).iter().map(|x| x * (1.0 + r as f32)).collect::<Vec<_>>(),
                    );
                    f
                })
                .collect();
            let args: Vec<Vec<String>> =
                files.iter().map(|f| calibrate("min-max", &["--is-sync-quantize"], std::slice::from_ref(f))).collect();
            let outs: Vec<serde_json::Value> = run_ranks(&args, 30.0).iter().map(json).collect();
            let largest = files
                .iter()
                .map(|f| {
                    json(&single_rank(&calibrate("min-max", &[], std::slice::from_ref(f))))["scale"][0]
                        .as_f64()
                        .unwrap()
                })
                .fold(0.0, f64::max);
            for o in &outs {
                assert_eq!(o["scale"][0].as_f64().unwrap(), largest);
                for key in ["scale", "zero_point", "min_val", "max_val"] {
                    assert_eq!(o[key], outs[0][key], "{key}");
                }
            }
        }
    }

    #[test]
    fn processes_with_sync_histograms_equal_one_rank_on_the_concatenation() {
        let dir = scratch("kl");
        let world = 3;
        let steps = kl_steps(world);
        // Rank r's files: its batch of every step, except that rank 2 stops one step early (it then
        // observes nothing at the last step, together with the others).
        let mut files: Vec<Vec<PathBuf>> = vec![Vec::new(); world];
        let mut concatenated = Vec::new();
        for (s, batches) in steps.iter().enumerate() {
            let mut all = Vec::new();
            for (r, b) in batches.iter().enumerate() {
                if r == 2 && s == steps.len() - 1 {
                    continue;
                }
                let f = dir.join(format!("s{s}r{r}.npy"));
                write_npy(&f, b);
                files[r].push(f);
                all.extend(b);
            }
            let f = dir.join(format!("s{s}.npy"));
            write_npy(&f, &all);
            concatenated.push(f);
        }
        let extra = ["--update-interval", "3", "--is-sync-quantize", "--sync-histograms"];
        let args: Vec<Vec<String>> = files.iter().map(|f| calibrate("kl", &extra, f)).collect();
        let outs: Vec<serde_json::Value> = run_ranks(&args, 30.0).iter().map(json).collect();
        let one = json(&single_rank(&calibrate("kl", &["--update-interval", "3"], &concatenated)));
        for o in &outs {
            for key in ["scale", "zero_point", "min_val", "max_val"] {
                assert_eq!(o[key], one[key], "{key}");
            }
        }
    }

    /// The check: ten connections sending junk and huge length prefixes to rank 0's
    /// store leave it under 300 MB, and it fails cleanly (an exit status, no signal) when its
    /// peer never comes.
    #[cfg(target_os = "linux")]
    #[test]
    fn rank_0s_store_stays_small_under_junk_and_fails_cleanly_when_its_peer_never_comes() {
        use std::io::Write;
        use std::net::TcpStream;
        use std::os::unix::process::ExitStatusExt;
        let dir = scratch("junk");
        let a = dir.join("a.npy");
        write_npy(&a, &[1.0, -2.0]);
        let port = free_port();
        let start = Instant::now();
        // Under an address-space limit of 2 GiB, as a machine with a memory limit would run it:
        // a store that allocated what a peer announces before checking it would abort.
        let child = Command::new("bash")
            .args(["-c", "ulimit -v 2097152 && exec \"$0\" \"$@\""])
            .arg(common::qcalib_bin())
            .args(calibrate("min-max", &["--is-sync-quantize"], &[a]))
            .envs([("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("QCALIB_SYNC_TIMEOUT", "8")])
            .env("MASTER_PORT", port.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = format!("/proc/{}/status", child.id());
        let peak_kb = |text: &str| -> Option<u64> {
            text.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
        };
        let hello = [0u8, 0xCE, 0xF7, 0x85, 0x3C];
        let mut junk: Vec<TcpStream> = Vec::new();
        while junk.len() < 10 && start.elapsed() < Duration::from_secs(5) {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let bytes: Vec<u8> = match junk.len() % 5 {
                // A length prefix of 1 GiB (what the store before this one read first), then junk.
                0 => [
                    &[0xff, 0xff, 0xff, 0x3f][..],
                    &(0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>(),
                ]
                .concat(),
                1 => [&hello[..], &[1], &u64::MAX.to_le_bytes()].concat(),
                // A value of 8 MiB announced, half of it sent, the rest never.
                2 => [&hello[..], &[1], &1u64.to_le_bytes(), b"k", &(8u64 << 20).to_le_bytes(), &vec![7u8; 4 << 20]]
                    .concat(),
                3 => [&hello[..], &[11], &(1u64 << 40).to_le_bytes()].concat(),
                _ => [&hello[..], &[6], &(128u64 << 10).to_le_bytes(), &(8u64 << 10).to_le_bytes()].concat(),
            };
            let _ = c.write_all(&bytes);
            junk.push(c);
        }
        let mut peak = 0;
        while let Ok(text) = std::fs::read_to_string(&status) {
            match peak_kb(&text) {
                Some(kb) => peak = peak.max(kb),
                None => break, // a zombie: it has ended
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        drop(junk);
        eprintln!("rank 0's peak resident memory: {peak} kB");
        assert_eq!(o.status.signal(), None, "ended by a signal: {}", stderr(&o));
        assert!(!o.status.success());
        assert!(stderr(&o).contains("rank 1 did not join within 8.0 s"), "{}", stderr(&o));
        assert!(peak > 0 && peak < 300 * 1024, "peak resident memory {peak} kB");
        assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
    }

    #[test]
    fn a_world_size_beyond_the_limit_is_a_configuration_error() {
        let dir = scratch("world");
        let a = dir.join("a.npy");
        write_npy(&a, &[1.0, -2.0]);
        let o = Command::new(common::qcalib_bin())
            .args(calibrate("min-max", &["--is-sync-quantize"], &[a]))
            .envs([("WORLD_SIZE", "1000000000000"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")])
            .output()
            .unwrap();
        assert!(o.status.code().is_some_and(|c| c != 0), "{:?}", o.status);
        assert!(stderr(&o).contains("WORLD_SIZE") && stderr(&o).contains("65536"), "{}", stderr(&o));
    }

    #[test]
    fn a_rank_that_never_starts_fails_the_others_within_the_timeout() {
        let dir = scratch("never");
        let f = dir.join("b.npy");
        write_npy(&f, &[1.0, -2.0]);
        let port = free_port();
        let start = Instant::now();
        let args = calibrate("min-max", &["--is-sync-quantize"], &[f]);
        let children: Vec<Child> = (0..2).map(|r| spawn_rank(r, 3, port, 1.0, &args)).collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(!o.status.success());
            assert!(stderr(&o).contains("rank 2 did not join within 1.0 s"), "{}", stderr(&o));
        }
        assert!(start.elapsed() < PATIENT);
    }

    /// Starts 3 ranks where rank `victim`'s second batch is large (128 MB of zeros, a sparse file),
    /// kills it while it observes that batch (the file is memory-mapped then, so
    /// `/proc/PID/maps` names it; the other ranks are waiting for it), and returns the other
    /// ranks' outputs and how long they took. (Batch files must be regular files: a named pipe
    /// that blocks the victim is refused at once.)
    #[cfg(target_os = "linux")]
    fn kill_a_rank(victim: usize) -> (Vec<(usize, Output)>, Duration) {
        let dir = scratch(&format!("kill{victim}"));
        let (a, b) = (dir.join("a.npy"), dir.join("b.npy"));
        write_npy(&a, &[1.0, -2.0]);
        write_npy(&b, &[3.0, -1.0]);
        let large = dir.join("large.npy");
        let elements = 32usize << 20;
        let prefix = npy_prefix(elements);
        std::fs::write(&large, &prefix).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&large)
            .unwrap()
            .set_len((prefix.len() + 4 * elements) as u64)
            .unwrap();
        let port = free_port();
        let timeout_s = 60.0;
        let start = Instant::now();
        let mut children: Vec<(usize, Child)> = (0..3)
            .map(|r| {
                let second = if r == victim { large.clone() } else { b.clone() };
                (
                    r,
                    spawn_rank(
                        r,
                        3,
                        port,
                        timeout_s,
                        &calibrate("min-max", &["--is-sync-quantize"], &[a.clone(), second]),
                    ),
                )
            })
            .collect();
        let pid = children[victim].1.id();
        let observing =
            || std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| maps.contains("large.npy"));
        while !observing() {
            assert!(start.elapsed() < PATIENT, "the victim never mapped its large batch");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (_, mut child) = children.remove(victim);
        child.kill().unwrap();
        let _ = child.wait();
        let outs: Vec<(usize, Output)> =
            children.into_iter().map(|(r, c)| (r, c.wait_with_output().unwrap())).collect();
        let took = start.elapsed();
        assert!(took < Duration::from_secs_f64(timeout_s / 2.0), "the ranks waited for the timeout: {took:?}");
        (outs, took)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_rank_fails_the_others_at_once_naming_it() {
        let (outs, _) = kill_a_rank(1);
        for (r, o) in outs {
            assert!(!o.status.success(), "rank {r}");
            assert!(stderr(&o).contains("rank 1 left"), "rank {r}: {}", stderr(&o));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_rank_0_fails_the_others_at_once_naming_it() {
        let (outs, _) = kill_a_rank(0);
        for (r, o) in outs {
            assert!(!o.status.success(), "rank {r}");
            assert!(stderr(&o).contains("store of rank 0"), "rank {r}: {}", stderr(&o));
        }
    }

    #[test]
    fn a_rank_that_cannot_read_its_batch_stops_every_rank() {
        let dir = scratch("unreadable");
        let a = dir.join("a.npy");
        write_npy(&a, &[1.0, -2.0]);
        let args = vec![
            calibrate("min-max", &["--is-sync-quantize"], &[a.clone(), dir.join("missing.npy")]),
            calibrate("min-max", &["--is-sync-quantize"], &[a.clone(), a.clone()]),
        ];
        let outs = run_ranks(&args, 30.0);
        assert!(stderr(&outs[0]).contains("missing.npy"), "{}", stderr(&outs[0]));
        assert!(stderr(&outs[1]).contains("rank(s) 0 could not read its batch at step 2"), "{}", stderr(&outs[1]));
        assert!(outs.iter().all(|o| !o.status.success()));
    }

    #[test]
    fn ranks_started_with_different_settings_refuse_to_calibrate() {
        let dir = scratch("settings");
        let a = dir.join("a.npy");
        write_npy(&a, &[1.0, -2.0]);
        let args = vec![
            calibrate("min-max", &["--is-sync-quantize"], std::slice::from_ref(&a)),
            calibrate("min-max", &["--is-sync-quantize", "--averaging-constant", "0.5"], std::slice::from_ref(&a)),
        ];
        for o in run_ranks(&args, 30.0) {
            assert!(stderr(&o).contains("different observer settings"), "{}", stderr(&o));
        }
    }

    #[test]
    fn without_the_variables_is_sync_quantize_is_one_rank() {
        let dir = scratch("alone");
        let a = dir.join("a.npy");
        write_npy(&a, &[1.0, -2.0]);
        let o = json(&single_rank(&calibrate(
            "kl",
            &["--is-sync-quantize", "--sync-histograms"],
            std::slice::from_ref(&a),
        )));
        let plain = json(&single_rank(&calibrate("kl", &[], &[a])));
        assert_eq!(o, plain);
    }

    fn write_safetensors(path: &Path, tensors: &[(&str, Vec<f32>)]) {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes: Vec<Vec<u8>> =
            tensors.iter().map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, v), b)| (*name, TensorView::new(Dtype::F32, vec![v.len()], b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn safetensors_ranks_sync_every_tensor_and_must_hold_the_same_names() {
        let dir = scratch("safetensors");
        let files: Vec<PathBuf> = (0..2)
            .map(|r| {
                let f = dir.join(format!("r{r}.safetensors"));
                let scale = 1.0 + r as f32;
                write_safetensors(
                    &f,
                    &[
                        ("w", random_values(500, r).iter().map(|x| x * scale).collect()),
                        ("act", random_values(700, 10 + r).iter().map(|x| x / scale).collect()),
                    ],
                );
                f
            })
            .collect();
        let extra = ["--is-sync-quantize", "--sync-histograms"];
        let args: Vec<Vec<String>> = files.iter().map(|f| calibrate("kl", &extra, std::slice::from_ref(f))).collect();
        let outs: Vec<serde_json::Value> = run_ranks(&args, 30.0).iter().map(json).collect();
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0].as_object().map(|o| o.len()), Some(2));

        let other = dir.join("other.safetensors");
        write_safetensors(&other, &[("w", vec![1.0, 2.0])]);
        let args = vec![args[0].clone(), calibrate("kl", &extra, &[other])];
        for o in run_ranks(&args, 30.0) {
            assert!(stderr(&o).contains("the ranks hold different tensors at step 1"), "{}", stderr(&o));
        }
    }

    #[test]
    fn nccl_through_the_cli_without_nccl_is_a_clear_error_on_every_rank() {
        if let Ok(info) = probe_nccl(0) {
            eprintln!("SKIPPED: NCCL works here ({info:?})");
            return;
        }
        let dir = scratch("nccl");
        let a = dir.join("a.npy");
        write_npy(&a, &[1.0, -2.0]);
        let mut args = calibrate("min-max", &["--is-sync-quantize"], &[a]);
        let at = args.iter().position(|x| x == "cpu").unwrap();
        args[at] = "cuda".into();
        for o in run_ranks(&[args.clone(), args], 30.0) {
            assert!(!o.status.success());
            assert!(stderr(&o).contains("NCCL was asked for"), "{}", stderr(&o));
        }
    }

    /// Two `--device cuda --is-sync-quantize` ranks (NCCL, one GPU each) give the qparams of two
    /// CPU ranks (the TCP store) on the same shards, for every observer, and for KL with and
    /// without `--sync-histograms`.
    #[test]
    fn nccl_with_two_cuda_processes_equals_two_cpu_processes() {
        let Some(ordinals) = super::two_rank_ordinals() else { return };
        if ordinals != [0, 1] {
            return eprintln!("SKIPPED: two cuda ranks of the CLI need two GPUs (cuda:$LOCAL_RANK)");
        }
        let dir = scratch("nccl-vs-cpu");
        let shards: Vec<Vec<PathBuf>> = (0..2)
            .map(|r| {
                (0..2)
                    .map(|step| {
                        let f = dir.join(format!("r{r}s{step}.npy"));
                        let scale = 1.0 + r as f32 + 0.5 * step as f32;
                        let values: Vec<f32> = random_values(3000 + 517 * r, 7 + 10 * r as u64 + step as u64)
                            .iter()
                            .map(|x| x * scale)
                            .collect();
                        write_npy(&f, &values);
                        f
                    })
                    .collect()
            })
            .collect();
        let configs: [(&str, &[&str]); 8] = [
            ("min-max", &[]),
            ("moving-average-min-max", &[]),
            ("percentile", &["--bins", "512"]),
            ("kl", &["--update-interval", "2"]),
            ("kl", &["--update-interval", "1", "--sync-histograms"]),
            ("kl", &["--update-interval", "2", "--sync-histograms"]),
            ("mse", &[]),
            ("mix", &[]),
        ];
        for (observer, extra) in configs {
            let extra: Vec<&str> = extra.iter().copied().chain(["--is-sync-quantize"]).collect();
            let on = |device: &str| -> Vec<serde_json::Value> {
                let args: Vec<Vec<String>> = shards
                    .iter()
                    .map(|files| {
                        let mut a = calibrate(observer, &extra, files);
                        let at = a.iter().position(|x| x == "cpu").unwrap();
                        a[at] = device.into();
                        a
                    })
                    .collect();
                run_ranks(&args, 60.0).iter().map(json).collect()
            };
            let (cpu, cuda) = (on("cpu"), on("cuda"));
            for (rank, o) in cuda.iter().enumerate() {
                assert_eq!(o["device"], format!("cuda:{rank}"), "{observer} {extra:?}");
                for key in ["scale", "zero_point", "min_val", "max_val"] {
                    assert_eq!(o[key], cpu[0][key], "{observer} {extra:?}: {key} of cuda rank {rank}");
                    assert_eq!(cpu[rank][key], cpu[0][key], "{observer} {extra:?}: {key} of cpu rank {rank}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- NCCL

/// Whether this machine must have a working GPU and NCCL (the GPU machine's script sets it).
fn gpu_required() -> bool {
    std::env::var("QCALIB_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

#[test]
fn nccl_asked_for_without_nccl_is_a_clear_error_on_every_rank() {
    if let Ok(info) = probe_nccl(0) {
        eprintln!("SKIPPED: NCCL works here ({info:?}); the GPU tests below cover it");
        return;
    }
    let e = NcclGroup::new(Arc::new(SingleRank), 0, PATIENT).unwrap_err().to_string();
    assert!(e.contains("NCCL was asked for, but on rank 0: NCCL cannot run on cuda:0"), "{e}");
    let errors = on_threads(2, PATIENT, |_, g| NcclGroup::new(Arc::new(g), 0, PATIENT).unwrap_err().to_string());
    for (rank, e) in errors.iter().enumerate() {
        assert!(e.contains(&format!("on rank {rank}: NCCL cannot run")), "{e}");
        assert!(e.contains(&format!("(and on rank {})", 1 - rank)), "{e}");
    }
}

/// The GPU and NCCL, or `None` (printed) when this machine has none.
fn gpu() -> Option<qcalib::sync::NcclInfo> {
    match probe_nccl(0) {
        Ok(info) => {
            let (a, b, c) = info.nccl_semver();
            eprintln!("NCCL {a}.{b}.{c}, {} CUDA device(s), driver {}", info.devices, info.driver_version);
            Some(info)
        }
        Err(e) if gpu_required() => panic!("QCALIB_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("SKIPPED (no GPU or no NCCL): {e}");
            None
        }
    }
}

#[test]
fn nccl_with_one_rank_on_the_gpu() {
    let Some(_) = gpu() else { return };
    let g = NcclGroup::new(Arc::new(SingleRank), 0, PATIENT).unwrap();
    let mut x = [1.5f32, -2.0, 0.0];
    g.all_reduce_f32(&mut x, ReduceOp::Min).unwrap();
    assert_eq!(x, [1.5, -2.0, 0.0]);
    let mut n = [3u64, u64::MAX];
    g.all_reduce_u64(&mut n, ReduceOp::Sum).unwrap();
    assert_eq!(n, [3, u64::MAX]);
    g.all_reduce_f32(&mut [], ReduceOp::Max).unwrap();
    let mut obs = KlObserver::new(kl_config(1, true)).unwrap();
    obs.set_process_group(Arc::new(g));
    obs.observe(&random_values(1000, 1)).unwrap();
    assert!(obs.qparams().unwrap().scale[0] > 0.0);
}

/// The GPU ordinals for two ranks as threads: two GPUs, or one GPU shared when NCCL allows it
/// (2.30 or later with `NCCL_MULTI_RANK_GPU_ENABLE=1`); `None` (printed) otherwise.
fn two_rank_ordinals() -> Option<Vec<usize>> {
    let info = gpu()?;
    if info.devices >= 2 {
        return Some(vec![0, 1]);
    }
    let shared = std::env::var("NCCL_MULTI_RANK_GPU_ENABLE").is_ok_and(|v| v == "1");
    if info.nccl_version >= 23000 && shared {
        return Some(vec![0, 0]);
    }
    eprintln!(
        "SKIPPED: two NCCL ranks need two GPUs, or one GPU with NCCL >= 2.30 and NCCL_MULTI_RANK_GPU_ENABLE=1 \
         (here: {} device(s), NCCL {:?}, NCCL_MULTI_RANK_GPU_ENABLE {})",
        info.devices,
        info.nccl_semver(),
        if shared { "=1" } else { "unset" }
    );
    None
}

#[test]
fn nccl_with_two_ranks_as_threads() {
    let Some(ordinals) = two_rank_ordinals() else { return };
    let groups = NcclGroup::threads(&ordinals, PATIENT).unwrap();
    let steps = kl_steps(2);
    let mut one = KlObserver::new(kl_config(3, false)).unwrap();
    for batches in &steps {
        one.observe(&batches.concat()).unwrap();
    }
    let q_one = one.qparams().unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let steps = &steps;
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(rank, g)| {
                s.spawn(move || {
                    let mut x = [rank as f32, -(rank as f32)];
                    g.all_reduce_f32(&mut x, ReduceOp::Max).unwrap();
                    let mut n = [rank as u64 + 1];
                    g.all_reduce_u64(&mut n, ReduceOp::Sum).unwrap();
                    let mut obs = KlObserver::new(kl_config(3, true)).unwrap();
                    obs.set_process_group(Arc::new(g));
                    for batches in steps {
                        obs.observe(&batches[rank]).unwrap();
                    }
                    (x, n, obs.qparams().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (x, n, q) in results {
        assert_eq!((x, n), ([1.0, 0.0], [3]));
        assert_eq!(q, q_one);
    }
}

#[test]
fn nccl_with_two_ranks_buckets_equal_the_cpu_groups_and_fail_together() {
    let Some(ordinals) = two_rank_ordinals() else { return };
    // Rank r's parts: every kind of array, a rank with nothing, checks that differ.
    let parts = |r: usize| {
        vec![
            Contribution {
                mins: vec![-1.5 * r as f32, -0.0, 3.0],
                maxs: vec![2.0 + r as f32, 0.0, 4.0],
                sums: vec![1 << 40, r as u64, 7],
                checks: vec![42, r as u64],
                gathered: vec![10 + r as u64],
            },
            Contribution {
                mins: if r == 0 { vec![f32::INFINITY] } else { vec![0.25] },
                maxs: if r == 0 { vec![f32::NEG_INFINITY] } else { vec![0.5] },
                ..Default::default()
            },
        ]
    };
    let run = |groups: Vec<Box<dyn ProcessGroup>>, parts: &(dyn Fn(usize) -> Vec<Contribution> + Sync)| {
        std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .into_iter()
                .enumerate()
                .map(|(r, g)| s.spawn(move || g.all_reduce_bucket(&parts(r)).map_err(|e| e.to_string())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        })
    };
    let boxed_nccl = || -> Vec<Box<dyn ProcessGroup>> {
        NcclGroup::threads(&ordinals, PATIENT)
            .unwrap()
            .into_iter()
            .map(|g| Box::new(g) as Box<dyn ProcessGroup>)
            .collect()
    };
    let boxed_cpu = || -> Vec<Box<dyn ProcessGroup>> {
        ThreadGroup::with_timeout(2, PATIENT)
            .unwrap()
            .into_iter()
            .map(|g| Box::new(g) as Box<dyn ProcessGroup>)
            .collect()
    };
    let nccl = run(boxed_nccl(), &parts);
    assert_eq!(nccl, run(boxed_cpu(), &parts));
    let reduced = nccl[0].as_ref().unwrap();
    assert_eq!((reduced[0].mins[0], reduced[0].maxs[0], reduced[0].sums[0]), (-1.5, 3.0, 2 << 40));
    assert_eq!((reduced[1].mins.as_slice(), reduced[1].maxs.as_slice()), (&[0.25f32][..], &[0.5f32][..]));
    assert_eq!(nccl[1].as_ref().unwrap()[0].checks_differ, vec![0]);

    // Different lengths, and invalid values on one rank: an error on both ranks, never a hang.
    let uneven = |r: usize| vec![Contribution { sums: vec![1; 3 + r], ..Default::default() }];
    for e in run(boxed_nccl(), &uneven) {
        assert!(e.as_ref().unwrap_err().contains("buckets of different lengths"), "{e:?}");
    }
    let invalid =
        |r: usize| vec![Contribution { maxs: vec![if r == 1 { f32::NAN } else { 1.0 }], ..Default::default() }];
    for e in run(boxed_nccl(), &invalid) {
        assert!(e.as_ref().unwrap_err().contains("rank 1 sent invalid values"), "{e:?}");
    }
    // A u64 sum beyond 2^64 - 1 fails both ranks.
    let over = |_: usize| vec![Contribution { sums: vec![u64::MAX - 1], ..Default::default() }];
    for e in run(boxed_nccl(), &over) {
        assert!(e.as_ref().unwrap_err().contains("overflows"), "{e:?}");
    }
}

#[test]
fn nccl_with_two_ranks_u64_sums_are_exact_and_an_overflow_is_an_error_on_every_rank() {
    let Some(ordinals) = two_rank_ordinals() else { return };
    let groups = NcclGroup::threads(&ordinals, PATIENT).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(rank, g)| {
                s.spawn(move || {
                    let mut fits = [if rank == 0 { u64::MAX - 5 } else { 3 }, 1 << 40, rank as u64];
                    g.all_reduce_u64(&mut fits, ReduceOp::Sum).unwrap();
                    let mut overflows = [1, u64::MAX - rank as u64];
                    let e = g.all_reduce_u64(&mut overflows, ReduceOp::Sum).unwrap_err().to_string();
                    (fits, e)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, (fits, e)) in results.into_iter().enumerate() {
        assert_eq!(fits, [u64::MAX - 2, 1 << 41, 1], "rank {rank}");
        assert!(e.contains("a u64 sum overflows (element 1)"), "rank {rank}: {e}");
    }
}

#[test]
fn nccl_with_two_ranks_over_a_tcp_store() {
    let Some(ordinals) = two_rank_ordinals() else { return };
    let port = free_port();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ordinals
            .iter()
            .enumerate()
            .map(|(rank, &ordinal)| {
                s.spawn(move || {
                    let tcp: Arc<dyn ProcessGroup> =
                        Arc::new(TcpGroup::connect(&rendezvous(rank, 2, port, PATIENT)).unwrap());
                    let g = NcclGroup::new(tcp, ordinal, PATIENT).unwrap();
                    let mut x = [rank as f32 - 0.5];
                    g.all_reduce_f32(&mut x, ReduceOp::Min).unwrap();
                    x[0]
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, vec![-0.5, -0.5]);
}
