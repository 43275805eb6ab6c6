// Helpers shared by qcalib's kernels.
//
// Conventions of every kernel in this directory:
// - blocks of exactly BLOCK_THREADS threads (the launchers in src/engine/cuda/ rely on it);
// - element indices are 64-bit (`u64`): tensors may hold more than 2^32 elements;
// - the arithmetic that decides a result goes through the non-contracted IEEE intrinsics
//   (__fmul_rn, __fdiv_rn, ...) so that it matches the CPU engine bit for bit, and the files are
//   compiled with -fmad=false and without fast-math (build.rs);
// - no system header is included, so the PTX depends on nvcc alone.
//
// Under QCALIB_EMU (kernels/emu/emu.h) the same code runs on the host for the kernel tests.
#pragma once

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;

#define FULL_MASK 0xffffffffu
#define BLOCK_THREADS 256
#define WARPS_PER_BLOCK (BLOCK_THREADS / 32)

#ifndef QCALIB_EMU
#define QCALIB_DEVICE __device__ __forceinline__
#define DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

// ---------------------------------------------------------------------------------------------
// Element types: how one stored value is widened to f32 (exactly), and how a 32-bit word of a
// 16-byte load splits into values (little-endian: the lower address is the lower half).

QCALIB_DEVICE float f16_bits_to_f32(u16 h) {
#ifdef QCALIB_EMU
    return emu_f16_to_f32(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

struct F32 {
    typedef float T;
    static QCALIB_DEVICE float widen(float v) { return v; }
    template <typename F>
    static QCALIB_DEVICE void feed_word(u32 w, F& f) { f(__uint_as_float(w)); }
};

struct F16 {
    typedef u16 T;
    static QCALIB_DEVICE float widen(u16 h) { return f16_bits_to_f32(h); }
    template <typename F>
    static QCALIB_DEVICE void feed_word(u32 w, F& f) {
        f(widen((u16)(w & 0xffffu)));
        f(widen((u16)(w >> 16)));
    }
};

struct BF16 {
    typedef u16 T;
    static QCALIB_DEVICE float widen(u16 h) { return __uint_as_float(((u32)h) << 16); }
    template <typename F>
    static QCALIB_DEVICE void feed_word(u32 w, F& f) {
        f(__uint_as_float(w << 16));
        f(__uint_as_float(w & 0xffff0000u));
    }
};

// ---------------------------------------------------------------------------------------------
// Walking the elements of a tensor.

// Calls f(v) once for every element of the contiguous x[0 .. n), spread over `nthreads` threads
// of which this is `tid` (grid- or block-stride). With VEC, 16-byte loads where x is aligned (the
// unaligned head, fewer than 16 bytes, and the tail are read one by one; needs nthreads >= 8);
// without, one element at a time (for compute-bound kernels, where inlining f four to eight
// times per load would only grow the code).
template <typename E, bool VEC, typename F>
QCALIB_DEVICE void for_each_contiguous(const typename E::T* __restrict__ x, u64 n, u64 tid, u64 nthreads, F& f) {
    typedef typename E::T T;
    if (!VEC) {
        for (u64 i = tid; i < n; i += nthreads) f(E::widen(x[i]));
        return;
    }
    const u64 per_vec = 16 / sizeof(T);
    u64 head = ((16u - (u32)(reinterpret_cast<u64>(x) & 15u)) & 15u) / sizeof(T);
    if (head > n) head = n;
    const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(x + head);
    const u64 nv = (n - head) / per_vec;
    for (u64 i = tid; i < nv; i += nthreads) {
        const uint4 raw = __ldg(xv + i);
        E::feed_word(raw.x, f);
        E::feed_word(raw.y, f);
        E::feed_word(raw.z, f);
        E::feed_word(raw.w, f);
    }
    const u64 tail = head + nv * per_vec;
    if (tid < head) f(E::widen(x[tid]));
    if (tid < n - tail) f(E::widen(x[tail + tid]));
}

// Block row s = blockIdx.y's share of channel c of a dense [outer, C, inner] tensor, walked by
// the threads of one block (blockDim.x == BLOCK_THREADS); VEC as for for_each_contiguous.
// Element (o, i) of the channel is x[(o * C + c) * inner + i]. The launcher cuts the channel
// into pieces of `per_split` units:
// - outer == 1 (the channel is one contiguous run; also per-tensor): units are elements;
// - outer > 1: units are runs (values of o). With VEC, runs of inner >= BLOCK_THREADS values are
//   read one after another with 16-byte loads; otherwise the block walks the (o, i) pairs of its
//   runs, each thread stepping BLOCK_THREADS pairs at a time. inner_magic = ceil(2^32 / inner)
//   turns the divisions by a short inner (< BLOCK_THREADS) of numbers up to BLOCK_THREADS into a
//   multiply-high.
// No integer division: it would be a subroutine call, and calls spill.
template <typename E, bool VEC, typename F>
QCALIB_DEVICE void for_each_in_channel(const typename E::T* __restrict__ x, u64 outer, u64 C, u64 inner, u64 c,
                                       u64 per_split, u32 inner_magic, F& f) {
    typedef typename E::T T;
    const T* __restrict__ base = x + c * inner;
    const u64 first = (u64)blockIdx.y * per_split;
    if (outer == 1) {
        if (first >= inner) return;
        const u64 n = inner - first < per_split ? inner - first : per_split;
        for_each_contiguous<E, VEC>(base + first, n, threadIdx.x, BLOCK_THREADS, f);
        return;
    }
    if (first >= outer) return;
    const u64 runs = outer - first < per_split ? outer - first : per_split;
    const u64 row = C * inner;  // distance between two runs of the channel
    const T* __restrict__ start = base + first * row;
    if (VEC && inner >= BLOCK_THREADS) {
        for (u64 o = 0; o < runs; ++o) for_each_contiguous<E, VEC>(start + o * row, inner, threadIdx.x, BLOCK_THREADS, f);
        return;
    }
    u64 o, i, step_o, step_i;
    if (inner >= BLOCK_THREADS) {
        o = 0;
        i = threadIdx.x;
        step_o = 0;
        step_i = BLOCK_THREADS;
    } else {
        o = __umulhi(threadIdx.x, inner_magic);
        i = threadIdx.x - o * inner;
        step_o = __umulhi(BLOCK_THREADS, inner_magic);
        step_i = BLOCK_THREADS - step_o * inner;
    }
    const u64 total = runs * inner;
    for (u64 k = threadIdx.x; k < total; k += BLOCK_THREADS) {
        f(E::widen(start[o * row + i]));
        i += step_i;
        o += step_o;
        if (i >= inner) {  // step_i <= inner: one wrap at most
            i -= inner;
            o += 1;
        }
    }
}

// Channel-last tensors ([rows, C], inner == 1): a block covers `tile` consecutive channels and
// `rows_per_step` rows at a time; thread t takes channel (blockIdx.x * tile + t % tile) and the rows
// r = blockIdx.y * rows_per_step + t / tile, stepping by gridDim.y * rows_per_step. column_tile
// takes min(C, BLOCK_THREADS) channels; column_tile_of a given number.
struct ColumnTile {
    u32 tile;           // channels per block: min(C, BLOCK_THREADS)
    u32 rows_per_step;  // BLOCK_THREADS / tile
    u32 slot;           // this thread's channel within the tile
    u32 row;            // this thread's row within a step
    u64 c;              // this thread's channel
    bool active;        // row < rows_per_step and c < C
};

// The tile of `tile` channels (1 <= tile <= min(C, BLOCK_THREADS)).
QCALIB_DEVICE ColumnTile column_tile_of(u64 C, u32 tile) {
    ColumnTile t;
    t.tile = tile;
    t.rows_per_step = BLOCK_THREADS / t.tile;
    t.slot = threadIdx.x % t.tile;
    t.row = threadIdx.x / t.tile;
    t.c = (u64)blockIdx.x * t.tile + t.slot;
    t.active = t.row < t.rows_per_step && t.c < C;
    return t;
}

QCALIB_DEVICE ColumnTile column_tile(u64 C) { return column_tile_of(C, C < BLOCK_THREADS ? (u32)C : BLOCK_THREADS); }

// ---------------------------------------------------------------------------------------------
// Floats as ordered integers: integer max of f2ord() is the float max (NaN filtered before).

QCALIB_DEVICE u32 f2ord(float f) {
    const u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// NaN or +-infinity (the CPU engine's test: all exponent bits set).
QCALIB_DEVICE u32 is_non_finite(float v) { return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u; }

// ---------------------------------------------------------------------------------------------
// Extremes (min, max, non-finite count) of the values a thread sees, committed with atomics to
// `out` = [~f2ord(min) per channel (C words), f2ord(max) per channel (C words), u64 count]
// (zero-initialised; the layout of kernels/extremes.cu).

struct ExtremesAcc {
    float lo, hi;
    u64 non_finite;
    QCALIB_DEVICE void operator()(float v) {
        non_finite += is_non_finite(v);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
};

QCALIB_DEVICE ExtremesAcc extremes_empty() {
    ExtremesAcc a;
    a.lo = __uint_as_float(0x7f800000u);   // +inf
    a.hi = __uint_as_float(0xff800000u);   // -inf
    a.non_finite = 0;
    return a;
}

QCALIB_DEVICE void extremes_commit(const ExtremesAcc& a, u64 c, u64 C, u32* __restrict__ out) {
    // An empty accumulator (+inf, -inf) changes nothing: both map below every value stored.
    atomicMax(&out[c], ~f2ord(a.lo));
    atomicMax(&out[C + c], f2ord(a.hi));
    if (a.non_finite) atomicAdd(reinterpret_cast<u64*>(out + 2 * C), a.non_finite);
}

// ---------------------------------------------------------------------------------------------
// Deterministic block reductions (fixed shuffle pattern, warps summed in order by thread 0).

QCALIB_DEVICE double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// The sum of v over the block, valid in thread 0. `scratch` holds WARPS_PER_BLOCK doubles.
// Contains __syncthreads(): every thread of the block must call it.
QCALIB_DEVICE double block_sum(double v, double* scratch) {
    v = warp_sum(v);
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0) {
        for (u32 w = 0; w < WARPS_PER_BLOCK; ++w) s += scratch[w];
    }
    return s;
}

// 1 / x for x >= 1 (counts), to within an ulp, without a division (a division's slow path is a
// subroutine call, and calls spill): the hardware's approximation and two Newton steps.
QCALIB_DEVICE double recip(double x) {
#ifdef QCALIB_EMU
    return 1.0 / x;
#else
    double r;
    asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(r) : "d"(x));
    double e = __fma_rn(-x, r, 1.0);
    r = __fma_rn(r, e, r);
    e = __fma_rn(-x, r, 1.0);
    return __fma_rn(r, e, r);
#endif
}

// Knuth's error-free sum: a + b == s + e exactly.
QCALIB_DEVICE void two_sum(double a, double b, double& s, double& e) {
    s = __dadd_rn(a, b);
    const double bb = __dsub_rn(s, a);
    e = __dadd_rn(__dsub_rn(a, __dsub_rn(s, bb)), __dsub_rn(b, bb));
}
