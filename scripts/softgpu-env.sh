#!/usr/bin/env bash
# Puts the software GPU (tests/softgpu) in place of the CUDA driver and NCCL, for this shell.
#
#   source scripts/softgpu-env.sh            # exports LD_LIBRARY_PATH (and SOFTGPU_LIB)
#   eval "$(bash scripts/softgpu-env.sh)"    # the same from a script that cannot source
#
# Builds tests/softgpu in release mode (cargo does nothing when it is up to date), links the one
# library it makes as libcuda.so, libcuda.so.1, libnccl.so and libnccl.so.2 in
# <target>/softgpu-lib/, and puts that folder first on LD_LIBRARY_PATH: cudarc (and so qcalib,
# unchanged) then loads softgpu as the driver and as NCCL. `qcalib::cuda_status()` and the CLI
# name the device `softgpu (PTX interpreter)`: results are verified in software, timings mean
# nothing. SOFTGPU_DEVICES sets the number of devices (2 by default). Status 0 when the library
# is in place, 1 (with a message on stderr) when not; it never exits the shell that sources it.

_softgpu_env() {
    local root target lib dir name
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    target=${CARGO_TARGET_DIR:-$root/target}
    case "$target" in /*) ;; *) target="$root/$target" ;; esac
    (cd "$root" && cargo build --release --quiet -p softgpu) || {
        echo "softgpu-env: building tests/softgpu failed" >&2
        return 1
    }
    lib="$target/release/libsoftgpu.so"
    [ -f "$lib" ] || { echo "softgpu-env: $lib was not built" >&2; return 1; }
    dir="$target/softgpu-lib"
    mkdir -p "$dir" || return 1
    # Links, not copies: the four names must load as one library (one driver, one memory table).
    for name in libcuda.so libcuda.so.1 libnccl.so libnccl.so.2; do
        ln -sfn "$lib" "$dir/$name" || return 1
    done
    SOFTGPU_LIB=$lib
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$dir:"*) ;;
        *) LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    export SOFTGPU_LIB LD_LIBRARY_PATH
    echo "softgpu-env: libcuda.so and libnccl.so are softgpu ($dir -> $lib), ${SOFTGPU_DEVICES:-2} device(s)" >&2
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    _softgpu_env
    _softgpu_status=$?
    unset -f _softgpu_env
    return $_softgpu_status
else
    _softgpu_env || exit 1
    printf 'export SOFTGPU_LIB=%q LD_LIBRARY_PATH=%q\n' "$SOFTGPU_LIB" "$LD_LIBRARY_PATH"
fi
