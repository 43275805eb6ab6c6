// A small CUDA emulator for testing qcalib's kernels on a machine without a GPU.
//
// Each block runs on BLOCK_THREADS host threads (a pool, one thread per CUDA thread) that really
// synchronise at __syncthreads() and at every warp shuffle; blocks run one after another, so
// `__shared__` variables can be plain statics. Atomics are std::atomic_ref, 16-byte loads check
// their alignment, and the IEEE intrinsics are the host's IEEE operations (compiled with
// -ffp-contract=off). What it cannot check: anything of the real hardware (timing, the memory
// model beyond barriers, register limits) and the Rust side of a launch.
#pragma once
#define QCALIB_EMU 1

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define QCALIB_DEVICE inline
#define DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(emu::dynamic_smem.data())

struct uint4 {
    unsigned int x, y, z, w;
};

struct EmuDim3 {
    unsigned int x = 1, y = 1, z = 1;
};

namespace emu {
inline thread_local EmuDim3 thread_idx, block_idx;
inline EmuDim3 block_dim, grid_dim;
inline std::vector<unsigned char> dynamic_smem;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::unique_ptr<std::barrier<>> warp_barrier[32];
inline unsigned long long warp_slots[32][32];

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "emu: %s\n", what);
    std::abort();
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int offset) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    emu::warp_barrier[warp]->arrive_and_wait();
    emu::warp_slots[warp][lane] = bits;
    emu::warp_barrier[warp]->arrive_and_wait();
    bits = emu::warp_slots[warp][lane ^ (unsigned)offset];
    emu::warp_barrier[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

template <typename T>
inline T atomicAdd(T* p, T v) {
    return std::atomic_ref<T>(*p).fetch_add(v);
}
template <typename T>
inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old > v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

inline uint4 __ldg(const uint4* p) {
    if (reinterpret_cast<std::uintptr_t>(p) & 15u) emu::fail("misaligned 16-byte load");
    return *p;
}

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline double __longlong_as_double(long long u) {
    double f;
    std::memcpy(&f, &u, 8);
    return f;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __double2float_rn(double d) { return (float)d; }
inline double __ull2double_rn(unsigned long long u) { return (double)u; }
inline unsigned int __float2uint_rz(float f) { return (unsigned int)f; }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
using std::ceil;
using std::fabs;
inline float fabsf(float x) { return std::fabs(x); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
using std::fmin;
inline float fminf(float a, float b) { return std::fmin(a, b); }
using std::isfinite;
using std::log;
using std::log1p;
inline float rintf(float x) { return std::rint(x); }

// IEEE half to float, exactly.
inline float emu_f16_to_f32(unsigned short h) {
    const unsigned sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float v;
    if (exp == 0) {
        v = std::ldexp((float)man, -24);
    } else if (exp == 31) {
        v = man ? NAN : INFINITY;
    } else {
        v = std::ldexp((float)(man | 0x400u), (int)exp - 25);
    }
    return sign ? -v : v;
}

namespace emu {

// Runs kernel() for every thread of a grid of `grid` blocks of `block` threads (x only for the
// threads; up to three grid dimensions), with `smem` bytes of dynamic shared memory.
inline void launch(EmuDim3 grid, unsigned block, size_t smem, const std::function<void()>& kernel) {
    if (block == 0 || block > 1024 || block % 32 != 0) fail("block size");
    grid_dim = grid;
    block_dim = EmuDim3{block, 1, 1};
    dynamic_smem.assign(smem + 16, 0xAB);  // garbage: kernels must initialise what they use
    std::barrier<> start(block + 1), done(block + 1);
    bool quit = false;
    EmuDim3 current;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < block; ++t) {
        pool.emplace_back([&, t] {
            for (;;) {
                start.arrive_and_wait();
                if (quit) return;
                thread_idx = EmuDim3{t, 0, 0};
                block_idx = current;
                kernel();
                // An exited thread no longer takes part in barriers, as on the GPU.
                block_barrier->arrive_and_drop();
                warp_barrier[t >> 5]->arrive_and_drop();
                done.arrive_and_wait();
            }
        });
    }
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                current = EmuDim3{x, y, z};
                block_barrier = std::make_unique<std::barrier<>>(block);
                for (unsigned w = 0; w < block / 32; ++w) warp_barrier[w] = std::make_unique<std::barrier<>>(32);
                start.arrive_and_wait();
                done.arrive_and_wait();
            }
    quit = true;
    start.arrive_and_wait();
    for (auto& th : pool) th.join();
}

}  // namespace emu
