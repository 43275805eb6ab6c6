//! # softgpu: a software GPU for qcalib's tests
//!
//! A shared library that implements the part of the CUDA driver API and of NCCL that qcalib
//! calls through cudarc, and executes the PTX of `kernels/ptx/` itself. cudarc loads it exactly
//! as it loads NVIDIA's `libcuda.so` (see `scripts/softgpu-env.sh`); nothing in qcalib changes.
//!
//! Layers, as in a real driver:
//!
//! - [`api`]: the exported C functions (`cu*`, `nccl*`), their argument checks and error codes;
//! - [`device`]: devices and primary contexts, the memory table, streams (each on its own thread,
//!   asynchronous to the host), events, modules, launches, and the sticky error a fault leaves;
//! - [`nccl`]: communicators whose ranks meet through the unique id and all-reduce in rank order;
//! - [`ptx`]: the parser, from PTX text to a decoded instruction array, once per module load;
//! - [`exec`]: running a kernel: warps, lanes, barriers, shuffles, atomics, and the memory
//!   checks a real GPU does not make.
//!
//! Every function of cudarc's bindings exists (`symbols/*.txt`, generated from cudarc by
//! `tools/cudarc_symbols.py`); those softgpu does not implement return
//! `CUDA_ERROR_NOT_SUPPORTED` (NCCL: `ncclInvalidUsage`).

#![warn(missing_docs)]

pub mod api;
pub mod device;
pub mod exec;
pub mod nccl;
pub mod ptx;
