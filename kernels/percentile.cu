// Percentile clipping (PercentileObserver, MixObserver): for each target count T, the first bin of
// a histogram whose cumulative count is >= T, compared exactly as real numbers (the u64 running
// count converted to f64 as Rust's `as f64` does, T widened from f32); `bins` when none is.
// Mirrors src/search/percentile.rs::first_bin_reaching.
#include "common.cuh"

#define PERCENTILE_MAX_TARGETS 32

// Block h (of a grid of one block per histogram: one, or one per channel) walks histogram h,
// hist[h * bins ..][.. bins], a tile at a time: an inclusive scan of the tile plus the carry of
// the tiles before it gives every bin's cumulative count. Its answers go to
// first[h * ntargets ..][.. ntargets].
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    first_bins_reaching(const u64* __restrict__ hist, u32 bins, const float* __restrict__ targets, u32 ntargets,
                        u32* __restrict__ first) {
    __shared__ u64 scan[BLOCK_THREADS];
    __shared__ u32 found[PERCENTILE_MAX_TARGETS];
    const u32 t = threadIdx.x;
    if (ntargets > PERCENTILE_MAX_TARGETS) ntargets = PERCENTILE_MAX_TARGETS;
    hist += (u64)blockIdx.x * bins;
    first += (u64)blockIdx.x * ntargets;
    if (t < ntargets) found[t] = bins;
    u64 carry = 0;  // the same value in every thread
    for (u32 base = 0; base < bins; base += BLOCK_THREADS) {
        const u32 b = base + t;
        scan[t] = b < bins ? hist[b] : 0;
        __syncthreads();
        for (u32 off = 1; off < BLOCK_THREADS; off <<= 1) {
            const u64 add = t >= off ? scan[t - off] : 0;
            __syncthreads();
            scan[t] += add;
            __syncthreads();
        }
        const u64 cum = carry + scan[t];
        if (b < bins) {
            const double c = __ull2double_rn(cum);
            for (u32 q = 0; q < ntargets; ++q) {
                if (c >= (double)targets[q]) atomicMin(&found[q], b);
            }
        }
        carry += scan[BLOCK_THREADS - 1];
        __syncthreads();  // scan is overwritten by the next tile
    }
    if (t < ntargets) first[t] = found[t];
}
