#!/usr/bin/env python3
"""Runs the README's torchrun recipes verbatim and checks what they print.

Every ```sh block after a `<!-- ci: torchrun-cpu -->` line of README.md (with `--cuda`, instead,
every block after a `<!-- ci: torchrun-cuda -->` line: on a machine with a GPU and NCCL, or on the
software GPU of scripts/softgpu-env.sh, sourced before) runs as it is, with bash,
in a fresh folder holding shard0/ .. shard3/ of .npy batches, with `qcalib` (target/release) and
`torchrun` on PATH and HOST=127.0.0.1. A block after `<!-- ci: torchrun-cpu 2 nodes -->` is the
command of every node of a two-node job: it runs twice at once (two agents on loopback). Every
rank's qparams file (qparams$RANK.json) must hold the qparams the same ranks give when launched
with the plain variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

Usage (from the repository root, after `cargo build --release`):
    scripts/readme-torchrun.py [--cuda] [README.md] [WORKDIR]
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys


def npy(path, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % len(values)
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(f"<{len(values)}f", *values))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_launch(folder, world, env):
    """The ranks' qparams with the plain variables (rank 0 serves qcalib's store)."""
    port = str(free_port())
    ranks = []
    for r in range(world):
        files = sorted(os.path.join(folder, f"shard{r}", b) for b in os.listdir(os.path.join(folder, f"shard{r}")))
        renv = dict(env, RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        renv.pop("TORCHELASTIC_USE_AGENT_STORE", None)
        cmd = ["qcalib", "calibrate", "--observer", "kl", "--is-sync-quantize", "--device", "cpu", "--format", "json"]
        ranks.append(subprocess.Popen(cmd + files, env=renv, stdout=subprocess.PIPE))
    out = []
    for p in ranks:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            sys.exit("the plain launch failed")
        out.append(json.loads(stdout))
    return out


def main():
    args = sys.argv[1:]
    cuda = "--cuda" in args
    args = [a for a in args if a != "--cuda"]
    readme = args[0] if args else "README.md"
    work = args[1] if len(args) > 1 else "target/readme-torchrun"
    text = open(readme).read()
    blocks = re.findall(r"<!-- ci: torchrun-(cpu|cuda)( 2 nodes)? -->\s*```sh\n(.*?)```", text, re.S)
    if sum(kind == "cpu" for kind, _, _ in blocks) < 2 or (cuda and not any(kind == "cuda" for kind, _, _ in blocks)):
        sys.exit(f"the README's recipes are not all there: {[(k, n) for k, n, _ in blocks]}")
    blocks = [(n, script) for kind, n, script in blocks if (kind == "cuda") == cuda]
    release = os.path.abspath("target/release")
    env = dict(os.environ, PATH=f"{release}:{os.environ['PATH']}", HOST="127.0.0.1")
    for i, (two_nodes, script) in enumerate(blocks):
        folder = os.path.abspath(os.path.join(work, str(i)))
        shutil.rmtree(folder, ignore_errors=True)
        for r in range(4):
            os.makedirs(f"{folder}/shard{r}")
            for s in range(3):
                values = [((k * 7919 + 13 * r + 101 * s) % 1000 - 500) * (1 + 0.3 * r + 0.1 * s) / 50 for k in range(5000)]
                npy(f"{folder}/shard{r}/b{s}.npy", values)
        nodes = 2 if two_nodes else 1
        print(f"-- recipe {i}, {nodes} node(s):\n{script}", flush=True)
        procs = [subprocess.Popen(["bash", "-eu", "-c", script], cwd=folder, env=env) for _ in range(nodes)]
        codes = [p.wait(timeout=600) for p in procs]
        if codes != [0] * nodes:
            sys.exit(f"recipe {i} exited with {codes}")
        outs = sorted(f for f in os.listdir(folder) if re.fullmatch(r"qparams\d+\.json", f))
        if len(outs) < 2:
            sys.exit(f"recipe {i} wrote {outs}")
        results = [json.load(open(os.path.join(folder, f))) for f in outs]
        plain = plain_launch(folder, len(outs), env)
        for name, res in zip(outs, results):
            for key in ("scale", "zero_point", "min_val", "max_val"):
                if res[key] != plain[0][key]:
                    sys.exit(f"recipe {i}: {name} {key} = {res[key]}, the plain launch {plain[0][key]}")
        print(f"-- recipe {i}: {len(outs)} ranks, the qparams of the plain launch (scale {results[0]['scale']})", flush=True)


if __name__ == "__main__":
    main()
