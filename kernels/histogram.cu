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

// ---------------------------------------------------------------------------------------------
// Per-channel histograms (SPEC §8): channel c of a dense [outer, C, inner] tensor counts |x| into
// its own bins[c] bins on [0, hi[c]] at hist[offsets[c] ..], with the bin rule above (bins[c] = 0:
// the channel is not counted); inv_hi[c] = f64(1 / hi[c]) from the host (0 when hi[c] <= 0). With
// want_extremes, the per-channel extremes of x go to `ext` (kernels/extremes.cu's layout, C
// channels) from the same pass. Every count is an integer atomic: the result does not depend on
// the order of the blocks, and equals the CPU engine's histograms.

struct ChannelBins {
    u64 offset;
    u32 bins;
    float bins_f, top, hi;
    double inv_hi;
    // The counter of v in `hist`, or `bins` when v is not counted.
    QCALIB_DEVICE u32 bin(float v) const { return abs_bin(v, bins, bins_f, top, hi, inv_hi); }
};

QCALIB_DEVICE ChannelBins channel_bins(const u64* __restrict__ offsets, const u32* __restrict__ bins,
                                       const float* __restrict__ hi, const double* __restrict__ inv_hi, u64 c) {
    ChannelBins b;
    b.offset = offsets[c];
    b.bins = bins[c];
    b.bins_f = (float)b.bins;
    b.top = b.bins > 0 ? (float)(b.bins - 1) : 0.0f;
    b.hi = hi[c];
    b.inv_hi = inv_hi[c];
    return b;
}

// Channel-major: grid (C, splits); block (c, s) reads piece s of channel c (for_each_in_channel).
// SHARED: the block counts in shared memory (u32; the launcher keeps a block under 2^31 values and
// gives max bins[c] * 4 bytes), then adds its non-empty counters to `hist`; else every value is
// one global atomic.
template <typename E, bool SHARED>
QCALIB_DEVICE void abs_hists_rows(const typename E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split,
                                  u32 inner_magic, const u64* __restrict__ offsets, const u32* __restrict__ bins,
                                  const float* __restrict__ hi, const double* __restrict__ inv_hi, u32 want_extremes,
                                  u64* __restrict__ hist, u32* __restrict__ ext) {
    DYNAMIC_SHARED(u32, counts);
    const u64 c = blockIdx.x;
    const ChannelBins b = channel_bins(offsets, bins, hi, inv_hi, c);
    if (b.bins == 0 && !want_extremes) return;  // uniform across the block
    if (SHARED) {
        for (u32 k = threadIdx.x; k < b.bins; k += blockDim.x) counts[k] = 0;
        __syncthreads();
    }
    ExtremesAcc acc = extremes_empty();
    auto put = [&](float v) {
        acc(v);
        const u32 k = b.bin(v);
        if (k < b.bins) {
            if (SHARED) {
                atomicAdd(&counts[k], 1u);
            } else {
                atomicAdd(&hist[b.offset + k], 1ull);
            }
        }
    };
    for_each_in_channel<E, true>(x, outer, C, inner, c, per_split, inner_magic, put);
    if (want_extremes) extremes_commit(acc, c, C, ext);
    if (SHARED) {
        __syncthreads();
        for (u32 k = threadIdx.x; k < b.bins; k += blockDim.x) {
            const u32 s = counts[k];
            if (s) atomicAdd(&hist[b.offset + k], (u64)s);
        }
    }
}

// Thread t's rows of its channel t.c of a channel-last [rows, C] tensor (see ColumnTile): bump(k)
// for each value in bin k of b, and with want_extremes the channel's extremes into `ext`.
template <typename E, typename Bump>
QCALIB_DEVICE void count_column(const typename E::T* __restrict__ x, u64 rows, u64 C, const ColumnTile& t,
                                const ChannelBins& b, u32 want_extremes, u32* __restrict__ ext, Bump bump) {
    ExtremesAcc acc = extremes_empty();
    const u64 step = (u64)gridDim.y * t.rows_per_step;
    for (u64 r = (u64)blockIdx.y * t.rows_per_step + t.row; r < rows; r += step) {
        const float v = E::widen(x[r * C + t.c]);
        acc(v);
        const u32 k = b.bin(v);
        if (k < b.bins) bump(k);
    }
    if (want_extremes) extremes_commit(acc, t.c, C, ext);
}

// Channel-last [rows, C]: grid (ceil(C / tile), splits), see ColumnTile; each thread counts its
// channel's values with global atomics (for channels of more bins than shared memory holds).
template <typename E>
QCALIB_DEVICE void abs_hists_cols(const typename E::T* __restrict__ x, u64 rows, u64 C, const u64* __restrict__ offsets,
                                  const u32* __restrict__ bins, const float* __restrict__ hi,
                                  const double* __restrict__ inv_hi, u32 want_extremes, u64* __restrict__ hist,
                                  u32* __restrict__ ext) {
    const ColumnTile t = column_tile(C);
    if (!t.active) return;
    const ChannelBins b = channel_bins(offsets, bins, hi, inv_hi, t.c);
    if (b.bins == 0 && !want_extremes) return;
    count_column<E>(x, rows, C, t, b, want_extremes, ext, [&](u32 k) { atomicAdd(&hist[b.offset + k], 1ull); });
}

// Channel-last [rows, C] with the counters in shared memory: grid (ceil(C / tile), splits); a
// block takes `tile` channels (column_tile_of), channel slot s counting into the u32 counters
// counts[s * stride ..][.. bins[c]] (stride >= every bins[c] of the block; the launcher keeps
// tile * stride * 4 bytes within the dynamic shared memory it gives, and a block's rows under
// 2^31), then adds its non-empty counters to `hist`, one global atomic each.
template <typename E>
QCALIB_DEVICE void abs_hists_cols_shared(const typename E::T* __restrict__ x, u64 rows, u64 C, u32 tile, u32 stride,
                                         const u64* __restrict__ offsets, const u32* __restrict__ bins,
                                         const float* __restrict__ hi, const double* __restrict__ inv_hi,
                                         u32 want_extremes, u64* __restrict__ hist, u32* __restrict__ ext) {
    DYNAMIC_SHARED(u32, counts);
    for (u32 k = threadIdx.x; k < tile * stride; k += BLOCK_THREADS) counts[k] = 0;
    __syncthreads();
    const ColumnTile t = column_tile_of(C, tile);
    if (t.active) {
        const ChannelBins b = channel_bins(offsets, bins, hi, inv_hi, t.c);
        u32* __restrict__ mine = counts + (u64)t.slot * stride;
        count_column<E>(x, rows, C, t, b, want_extremes, ext, [&](u32 k) { atomicAdd(&mine[k], 1u); });
    }
    __syncthreads();
    const u64 first = (u64)blockIdx.x * tile;
    const u32* __restrict__ slot_counts = counts;
    for (u32 s = 0; s < tile && first + s < C; ++s, slot_counts += stride) {
        const u64 offset = offsets[first + s];
        const u32 n = bins[first + s];
        for (u32 k = threadIdx.x; k < n; k += BLOCK_THREADS) {
            const u32 count = slot_counts[k];
            if (count) atomicAdd(&hist[offset + k], (u64)count);
        }
    }
}

#define PER_CHANNEL_HISTOGRAM_ENTRIES(E, suffix)                                                                      \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) abs_hists_rows_shared_##suffix(                      \
        const E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split, u32 inner_magic,                     \
        const u64* __restrict__ offsets, const u32* __restrict__ bins, const float* __restrict__ hi,                 \
        const double* __restrict__ inv_hi, u32 want_extremes, u64* __restrict__ hist, u32* __restrict__ ext) {        \
        abs_hists_rows<E, true>(x, outer, C, inner, per_split, inner_magic, offsets, bins, hi, inv_hi, want_extremes, \
                                hist, ext);                                                                           \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) abs_hists_rows_global_##suffix(                      \
        const E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 per_split, u32 inner_magic,                     \
        const u64* __restrict__ offsets, const u32* __restrict__ bins, const float* __restrict__ hi,                 \
        const double* __restrict__ inv_hi, u32 want_extremes, u64* __restrict__ hist, u32* __restrict__ ext) {        \
        abs_hists_rows<E, false>(x, outer, C, inner, per_split, inner_magic, offsets, bins, hi, inv_hi,               \
                                 want_extremes, hist, ext);                                                           \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) abs_hists_cols_##suffix(                             \
        const E::T* __restrict__ x, u64 rows, u64 C, const u64* __restrict__ offsets, const u32* __restrict__ bins,  \
        const float* __restrict__ hi, const double* __restrict__ inv_hi, u32 want_extremes, u64* __restrict__ hist,  \
        u32* __restrict__ ext) {                                                                                      \
        abs_hists_cols<E>(x, rows, C, offsets, bins, hi, inv_hi, want_extremes, hist, ext);                          \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) abs_hists_cols_shared_##suffix(                      \
        const E::T* __restrict__ x, u64 rows, u64 C, u32 tile, u32 stride, const u64* __restrict__ offsets,          \
        const u32* __restrict__ bins, const float* __restrict__ hi, const double* __restrict__ inv_hi,               \
        u32 want_extremes, u64* __restrict__ hist, u32* __restrict__ ext) {                                           \
        abs_hists_cols_shared<E>(x, rows, C, tile, stride, offsets, bins, hi, inv_hi, want_extremes, hist, ext);     \
    }

PER_CHANNEL_HISTOGRAM_ENTRIES(F32, f32)
PER_CHANNEL_HISTOGRAM_ENTRIES(F16, f16)
PER_CHANNEL_HISTOGRAM_ENTRIES(BF16, bf16)
