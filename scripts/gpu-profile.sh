#!/usr/bin/env bash
# Where the GPU time of `qcalib bench --device cuda` goes, with Nsight Compute (ncu), on a GPU
# machine without Rust (the CLI of gpu-pack/, see scripts/gpu-check.sh):
#
# 1. every kernel launch of one bench run (one warm-up and one timed run per row): its duration,
#    DRAM and SM throughput (% of peak), into $OUT/ncu-kernels.csv, and a table per kernel name
#    (launches, total and median time, throughputs) on stdout;
# 2. with GPU_PROFILE_KERNEL=<regex>, the full section set of that kernel's first launch, into
#    $OUT/ncu-<regex>.txt (memory workload, stall reasons, coalescing), its headline on stdout.
#
# Host time is what a bench row takes beyond its kernels (compare with `qcalib bench`): on the
# first H200 run, 5 of the 6 ms of a per-channel KL collection were host time.
#
# Usage: OUT=dir bash gpu-pack/gpu-profile.sh   (GPU_PROFILE_ELEMENTS, default 67108864;
#        GPU_PROFILE_TIMEOUT seconds per ncu call, default 120)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -f "$here/bin/qcalib.gz" ]; then pack="$here"; else pack="$here/../gpu-pack"; fi
out="${OUT:-$(mktemp -d)}"
command -v ncu >/dev/null || { echo "no ncu on PATH"; exit 2; }
bin=$(mktemp -d)
gunzip -c "$pack/bin/qcalib.gz" > "$bin/qcalib" && chmod +x "$bin/qcalib" || exit 2
elements="${GPU_PROFILE_ELEMENTS:-67108864}"
limit="${GPU_PROFILE_TIMEOUT:-120}"
bench=("$bin/qcalib" bench --device cuda --runs 1 --elements "$elements")

echo "== every kernel of one bench run ($elements elements)"
timeout "$limit" ncu --clock-control none --csv \
    --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed \
    "${bench[@]}" > "$out/ncu-kernels.csv" 2> "$out/ncu-kernels.err"
echo "ncu: status $?"
python3 - "$out/ncu-kernels.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
head = next((i for i, r in enumerate(rows) if r and r[0] == "ID"), None)
if head is None:
    sys.exit("no ncu table in " + sys.argv[1])
h = rows[head]
col = {name: h.index(name) for name in ("ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value")}
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
launches = {}
for r in rows[head + 1:]:
    if len(r) < len(h):
        continue
    d = launches.setdefault(r[col["ID"]], {"kernel": r[col["Kernel Name"]].split("(")[0]})
    value = float(r[col["Metric Value"]].replace(",", ""))
    if r[col["Metric Name"]] == "gpu__time_duration.sum":
        value *= scale.get(r[col["Metric Unit"]], 1.0)
    d[r[col["Metric Name"]]] = value
by = {}
for d in launches.values():
    by.setdefault(d["kernel"], []).append(d)
print(f"{'kernel':34} {'launches':>8} {'total us':>10} {'median us':>10} {'DRAM %':>7} {'SM %':>6}")
for name, ds in sorted(by.items(), key=lambda kv: -sum(d.get("gpu__time_duration.sum", 0) for d in kv[1])):
    t = [d.get("gpu__time_duration.sum", 0.0) for d in ds]
    dram = statistics.median(d.get("dram__throughput.avg.pct_of_peak_sustained_elapsed", 0.0) for d in ds)
    sm = statistics.median(d.get("sm__throughput.avg.pct_of_peak_sustained_elapsed", 0.0) for d in ds)
    print(f"{name:34} {len(ds):8} {sum(t):10.1f} {statistics.median(t):10.1f} {dram:7.1f} {sm:6.1f}")
PY

if [ -n "${GPU_PROFILE_KERNEL:-}" ]; then
    name=$(printf '%s' "$GPU_PROFILE_KERNEL" | tr -c 'A-Za-z0-9_.-' '_')
    echo "== full sections of the first launch of $GPU_PROFILE_KERNEL"
    timeout "$limit" ncu --clock-control none -k "regex:$GPU_PROFILE_KERNEL" --launch-count 1 --set full \
        "${bench[@]}" > "$out/ncu-$name.txt" 2>&1
    echo "ncu: status $?"
    grep -E "Duration|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|L2 Hit|excessive|stalled" \
        "$out/ncu-$name.txt" | head -n 20
fi
