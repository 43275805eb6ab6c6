// Min, max and the count of non-finite values, per tensor or per channel, in one pass.
//
// Results go to `out`, zero-initialised, of 2 * C + 2 words:
//   out[c]          = max over channel c of ~f2ord(v)   (the minimum, order-reversed)
//   out[C + c]      = max over channel c of  f2ord(v)   (the maximum)
//   out[2C .. 2C+2] = the count of NaN and +-inf values, a u64 (8-byte aligned: the buffer is)
// NaN is skipped by the comparisons (fminf/fmaxf), as on the CPU; infinities take part. The
// accumulator (ExtremesAcc) is in common.cuh: the histogram kernels use it too.
#include "common.cuh"

// Channel-major: grid (C, splits); block (c, s) reads piece s of channel c (see
// for_each_in_channel). Per-tensor is C = 1, outer = 1, inner = numel.
template <typename E>
QCALIB_DEVICE void extremes_rows(const typename E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split, u32 inner_magic,
                                 u32* __restrict__ out) {
    const u64 c = blockIdx.x;
    ExtremesAcc acc = extremes_empty();
    for_each_in_channel<E, true>(x, outer, C, inner, c, per_split, inner_magic, acc);
    extremes_commit(acc, c, C, out);
}

// Channel-last [rows, C]: grid (ceil(C / tile), splits), see ColumnTile.
template <typename E>
QCALIB_DEVICE void extremes_cols(const typename E::T* __restrict__ x, u64 rows, u64 C, u32* __restrict__ out) {
    const ColumnTile t = column_tile(C);
    if (!t.active) return;
    ExtremesAcc acc = extremes_empty();
    const u64 step = (u64)gridDim.y * t.rows_per_step;
    for (u64 r = (u64)blockIdx.y * t.rows_per_step + t.row; r < rows; r += step) acc(E::widen(x[r * C + t.c]));
    extremes_commit(acc, t.c, C, out);
}

#define EXTREMES_ENTRIES(E, suffix)                                                                             \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)                                                 \
        extremes_rows_##suffix(const E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split, u32 inner_magic, u32* __restrict__ out) { \
        extremes_rows<E>(x, outer, C, inner, per_split, inner_magic, out);                                                              \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)                                                 \
        extremes_cols_##suffix(const E::T* __restrict__ x, u64 rows, u64 C, u32* __restrict__ out) {           \
        extremes_cols<E>(x, rows, C, out);                                                                      \
    }

EXTREMES_ENTRIES(F32, f32)
EXTREMES_ENTRIES(F16, f16)
EXTREMES_ENTRIES(BF16, bf16)
