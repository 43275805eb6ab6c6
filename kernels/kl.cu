// The KL-divergence threshold search of SPEC §4 on a batch of histograms (one per channel for a
// per-channel observer, SPEC §8; one per tensor), each h of L bins (h[0] replaced by h[1]) with nq
// quantized levels, in kernels that mirror src/search/kl:
//
// 1. kl_prefix: one block per histogram: exact prefix sums of the counts and of the non-empty
//    bins, and a compensated prefix sum of h ln h.
// 2. With `closed` (nq > 128, so that more than one candidate has a level per bin: qint16):
//    kl_series, one block per histogram: the tables of src/search/kl/per_bin.rs, compensated
//    prefix sums of 1/h^m (m = 0 .. 7) over the bins with large counts, and the positions of the
//    others (small counts, none unless the histogram holds over 1.5e8 values); then
//    kl_divergences_per_bin, one thread per candidate i <= nq: its divergence in closed form
//    from those tables, a few reads instead of a pass over its i bins.
// 3. kl_divergences: one warp per candidate i = 128 ..= L of every histogram (those i <= nq
//    only without `closed`); its lanes share the levels (or, when nq >= i, the bins) and the warp
//    sums their terms in a fixed order.
// 4. kl_best_window: one block per histogram: the window sums S[k] = div[k] + ... + div[k + 8]
//    for k = 0 ..= D - 11, and the largest k whose S[k] is within a relative 1e-9 of the smallest
//    (-1 when none is finite).
//
// Histogram s of the batch is hist[offsets[s] .. offsets[s + 1]) (L_s = its length, >= 138); its
// prefix arrays are count[offsets[s] + s ..][.. L_s + 1] (and the same for the others, series
// with KL_TERMS doubles per entry), its small bins' positions small_bins[offsets[s] ..], its
// divergences div[div_offsets[s] .. div_offsets[s + 1]) (L_s - 127 of them), its answer best[s].
// The launcher handles the histograms without a search (L < 138, no counts) on the host.
#include "common.cuh"

#define KL_START_BIN 128
#define KL_WINDOW 9
#define KL_Q_FLOOR 1e-10
#define KL_TIE_RTOL 1e-9
// Terms of the series of h ln(1 + a/h) in a/h, and the count (in units of 1e-10 P) from which a
// bin is large (a/h <= 1/64): as src/search/kl/per_bin.rs.
#define KL_TERMS 8
#define KL_LARGE 64.0

// h[j] with h[0] = h[1] (L >= 2).
QCALIB_DEVICE u64 kl_bin(const u64* __restrict__ hist, u64 j) { return hist[j == 0 ? 1 : j]; }

QCALIB_DEVICE double h_ln_h(u64 h) { return h > 0 ? (double)h * log((double)h) : 0.0; }

// Adds 1/h^m (m = 0 .. KL_TERMS - 1) to the compensated sums (sum[m], err[m]).
QCALIB_DEVICE void kl_add_powers(u64 h, double* sum, double* err) {
    const double inv = recip((double)h);
    double power = 1.0;
    for (int m = 0; m < KL_TERMS; ++m) {
        double e;
        two_sum(sum[m], power, sum[m], e);
        err[m] = __dadd_rn(err[m], e);
        power = __dmul_rn(power, inv);
    }
}

// count[j], nonzero[j]: sums over h[0 .. j) (exact); hlnh[j] + hlnh_err[j]: sum of h ln h over
// h[0 .. j). Each array has L + 1 entries. Block s takes histogram s; thread t a contiguous chunk
// of its bins.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    kl_prefix(const u64* __restrict__ hists, const u64* __restrict__ offsets, u64* __restrict__ counts,
              u64* __restrict__ nonzeros, double* __restrict__ hlnhs, double* __restrict__ hlnh_errs) {
    __shared__ u64 chunk_count[BLOCK_THREADS], chunk_nonzero[BLOCK_THREADS];
    __shared__ double chunk_sum[BLOCK_THREADS], chunk_err[BLOCK_THREADS];
    const u64 s_idx = blockIdx.x, first = offsets[s_idx], L = offsets[s_idx + 1] - first;
    const u64* __restrict__ hist = hists + first;
    u64* __restrict__ count = counts + first + s_idx;
    u64* __restrict__ nonzero = nonzeros + first + s_idx;
    double* __restrict__ hlnh = hlnhs + first + s_idx;
    double* __restrict__ hlnh_err = hlnh_errs + first + s_idx;
    const u32 t = threadIdx.x;
    const u64 per = (L + BLOCK_THREADS - 1) / BLOCK_THREADS;
    u64 beg = t * per, end = beg + per;
    if (beg > L) beg = L;
    if (end > L) end = L;

    u64 cn = 0, nz = 0;
    double s = 0.0, e = 0.0;
    for (u64 j = beg; j < end; ++j) {
        const u64 h = kl_bin(hist, j);
        cn += h;
        nz += h > 0;
        double err;
        two_sum(s, h_ln_h(h), s, err);
        e = __dadd_rn(e, err);
    }
    chunk_count[t] = cn;
    chunk_nonzero[t] = nz;
    chunk_sum[t] = s;
    chunk_err[t] = e;
    __syncthreads();
    if (t == 0) {  // exclusive scan of the chunks, in order
        u64 c_acc = 0, n_acc = 0;
        double s_acc = 0.0, e_acc = 0.0;
        for (u32 k = 0; k < BLOCK_THREADS; ++k) {
            const u64 c_k = chunk_count[k], n_k = chunk_nonzero[k];
            const double s_k = chunk_sum[k], e_k = chunk_err[k];
            chunk_count[k] = c_acc;
            chunk_nonzero[k] = n_acc;
            chunk_sum[k] = s_acc;
            chunk_err[k] = e_acc;
            c_acc += c_k;
            n_acc += n_k;
            double err;
            two_sum(s_acc, s_k, s_acc, err);
            e_acc = __dadd_rn(e_acc, __dadd_rn(err, e_k));
        }
        count[0] = 0;
        nonzero[0] = 0;
        hlnh[0] = 0.0;
        hlnh_err[0] = 0.0;
    }
    __syncthreads();
    cn = chunk_count[t];
    nz = chunk_nonzero[t];
    s = chunk_sum[t];
    e = chunk_err[t];
    for (u64 j = beg; j < end; ++j) {
        const u64 h = kl_bin(hist, j);
        cn += h;
        nz += h > 0;
        double err;
        two_sum(s, h_ln_h(h), s, err);
        e = __dadd_rn(e, err);
        count[j + 1] = cn;
        nonzero[j + 1] = nz;
        hlnh[j + 1] = s;
        hlnh_err[j + 1] = e;
    }
}

// The tables of the closed form (src/search/kl/per_bin.rs), after kl_prefix: with P = count[L]
// and a bin large when its count h >= 64 (1e-10 P),
// - series[(j) * KL_TERMS + m]: the sum over the large non-empty bins below j of 1/h^m
//   (compensated, stored as one double; m = 0 counts them), L + 1 entries of KL_TERMS;
// - small_below[j]: the number of the other (small) non-empty bins below j, L + 1 entries;
// - small_bins[k]: the position of the k-th small bin (at most L entries).
// Block s takes histogram s; thread t a contiguous chunk of its bins.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    kl_series(const u64* __restrict__ hists, const u64* __restrict__ offsets, const u64* __restrict__ counts,
              double* __restrict__ series_of, u64* __restrict__ small_belows, u64* __restrict__ small_bins_of) {
    __shared__ double chunk_sum[KL_TERMS][BLOCK_THREADS], chunk_err[KL_TERMS][BLOCK_THREADS];
    __shared__ u64 chunk_small[BLOCK_THREADS];
    const u64 s_idx = blockIdx.x, first = offsets[s_idx], L = offsets[s_idx + 1] - first;
    const u64* __restrict__ hist = hists + first;
    const u64* __restrict__ count = counts + first + s_idx;
    double* __restrict__ series = series_of + (first + s_idx) * KL_TERMS;
    u64* __restrict__ small_below = small_belows + first + s_idx;
    u64* __restrict__ small_bins = small_bins_of + first;
    const double large_from = __dmul_rn(KL_LARGE, __dmul_rn(KL_Q_FLOOR, (double)count[L]));
    const u32 t = threadIdx.x;
    const u64 per = (L + BLOCK_THREADS - 1) / BLOCK_THREADS;
    u64 beg = t * per, end = beg + per;
    if (beg > L) beg = L;
    if (end > L) end = L;

    double sum[KL_TERMS], err[KL_TERMS];
    for (int m = 0; m < KL_TERMS; ++m) sum[m] = err[m] = 0.0;
    u64 small = 0;
    for (u64 j = beg; j < end; ++j) {
        const u64 h = kl_bin(hist, j);
        if (h == 0) continue;
        if ((double)h >= large_from) {
            kl_add_powers(h, sum, err);
        } else {
            small += 1;
        }
    }
    for (int m = 0; m < KL_TERMS; ++m) {
        chunk_sum[m][t] = sum[m];
        chunk_err[m][t] = err[m];
    }
    chunk_small[t] = small;
    __syncthreads();
    if (t == 0) {  // exclusive scan of the chunks, in order
        double s_acc[KL_TERMS], e_acc[KL_TERMS];
        for (int m = 0; m < KL_TERMS; ++m) s_acc[m] = e_acc[m] = 0.0;
        u64 n_acc = 0;
        for (u32 k = 0; k < BLOCK_THREADS; ++k) {
            for (int m = 0; m < KL_TERMS; ++m) {
                const double s_k = chunk_sum[m][k], e_k = chunk_err[m][k];
                chunk_sum[m][k] = s_acc[m];
                chunk_err[m][k] = e_acc[m];
                double e;
                two_sum(s_acc[m], s_k, s_acc[m], e);
                e_acc[m] = __dadd_rn(e_acc[m], __dadd_rn(e, e_k));
            }
            const u64 n_k = chunk_small[k];
            chunk_small[k] = n_acc;
            n_acc += n_k;
        }
        for (int m = 0; m < KL_TERMS; ++m) series[m] = 0.0;
        small_below[0] = 0;
    }
    __syncthreads();
    for (int m = 0; m < KL_TERMS; ++m) {
        sum[m] = chunk_sum[m][t];
        err[m] = chunk_err[m][t];
    }
    small = chunk_small[t];
    for (u64 j = beg; j < end; ++j) {
        const u64 h = kl_bin(hist, j);
        if (h > 0) {
            if ((double)h >= large_from) {
                kl_add_powers(h, sum, err);
            } else {
                small_bins[small] = j;
                small += 1;
            }
        }
        for (int m = 0; m < KL_TERMS; ++m) series[(j + 1) * KL_TERMS + m] = __dadd_rn(sum[m], err[m]);
        small_below[j + 1] = small;
    }
}

struct KlPrefix {
    const u64* __restrict__ hist;
    u64 L;
    const u64* __restrict__ count;
    const u64* __restrict__ nonzero;
    const double* __restrict__ hlnh;
    const double* __restrict__ hlnh_err;
    double total, inv_total, ln_total;

    // sum of h ln h over bins a .. b.
    QCALIB_DEVICE double hlnh_range(u64 a, u64 b) const {
        return __dadd_rn(__dsub_rn(hlnh[b], hlnh[a]), __dsub_rn(hlnh_err[b], hlnh_err[a]));
    }

    // The term of the candidate's last source bin i - 1, which also takes the outliers.
    QCALIB_DEVICE double last_bin_term(u64 i, double q_of_level) const {
        const u64 last = kl_bin(hist, i - 1);
        const double outliers = (double)(count[L] - count[i]);
        const double p = __dmul_rn(__dadd_rn((double)last, outliers), inv_total);
        if (!(p > 0.0)) return 0.0;
        const double q = __dadd_rn(last > 0 ? q_of_level : 0.0, KL_Q_FLOOR);
        return __dmul_rn(p, log(__dmul_rn(p, recip(q))));
    }
};

// The histogram s whose divergences hold entry `block` of the batch: the last s with
// div_offsets[s] <= block (a binary search over the `count` + 1 offsets, which ascend).
QCALIB_DEVICE u64 kl_histogram_of(const u64* __restrict__ div_offsets, u64 count, u64 block) {
    u64 lo = 0, hi = count;  // div_offsets[lo] <= block < div_offsets[hi]
    while (hi - lo > 1) {
        const u64 mid = lo + (hi - lo) / 2;
        if (div_offsets[mid] <= block) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Level m of a candidate i > nq holds the bins b0 .. b1: ceil(m * i/nq) .. ceil((m + 1) * i/nq)
// (the last one ends at i; it is the only one that does, as i/nq > 1).
QCALIB_DEVICE void kl_level_bounds(u64 m, u64 nq, u64 i, double step, u64& b0, u64& b1) {
    b0 = m == 0 ? 0 : (u64)ceil(__dmul_rn((double)m, step));
    b1 = m + 1 == nq ? i : (u64)ceil(__dmul_rn((double)(m + 1), step));
}

// Warp w of the grid: the candidate i = 128 + (w - div_offsets[s]) of histogram s, where
// div_offsets[s] <= w < div_offsets[s + 1] (`count` histograms); div[w] = its divergence, +inf
// when no counts lie below the cut. With `closed`, the candidates i <= nq are left to
// kl_divergences_per_bin.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    kl_divergences(const u64* __restrict__ hists, const u64* __restrict__ offsets,
                   const u64* __restrict__ div_offsets, u64 count_of_hists, u64 nq, u64 closed,
                   const u64* __restrict__ counts, const u64* __restrict__ nonzeros, const double* __restrict__ hlnhs,
                   const double* __restrict__ hlnh_errs, double* __restrict__ div) {
    const u32 lane = threadIdx.x & 31u;
    const u64 w = (u64)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5);
    // Every test below is uniform across the warp: a warp returns whole.
    if (w >= div_offsets[count_of_hists]) return;
    const u64 s_idx = kl_histogram_of(div_offsets, count_of_hists, w);
    const u64 first = offsets[s_idx], L = offsets[s_idx + 1] - first;
    const u64* __restrict__ hist = hists + first;
    const u64* __restrict__ count = counts + first + s_idx;
    const u64* __restrict__ nonzero = nonzeros + first + s_idx;
    const u64 i = KL_START_BIN + (w - div_offsets[s_idx]);
    if (closed && i <= nq) return;
    const u64 below_count = count[i];
    if (below_count == 0) {
        if (lane == 0) div[w] = __longlong_as_double(0x7ff0000000000000LL);
        return;
    }
    KlPrefix pre;
    pre.hist = hist;
    pre.L = L;
    pre.count = count;
    pre.nonzero = nonzero;
    pre.hlnh = hlnhs + first + s_idx;
    pre.hlnh_err = hlnh_errs + first + s_idx;
    pre.total = (double)count[L];
    pre.ln_total = log(pre.total);
    // No division (its slow path is a subroutine call, and calls spill): multiplications by
    // reciprocals, which differ from the CPU's divisions by an ulp; the tie rule of the window
    // sums absorbs far more than that.
    pre.inv_total = recip(pre.total);
    const double inv_total = pre.inv_total;
    const double inv_below = recip((double)below_count);

    double acc = 0.0;
    double q_last;
    if (nq >= i) {
        // Every source bin is a level of its own: sum p ln(p / q) over the bins below i - 1.
        for (u64 j = lane; j + 1 < i; j += 32) {
            const u64 h = kl_bin(hist, j);
            if (h > 0) {
                const double p = __dmul_rn((double)h, inv_total);
                const double q = __dadd_rn(__dmul_rn((double)h, inv_below), KL_Q_FLOOR);
                acc = __dadd_rn(acc, __dmul_rn(p, log(__dmul_rn(p, recip(q)))));
            }
        }
        q_last = __dmul_rn((double)kl_bin(hist, i - 1), inv_below);
    } else {
        const double step = __ddiv_rn((double)i, (double)nq);
        // The q of a level with `members` non-empty bins holding `level_count` counts.
        auto level_q = [&](u64 b0, u64 b1, u64 members) {
            const double level_total = (double)(count[b1] - count[b0]);
            return __dmul_rn(__dmul_rn(level_total, recip((double)members)), inv_below);
        };
        for (u64 m = lane; m < nq; m += 32) {
            u64 b0, b1;
            kl_level_bounds(m, nq, i, step, b0, b1);
            const u64 members = nonzero[b1] - nonzero[b0];
            if (members > 0) {
                const double q = level_q(b0, b1, members);
                // Every member bin but the candidate's last one: sum p ln(p / (q + floor)).
                const u64 end = b1 == i ? i - 1 : b1;
                const double h = (double)(count[end] - count[b0]);
                if (h > 0.0) {
                    const double g = pre.hlnh_range(b0, end);
                    const double lnq = __dadd_rn(pre.ln_total, log(__dadd_rn(q, KL_Q_FLOOR)));
                    acc = __dadd_rn(acc, __dmul_rn(__dsub_rn(g, __dmul_rn(h, lnq)), inv_total));
                }
            }
        }
        // The q of the last level (the one that ends at i), in every lane.
        u64 b0, b1;
        kl_level_bounds(nq - 1, nq, i, step, b0, b1);
        const u64 members = nonzero[b1] - nonzero[b0];
        q_last = members > 0 ? level_q(b0, b1, members) : 0.0;
    }
    const double sum = warp_sum(acc);
    if (lane == 0) div[w] = __dadd_rn(sum, pre.last_bin_term(i, q_last));
}

// Thread g of the grid: the candidate i = 128 + (g - div_offsets[s]) of histogram s (as
// kl_divergences), when i <= nq: every non-empty bin below the cut is a level of its own, and with
// B = count[i], P the total, a = 1e-10 B and C = count[i - 1] its divergence is
//
//   (C ln(B/P) - F) / P + (the term of the last bin, which also takes the outliers),
//   F = sum over the non-empty bins j < i - 1 of h ln(1 + a/h),
//
// F from the series a S0 - a^2 S1/2 + a^3 S2/3 - ... over the large bins (kl_series' tables) and
// a direct sum over the small ones: src/search/kl/per_bin.rs, term for term.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    kl_divergences_per_bin(const u64* __restrict__ hists, const u64* __restrict__ offsets,
                           const u64* __restrict__ div_offsets, u64 count_of_hists, u64 nq,
                           const u64* __restrict__ counts, const double* __restrict__ series_of,
                           const u64* __restrict__ small_belows, const u64* __restrict__ small_bins_of,
                           double* __restrict__ div) {
    const u64 g = (u64)blockIdx.x * BLOCK_THREADS + threadIdx.x;
    if (g >= div_offsets[count_of_hists]) return;
    const u64 s_idx = kl_histogram_of(div_offsets, count_of_hists, g);
    const u64 i = KL_START_BIN + (g - div_offsets[s_idx]);
    if (i > nq) return;  // a candidate with levels: kl_divergences
    const u64 first = offsets[s_idx], L = offsets[s_idx + 1] - first;
    const u64* __restrict__ hist = hists + first;
    const u64* __restrict__ count = counts + first + s_idx;
    const u64 below = count[i];
    if (below == 0) {
        div[g] = __longlong_as_double(0x7ff0000000000000LL);
        return;
    }
    const double b = (double)below, total = (double)count[L];
    const double outliers = (double)(count[L] - below);
    const double a = __dmul_rn(KL_Q_FLOOR, b);
    // The large bins: a S0 - a^2 S1/2 + ... in Horner's form.
    const double* __restrict__ s = series_of + (first + s_idx + i - 1) * KL_TERMS;
    double t = __ddiv_rn(s[KL_TERMS - 1], (double)KL_TERMS);
    for (int m = KL_TERMS - 2; m >= 1; --m) t = __dsub_rn(__ddiv_rn(s[m], (double)(m + 1)), __dmul_rn(a, t));
    const double large = __dmul_rn(a, __dsub_rn(s[0], __dmul_rn(a, t)));
    // The small bins below i - 1, one by one (none unless the histogram holds over 1.5e8 values).
    const u64* __restrict__ small_bins = small_bins_of + first;
    const u64 smalls = small_belows[first + s_idx + i - 1];
    double small = 0.0;
    for (u64 k = 0; k < smalls; ++k) {
        const double v = (double)kl_bin(hist, small_bins[k]);
        small = __dadd_rn(small, __dmul_rn(v, log1p(__ddiv_rn(a, v))));
    }
    // ln(B/P) = -ln(1 + outliers/B), exact to rounding however close B is to P.
    const double c_ln = __dmul_rn((double)count[i - 1], -log1p(__ddiv_rn(outliers, b)));
    const double body = __ddiv_rn(__dsub_rn(c_ln, __dadd_rn(large, small)), total);
    KlPrefix pre;
    pre.hist = hist;
    pre.L = L;
    pre.count = count;
    pre.inv_total = recip(total);
    div[g] = __dadd_rn(body, pre.last_bin_term(i, __ddiv_rn((double)kl_bin(hist, i - 1), b)));
}

QCALIB_DEVICE double window_sum(const double* __restrict__ div, u64 k) {
    double s = 0.0;
    for (u32 w = 0; w < KL_WINDOW; ++w) s = __dadd_rn(s, div[k + w]);
    return s;
}

// best[s] = the largest k with |S[k] - min S| <= 1e-9 |min S| over the divergences of histogram
// s (block s), or -1 when min S is not finite; each histogram has D >= KL_WINDOW + 2 divergences.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS)
    kl_best_window(const double* __restrict__ divs, const u64* __restrict__ div_offsets, i64* __restrict__ best_of) {
    __shared__ double mins[BLOCK_THREADS];
    __shared__ i64 bests[BLOCK_THREADS];
    const u64 s_idx = blockIdx.x;
    const double* __restrict__ div = divs + div_offsets[s_idx];
    const u64 D = div_offsets[s_idx + 1] - div_offsets[s_idx];
    i64* __restrict__ best = best_of + s_idx;
    const u32 t = threadIdx.x;
    const u64 windows = D - KL_WINDOW - 1;  // k = 0 ..= D - 11
    double lo = __longlong_as_double(0x7ff0000000000000LL);
    for (u64 k = t; k < windows; k += blockDim.x) lo = fmin(lo, window_sum(div, k));
    mins[t] = lo;
    __syncthreads();
    for (u32 half = BLOCK_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) mins[t] = fmin(mins[t], mins[t + half]);
        __syncthreads();
    }
    const double smin = mins[0];
    i64 mine = -1;
    if (isfinite(smin)) {
        const double tol = __dmul_rn(KL_TIE_RTOL, fabs(smin));
        for (u64 k = t; k < windows; k += blockDim.x) {
            if (fabs(__dsub_rn(window_sum(div, k), smin)) <= tol) mine = (i64)k;  // k grows: the last one
        }
    }
    bests[t] = mine;
    __syncthreads();
    for (u32 half = BLOCK_THREADS / 2; half > 0; half >>= 1) {
        if (t < half && bests[t + half] > bests[t]) bests[t] = bests[t + half];
        __syncthreads();
    }
    if (t == 0) best[0] = bests[0];
}
