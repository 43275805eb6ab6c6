#!/usr/bin/env python3
"""Times the calibration algorithms written with PyTorch ops next to `qcalib bench`, on the same
device and tensor size, and prints the ratios.

    python3 benches/compare_torch.py --qcalib target/release/qcalib --device cpu --elements 67108864
    python3 benches/compare_torch.py --qcalib ./qcalib --device cuda --elements 67108864

The torch side is what a PyTorch calibrator does: torch.aminmax for min/max (per tensor and per
channel), torch.histc on |x| for Percentile/KL collection (after the min/max it needs), the MSE
candidate loop with torch.fake_quantize_per_tensor_affine (95 candidates), Mix's nine candidates,
and the KL threshold search as a Python loop over the candidates with numpy (TensorRT's style).
Device-resident input on CUDA; every timing is the median of --runs runs after a warm-up, with a
device synchronisation around each. Prints one JSON object (--format json) or a table.
"""
import argparse, json, math, statistics, subprocess, sys, time

CHANNELS = 1024


def timed(fn, runs, sync):
    fn(); sync()
    out = []
    for _ in range(runs):
        sync(); t = time.perf_counter(); fn(); sync(); out.append(time.perf_counter() - t)
    return statistics.median(out)


def kl_search_numpy(hist, nq=128):
    """TensorRT/plugin-style KL search: a Python loop over the candidates (numpy inside)."""
    import numpy as np
    h = hist.astype(np.float64).copy()
    h[0] = h[1]
    divs = []
    for i in range(128, len(h) + 1):
        p = h[:i].copy(); p[i - 1] += h[i:].sum()
        space = np.linspace(0, i, nq + 1)
        level = np.digitize(np.arange(i), space) - 1
        q = np.zeros(i)
        for m in range(nq):
            sel = (level == m) & (h[:i] != 0)
            n = sel.sum()
            if n:
                q[sel] = h[:i][sel].sum() / n
        p /= p.sum(); q = q / q.sum() + 1e-10
        nz = p > 0
        divs.append(float((p[nz] * np.log(p[nz] / q[nz])).sum()))
    d = np.array(divs)
    s = np.convolve(d, np.ones(9), "valid")[:-2]
    return int(len(s) - 1 - np.argmin(s[::-1])) + 132


def torch_cases(torch, x, device, runs):
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    n = x.numel()
    rows = n // CHANNELS
    wide = x[: rows * CHANNELS].view(CHANNELS, rows)
    tall = x[: rows * CHANNELS].view(rows, CHANNELS)
    qmin, qmax = -128, 127
    out = []

    def add(observer, variant, fn):
        out.append({"observer": observer, "variant": variant, "seconds": timed(fn, runs, sync)})

    add("min-max", "per-tensor", lambda: torch.aminmax(x))
    add("min-max", "per-channel axis 0", lambda: torch.aminmax(wide, dim=1))
    add("min-max", "per-channel last axis", lambda: torch.aminmax(tall, dim=0))

    def percentile():
        mn, mx = torch.aminmax(x)
        r = torch.maximum(-mn, mx).item()
        h = torch.histc(x.abs(), 2048, 0, r)
        c = torch.cumsum(h, 0)
        return torch.searchsorted(c, torch.tensor([0.9999 * n], device=c.device))
    add("percentile", "per-tensor, 2048 bins", percentile)
    amax = x.abs().max().item()
    add("kl", "per-tensor, 2048 bins, collection", lambda: (x.abs().max(), torch.histc(x.abs(), 2048, 0, amax)))

    def mse():
        mn, mx = torch.aminmax(x)
        errs = []
        for i in range(95):
            f = 1 - 0.01 * i
            s = max(max(-mn.item() * f, mx.item() * f, 0) / 127.5, 2 ** -23)
            fq = torch.fake_quantize_per_tensor_affine(x, s, 0, qmin, qmax)
            errs.append((fq - x).pow(2).sum())
        return torch.stack(errs).argmin()
    add("mse", "per-tensor, 95 candidates", mse)

    def mix():
        mn, mx = torch.aminmax(x)
        r = torch.maximum(-mn, mx).item()
        h = torch.histc(x.abs(), 2048, 0, r)
        errs = []
        for k in range(9):
            s = max(r * (1 - k * 0.0001) / 127.5, 2 ** -23)
            fq = torch.fake_quantize_per_tensor_affine(x, s, 0, qmin, qmax)
            errs.append((fq - x).pow(2).sum())
        return h, torch.stack(errs).argmin()
    add("mix", "per-tensor", mix)

    hist = torch.histc(x.abs(), 2048, 0, amax).cpu().numpy()
    out.append({"observer": "kl-search", "variant": "2048 bins, qint8 (Python loop, numpy)",
                "seconds": timed(lambda: kl_search_numpy(hist), max(1, min(runs, 3)), lambda: None)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qcalib", default="target/release/qcalib")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--elements", type=int, default=1 << 26)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--format", choices=["table", "json"], default="table")
    a = ap.parse_args()

    import torch
    torch.manual_seed(0)
    dev = "cuda:0" if a.device == "cuda" else a.device
    x = torch.distributions.Laplace(0.0, 0.5).sample((a.elements,)).to(dev)
    torch_results = torch_cases(torch, x, dev, a.runs)

    q = subprocess.run([a.qcalib, "bench", "--device", a.device, "--elements", str(a.elements),
                        "--runs", str(a.runs), "--format", "json"], capture_output=True, text=True)
    if q.returncode != 0:
        sys.exit("qcalib bench failed: " + q.stderr)
    qcalib = json.loads(q.stdout)

    def find(obs, variant):
        for r in qcalib["results"]:
            if r["observer"] == obs and r["variant"].startswith(variant.split(" (")[0].split(",")[0]):
                return r
        return None

    rows = []
    for t in torch_results:
        r = find(t["observer"], t["variant"])
        if r:
            rows.append({"observer": t["observer"], "variant": t["variant"], "torch_seconds": t["seconds"],
                         "qcalib_seconds": r["seconds"], "speedup": t["seconds"] / r["seconds"]})
    result = {"device": qcalib["device"], "torch": torch.__version__, "elements": a.elements,
              "bandwidth_gbps": qcalib["bandwidth_gbps"], "comparison": rows}
    if a.format == "json":
        print(json.dumps(result))
        return
    print(f"qcalib vs torch {torch.__version__} on {qcalib['device']}, {a.elements} f32 elements, median of {a.runs}")
    print(f"{'observer':<12} {'variant':<42} {'torch':>11} {'qcalib':>11} {'speedup':>8}")
    for r in rows:
        print(f"{r['observer']:<12} {r['variant']:<42} {r['torch_seconds']*1e3:>9.3f}ms {r['qcalib_seconds']*1e3:>9.3f}ms {r['speedup']:>7.1f}x")


if __name__ == "__main__":
    main()
