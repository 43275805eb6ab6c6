#!/usr/bin/env bash
# Builds everything the GPU tests need on a machine with Rust (no GPU needed) and packs it,
# stripped, into gpu-pack/ (git-ignored, under 64 MiB), for scripts/gpu-run.sh to run on a GPU
# machine without Rust:
#
#   gpu-pack/tests/<name>.gz   every test executable (`cargo test --release --no-run`), gzipped
#   gpu-pack/bin/qcalib.gz     the release CLI, gzipped
#   gpu-pack/repo/tests/...    the fixtures the tests read (the tests take QCALIB_REPO)
#   gpu-pack/shared/...        ../shared/golden and ../shared/tools when this checkout has them
#   gpu-pack/gpu-run.sh, gpu-profile.sh, nccl-env.sh, compare_torch.py   the scripts that run it all
#
# Usage: scripts/gpu-check.sh            (then: scripts/gpu-run.sh on the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
pack=gpu-pack
rm -rf "$pack"
mkdir -p "$pack/tests" "$pack/bin" "$pack/repo/tests/fixtures"

echo "== building the test executables (release)"
cargo test --release --no-run --message-format=json > target/gpu-check-artifacts.json
python3 - "$pack/tests" target/gpu-check-artifacts.json <<'EOF'
import json, shutil, sys
dest, artifacts = sys.argv[1], sys.argv[2]
names = set()
for line in open(artifacts):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("profile", {}).get("test") or not m.get("executable"):
        continue
    kind = m["target"]["kind"][0]
    name = m["target"]["name"] + ("" if kind == "test" else "-" + kind)  # qcalib-lib, qcalib-bin, gpu, golden...
    assert name not in names, name
    names.add(name)
    shutil.copy2(m["executable"], f"{dest}/{name}")
    print(f"  tests/{name}")
EOF

echo "== building the release CLI"
cargo build --release --bin qcalib
cp target/release/qcalib "$pack/bin/qcalib"

echo "== stripping and compressing"
strip "$pack"/tests/* "$pack/bin/qcalib"
gzip -9 "$pack"/tests/* "$pack/bin/qcalib"

echo "== fixtures"
cp -r tests/fixtures/golden "$pack/repo/tests/fixtures/golden"
shared="${QCALIB_SHARED:-../shared}"
if [ -f "$shared/golden/cases.json" ] && [ -f "$shared/tools/check_cases.py" ]; then
    mkdir -p "$pack/shared"
    cp -r "$shared/golden" "$shared/tools" "$pack/shared/"
    chmod -R u+w "$pack/shared"
    echo "  shared/golden and shared/tools from $shared"
fi
cp scripts/gpu-run.sh scripts/gpu-profile.sh scripts/nccl-env.sh benches/compare_torch.py "$pack/"

size=$(du -sm "$pack" | cut -f1)
du -sh "$pack"/* | sed 's/^/  /'
if [ "$size" -ge 64 ]; then
    echo "gpu-pack/ is ${size} MiB, more than the 64 MiB a device run carries"
    exit 1
fi
echo "packed ${size} MiB into $pack/; on the GPU machine run: bash scripts/gpu-run.sh (or bash $pack/gpu-run.sh)"
