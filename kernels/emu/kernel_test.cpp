// Runs every kernel of kernels/*.cu in the emulator (emu.h) against plain host references of the
// CPU engine's rules, over awkward sizes, alignments, layouts and launch splits.
//
//   g++ -std=c++20 -O2 -ffp-contract=off -pthread -Ikernels kernels/emu/kernel_test.cpp && ./a.out
//
// (.ci/run does this, with --quick: without the 2^20 + 3 element cases.) Exits non-zero on the
// first mismatch.
#include "emu.h"

#include "../extremes.cu"
#include "../fake_quant.cu"
#include "../histogram.cu"
#include "../kl.cu"
#include "../percentile.cu"

#include <algorithm>
#include <string>

static int checks = 0;

#define CHECK(cond, ...)                                     \
    do {                                                     \
        ++checks;                                            \
        if (!(cond)) {                                       \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);               \
            std::fprintf(stderr, "\n");                      \
            std::exit(1);                                    \
        }                                                    \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Data.

struct Rng {
    u64 s;
    u64 next() {
        s += 0x9E3779B97F4A7C15ull;
        u64 z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double unit() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
    float normal() {
        double u = unit() + 1e-12, v = unit();
        return (float)(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
    }
};

enum class Dtype { F32, F16, BF16 };
static const char* name(Dtype d) { return d == Dtype::F32 ? "f32" : d == Dtype::F16 ? "f16" : "bf16"; }

// A tensor stored as its dtype, with `offset` padding elements in front (to misalign it).
struct Tensor {
    Dtype dtype;
    std::vector<float> f32;
    std::vector<u16> h16;
    size_t offset;
    size_t n;
    const void* data() const {
        return dtype == Dtype::F32 ? (const void*)(f32.data() + offset) : (const void*)(h16.data() + offset);
    }
    float at(size_t i) const {
        if (dtype == Dtype::F32) return f32[offset + i];
        const u16 h = h16[offset + i];
        return dtype == Dtype::F16 ? F16::widen(h) : BF16::widen(h);
    }
};

static u16 f32_to_bf16_bits(float f) { return (u16)(__float_as_uint(f) >> 16); }
static u16 f32_to_f16_bits(float f) {
    _Float16 h = (_Float16)f;
    u16 b;
    std::memcpy(&b, &h, 2);
    return b;
}

// n values: mostly normal(0, scale) with exact zeros, negative zeros, repeats, a few outliers and,
// when `special`, NaN and infinities.
static Tensor make(Dtype dtype, size_t n, size_t offset, u64 seed, bool special, float scale = 1.0f) {
    Rng r{seed};
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) {
        const u64 pick = r.next() % 100;
        float x = r.normal() * scale;
        if (pick < 8) x = 0.0f;
        else if (pick < 10) x = -0.0f;
        else if (pick < 12 && i > 0) x = v[i - 1];
        else if (pick < 13) x *= 40.0f;
        v[i] = x;
    }
    if (special && n > 3) {
        v[r.next() % n] = NAN;
        v[r.next() % n] = INFINITY;
        v[r.next() % n] = -INFINITY;
    }
    Tensor t{dtype, {}, {}, offset, n};
    if (dtype == Dtype::F32) {
        t.f32.assign(offset, 7.0f);
        t.f32.insert(t.f32.end(), v.begin(), v.end());
    } else {
        t.h16.assign(offset, 0x3c00);
        for (float x : v) t.h16.push_back(dtype == Dtype::F16 ? f32_to_f16_bits(x) : f32_to_bf16_bits(x));
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// Launch plans (the kernels' contract; the Rust launchers choose one of these).

static u32 inner_magic(u64 inner) { return inner >= 2 ? (u32)(((1ull << 32) + inner - 1) / inner) : 0; }

// The rows kernels' per_split for a target of `pieces` pieces per channel.
static u64 per_split_for(u64 outer, u64 inner, u64 pieces) {
    const u64 units = outer == 1 ? inner : outer;
    u64 per = (units + pieces - 1) / pieces;
    return per == 0 ? 1 : per;
}

// ---------------------------------------------------------------------------------------------
// Extremes.

struct Layout {
    u64 outer, C, inner;
};

template <typename E>
static void run_extremes(const Tensor& t, Layout l, u64 pieces, u64 row_splits, std::vector<u32>& out) {
    out.assign(2 * l.C + 2, 0);
    const auto* x = reinterpret_cast<const typename E::T*>(t.data());
    if (l.C > 1 && l.inner == 1) {
        const u64 tile = std::min<u64>(l.C, BLOCK_THREADS);
        emu::launch({(u32)((l.C + tile - 1) / tile), (u32)row_splits, 1}, BLOCK_THREADS, 0,
                    [&] { extremes_cols<E>(x, l.outer, l.C, out.data()); });
    } else {
        const u64 per = per_split_for(l.outer, l.inner, pieces);
        const u64 units = l.outer == 1 ? l.inner : l.outer;
        const u32 splits = (u32)((units + per - 1) / per);
        emu::launch({(u32)l.C, splits, 1}, BLOCK_THREADS, 0, [&] {
            extremes_rows<E>(x, l.outer, l.C, l.inner, per, inner_magic(l.inner), out.data());
        });
    }
}

static float ord_to_float(u32 u) { return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u); }

static void test_extremes(Dtype d, const Tensor& t, Layout l, u64 pieces, u64 row_splits) {
    std::vector<u32> out;
    if (d == Dtype::F32) run_extremes<F32>(t, l, pieces, row_splits, out);
    if (d == Dtype::F16) run_extremes<F16>(t, l, pieces, row_splits, out);
    if (d == Dtype::BF16) run_extremes<BF16>(t, l, pieces, row_splits, out);
    u64 nf = 0;
    for (u64 c = 0; c < l.C; ++c) {
        float lo = INFINITY, hi = -INFINITY;
        for (u64 o = 0; o < l.outer; ++o)
            for (u64 i = 0; i < l.inner; ++i) {
                const float v = t.at((o * l.C + c) * l.inner + i);
                if (v < lo) lo = v;
                if (v > hi) hi = v;
            }
        const float got_lo = ord_to_float(~out[c]), got_hi = ord_to_float(out[l.C + c]);
        CHECK(got_lo == lo && got_hi == hi, "extremes %s [%llu,%llu,%llu] c=%llu: got (%g, %g) want (%g, %g)",
              name(d), l.outer, l.C, l.inner, c, got_lo, got_hi, lo, hi);
    }
    for (size_t i = 0; i < t.n; ++i) nf += (__float_as_uint(t.at(i)) & 0x7f800000u) == 0x7f800000u;
    u64 got_nf;
    std::memcpy(&got_nf, &out[2 * l.C], 8);
    CHECK(got_nf == nf, "non-finite %s: got %llu want %llu", name(d), got_nf, nf);
}

// ---------------------------------------------------------------------------------------------
// Histogram (the CPU's bin_of, src/engine/cpu/histogram.rs).

static std::vector<u64> ref_hist(const Tensor& t, u32 bins, float hi) {
    std::vector<u64> h(bins, 0);
    const float bins_f = (float)bins, top = (float)(bins - 1);
    for (size_t j = 0; j < t.n; ++j) {
        const float v = t.at(j);
        if (!(hi > 0.0f)) {
            if (v == 0.0f) h[0]++;
            continue;
        }
        const float a = std::fabs(v);
        const float product = a * bins_f;
        float pos = product < INFINITY ? product / hi : (a / hi) * bins_f;
        pos = pos < top ? pos : top;
        if (!(a <= hi)) continue;
        h[(u32)pos]++;
    }
    return h;
}

// How the histogram is counted: in shared memory, in global memory, or in shared memory with
// the extremes in the same pass (abs_hist_shared<E, true>).
enum class HistKind { Shared, Global, WithExtremes };

template <typename E>
static std::vector<u64> run_hist(const Tensor& t, u32 bins, float hi, u32 blocks, HistKind kind, std::vector<u32>& ext) {
    std::vector<u64> h(bins, 0);
    ext.assign(4, 0);
    const auto* x = reinterpret_cast<const typename E::T*>(t.data());
    const double inv_hi = hi > 0.0f ? 1.0 / (double)hi : 0.0;
    if (kind == HistKind::Shared)
        emu::launch({blocks, 1, 1}, BLOCK_THREADS, bins * 4, [&] { abs_hist_shared<E, false>(x, t.n, bins, hi, inv_hi, h.data(), nullptr); });
    else if (kind == HistKind::Global)
        emu::launch({blocks, 1, 1}, BLOCK_THREADS, 0, [&] { abs_hist_global<E>(x, t.n, bins, hi, inv_hi, h.data()); });
    else
        emu::launch({blocks, 1, 1}, BLOCK_THREADS, bins * 4,
                    [&] { abs_hist_shared<E, true>(x, t.n, bins, hi, inv_hi, h.data(), ext.data()); });
    return h;
}

static void test_hist(Dtype d, const Tensor& t, u32 bins, float hi, u32 blocks, HistKind kind) {
    std::vector<u64> got;
    std::vector<u32> ext;
    if (d == Dtype::F32) got = run_hist<F32>(t, bins, hi, blocks, kind, ext);
    if (d == Dtype::F16) got = run_hist<F16>(t, bins, hi, blocks, kind, ext);
    if (d == Dtype::BF16) got = run_hist<BF16>(t, bins, hi, blocks, kind, ext);
    const std::vector<u64> want = ref_hist(t, bins, hi);
    for (u32 b = 0; b < bins; ++b)
        CHECK(got[b] == want[b], "hist %s n=%zu bins=%u hi=%g blocks=%u kind=%d bin %u: got %llu want %llu", name(d), t.n,
              bins, hi, blocks, (int)kind, b, got[b], want[b]);
    if (kind != HistKind::WithExtremes) return;
    float lo = INFINITY, up = -INFINITY;
    u64 nf = 0;
    for (size_t i = 0; i < t.n; ++i) {
        const float v = t.at(i);
        if (v < lo) lo = v;
        if (v > up) up = v;
        nf += (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u;
    }
    u64 got_nf;
    std::memcpy(&got_nf, &ext[2], 8);
    const float got_lo = ord_to_float(~ext[0]), got_up = ord_to_float(ext[1]);
    CHECK(std::memcmp(&got_lo, &lo, 4) == 0 && std::memcmp(&got_up, &up, 4) == 0 && got_nf == nf,
          "hist extremes %s n=%zu: got (%g, %g, %llu) want (%g, %g, %llu)", name(d), t.n, got_lo, got_up, got_nf, lo, up, nf);
}

// Per-channel histograms (abs_hists_rows / abs_hists_cols): channel c's bins[c] bins on
// [0, hi[c]] at offsets[c], each against ref_hist of the channel's values alone, and the
// per-channel extremes from the same pass.

enum class HistsKind { RowsShared, RowsGlobal, Cols, ColsShared };

template <typename E>
static void run_hists(const Tensor& t, Layout l, HistsKind kind, u64 pieces, u64 row_splits,
                      const std::vector<u64>& offsets, const std::vector<u32>& bins, const std::vector<float>& hi,
                      u32 want_extremes, std::vector<u64>& hist, std::vector<u32>& ext) {
    std::vector<double> inv_hi(hi.size());
    for (size_t c = 0; c < hi.size(); ++c) inv_hi[c] = hi[c] > 0.0f ? 1.0 / (double)hi[c] : 0.0;
    const auto* x = reinterpret_cast<const typename E::T*>(t.data());
    if (kind == HistsKind::Cols) {
        const u64 tile = std::min<u64>(l.C, BLOCK_THREADS);
        emu::launch({(u32)((l.C + tile - 1) / tile), (u32)row_splits, 1}, BLOCK_THREADS, 0, [&] {
            abs_hists_cols<E>(x, l.outer, l.C, offsets.data(), bins.data(), hi.data(), inv_hi.data(), want_extremes,
                              hist.data(), ext.data());
        });
        return;
    }
    if (kind == HistsKind::ColsShared) {
        // As the launcher: as many channels as 48 KiB of counters hold (a stride of the most bins).
        const u32 stride = std::max<u32>(*std::max_element(bins.begin(), bins.end()), 1);
        const u32 tile = (u32)std::min<u64>({l.C, BLOCK_THREADS, 12288 / stride});
        emu::launch({(u32)((l.C + tile - 1) / tile), (u32)row_splits, 1}, BLOCK_THREADS, tile * stride * 4, [&] {
            abs_hists_cols_shared<E>(x, l.outer, l.C, tile, stride, offsets.data(), bins.data(), hi.data(),
                                     inv_hi.data(), want_extremes, hist.data(), ext.data());
        });
        return;
    }
    const u64 per = per_split_for(l.outer, l.inner, pieces);
    const u64 units = l.outer == 1 ? l.inner : l.outer;
    const u32 splits = (u32)((units + per - 1) / per);
    const u32 max_bins = *std::max_element(bins.begin(), bins.end());
    emu::launch({(u32)l.C, splits, 1}, BLOCK_THREADS, kind == HistsKind::RowsShared ? max_bins * 4 : 0, [&] {
        if (kind == HistsKind::RowsShared)
            abs_hists_rows<E, true>(x, l.outer, l.C, l.inner, per, inner_magic(l.inner), offsets.data(), bins.data(),
                                    hi.data(), inv_hi.data(), want_extremes, hist.data(), ext.data());
        else
            abs_hists_rows<E, false>(x, l.outer, l.C, l.inner, per, inner_magic(l.inner), offsets.data(), bins.data(),
                                     hi.data(), inv_hi.data(), want_extremes, hist.data(), ext.data());
    });
}

static void test_hists(Dtype d, const Tensor& t, Layout l, HistsKind kind, u64 pieces, u64 seed) {
    Rng r{seed};
    const u32 choices[] = {0u, 1u, 7u, 512u, 2048u};
    std::vector<u32> bins(l.C);
    std::vector<float> hi(l.C);
    std::vector<u64> offsets(l.C);
    u64 total = 0;
    std::vector<Tensor> channel(l.C);
    for (u64 c = 0; c < l.C; ++c) {
        // The channel's values as a tensor of their own (for ref_hist).
        Tensor ch{Dtype::F32, {}, {}, 0, (size_t)(l.outer * l.inner)};
        float amax = 0.0f;
        for (u64 o = 0; o < l.outer; ++o)
            for (u64 i = 0; i < l.inner; ++i) {
                const float v = t.at((o * l.C + c) * l.inner + i);
                ch.f32.push_back(v);
                if (std::isfinite(v)) amax = std::fmax(amax, std::fabs(v));
            }
        channel[c] = ch;
        bins[c] = choices[r.next() % 5];
        const float scale[] = {1.0f, 0.5f, 0.0f, 2.0f};
        hi[c] = amax * scale[r.next() % 4];
        offsets[c] = total;
        total += bins[c];
    }
    for (u32 want_extremes : {0u, 1u}) {
        std::vector<u64> hist(total + 1, 0);
        std::vector<u32> ext(2 * l.C + 2, 0);
        if (d == Dtype::F32) run_hists<F32>(t, l, kind, pieces, pieces, offsets, bins, hi, want_extremes, hist, ext);
        if (d == Dtype::F16) run_hists<F16>(t, l, kind, pieces, pieces, offsets, bins, hi, want_extremes, hist, ext);
        if (d == Dtype::BF16) run_hists<BF16>(t, l, kind, pieces, pieces, offsets, bins, hi, want_extremes, hist, ext);
        CHECK(hist[total] == 0, "hists %s: a count past the last channel", name(d));
        for (u64 c = 0; c < l.C; ++c) {
            if (bins[c] > 0) {
                const std::vector<u64> want = ref_hist(channel[c], bins[c], hi[c]);
                for (u32 b = 0; b < bins[c]; ++b)
                    CHECK(hist[offsets[c] + b] == want[b],
                          "hists %s [%llu,%llu,%llu] kind=%d c=%llu bins=%u hi=%g bin %u: got %llu want %llu", name(d),
                          l.outer, l.C, l.inner, (int)kind, c, bins[c], hi[c], b, hist[offsets[c] + b], want[b]);
            }
            if (!want_extremes) {
                CHECK(ext[c] == 0 && ext[l.C + c] == 0, "hists %s: extremes without asking", name(d));
                continue;
            }
            float lo = INFINITY, up = -INFINITY;
            for (float v : channel[c].f32) {
                if (v < lo) lo = v;
                if (v > up) up = v;
            }
            const float got_lo = ord_to_float(~ext[c]), got_up = ord_to_float(ext[l.C + c]);
            CHECK(got_lo == lo && got_up == up, "hists extremes %s c=%llu: got (%g, %g) want (%g, %g)", name(d), c, got_lo, got_up, lo, up);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fake-quant errors.

static double ref_fq_one(float x, float s, float qmin, float qmax) {
    float q = std::nearbyint(x / s);
    q = q < qmin ? qmin : q;
    q = q > qmax ? qmax : q;
    const double dd = (double)(q * s - x);
    return dd * dd;
}

template <typename E>
static std::vector<double> run_fq(const Tensor& t, Layout l, const std::vector<float>& scales, u64 K, float qmin,
                                  float qmax, u64 pieces, u64 row_splits) {
    std::vector<double> inv(scales.size());
    for (size_t i = 0; i < scales.size(); ++i) inv[i] = 1.0 / (double)scales[i];
    const auto* x = reinterpret_cast<const typename E::T*>(t.data());
    const u32 groups = (u32)((K + FQ_GROUP - 1) / FQ_GROUP);
    u64 splits;
    std::vector<double> partial;
    if (l.C > 1 && l.inner == 1) {
        splits = row_splits;
        partial.assign(splits * K * l.C, -1.0);
        const u64 tile = std::min<u64>(l.C, BLOCK_THREADS);
        emu::launch({(u32)((l.C + tile - 1) / tile), (u32)splits, groups}, BLOCK_THREADS, 0, [&] {
            fq_err_cols<E>(x, l.outer, l.C, scales.data(), inv.data(), K, qmin, qmax, partial.data());
        });
    } else {
        const u64 per = per_split_for(l.outer, l.inner, pieces);
        const u64 units = l.outer == 1 ? l.inner : l.outer;
        splits = (units + per - 1) / per;
        partial.assign(splits * K * l.C, -1.0);
        emu::launch({(u32)l.C, (u32)splits, groups}, BLOCK_THREADS, 0, [&] {
            fq_err_rows<E>(x, l.outer, l.C, l.inner, per, inner_magic(l.inner), scales.data(), inv.data(), K, qmin,
                           qmax, partial.data());
        });
    }
    std::vector<double> out(K * l.C, -1.0);
    const u64 count = K * l.C;
    emu::launch({(u32)((count + BLOCK_THREADS - 1) / BLOCK_THREADS), 1, 1}, BLOCK_THREADS, 0,
                [&] { fq_sum_splits(partial.data(), splits, count, out.data()); });
    return out;
}

static void test_fq(Dtype d, const Tensor& t, Layout l, u64 K, float qmin, float qmax, u64 pieces, u64 row_splits,
                    u64 seed) {
    Rng r{seed};
    std::vector<float> scales(K * l.C);
    for (auto& s : scales) s = (float)(0.002 + 0.1 * r.unit());
    if (K * l.C > 2) scales[1] = 1.1920928955078125e-07f;  // EPS
    std::vector<double> got;
    if (d == Dtype::F32) got = run_fq<F32>(t, l, scales, K, qmin, qmax, pieces, row_splits);
    if (d == Dtype::F16) got = run_fq<F16>(t, l, scales, K, qmin, qmax, pieces, row_splits);
    if (d == Dtype::BF16) got = run_fq<BF16>(t, l, scales, K, qmin, qmax, pieces, row_splits);
    for (u64 k = 0; k < K; ++k)
        for (u64 c = 0; c < l.C; ++c) {
            double want = 0.0;
            const float s = scales[k * l.C + c];
            for (u64 o = 0; o < l.outer; ++o)
                for (u64 i = 0; i < l.inner; ++i) want += ref_fq_one(t.at((o * l.C + c) * l.inner + i), s, qmin, qmax);
            const double g = got[k * l.C + c];
            CHECK(std::fabs(g - want) <= 1e-12 * std::fabs(want) + 1e-300, "fq %s [%llu,%llu,%llu] k=%llu c=%llu: got %.17g want %.17g",
                  name(d), l.outer, l.C, l.inner, k, c, g, want);
        }
}

// The division identity the kernels rely on: f32(f64(a) * f64(1 / b)) == a / b (f32), for
// quotients of at least 2^-126, and both round to 0 below that.
static void test_division_identity() {
    Rng r{99};
    auto check = [&](float a, float b) {
        const float exact = a / b;
        const float fast = (float)((double)a * (1.0 / (double)b));
        if (std::fabs(exact) >= 1.1754943508222875e-38f || std::isinf(exact))
            CHECK(exact == fast || (exact != exact && fast != fast), "division %a / %a: %a vs %a", a, b, exact, fast);
        else
            CHECK(std::nearbyint(exact) == std::nearbyint(fast) && std::floor(std::fabs(exact)) == 0.0f &&
                      std::floor(std::fabs(fast)) == 0.0f,
                  "tiny division %a / %a", a, b);
    };
    for (int i = 0; i < 20000000; ++i) {
        const float a = __uint_as_float((u32)r.next() & 0x7fffffffu), b = __uint_as_float((u32)r.next() & 0x7fffffffu);
        if (a != a || b != b || b == 0.0f || std::isinf(b) || std::isinf(a)) continue;
        check(a, b);
    }
    // Quotients near half-integers and near integers (the rounding of fake quantization).
    for (int i = 0; i < 20000000; ++i) {
        const float b = (float)(1e-4 + r.unit());
        const float q = (float)((double)(r.next() % 300) + 0.5 + (r.unit() - 0.5) * 1e-5);
        check(q * b, b);
        check(std::nextafter(q * b, 0.0f), b);
        check(std::nextafter(q * b, 1e30f), b);
    }
}

// ---------------------------------------------------------------------------------------------
// Percentile bins.

// `count` histograms of `bins` bins one after another (one per channel), one block each.
static void test_first_bins(u64 seed, u32 bins, u32 count) {
    Rng r{seed};
    std::vector<u64> hist((size_t)bins * count);
    u64 total = 0;
    for (auto& h : hist) {
        h = (r.next() % 4 == 0) ? 0 : r.next() % 1000;
        total += h;
    }
    total /= count;
    std::vector<float> targets = {0.0f, 1.0f, (float)total * 0.5f, (float)total * 0.999f, (float)total,
                                  (float)total + 1.0f, (float)hist[0], (float)hist[0] + 0.5f};
    const size_t nt = targets.size();
    std::vector<u32> got(nt * count, 12345);
    emu::launch({count, 1, 1}, BLOCK_THREADS, 0,
                [&] { first_bins_reaching(hist.data(), bins, targets.data(), (u32)nt, got.data()); });
    for (u32 h = 0; h < count; ++h) {
        for (size_t q = 0; q < nt; ++q) {
            u64 cum = 0;
            u32 want = bins;
            for (u32 b = 0; b < bins; ++b) {
                cum += hist[(size_t)h * bins + b];
                if ((double)cum >= (double)targets[q]) {
                    want = b;
                    break;
                }
            }
            CHECK(got[h * nt + q] == want, "first bin bins=%u histogram %u target %g: got %u want %u", bins, h,
                  targets[q], got[h * nt + q], want);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KL: the literal formula of SPEC §4 (as src/search/kl.rs's tests), then the window rule.

static double kl_direct(const std::vector<u64>& hist, u64 i, u64 nq) {
    std::vector<double> h(hist.begin(), hist.end());
    h[0] = h[1];
    std::vector<u64> level(i);
    if (nq >= i) {
        for (u64 j = 0; j < i; ++j) level[j] = j;
    } else {
        const double step = (double)i / (double)nq;
        std::vector<double> space(nq + 1);
        for (u64 m = 0; m <= nq; ++m) space[m] = (double)m * step;
        space[nq] = (double)i;
        for (u64 j = 0; j < i; ++j) {
            u64 cnt = 0;
            for (double s : space) cnt += s <= (double)j;
            level[j] = cnt - 1;
        }
    }
    const u64 levels = *std::max_element(level.begin(), level.end()) + 1;
    std::vector<double> tot(levels, 0.0), mem(levels, 0.0);
    for (u64 j = 0; j < i; ++j)
        if (h[j] > 0) {
            tot[level[j]] += h[j];
            mem[level[j]] += 1;
        }
    std::vector<double> q(i), p(h.begin(), h.begin() + i);
    for (u64 j = 0; j < i; ++j) q[j] = h[j] > 0 ? tot[level[j]] / mem[level[j]] : 0.0;
    for (u64 j = i; j < h.size(); ++j) p[i - 1] += h[j];
    double sp = 0, sq = 0;
    for (u64 j = 0; j < i; ++j) {
        sp += p[j];
        sq += q[j];
    }
    if (sq == 0.0) return INFINITY;
    double d = 0;
    for (u64 j = 0; j < i; ++j) {
        const double pj = p[j] / sp, qj = q[j] / sq + 1e-10;
        if (pj > 0) d += pj * std::log(pj / qj);
    }
    return d;
}

// One histogram of the KL tests: L bins, a decaying shape, some empty bins, a spike at the top;
// `heavy`: one bin of 5e9 counts and the others small (1 to 6), so that the floor 1e-10 matters and
// the closed form needs its small-bin sums.
struct KlCase {
    u64 L;
    bool zeros, spike, heavy = false;
};

static std::vector<u64> kl_hist(Rng& r, KlCase c) {
    std::vector<u64> hist(c.L);
    for (u64 b = 0; b < c.L; ++b) {
        const double base = c.heavy ? 0.0 : 2e5 * std::exp(-(double)b / ((double)c.L / 6.0));
        hist[b] = (c.zeros && r.next() % 7 == 0) ? 0 : (u64)base + (c.heavy ? 1 + r.next() % 6 : r.next() % 50);
    }
    if (c.heavy) hist[3] = 5000000000ull;
    if (c.spike) hist[c.L - 1] += 100000;
    return hist;
}

// The histograms of `cases` searched as one batch (as the launcher in src/engine/cuda/kl.rs
// lays them out, with the closed form for the candidates i <= nq when nq > 128), each against
// the literal formula and the window rule.
static void test_kl(u64 seed, std::vector<KlCase> cases, u64 nq) {
    Rng r{seed};
    std::vector<std::vector<u64>> hists;
    std::vector<u64> all, offsets{0}, div_offsets{0};
    for (KlCase c : cases) {
        hists.push_back(kl_hist(r, c));
        all.insert(all.end(), hists.back().begin(), hists.back().end());
        offsets.push_back(offsets.back() + c.L);
        div_offsets.push_back(div_offsets.back() + c.L - KL_START_BIN + 1);
    }
    const u64 count = cases.size(), bins = offsets.back(), candidates = div_offsets.back();
    const u64 closed = nq > KL_START_BIN;
    std::vector<u64> prefix_count(bins + count), nonzero(bins + count);
    std::vector<double> hlnh(bins + count), hlnh_err(bins + count), div(candidates, -1.0);
    emu::launch({(u32)count, 1, 1}, BLOCK_THREADS, 0, [&] {
        kl_prefix(all.data(), offsets.data(), prefix_count.data(), nonzero.data(), hlnh.data(), hlnh_err.data());
    });
    if (closed) {
        std::vector<double> series((bins + count) * KL_TERMS, -1.0);
        std::vector<u64> small_below(bins + count), small_bins(bins);
        emu::launch({(u32)count, 1, 1}, BLOCK_THREADS, 0, [&] {
            kl_series(all.data(), offsets.data(), prefix_count.data(), series.data(), small_below.data(),
                      small_bins.data());
        });
        const u32 blocks = (u32)((candidates + BLOCK_THREADS - 1) / BLOCK_THREADS);
        emu::launch({blocks, 1, 1}, BLOCK_THREADS, 0, [&] {
            kl_divergences_per_bin(all.data(), offsets.data(), div_offsets.data(), count, nq, prefix_count.data(),
                                   series.data(), small_below.data(), small_bins.data(), div.data());
        });
    }
    const u32 warp_blocks = (u32)((candidates + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);
    emu::launch({warp_blocks, 1, 1}, BLOCK_THREADS, 0, [&] {
        kl_divergences(all.data(), offsets.data(), div_offsets.data(), count, nq, closed, prefix_count.data(),
                       nonzero.data(), hlnh.data(), hlnh_err.data(), div.data());
    });
    std::vector<i64> best(count, -2);
    emu::launch({(u32)count, 1, 1}, BLOCK_THREADS, 0, [&] { kl_best_window(div.data(), div_offsets.data(), best.data()); });
    for (u64 s = 0; s < count; ++s) {
        const u64 L = cases[s].L, D = L - KL_START_BIN + 1;
        std::vector<double> want(D);
        for (u64 k = 0; k < D; ++k) {
            want[k] = kl_direct(hists[s], k + KL_START_BIN, nq);
            const double got = div[div_offsets[s] + k];
            CHECK(std::fabs(got - want[k]) <= 1e-10 * std::max(std::fabs(want[k]), 1e-3),
                  "kl histogram %llu L=%llu nq=%llu i=%llu: got %.17g want %.17g", s, L, nq, k + KL_START_BIN, got,
                  want[k]);
        }
        // The window rule on the reference divergences.
        const u64 W = D - KL_WINDOW - 1;
        double mn = INFINITY;
        std::vector<double> S(W);
        for (u64 k = 0; k < W; ++k) {
            double sum = 0;
            for (int w = 0; w < KL_WINDOW; ++w) sum += want[k + w];
            S[k] = sum;
            mn = std::fmin(mn, sum);
        }
        i64 want_best = -1;
        if (std::isfinite(mn))
            for (u64 k = 0; k < W; ++k)
                if (std::fabs(S[k] - mn) <= 1e-9 * std::fabs(mn)) want_best = (i64)k;
        CHECK(best[s] == want_best, "kl best window histogram %llu L=%llu nq=%llu: got %lld want %lld", s, L, nq,
              best[s], want_best);
    }
}

static void test_best_window_ties() {
    // Two histograms' divergences: a tie in the first, none finite in the second.
    std::vector<double> div(40, 1.0);
    div[5] = 0.0;  // windows 0..=5 hold it: the last of them wins
    div.insert(div.end(), 30, INFINITY);
    const std::vector<u64> div_offsets = {0, 40, 70};
    std::vector<i64> best(2, -2);
    emu::launch({2, 1, 1}, BLOCK_THREADS, 0, [&] { kl_best_window(div.data(), div_offsets.data(), best.data()); });
    CHECK(best[0] == 5, "tie: got %lld", best[0]);
    CHECK(best[1] == -1, "all infinite: got %lld", best[1]);
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    // f16 widening against the compiler's _Float16, every pattern.
    for (u32 b = 0; b < 65536; ++b) {
        _Float16 h;
        const u16 bits = (u16)b;
        std::memcpy(&h, &bits, 2);
        const float want = (float)h, got = F16::widen(bits);
        CHECK((want != want && got != got) || __float_as_uint(want) == __float_as_uint(got), "f16 %04x", b);
    }
    std::printf("f16 widening ok\n");
    test_division_identity();
    std::printf("division identity ok\n");

    const Dtype dtypes[] = {Dtype::F32, Dtype::F16, Dtype::BF16};
    u64 seed = 1;
    // Per-tensor and per-channel extremes, every dtype, misaligned starts, several splits.
    for (Dtype d : dtypes) {
        for (size_t n : {1ul, 2ul, 7ul, 31ul, 33ul, 1000ul, 4099ul}) {
            for (size_t off : {0ul, 1ul, 3ul}) {
                const Tensor t = make(d, n, off, ++seed, true);
                for (u64 pieces : {1ull, 3ull, 64ull}) test_extremes(d, t, {1, 1, n}, pieces, 1);
            }
        }
        // [outer, C, inner] with the channel first, in the middle and last.
        const Layout layouts[] = {{1, 7, 300}, {1, 5, 1}, {4, 3, 5}, {3, 6, 7}, {2, 3, 256}, {2, 2, 300},
                                  {9, 5, 1},  {40, 3, 1}, {3, 300, 1}, {5, 257, 1}, {70, 2, 2}, {200, 3, 5},
                                  {600, 2, 3}, {150, 4, 255}};
        for (Layout l : layouts) {
            const Tensor t = make(d, l.outer * l.C * l.inner, 1, ++seed, true);
            for (u64 pieces : {1ull, 2ull, 5ull}) test_extremes(d, t, l, pieces, pieces);
        }
        if (!quick) {
            const size_t n = (1u << 20) + 3;
            const Tensor t = make(d, n, 1, ++seed, true);
            test_extremes(d, t, {1, 1, n}, 64, 1);
            test_extremes(d, t, {1021, 1027, 1}, 1, 3);
        }
    }
    std::printf("extremes ok\n");

    for (Dtype d : dtypes) {
        for (size_t n : {1ul, 31ul, 1000ul, 4099ul}) {
            const Tensor t = make(d, n, n % 3, ++seed, true, 2.0f);
            float amax = 0.0f;
            for (size_t i = 0; i < n; ++i)
                if (std::isfinite(t.at(i))) amax = std::fmax(amax, std::fabs(t.at(i)));
            for (u32 bins : {1u, 7u, 512u, 2048u}) {
                for (float hi : {amax, amax * 0.5f, 1.0f, 0.0f}) {
                    test_hist(d, t, bins, hi, 3, HistKind::Shared);
                    test_hist(d, t, bins, hi, 2, HistKind::Global);
                    test_hist(d, t, bins, hi, 5, HistKind::WithExtremes);
                }
            }
        }
        // Values exactly on bin edges: k * hi / bins.
        {
            Tensor t = make(Dtype::F32, 4096, 0, ++seed, false);
            for (size_t i = 0; i < t.n; ++i) t.f32[i] = (float)(i % 2049) * (3.0f / 2048.0f) * (i % 2 ? -1.0f : 1.0f);
            test_hist(Dtype::F32, t, 2048, 3.0f, 4, HistKind::Shared);
            test_hist(Dtype::F32, t, 2048, 3.0f, 4, HistKind::WithExtremes);
        }
        // Ranges where |v| * bins overflows f32 (f32 only: f16 cannot hold them).
        if (d == Dtype::F32) {
            Tensor t = make(Dtype::F32, 5000, 1, ++seed, false);
            for (size_t i = 0; i < t.n; ++i) t.f32[t.offset + i] *= 1e36f;
            float amax = 0.0f;
            for (size_t i = 0; i < t.n; ++i) amax = std::fmax(amax, std::fabs(t.at(i)));
            for (u32 bins : {7u, 2048u}) {
                test_hist(d, t, bins, amax, 3, HistKind::Shared);
                test_hist(d, t, bins, 3.4e38f, 2, HistKind::Global);
                test_hist(d, t, bins, amax, 2, HistKind::WithExtremes);
            }
        }
        if (!quick) {
            const Tensor t = make(d, (1u << 20) + 3, 2, ++seed, false, 3.0f);
            test_hist(d, t, 2048, 9.0f, 16, HistKind::Shared);
            test_hist(d, t, 2048, 9.0f, 16, HistKind::WithExtremes);
        }
    }
    std::printf("histogram ok\n");

    for (Dtype d : dtypes) {
        // Channels outermost, in the middle, innermost (the rows and the columns kernels).
        const Layout rows[] = {{1, 7, 300}, {4, 3, 5}, {3, 6, 7}, {2, 3, 256}, {70, 2, 2}, {150, 4, 255}, {1, 1, 500}};
        for (Layout l : rows) {
            const Tensor t = make(d, l.outer * l.C * l.inner, 1, ++seed, false, 2.0f);
            test_hists(d, t, l, HistsKind::RowsShared, 3, ++seed);
            test_hists(d, t, l, HistsKind::RowsGlobal, 2, ++seed);
        }
        const Layout cols[] = {{9, 5, 1}, {40, 3, 1}, {3, 300, 1}, {5, 257, 1}, {200, 12, 1}};
        for (Layout l : cols) {
            const Tensor t = make(d, l.outer * l.C * l.inner, 2, ++seed, false, 2.0f);
            test_hists(d, t, l, HistsKind::Cols, 3, ++seed);
            test_hists(d, t, l, HistsKind::ColsShared, 2, ++seed);
        }
    }
    std::printf("per-channel histograms ok\n");

    for (Dtype d : dtypes) {
        for (size_t n : {1ul, 31ul, 1000ul}) {
            const Tensor t = make(d, n, n % 4, ++seed, false, 0.5f);
            for (u64 K : {1ull, 9ull, 17ull}) test_fq(d, t, {1, 1, n}, K, -128.0f, 127.0f, 3, 1, ++seed);
        }
        const Layout layouts[] = {{1, 7, 300}, {4, 3, 5}, {2, 3, 256}, {9, 5, 1}, {3, 300, 1}, {70, 2, 2}, {200, 3, 5}, {90, 2, 7}};
        for (Layout l : layouts) {
            const Tensor t = make(d, l.outer * l.C * l.inner, 3, ++seed, false, 0.5f);
            test_fq(d, t, l, 19, -8.0f, 7.0f, 2, 2, ++seed);
        }
        {
            const Tensor t = make(d, 5000, 0, ++seed, false, 0.5f);
            test_fq(d, t, {1, 1, 5000}, 95, -128.0f, 127.0f, 4, 1, ++seed);
            test_fq(d, t, {1, 1, 5000}, 3, -2147483648.0f, 2147483648.0f, 1, 1, ++seed);
        }
    }
    std::printf("fake-quant errors ok\n");

    for (u32 bins : {1u, 5u, 256u, 257u, 2048u, 3000u}) test_first_bins(++seed, bins, 1);
    for (u32 bins : {7u, 300u}) test_first_bins(++seed, bins, 5);
    std::printf("percentile bins ok\n");

    test_best_window_ties();
    test_kl(++seed, {{256, false, false}}, 128);
    test_kl(++seed, {{512, true, false}}, 128);
    test_kl(++seed, {{300, true, true}}, 8);
    test_kl(++seed, {{260, false, true}}, 16);
    test_kl(++seed, {{257, true, false}}, 32768);
    test_kl(++seed, {{700, true, true}}, 128);
    // Batches of histograms of different lengths (one per channel).
    test_kl(++seed, {{256, false, false}, {138, true, false}, {400, true, true}}, 128);
    test_kl(++seed, {{257, true, false}, {150, false, true}}, 32768);
    // The closed form with levels above nq, and with small bins (the floor matters).
    test_kl(++seed, {{600, true, true}, {300, false, false}}, 400);
    test_kl(++seed, {{400, true, false, true}, {200, false, true, true}}, 32768);
    test_kl(++seed, {{500, false, true, true}}, 300);
    std::printf("kl ok\n");
    std::printf("%d checks passed\n", checks);
    return 0;
}
