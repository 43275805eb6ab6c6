#!/usr/bin/env python3
"""Cases beyond the golden ones, through the CLI on --device cuda and --device cpu: the JSON must
be the same (but the device).

    python3 scripts/cuda-vs-cpu.py target/release/qcalib ../shared/golden [--quick]

Derives new inputs from the golden .npy files with numpy (f16 and bf16 copies, Fortran-order and
transposed copies, a safetensors file, every batch in one file) and runs a grid of observers,
dtypes and parameters over them, per tensor and per channel (every axis of the 3-D activations,
negative axes included). Without a GPU, run it under softgpu (`source scripts/softgpu-env.sh`),
as CI does: that checks the CUDA engine's kernels and launches in software. Exits 1 when a case
differs, fails on one device only or is refused on both (every case of the grid is valid), and
prints a summary line either way.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np


def write_safetensors(path, tensors):
    """A .safetensors file of `tensors` (name -> (dtype string, shape, raw bytes))."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def bf16_bytes(x):
    """`x` (f32) as bf16 bytes, rounded to nearest even as torch does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).tobytes()


def inputs(golden, out):
    """name -> list of batch files, derived from the golden files."""
    made = {}
    acts = ["l2_attn_probs", "l2_ffn_out", "l2_gelu"]
    for a in acts:
        batches = [np.load(os.path.join(golden, f"{a}.b{i}.npy")) for i in range(2)]
        made[a] = [os.path.join(golden, f"{a}.b{i}.npy") for i in range(2)]
        for kind in ["f16", "fortran", "bf16"]:
            files = []
            for i, b in enumerate(batches):
                p = os.path.join(out, f"{a}.{kind}.b{i}")
                if kind == "f16":
                    np.save(p + ".npy", b.astype(np.float16))
                    files.append(p + ".npy")
                elif kind == "fortran":
                    np.save(p + ".npy", np.asfortranarray(b))
                    files.append(p + ".npy")
                else:
                    write_safetensors(p + ".safetensors", {"x": ("BF16", b.shape, bf16_bytes(b))})
                    files.append(p + ".safetensors")
            made[f"{a}.{kind}"] = files
    w = np.load(os.path.join(golden, "w_l2_intermediate_dense_weight.npy"))
    made["w"] = [os.path.join(golden, "w_l2_intermediate_dense_weight.npy")]
    p = os.path.join(out, "w.t.npy")
    np.save(p, np.ascontiguousarray(w.T))
    made["w.t"] = [p]
    p = os.path.join(out, "w.f16.npy")
    np.save(p, w.astype(np.float16))
    made["w.f16"] = [p]
    return made


def cases(quick):
    """(input name, CLI arguments) pairs."""
    acts = ["l2_attn_probs", "l2_ffn_out", "l2_gelu"]
    variants = ["", ".f16", ".fortran", ".bf16"]
    per_tensor = [
        ["--observer", "min-max", "--dtype", "qint16"],
        ["--observer", "moving-average-min-max", "--averaging-constant", "0.25", "--dtype", "qint4"],
        ["--observer", "percentile", "--percentile", "99.99", "--bins", "4096"],
        ["--observer", "percentile", "--dtype", "qint16", "--bins", "512"],
        ["--observer", "kl", "--bins", "1024"],
        ["--observer", "kl", "--dtype", "qint4", "--update-interval", "2"],
        ["--observer", "mix", "--dtype", "qint4"],
        ["--observer", "mse", "--stride", "3"],
    ]
    per_channel = [
        ["--observer", "min-max"],
        ["--observer", "moving-average-per-channel-min-max", "--averaging-constant", "0.5"],
        ["--observer", "mse", "--stride", "7"],
        ["--observer", "percentile", "--bins", "1024"],
        # 256 bins: every channel's search is a per-tensor search of its own, and on softgpu
        # the searches of the 1536-channel cases dominate the time (about 0.015 s of
        # interpreter time a channel and batch at 256 bins, 0.045 s at 512).
        ["--observer", "kl", "--bins", "256"],
        ["--observer", "mix"],
    ]
    pc = ["--qscheme", "per-channel-symmetric", "--ch-axis"]
    out = []
    for a in acts:
        for v in variants if not quick else ["", ".bf16"]:
            for args in per_tensor:
                out.append((a + v, args))
        for v in ["", ".fortran"] if not quick else [""]:
            for axis in ["0", "1", "-1"]:
                for args in per_channel:
                    # A Fortran-order batch reaches the kernels row-major, as the other: its
                    # upload is checked by the cheaper observers, its KL searches would repeat.
                    if v == ".fortran" and "kl" in args:
                        continue
                    out.append((a + v, args + pc + [axis]))
    for w in ["w", "w.t", "w.f16"]:
        for axis in ["0", "-1"]:
            for args in per_channel:
                out.append((w, args + pc + [axis]))
        for args in per_tensor[:5]:
            out.append((w, args))
    return out


def run(binary, args, files, device):
    cmd = [binary, "calibrate", *args, "--device", device, "--format", "json", *files]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    return without_device(json.loads(p.stdout)), None


def without_device(report):
    """`report` without its "device" fields (a .safetensors batch reports per tensor name)."""
    if isinstance(report, dict):
        return {k: without_device(v) for k, v in report.items() if k != "device"}
    return report


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    binary, golden = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv[3:]
    bad, refused = 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        made = inputs(golden, tmp)
        grid = cases(quick)
        for name, args in grid:
            cpu, cpu_err = run(binary, args, made[name], "cpu")
            cuda, cuda_err = run(binary, args, made[name], "cuda")
            if cpu_err or cuda_err:
                if cpu_err and cuda_err:
                    refused += 1  # every case of the grid is valid: a refusal is a failure too
                    print(f"REFUSED on both devices: {name} {' '.join(args)}: {cpu_err}")
                    continue
                bad += 1
                print(f"FAILED on one device: {name} {' '.join(args)}: cpu: {cpu_err}; cuda: {cuda_err}")
            elif cpu != cuda:
                bad += 1
                print(f"DIFFERENT: {name} {' '.join(args)}\n  cpu:  {cpu}\n  cuda: {cuda}")
    same = len(grid) - bad - refused
    print(f"cuda = cpu: {same}/{len(grid)} derived cases give the same JSON (but the device), "
          f"{bad} differ or fail on one device, {refused} refused on both")
    sys.exit(1 if bad or refused else 0)


if __name__ == "__main__":
    main()
