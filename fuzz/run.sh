#!/usr/bin/env bash
# Fuzzes each target (npy, safetensors, state) for SECONDS seconds (default 20) with AFL++ through
# cargo-afl, starting from the seed corpora in seeds/ (plus a real calibration batch for npy).
# Prints how many inputs each ran; fails on any crash (a panic: a failed check or a bug) or hang
# (an input that takes more than a second). Needs `cargo install cargo-afl` (which builds AFL++).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"

cargo afl build --release --quiet
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
rm -rf out
mkdir -p out/seeds
cp -r seeds/npy seeds/safetensors seeds/state out/seeds/
cp ../tests/fixtures/golden/l2_ffn_out.b0.npy out/seeds/npy/

stat() { awk -F: -v key="$1" '$1 ~ "^"key" *$" { gsub(/ /, "", $2); print $2 }' "$2"; }
total=0
failed=0
for target in npy safetensors state; do
    log="out/$target.log"
    if ! cargo afl fuzz -V "$seconds" -t 1000 -i "out/seeds/$target" -o "out/$target" "target/release/$target" \
        >"$log" 2>&1; then
        echo "$target: afl-fuzz failed:"
        tail -n 30 "$log"
        exit 1
    fi
    stats="out/$target/default/fuzzer_stats"
    execs=$(stat execs_done "$stats")
    crashes=$(stat saved_crashes "$stats")
    hangs=$(stat saved_hangs "$stats")
    echo "$target: $execs inputs in ${seconds} s, $(stat corpus_count "$stats") in the corpus, $crashes crash(es), $hangs hang(s)"
    total=$((total + execs))
    for f in "out/$target/default/crashes"/id* "out/$target/default/hangs"/id*; do
        [ -e "$f" ] || continue
        failed=1
        echo "  $f:"
        od -c "$f" | head -n 12
        "target/release/$target" <"$f" 2>&1 | grep -m 3 -E "panicked|assert|error" || true
    done
done
echo "$total inputs in all"
[ "$failed" = 0 ] || { echo "the fuzzer found inputs that crash or hang (above; replay: fuzz/target/release/TARGET < FILE)"; exit 1; }
