//! Runtime choice of the instruction set for the hot loops.
//!
//! The loops are written as plain Rust over small fixed-size lane arrays, which LLVM vectorises;
//! [`multiversion!`] compiles each of them for AVX-512 and AVX2 as well as for the baseline, and
//! picks the best one the CPU has at run time. None of this changes a result: Rust never
//! contracts `a * b + c` into an FMA, and every lane keeps its own order of operations.

/// Defines a function whose body is compiled three times (AVX-512, AVX2+FMA, baseline) and
/// dispatched at run time. Arguments must not be generic.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2,popcnt")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c,bmi2,popcnt")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has every feature `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has every feature `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Lanes of the fixed-size accumulator arrays (one AVX-512 register of f32).
pub(crate) const LANES: usize = 16;

/// Asks the CPU to bring `data` into its caches ahead of use (a hint: never faults, never
/// changes a result). For loops that interleave a streaming read with a slow phase of their own,
/// which the hardware prefetchers do not run far enough ahead of.
#[inline(always)]
pub(crate) fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks((64 / std::mem::size_of::<T>().max(1)).max(1)) {
        // SAFETY: a prefetch reads nothing architecturally and cannot fault; the address is
        // inside `data`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
