#!/usr/bin/env bash
# Makes NCCL findable by qcalib (cudarc loads `libnccl.so`, never `libnccl.so.2`).
#
#   source scripts/nccl-env.sh            # exports LD_LIBRARY_PATH (and QCALIB_NCCL_LIB)
#   eval "$(bash scripts/nccl-env.sh)"    # the same from a script that cannot source
#
# Finds libnccl.so.2 (QCALIB_NCCL_LIB if set; else the nvidia-nccl wheel of the Python that
# `python3` runs, e.g. PyTorch's venv: site-packages/nvidia/nccl/lib; else the usual system and
# venv folders), links it as libnccl.so in a fresh temporary folder, and puts that folder first
# on LD_LIBRARY_PATH. Status 0 when NCCL was found, 1 (with a message on stderr) when not; it
# never exits the shell that sources it.

_qcalib_nccl_find() {
    local c
    if [ -n "${QCALIB_NCCL_LIB:-}" ]; then
        for c in "$QCALIB_NCCL_LIB" "$QCALIB_NCCL_LIB/libnccl.so.2" "$QCALIB_NCCL_LIB/libnccl.so"; do
            [ -f "$c" ] && { echo "$c"; return 0; }
        done
        echo "nccl-env: QCALIB_NCCL_LIB=$QCALIB_NCCL_LIB holds no libnccl.so.2" >&2
        return 1
    fi
    # The nvidia-nccl wheel of the active Python (PyTorch pulls it in).
    local py
    for py in ${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/python"} python3 python; do
        command -v "$py" >/dev/null 2>&1 || continue
        c=$("$py" - 2>/dev/null <<'PY'
import os
try:
    import nvidia.nccl as m
    for d in list(getattr(m, "__path__", [])):
        p = os.path.join(d, "lib", "libnccl.so.2")
        if os.path.isfile(p):
            print(p)
            break
except Exception:
    pass
PY
)
        [ -n "$c" ] && [ -f "$c" ] && { echo "$c"; return 0; }
    done
    # Usual places: venvs, system Pythons, distribution packages.
    for c in ${VIRTUAL_ENV:+"$VIRTUAL_ENV"/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2} \
        "$HOME"/.venv/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
        "$HOME"/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
        /opt/*/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
        /opt/*/*/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
        /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
        /usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
        /usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
        /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/lib/aarch64-linux-gnu/libnccl.so.2 \
        /usr/local/cuda/lib64/libnccl.so.2; do
        [ -f "$c" ] && { echo "$c"; return 0; }
    done
    # Last resort: a bounded search of the folders where venvs live.
    c=$(find / -maxdepth 9 -path '*/nvidia/nccl/lib/libnccl.so.2' \
        -not -path '/proc/*' -not -path '/sys/*' 2>/dev/null | head -n 1)
    [ -n "$c" ] && { echo "$c"; return 0; }
    echo "nccl-env: no libnccl.so.2 found (pip install nvidia-nccl-cu13, or set QCALIB_NCCL_LIB)" >&2
    return 1
}

_qcalib_nccl_env() {
    local lib dir
    lib=$(_qcalib_nccl_find) || return 1
    dir=$(mktemp -d "${TMPDIR:-/tmp}/qcalib-nccl.XXXXXX") || return 1
    ln -sf "$lib" "$dir/libnccl.so" || return 1
    QCALIB_NCCL_LIB=$lib
    LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export QCALIB_NCCL_LIB LD_LIBRARY_PATH
    echo "nccl-env: $dir/libnccl.so -> $lib" >&2
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    _qcalib_nccl_env
    _qcalib_nccl_status=$?
    unset -f _qcalib_nccl_find _qcalib_nccl_env
    return $_qcalib_nccl_status
else
    _qcalib_nccl_env || exit 1
    printf 'export QCALIB_NCCL_LIB=%q LD_LIBRARY_PATH=%q\n' "$QCALIB_NCCL_LIB" "$LD_LIBRARY_PATH"
fi
