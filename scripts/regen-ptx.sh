#!/usr/bin/env bash
# Regenerates kernels/ptx/*.ptx, the PTX a build without nvcc embeds: build.rs compiles
# kernels/*.cu with nvcc and, with QCALIB_WRITE_PTX=1, writes the files whose text changed.
# nvcc: $NVCC, else $CUDA_HOME/bin/nvcc or $CUDA_PATH/bin/nvcc, else PATH; the committed PTX comes
# from nvcc 13.0 (`.ci/run` installs it from PyPI into a cache folder and runs this check).
set -euo pipefail
cd "$(dirname "$0")/.."
QCALIB_WRITE_PTX=1 QCALIB_REQUIRE_NVCC=1 cargo build --lib --quiet
git status --short -- kernels/ptx
