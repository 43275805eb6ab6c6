//! # softgpu: a software GPU for qcalib's tests
//!
//! A shared library that implements the part of the CUDA driver API and of NCCL that qcalib
//! calls through cudarc, and executes the PTX of `kernels/ptx/` itself. cudarc loads it exactly
//! as it loads NVIDIA's `libcuda.so` (see `scripts/softgpu-env.sh`); nothing in qcalib changes.
//!
//! Layers, as in a real driver:
//!
//! - [`ptx`]: the parser, from PTX text to a decoded instruction array, once per module load;
//! - [`exec`]: running a kernel: warps, lanes, barriers, shuffles, atomics, and the memory
//!   checks a real GPU does not make.

#![warn(missing_docs)]

pub mod exec;
pub mod ptx;
