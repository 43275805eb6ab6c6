#!/usr/bin/env python3
"""Steps per second of a multi-rank `qcalib calibrate --is-sync-quantize` run: RANKS CPU ranks on
loopback (the plain torchrun variables), each with STEPS .safetensors files of TENSORS tensors
of VALUES f32 values. A run of STEPS steps and one of 2 steps are timed, and the figure is
(STEPS - 2) / (t_STEPS - t_2), so that process start, joining and reading the first batches
cancel out. Prints one line per repetition and the median.

Usage: scripts/bench-sync.py QCALIB [--ranks 4] [--tensors 500] [--values 4096] [--steps 12]
                             [--reps 3] [--observer min-max] [--extra "--sync-histograms"]
Needs only python3 (no numpy): the files are written by hand.
"""

import argparse
import json
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, values in tensors:
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(qcalib, files, args):
    port = free_port()
    procs = []
    start = time.perf_counter()
    for rank, rank_files in enumerate(files):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(len(files)), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
        cmd = [qcalib, "calibrate", "--observer", args.observer, "--is-sync-quantize", "--device", "cpu",
               "--format", "json", *args.extra.split(), *rank_files]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"a rank failed: {err.decode()}")
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qcalib")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--tensors", type=int, default=500)
    ap.add_argument("--values", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--observer", default="min-max")
    ap.add_argument("--extra", default="")
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for r in range(args.ranks):
            rank_files = []
            for s in range(args.steps):
                path = os.path.join(tmp, f"r{r}s{s}.safetensors")
                write_safetensors(path, [(f"t{t:04d}", [rng.gauss(0, 1 + 0.01 * t) for _ in range(args.values)])
                                         for t in range(args.tensors)])
                rank_files.append(path)
            files.append(rank_files)
        rates = []
        for rep in range(args.reps):
            short = run(args.qcalib, [f[:2] for f in files], args)
            full = run(args.qcalib, files, args)
            rate = (args.steps - 2) / max(full - short, 1e-9)
            rates.append(rate)
            print(f"rep {rep}: {args.steps} steps {full:.2f} s, 2 steps {short:.2f} s: {rate:.2f} steps/s", flush=True)
        print(f"median: {statistics.median(rates):.2f} steps/s ({args.ranks} ranks, {args.tensors} tensors of "
              f"{args.values} values, {args.observer} {args.extra})")


if __name__ == "__main__":
    main()
