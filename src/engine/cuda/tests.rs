//! The CUDA engine against the CPU engine, op by op. Without a usable GPU the GPU tests print
//! that they are skipped and pass; with `QCALIB_REQUIRE_GPU=1` a missing GPU fails them. The
//! checks of the embedded PTX and of the probe run everywhere.

use std::sync::Arc;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use super::context::all_kernels;
use super::histogram::MAX_SHARED_BINS;
use super::{CudaEngine, CudaStatus, cuda_status, engine, ptx};
use crate::cuda_tensor::CudaTensorView;
use crate::engine::{Engine, Loaded, cpu};
use crate::input::Input;
use crate::search;
use crate::synthetic::Rng;
use crate::tensor::TensorView;

/// The GPU engine, or `None` (after saying so) when there is no usable GPU and
/// `QCALIB_REQUIRE_GPU` is not set.
fn gpu(test: &str) -> Option<Arc<CudaEngine>> {
    let required = std::env::var("QCALIB_REQUIRE_GPU").is_ok_and(|v| !v.is_empty() && v != "0");
    match cuda_status() {
        CudaStatus::Ready { .. } => match engine(0) {
            Ok(e) => Some(e),
            Err(e) => panic!("{test}: CUDA is ready but the engine did not start: {e}"),
        },
        status if required => panic!("{test}: QCALIB_REQUIRE_GPU is set but CUDA is not usable: {status}"),
        status => {
            eprintln!("{test}: skipped (no usable GPU: {status})");
            None
        }
    }
}

/// Values of awkward magnitudes: normal, exact zeros and negative zeros, repeats, outliers.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<f32> = Vec::with_capacity(n);
    for i in 0..n {
        let v = rng.normal() as f32;
        out.push(match rng.next_u64() % 100 {
            0..=7 => 0.0,
            8..=9 => -0.0,
            10..=11 if i > 0 => out[i - 1],
            12 => v * 40.0,
            _ => v,
        });
    }
    out
}

/// The same values as f32, f16 and bf16 arrays of `shape`.
fn tensors(shape: &[usize], seed: u64) -> (ArrayD<f32>, ArrayD<f16>, ArrayD<bf16>) {
    let n = shape.iter().product();
    let a = ArrayD::from_shape_vec(IxDyn(shape), values(n, seed)).unwrap();
    (a.clone(), a.mapv(f16::from_f32), a.mapv(bf16::from_f32))
}

fn loaded<'a>(g: &CudaEngine, x: &Input<'a>) -> super::DeviceBatch<'a> {
    g.load(x).unwrap().expect("a non-empty tensor is loaded on the device")
}

const SHAPES: &[&[usize]] =
    &[&[1], &[31], &[1000, 3], &[3, 1000], &[2, 3, 5], &[7, 33, 9], &[4, 300, 2], &[(1 << 20) + 3]];

#[test]
fn every_kernel_spec_matches_its_ptx_entry() {
    let mut names: Vec<&str> = all_kernels().map(|k| k.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all_kernels().count(), "two specs share a name");
    for spec in all_kernels() {
        let text = ptx::module(spec.module).unwrap_or_else(|| panic!("no module {}", spec.module));
        let params = ptx::entry_params(text, spec.name)
            .unwrap_or_else(|| panic!("{} has no entry point {} that the launchers load", spec.module, spec.name));
        let want: Vec<&str> = spec.params.iter().map(|p| p.ptx_type()).collect();
        assert_eq!(params, want, "parameters of {}", spec.name);
    }
    // And no kernel in the PTX that no launcher knows.
    for (module, text) in ptx::MODULES {
        for entry in text.split(".entry ").skip(1) {
            let name = entry.split('(').next().unwrap_or("").trim();
            assert!(names.contains(&name), "{module}.ptx has an entry point {name} that no launcher uses");
        }
    }
}

#[test]
fn the_probe_never_panics_and_a_missing_gpu_is_a_clear_error() {
    let status = cuda_status();
    assert_eq!(status, cuda_status(), "the probe is cached");
    match status {
        CudaStatus::Ready { devices, .. } => {
            let err = engine(devices).unwrap_err().to_string();
            assert!(err.contains(&format!("cuda:{devices}")) && err.contains("GPU"), "{err}");
        }
        status => {
            let err = engine(0).unwrap_err().to_string();
            assert!(err.contains("cuda:0") && err.contains(&status.to_string()), "{err}");
            assert!(matches!(Engine::new(crate::Device::Auto), Ok(Engine::Cpu)));
            assert!(Engine::new(crate::Device::Cuda(0)).is_err());
        }
    }
}

#[test]
fn extremes_are_identical() {
    let Some(g) = gpu("extremes_are_identical") else { return };
    for (s, shape) in SHAPES.iter().enumerate() {
        let (a, h, b) = tensors(shape, 100 + s as u64);
        let mut a = a;
        if a.len() > 10 {
            let n = a.len();
            let flat = a.as_slice_mut().unwrap();
            flat[n / 3] = f32::NAN;
            flat[n / 2] = f32::INFINITY;
        }
        let views: [TensorView<'_>; 3] = [(&a).into(), (&h).into(), (&b).into()];
        for x in views {
            let input = Input::Host(x.clone());
            let batch = loaded(&g, &input);
            for axis in std::iter::once(None).chain((0..shape.len()).map(Some)) {
                let want = cpu::extremes(&x, axis);
                let got = g.extremes(&batch, axis).unwrap();
                assert_eq!(got, want, "{} {shape:?} axis {axis:?}", x.dtype_name());
            }
        }
    }
}

#[test]
fn host_views_of_any_layout_are_uploaded_correctly() {
    let Some(g) = gpu("host_views_of_any_layout_are_uploaded_correctly") else { return };
    let (a, _, _) = tensors(&[6, 5, 4], 7);
    let t = a.view().permuted_axes(vec![2, 0, 1]); // not row-major
    let s = a.slice(ndarray::s![.., 1..4;2, ..;-1]).into_dyn(); // gaps and a reversed axis
    for x in [TensorView::from(t), TensorView::from(s)] {
        let batch = loaded(&g, &Input::Host(x.clone()));
        for axis in [None, Some(0), Some(1), Some(2)] {
            assert_eq!(g.extremes(&batch, axis).unwrap(), cpu::extremes(&x, axis), "axis {axis:?}");
        }
    }
}

#[test]
fn histograms_are_identical() {
    let Some(g) = gpu("histograms_are_identical") else { return };
    for (s, shape) in SHAPES.iter().enumerate() {
        let (a, h, b) = tensors(shape, 200 + s as u64);
        let views: [TensorView<'_>; 3] = [(&a).into(), (&h).into(), (&b).into()];
        for x in views {
            let batch = loaded(&g, &Input::Host(x.clone()));
            let e = cpu::extremes(&x, None);
            let amax = (-e.min[0]).max(e.max[0]);
            for bins in [1, 7, 512, 2048, MAX_SHARED_BINS + 1] {
                for hi in [amax, amax * 0.5, 0.0] {
                    let want = cpu::abs_histogram(&x, bins, hi);
                    let got = g.abs_histogram(&batch, bins, hi).unwrap();
                    assert!(got == want, "{} {shape:?} bins {bins} hi {hi}", x.dtype_name());
                    // The same with the extremes from the same pass (the KL window's kernel).
                    let (got_e, got_h) = g.extremes_and_abs_histogram(&batch, bins, hi).unwrap();
                    assert!(got_h == want, "with extremes: {} {shape:?} bins {bins} hi {hi}", x.dtype_name());
                    assert_eq!(got_e, e, "with extremes: {} {shape:?} bins {bins} hi {hi}", x.dtype_name());
                    let targets = [0.0, 1.0, x.len() as f32 * 0.5, x.len() as f32 * 0.9999, x.len() as f32 + 1.0];
                    let firsts: Vec<usize> =
                        targets.iter().map(|&t| search::percentile::first_bin_reaching(&want, t)).collect();
                    assert_eq!(g.percentile_bins(&batch, bins, hi, &targets).unwrap(), firsts);
                }
            }
        }
    }
}

#[test]
fn histograms_of_huge_values_are_identical() {
    let Some(g) = gpu("histograms_of_huge_values_are_identical") else { return };
    // |v| * bins overflows f32: the CPU's bin rule takes |v| / hi first there.
    let x: Vec<f32> = values(100_003, 17).into_iter().map(|v| v * 1e36).collect();
    let t = TensorView::from(&x);
    let batch = loaded(&g, &Input::Host(t.clone()));
    let e = cpu::extremes(&t, None);
    for (bins, hi) in [(2048, (-e.min[0]).max(e.max[0])), (7, 3.4e38)] {
        assert!(g.abs_histogram(&batch, bins, hi).unwrap() == cpu::abs_histogram(&t, bins, hi), "bins {bins}");
    }
}

#[test]
fn fake_quant_error_sums_agree() {
    let Some(g) = gpu("fake_quant_error_sums_agree") else { return };
    let mut rng = Rng::new(5);
    for (s, shape) in SHAPES.iter().enumerate() {
        let (a, h, b) = tensors(shape, 300 + s as u64);
        let views: [TensorView<'_>; 3] = [(&a).into(), (&h).into(), (&b).into()];
        for x in views {
            let batch = loaded(&g, &Input::Host(x.clone()));
            for axis in std::iter::once(None).chain((0..shape.len()).map(Some)) {
                let channels = axis.map_or(1, |a| shape[a]);
                for (k, qmin, qmax) in [(1, -128.0, 127.0), (9, -128.0, 127.0), (95, -8.0, 7.0), (17, 0.0, 15.0)] {
                    let scales: Vec<f32> = (0..k * channels).map(|_| (0.001 + 0.05 * rng.uniform()) as f32).collect();
                    let want = cpu::fake_quant_errors(&x, axis, &scales, k, qmin, qmax);
                    let got = g.fake_quant_errors(&batch, axis, &scales, k, qmin, qmax).unwrap();
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-12 * w.abs(),
                            "{} {shape:?} axis {axis:?} k {k} [{i}]: {g} vs {w}",
                            x.dtype_name()
                        );
                    }
                    assert_eq!(got.len(), want.len());
                }
            }
        }
    }
}

#[test]
fn kl_thresholds_are_identical() {
    let Some(g) = gpu("kl_thresholds_are_identical") else { return };
    let mut rng = Rng::new(9);
    // nq > 128: the closed form for the candidates i <= nq (all of them at 32768), levels above.
    for (len, nq) in [
        (137, 128),
        (138, 128),
        (256, 128),
        (512, 128),
        (2048, 128),
        (700, 8),
        (300, 16),
        (600, 32768),
        (5000, 128),
        (5000, 32768),
        (900, 400),
    ] {
        for zeros in [false, true] {
            let hist: Vec<u64> = (0..len)
                .map(|b| {
                    let base = (2e5 * (-(b as f64) / (len as f64 / 6.0)).exp()) as u64;
                    if zeros && rng.next_u64().is_multiple_of(7) { 0 } else { base + rng.next_u64() % 50 }
                })
                .collect();
            let want = search::kl::threshold_index(&hist, nq);
            assert_eq!(g.kl_threshold_index(&hist, nq).unwrap(), want, "len {len} nq {nq} zeros {zeros}");
        }
    }
    // One bin of 5e9 counts and the others small: the floor 1e-10 weighs, and the closed form
    // sums the small bins one by one.
    for (len, nq) in [(400, 32768), (700, 300)] {
        let mut hist: Vec<u64> = (0..len).map(|_| 1 + rng.next_u64() % 6).collect();
        hist[3] = 5_000_000_000;
        let want = search::kl::threshold_index(&hist, nq);
        assert_eq!(g.kl_threshold_index(&hist, nq).unwrap(), want, "heavy len {len} nq {nq}");
    }
    assert_eq!(g.kl_threshold_index(&[0; 600], 128).unwrap(), None);
}

#[test]
fn device_tensors_are_read_in_place_and_copied_for_the_cpu() {
    let Some(g) = gpu("device_tensors_are_read_in_place_and_copied_for_the_cpu") else { return };
    let (a, h, _) = tensors(&[8, 3, 5], 11);
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let stream = ctx.new_stream().unwrap();
    let on_gpu = stream.clone_htod(a.as_slice().unwrap()).unwrap();
    let half_on_gpu = stream.clone_htod(h.as_slice().unwrap()).unwrap();
    // An offset sub-view: the kernels' unaligned head.
    let tail = on_gpu.try_slice(1..).unwrap();
    for (dev, host) in [
        (CudaTensorView::from_slice(&on_gpu, &[8, 3, 5]).unwrap(), TensorView::from(&a)),
        (CudaTensorView::from_slice(&half_on_gpu, &[8, 3, 5]).unwrap(), TensorView::from(&h)),
    ] {
        let input = Input::Cuda(dev);
        let batch = loaded(&g, &input);
        for axis in [None, Some(0), Some(1), Some(2)] {
            assert_eq!(g.extremes(&batch, axis).unwrap(), cpu::extremes(&host, axis));
        }
        let Loaded::HostCopy(copy) = Engine::Cpu.load(&input).unwrap() else {
            panic!("a host copy for the CPU engine")
        };
        assert_eq!(cpu::extremes(&copy.view(), Some(1)), cpu::extremes(&host, Some(1)));
    }
    let flat: Vec<f32> = a.iter().copied().skip(1).collect();
    let input = Input::Cuda(CudaTensorView::new(tail, &[flat.len()]).unwrap());
    let batch = loaded(&g, &input);
    let x = TensorView::from(&flat);
    assert_eq!(g.extremes(&batch, None).unwrap(), cpu::extremes(&x, None));
    assert_eq!(g.abs_histogram(&batch, 2048, 3.0).unwrap(), cpu::abs_histogram(&x, 2048, 3.0));
    assert!(CudaTensorView::from_slice(&on_gpu, &[7, 3, 5]).is_err(), "a shape of another length");
}

/// Shapes and channel axes of the per-channel tests: channels outermost (one run each, or runs
/// of `inner` values), innermost (`[rows, C]`: one value per channel per row, fewer and more
/// channels than a block has threads), and a single channel.
const PER_CHANNEL: &[(&[usize], usize)] = &[
    (&[3, 1000], 0),
    (&[1000, 3], 1),
    (&[7, 33, 9], 1),
    (&[4, 300, 2], 0),
    (&[4, 300, 2], 2),
    (&[40, 300], 1),
    (&[2, 1, 500], 1),
];

#[test]
fn per_channel_histograms_are_identical() {
    let Some(g) = gpu("per_channel_histograms_are_identical") else { return };
    for (s, &(shape, axis)) in PER_CHANNEL.iter().enumerate() {
        let (a, h, b) = tensors(shape, 600 + s as u64);
        let views: [TensorView<'_>; 3] = [(&a).into(), (&h).into(), (&b).into()];
        for x in views {
            let batch = loaded(&g, &Input::Host(x.clone()));
            let e = cpu::extremes(&x, Some(axis));
            let channels = e.min.len();
            // Bin counts that differ by channel (none for some), in shared memory and not, and
            // ranges that cut the channel, cover it, or are all-zero.
            for sizes in [&[7usize, 0, 512, 1, 2048][..], &[MAX_SHARED_BINS + 1, 3, 0, 0, 0, 0, 0, 0]] {
                let bins: Vec<usize> = (0..channels).map(|c| sizes[c % sizes.len()]).collect();
                let hi: Vec<f32> = (0..channels).map(|c| e.abs_max(c) * [1.0, 0.5, 0.0, 2.0][c % 4]).collect();
                let what = format!("{} {shape:?} axis {axis} bins {sizes:?}", x.dtype_name());
                let want = cpu::abs_histograms(&x, axis, &bins, &hi);
                let mut got = vec![0; want.len()];
                let none = g.add_abs_histograms(&batch, axis, &bins, &hi, false, &mut got).unwrap();
                assert!(none.is_none() && got == want, "{what}");
                let mut want_h = vec![0; bins.iter().sum()];
                let want_e = cpu::add_abs_histograms(&x, axis, &bins, &hi, true, &mut want_h);
                // Added to counts already there, as an observer's buffer holds them.
                let before: Vec<u64> = (0..want_h.len() as u64).map(|i| i * 3 + 1).collect();
                let mut got_h = before.clone();
                let got_e = g.add_abs_histograms(&batch, axis, &bins, &hi, true, &mut got_h).unwrap();
                assert!(got_h.iter().zip(&before).zip(&want_h).all(|((g, b), w)| *g == b + w), "with extremes: {what}");
                assert!(want_e.is_some() && got_e == want_e, "with extremes: {what}");
            }
        }
    }
}

#[test]
fn per_channel_percentile_bins_are_identical() {
    let Some(g) = gpu("per_channel_percentile_bins_are_identical") else { return };
    let gpu_engine = Engine::Cuda(g.clone());
    for (s, &(shape, axis)) in PER_CHANNEL.iter().enumerate() {
        let (a, h, b) = tensors(shape, 700 + s as u64);
        let views: [TensorView<'_>; 3] = [(&a).into(), (&h).into(), (&b).into()];
        for x in views {
            let batch = Loaded::Cuda(loaded(&g, &Input::Host(x.clone())));
            let per_channel = x.len() / shape[axis];
            // More targets than one launch takes (32), and the edges.
            let mut targets = vec![0.0, 1.0, per_channel as f32 * 0.5, per_channel as f32 + 1.0];
            targets.extend((0..30).map(|t| per_channel as f32 * (0.9 + 0.003 * t as f32)));
            // More bins than shared memory holds only for a few channels (softgpu's time).
            for bins in [7, 2048, MAX_SHARED_BINS + 1].into_iter().filter(|&b| b <= 2048 || shape[axis] <= 8) {
                let what = format!("{} {shape:?} axis {axis} bins {bins}", x.dtype_name());
                let want =
                    Engine::Cpu.extremes_and_percentile_bins(&Loaded::Host(x.clone()), Some(axis), bins, &targets);
                let got = gpu_engine.extremes_and_percentile_bins(&batch, Some(axis), bins, &targets);
                assert_eq!(got.unwrap(), want.unwrap(), "{what}");
            }
        }
    }
}

#[test]
fn per_channel_percentile_bins_of_all_zero_channels_are_identical() {
    let Some(g) = gpu("per_channel_percentile_bins_of_all_zero_channels_are_identical") else { return };
    let gpu_engine = Engine::Cuda(g.clone());
    for (shape, axis) in [([5usize, 300usize], 0usize), ([300, 5], 1)] {
        let mut a = tensors(&shape, 800).0;
        a.index_axis_mut(ndarray::Axis(axis), 2).fill(0.0);
        a.index_axis_mut(ndarray::Axis(axis), 4).fill(-0.0);
        let x = TensorView::from(&a);
        let batch = Loaded::Cuda(loaded(&g, &Input::Host(x.clone())));
        let targets = [0.0, 1.0, 150.0, 299.97, 300.0, 301.0];
        for bins in [7, 2048] {
            let want = Engine::Cpu.extremes_and_percentile_bins(&Loaded::Host(x.clone()), Some(axis), bins, &targets);
            let got = gpu_engine.extremes_and_percentile_bins(&batch, Some(axis), bins, &targets);
            assert_eq!(got.unwrap(), want.unwrap(), "{shape:?} axis {axis} bins {bins}");
        }
    }
}

#[test]
fn per_channel_kl_thresholds_are_identical() {
    let Some(g) = gpu("per_channel_kl_thresholds_are_identical") else { return };
    let mut rng = Rng::new(19);
    let mut hist = |len: usize, zeros: bool, scale: f64| -> Vec<u64> {
        (0..len)
            .map(|b| {
                let base = (scale * (-(b as f64) / (len as f64 / 6.0)).exp()) as u64;
                if zeros && rng.next_u64().is_multiple_of(5) { 0 } else { base + rng.next_u64() % 50 }
            })
            .collect()
    };
    // Histograms of different lengths in one batch, with some that have no search (too short,
    // empty, all the mass in the top bins) between them.
    let mut top = vec![0u64; 300];
    top[299] = 1000;
    let hists: Vec<Vec<u64>> = vec![
        hist(512, false, 2e5),
        hist(137, false, 2e5),
        hist(138, true, 1e3),
        vec![0; 600],
        hist(2048, true, 5e6),
        top,
        Vec::new(),
        hist(700, false, 30.0),
        hist(256, true, 2e5),
        // Counts far above 1e10 next to small ones (the CPU's series and small-count terms of
        // the candidates with one level per bin), and a sparse histogram of ones.
        hist(600, true, 1e13),
        (0..400u64).map(|b| u64::from(b % 9 == 0)).collect(),
    ];
    let refs: Vec<&[u64]> = hists.iter().map(Vec::as_slice).collect();
    for nq in [8, 128, 256, 32768] {
        let want = search::kl::threshold_indices(&refs, nq);
        assert_eq!(g.kl_threshold_indices(&refs, nq).unwrap(), want, "nq {nq}");
        // The same as searching each alone (per tensor), on both engines.
        for (h, w) in refs.iter().zip(&want) {
            assert_eq!(search::kl::threshold_index(h, nq), *w, "nq {nq}");
            assert_eq!(g.kl_threshold_index(h, nq).unwrap(), *w, "nq {nq}: one histogram");
        }
    }
    assert_eq!(g.kl_threshold_indices(&[], 128).unwrap(), Vec::<Option<usize>>::new());
    assert_eq!(g.kl_threshold_indices(&[&[0; 600], &[1; 100]], 128).unwrap(), vec![None, None]);
}

#[test]
fn counts_come_back_through_page_locked_memory_in_pieces() {
    let Some(g) = gpu("counts_come_back_through_page_locked_memory_in_pieces") else { return };
    let gpu = &g.gpu;
    let stream = &gpu.stream;
    let counts: Vec<u64> = (0..1000u64).map(|i| i * i + u64::from(u32::MAX)).collect();
    let on_device = stream.clone_htod(&counts).unwrap();
    // Pieces that divide the counts, that do not, and one piece for all; counts added to what
    // is there; fewer counts read than the device holds.
    for (piece, n) in [(100, 1000), (7, 1000), (4096, 1000), (64, 999)] {
        let staging = super::read_back::Staging::with_piece(piece);
        let mut out: Vec<u64> = (0..n as u64).collect();
        staging.add_back(&gpu.ctx, stream, &on_device, &mut out).unwrap();
        assert!(staging.is_pinned(), "piece {piece}: no page-locked buffer");
        assert!(out.iter().enumerate().all(|(i, &o)| o == i as u64 + counts[i]), "piece {piece}, {n} counts");
        // A buffer kept from a larger result, used for a smaller one.
        let mut again: Vec<u64> = vec![0; 10];
        staging.add_back(&gpu.ctx, stream, &on_device, &mut again).unwrap();
        assert_eq!(again, counts[..10], "piece {piece}, then 10 counts");
    }
    let mut too_many = vec![0u64; 1001];
    assert!(super::read_back::Staging::default().add_back(&gpu.ctx, stream, &on_device, &mut too_many).is_err());
}
