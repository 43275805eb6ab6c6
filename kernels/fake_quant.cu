// Sums of squared fake-quantization errors of K candidate scales, per tensor or per channel, in
// one launch: each block scores FQ_GROUP candidates (blockIdx.z picks the group) against its
// share of the data, so the data is read ceil(K / FQ_GROUP) times. The kernel is bound by
// arithmetic (about ten instructions per value and candidate), so it reads one value at a time.
//
//   fq(x, s) = clamp(round_half_even(x / s), qmin, qmax) * s      (f32, true division)
//   err      = sum over the channel of f64(f32(fq(x, s) - x))^2   (f64)
//
// exactly as src/arith.rs. The quotient x / s is computed as f32(f64(x) * (1 / s)) with 1 / s
// rounded to f64 on the host (`inv_scales`): for f32 x and s the exact quotient is never within a
// relative 2^-49 of a point where rounding to f32 changes (a midpoint between two f32 values:
// x = s * m would need a 25-bit significand), and f64(x) * f64(1 / s) is within 2^-52 of it, so
// the f32 result is the correctly rounded x / s. Below 2^-126 both may differ, but both round
// to the integer 0. This keeps the division's slow path (a subroutine call, which spills) out of
// the loop. Determinism: every thread sums its elements in a fixed order, a block
// reduces its threads in a fixed order and writes its partial sums to
// partial[(split * K + k) * C + c]; fq_sum_splits then adds the splits in order. The grid depends
// only on the tensor's shape, so the sums are the same on every run and every GPU.
#include "common.cuh"

#define FQ_GROUP 16
// Two blocks per SM bound the registers at 128 a thread: enough for the group's scales,
// reciprocals and sums without spilling (ptxas otherwise aims at 64 and spills).
#define FQ_MIN_BLOCKS 2

// f32(fq(x, s) - x) with inv_s = f64(1 / s). The comparisons are the CPU's, so a NaN would pass
// through the same way.
QCALIB_DEVICE float fq_diff(float x, float s, double inv_s, float qmin, float qmax) {
    float q = rintf(__double2float_rn(__dmul_rn((double)x, inv_s)));
    q = q < qmin ? qmin : q;
    q = q > qmax ? qmax : q;
    return __fsub_rn(__fmul_rn(q, s), x);
}

// The squared errors of one thread's values against its channel's candidates k0 .. k0 + count.
struct FqAcc {
    float scale[FQ_GROUP];
    double inv_scale[FQ_GROUP];
    double err[FQ_GROUP];
    u32 count;
    float qmin, qmax;
    QCALIB_DEVICE void operator()(float v) {
#pragma unroll
        for (u32 kk = 0; kk < FQ_GROUP; ++kk) {
            if (kk < count) {
                const double d = (double)fq_diff(v, scale[kk], inv_scale[kk], qmin, qmax);
                err[kk] = __fma_rn(d, d, err[kk]);  // d * d is exact in f64: one rounding, as on the CPU
            }
        }
    }
};

QCALIB_DEVICE FqAcc fq_acc(const float* __restrict__ scales, const double* __restrict__ inv_scales, u64 K, u64 C,
                           u64 c, bool active, float qmin, float qmax) {
    FqAcc a;
    const u64 k0 = (u64)blockIdx.z * FQ_GROUP;
    a.count = (u32)(K - k0 < FQ_GROUP ? K - k0 : FQ_GROUP);
    a.qmin = qmin;
    a.qmax = qmax;
#pragma unroll
    for (u32 kk = 0; kk < FQ_GROUP; ++kk) {
        const bool used = active && kk < a.count;
        a.scale[kk] = used ? scales[(k0 + kk) * C + c] : 1.0f;
        a.inv_scale[kk] = used ? inv_scales[(k0 + kk) * C + c] : 1.0;
        a.err[kk] = 0.0;
    }
    return a;
}

// Channel-major: grid (C, splits, groups); block (c, s, g) scores group g against piece s of
// channel c (see for_each_in_channel). Per-tensor is C = 1, outer = 1, inner = numel.
template <typename E>
QCALIB_DEVICE void fq_err_rows(const typename E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split, u32 inner_magic,
                               const float* __restrict__ scales, const double* __restrict__ inv_scales, u64 K, float qmin, float qmax,
                               double* __restrict__ partial) {
    __shared__ double scratch[WARPS_PER_BLOCK];
    const u64 c = blockIdx.x;
    FqAcc acc = fq_acc(scales, inv_scales, K, C, c, true, qmin, qmax);
    for_each_in_channel<E, false>(x, outer, C, inner, c, per_split, inner_magic, acc);
    const u64 k0 = (u64)blockIdx.z * FQ_GROUP;
#pragma unroll
    for (u32 kk = 0; kk < FQ_GROUP; ++kk) {
        if (kk < acc.count) {  // uniform across the block
            const double s = block_sum(acc.err[kk], scratch);
            if (threadIdx.x == 0) partial[((u64)blockIdx.y * K + k0 + kk) * C + c] = s;
        }
    }
}

// Channel-last [rows, C]: grid (ceil(C / tile), splits, groups), see ColumnTile. The threads of a
// channel (one per row of a step) are summed in row order.
template <typename E>
QCALIB_DEVICE void fq_err_cols(const typename E::T* __restrict__ x, u64 rows, u64 C, const float* __restrict__ scales,
                               const double* __restrict__ inv_scales, u64 K, float qmin, float qmax, double* __restrict__ partial) {
    __shared__ double red[BLOCK_THREADS];
    const ColumnTile t = column_tile(C);
    FqAcc acc = fq_acc(scales, inv_scales, K, C, t.c, t.active, qmin, qmax);
    if (t.active) {
        const u64 step = (u64)gridDim.y * t.rows_per_step;
        for (u64 r = (u64)blockIdx.y * t.rows_per_step + t.row; r < rows; r += step) acc(E::widen(x[r * C + t.c]));
    }
    const u64 k0 = (u64)blockIdx.z * FQ_GROUP;
    // Thread t < tile holds row 0 of channel blockIdx.x * tile + t.
    const bool writer = threadIdx.x < t.tile && (u64)blockIdx.x * t.tile + threadIdx.x < C;
#pragma unroll
    for (u32 kk = 0; kk < FQ_GROUP; ++kk) {
        if (kk < acc.count) {  // uniform across the block
            red[threadIdx.x] = acc.err[kk];
            __syncthreads();
            if (writer) {
                double s = 0.0;
                for (u32 j = 0; j < t.rows_per_step; ++j) s += red[j * t.tile + threadIdx.x];
                partial[((u64)blockIdx.y * K + k0 + kk) * C + t.c] = s;
            }
            __syncthreads();
        }
    }
}

// out[j] = sum over s < splits of partial[s * count + j], in order of s.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    fq_sum_splits(const double* __restrict__ partial, u64 splits, u64 count, double* __restrict__ out) {
    const u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= count) return;
    double s = 0.0;
    for (u64 i = 0; i < splits; ++i) s += partial[i * count + j];
    out[j] = s;
}

#define FAKE_QUANT_ENTRIES(E, suffix)                                                                         \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS, FQ_MIN_BLOCKS)                                           \
        fq_err_rows_##suffix(const E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split, u32 inner_magic,                        \
                             const float* __restrict__ scales, const double* __restrict__ inv_scales, u64 K, float qmin, float qmax,                 \
                             double* __restrict__ partial) {                                                  \
        fq_err_rows<E>(x, outer, C, inner, per_split, inner_magic, scales, inv_scales, K, qmin, qmax, partial);                                  \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS, FQ_MIN_BLOCKS)                                           \
        fq_err_cols_##suffix(const E::T* __restrict__ x, u64 rows, u64 C, const float* __restrict__ scales,   \
                             const double* __restrict__ inv_scales, u64 K, float qmin, float qmax, double* __restrict__ partial) {                   \
        fq_err_cols<E>(x, rows, C, scales, inv_scales, K, qmin, qmax, partial);                                           \
    }

FAKE_QUANT_ENTRIES(F32, f32)
FAKE_QUANT_ENTRIES(F16, f16)
FAKE_QUANT_ENTRIES(BF16, bf16)
