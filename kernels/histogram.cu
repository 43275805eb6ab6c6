// The histogram of |x| over a whole (contiguous) tensor, with the bin rule of SPEC §5 as the CPU
// engine has it (src/engine/cpu/histogram.rs::bin_of): |v| goes to
// floor(f32(f32(|v| * bins) / hi)), clamped to bins - 1, or, where |v| * bins overflows f32, to
// floor(f32(f32(|v| / hi) * bins)); values above hi and NaN are not counted. hi <= 0 is the
// all-zero range: only zeros count, in bin 0.
//
// A division by hi is f32(f64(p) * inv_hi) with inv_hi = f64(1 / hi) from the host: that is the
// correctly rounded p / hi wherever it is at least 2^-126 (see kernels/fake_quant.cu), and below
// that both floor to bin 0 (and |v| / hi of a counted |v| whose product overflowed is above
// 2^-21): the bins of __fdiv_rn, without its slow path.
//
// `hist` holds `bins` u64 counts, zero-initialised; blocks add into it with integer atomics, so
// the result does not depend on the order of the blocks.
//
// abs_hist_extremes_shared_* also find the extremes of x in the same pass (for a KL window whose
// range is known before the batch), into `ext` laid out as kernels/extremes.cu's `out` for C = 1.
#include "common.cuh"

QCALIB_DEVICE float div_by_hi(float p, double inv_hi) { return __double2float_rn(__dmul_rn((double)p, inv_hi)); }

// The bin of v, or `bins` when v is not counted.
QCALIB_DEVICE u32 abs_bin(float v, u32 bins, float bins_f, float top, float hi, double inv_hi) {
    if (!(hi > 0.0f)) return v == 0.0f ? 0u : bins;
    const float a = fabsf(v);
    const float product = __fmul_rn(a, bins_f);
    float pos = product < __uint_as_float(0x7f800000u) ? div_by_hi(product, inv_hi)
                                                      : __fmul_rn(div_by_hi(a, inv_hi), bins_f);
    pos = pos < top ? pos : top;  // also catches NaN
    const u32 b = __float2uint_rz(pos);
    return a <= hi ? b : bins;  // NaN fails the test too: never counted
}

// Counts per block in shared memory (u32: the launcher keeps each block under 2^31 values),
// then one global atomic per non-empty bin. Dynamic shared memory: bins * 4 bytes. With
// EXTREMES, also the extremes of x (per tensor) into `ext` (4 words, zero-initialised).
template <typename E, bool EXTREMES>
QCALIB_DEVICE void abs_hist_shared(const typename E::T* __restrict__ x, u64 n, u32 bins, float hi, double inv_hi,
                                   u64* __restrict__ hist, u32* __restrict__ ext) {
    DYNAMIC_SHARED(u32, counts);
    for (u32 b = threadIdx.x; b < bins; b += blockDim.x) counts[b] = 0;
    __syncthreads();
    const float bins_f = (float)bins, top = (float)(bins - 1);
    ExtremesAcc acc = extremes_empty();
    auto put = [&](float v) {
        if (EXTREMES) acc(v);
        const u32 b = abs_bin(v, bins, bins_f, top, hi, inv_hi);
        if (b < bins) atomicAdd(&counts[b], 1u);
    };
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for_each_contiguous<E, true>(x, n, tid, (u64)gridDim.x * blockDim.x, put);
    if (EXTREMES) extremes_commit(acc, 0, 1, ext);
    __syncthreads();
    for (u32 b = threadIdx.x; b < bins; b += blockDim.x) {
        const u32 s = counts[b];
        if (s) atomicAdd(&hist[b], (u64)s);
    }
}

// For more bins than shared memory holds: every value is one global atomic.
template <typename E>
QCALIB_DEVICE void abs_hist_global(const typename E::T* __restrict__ x, u64 n, u32 bins, float hi, double inv_hi,
                                   u64* __restrict__ hist) {
    const float bins_f = (float)bins, top = (float)(bins - 1);
    auto put = [&](float v) {
        const u32 b = abs_bin(v, bins, bins_f, top, hi, inv_hi);
        if (b < bins) atomicAdd(&hist[b], 1ull);
    };
    const u64 tid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for_each_contiguous<E, true>(x, n, tid, (u64)gridDim.x * blockDim.x, put);
}

#define HISTOGRAM_ENTRIES(E, suffix)                                                                      \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)                                           \
        abs_hist_shared_##suffix(const E::T* __restrict__ x, u64 n, u32 bins, float hi, double inv_hi, u64* __restrict__ hist) { \
        abs_hist_shared<E, false>(x, n, bins, hi, inv_hi, hist, nullptr);                                                         \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)                                           \
        abs_hist_extremes_shared_##suffix(const E::T* __restrict__ x, u64 n, u32 bins, float hi, double inv_hi, u64* __restrict__ hist, u32* __restrict__ ext) { \
        abs_hist_shared<E, true>(x, n, bins, hi, inv_hi, hist, ext);                                           \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)                                           \
        abs_hist_global_##suffix(const E::T* __restrict__ x, u64 n, u32 bins, float hi, double inv_hi, u64* __restrict__ hist) { \
        abs_hist_global<E>(x, n, bins, hi, inv_hi, hist);                                                         \
    }

HISTOGRAM_ENTRIES(F32, f32)
HISTOGRAM_ENTRIES(F16, f16)
HISTOGRAM_ENTRIES(BF16, bf16)
