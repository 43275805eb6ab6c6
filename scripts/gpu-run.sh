#!/usr/bin/env bash
# Runs what scripts/gpu-check.sh packed into gpu-pack/ on a GPU machine without Rust, with
# QCALIB_REQUIRE_GPU=1 (a missing or failing GPU fails the GPU tests instead of skipping them):
#
# 1. every test executable (the GPU tests compare every observer on the GPU with the CPU engine);
# 2. `qcalib calibrate --device cuda` against `--device cpu` on the golden cases and per-channel
#    Percentile, KL and Mix on the golden weight and activations: the same JSON apart from
#    "device", and the expected scales (../shared/tools/check_cases.py when there);
# 3. `qcalib demo` on both devices (timings for the report);
# 4. `qcalib bench --device cuda` (JSON into $OUT when set) and benches/compare_torch.py next to
#    it when torch is installed (the figures for the closing note).
# NCCL is set up first (nccl-env.sh), for the is_sync_quantize tests over NCCL.
# GPU_RUN_DEMO_ELEMENTS and GPU_RUN_BENCH_ELEMENTS (4194304 and 67108864) size the demo and the
# bench: small ones make a dry run of this script on softgpu possible (see the README).
# GPU_RUN_TESTS (test executable names, e.g. "qcalib-lib gpu sync") runs those alone, for a
# recheck in little device time; all of them by default.
#
# Usage: bash scripts/gpu-run.sh   (from the repository, with gpu-pack/ in it)
#        bash gpu-pack/gpu-run.sh  (the copy inside the pack)
# Exit status: 0 when everything passed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -d "$here/tests" ] && [ -f "$here/bin/qcalib.gz" ]; then pack="$here"; else pack="$here/../gpu-pack"; fi
pack="$(cd "$pack" && pwd)" || { echo "no gpu-pack/: run scripts/gpu-check.sh first"; exit 2; }

# The executables travel gzipped: unpack them outside the (possibly read-only) pack.
bin=$(mktemp -d)
mkdir -p "$bin/tests"
for f in "$pack"/tests/*.gz; do gunzip -c "$f" > "$bin/tests/$(basename "$f" .gz)"; done
gunzip -c "$pack/bin/qcalib.gz" > "$bin/qcalib"
chmod +x "$bin"/tests/* "$bin/qcalib"

export QCALIB_REQUIRE_GPU=1
export QCALIB_REPO="$pack/repo"
export QCALIB_BIN="$bin/qcalib"
export RUST_BACKTRACE=1

# --- NCCL (is_sync_quantize on GPUs) ----------------------------------------------------------
# cudarc loads libnccl.so, never the libnccl.so.2 of pip/PyTorch: nccl-env.sh links it into a
# temporary folder on LD_LIBRARY_PATH. Two ranks on one GPU need NCCL >= 2.30 and these settings
# (the tests print what the installed NCCL allowed).
# shellcheck source=/dev/null
source "$pack/nccl-env.sh" || echo "(NCCL not found: the NCCL tests will fail, as QCALIB_REQUIRE_GPU=1 asks)"
export NCCL_MULTI_RANK_GPU_ENABLE=1 NCCL_NVLS_ENABLE=0 NCCL_MAX_CTAS=1
# --- end of NCCL setup -------------------------------------------------------------------------

failed=()
step() { printf '\n== %s   (at %d s)\n' "$*" "$SECONDS"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$QCALIB_BIN" --version
# Two NCCL ranks on one GPU need NCCL >= 2.30: the version says which NCCL tests can run here.
python3 -c "import torch; print('torch', torch.__version__, 'NCCL', '.'.join(map(str, torch.cuda.nccl.version())))" \
    2>/dev/null || echo "(no torch with CUDA: NCCL version unknown)"

step "test executables"
logs=$(mktemp -d)
for t in "$bin"/tests/*; do
    name=$(basename "$t")
    if [ -n "${GPU_RUN_TESTS:-}" ] && [[ " $GPU_RUN_TESTS " != *" $name "* ]]; then continue; fi
    echo "-- $name"
    # --show-output: what passing tests print too, so that a test that returned early ("SKIPPED:
    # two NCCL ranks need ...") shows here instead of passing silently.
    "$t" --test-threads 4 --show-output > "$logs/$name.log" 2>&1
    rc=$?
    # The skips and failures in full, then the summary.
    grep -iE "skipped|panicked|FAILED|failed|^test result" "$logs/$name.log" | sort -u | head -n 60
    if [ "$rc" != 0 ]; then
        tail -n 60 "$logs/$name.log"
        failed+=("tests/$name")
    fi
done

step "qcalib calibrate --device cuda vs --device cpu on the golden cases"
shared=""
for dir in "$pack/../../shared" "$pack/../shared" "$pack/shared"; do
    if [ -f "$dir/golden/cases.json" ] && [ -f "$dir/tools/check_cases.py" ]; then shared="$(cd "$dir" && pwd)"; break; fi
done
if [ -n "$shared" ]; then
    cases="$shared/golden/cases.json"
    data="$shared/golden"
    python3 "$shared/tools/check_cases.py" "$QCALIB_BIN" "$cases" "$data" --device cuda || failed+=("check_cases.py --device cuda")
else
    echo "(no shared/golden here: the copied fixtures of the repository)"
    cases="$QCALIB_REPO/tests/fixtures/golden/cases.json"
    data="$QCALIB_REPO/tests/fixtures/golden"
fi
python3 - "$QCALIB_BIN" "$cases" "$data" <<'EOF' || failed+=("cuda vs cpu JSON")
import json, os, subprocess, sys
qcalib, cases, data = sys.argv[1:4]
bad = 0
cases = json.load(open(cases))["cases"]
# Per-channel Percentile, KL and Mix (SPEC §8) on the weight (channels outermost) and the
# activations (channels in the middle and innermost): the per-channel kernels.
pc = ["--qscheme", "per-channel-symmetric", "--ch-axis"]
for observer in (["percentile"], ["kl"], ["kl", "--dtype", "qint16", "--update-interval", "2"], ["mix"]):
    # The weight twice: two batches, so that a KL window of two completes.
    weight = ["w_l2_intermediate_dense_weight.npy"] * 2
    for files, axis in ((weight, "0"), (weight, "-1"),
                        (["l2_ffn_out.b0.npy", "l2_ffn_out.b1.npy"], "1"), (["l2_ffn_out.b0.npy", "l2_ffn_out.b1.npy"], "-1")):
        args = ["--observer", *observer, *pc, axis]
        cases.append({"id": " ".join(args) + " " + files[0], "args": args, "files": files})
for c in cases:
    out = {}
    for device in ("cpu", "cuda"):
        cmd = [qcalib, "calibrate", *c["args"], "--device", device, "--format", "json", *[os.path.join(data, f) for f in c["files"]]]
        p = subprocess.run(cmd, capture_output=True, text=True)
        out[device] = json.loads(p.stdout) if p.returncode == 0 else "error: " + p.stderr.strip()[-300:]
    cpu, cuda = out["cpu"], out["cuda"]
    if isinstance(cpu, dict) and isinstance(cuda, dict):
        ok = cuda.pop("device") == "cuda:0" and cpu.pop("device") == "cpu" and cpu == cuda
    else:
        ok = False
    if not ok:
        bad += 1
        print("DIFF", c["id"], "cpu:", str(cpu)[:300], "cuda:", str(cuda)[:300])
print(f"cuda vs cpu: {len(cases) - bad}/{len(cases)} cases give the same JSON")
sys.exit(1 if bad else 0)
EOF

step "demo on both devices (timings)"
for device in cpu cuda; do
    "$QCALIB_BIN" demo --device "$device" --elements "${GPU_RUN_DEMO_ELEMENTS:-4194304}" || failed+=("demo --device $device")
done

elements="${GPU_RUN_BENCH_ELEMENTS:-67108864}"
step "qcalib bench --device cuda (device-resident input, $elements elements)"
out="${OUT:-$(mktemp -d)}"
"$QCALIB_BIN" bench --device cuda --runs 5 --elements "$elements" --format json > "$out/bench-cuda.json" \
    || failed+=("bench --device cuda")
"$QCALIB_BIN" bench --device cuda --runs 5 --elements "$elements" || true

step "the same algorithms with torch ops on the same GPU (benches/compare_torch.py)"
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    python3 "$pack/compare_torch.py" --qcalib "$QCALIB_BIN" --device cuda --runs 5 || failed+=("compare_torch.py")
else
    echo "(no torch with CUDA here)"
fi

step "summary"
skips=$(grep -ihE "skipped" "$logs"/*.log | grep -v "^test result" | sort -u)
if [ -n "$skips" ]; then printf 'skipped here (not failures; what this machine cannot run):\n%s\n' "$skips"; fi
# The test logs come back with the bench JSON when $OUT is set (a device run's output folder).
if [ -n "${OUT:-}" ]; then tar czf "$OUT/test-logs.tgz" -C "$logs" . || true; fi
if [ "${#failed[@]}" -eq 0 ]; then
    echo "all passed"
else
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
