//! The reduction of an all-reduce: the ranks' buffers combined elementwise in rank order
//! (`((r0 op r1) op r2) ...`), once, by the hub, so that every rank receives the same bits.

use cudarc::nccl::sys::{ncclDataType_t as T, ncclRedOp_t as Op};

/// The size in bytes of an element of `dtype`, for the types softgpu reduces (the integers,
/// f32, f64); `None` for the others (f16, bf16, fp8) and for unknown codes.
pub fn element_size(dtype: u32) -> Option<usize> {
    let is = |t: T| t as u32 == dtype;
    if is(T::ncclInt8) || is(T::ncclUint8) {
        Some(1)
    } else if is(T::ncclInt32) || is(T::ncclUint32) || is(T::ncclFloat32) {
        Some(4)
    } else if is(T::ncclInt64) || is(T::ncclUint64) || is(T::ncclFloat64) {
        Some(8)
    } else {
        None
    }
}

/// Whether softgpu implements reduction `op` (sum, product, min, max; not average).
pub fn supported_op(op: u32) -> bool {
    [Op::ncclSum, Op::ncclProd, Op::ncclMax, Op::ncclMin].iter().any(|&o| o as u32 == op)
}

/// An element type the hub reduces.
trait Element: Copy {
    const SIZE: usize;
    fn read(b: &[u8]) -> Self;
    fn write(self, b: &mut [u8]);
    fn apply(self, other: Self, op: Op) -> Self;
}

macro_rules! element {
    ($t:ty, int) => {
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap_or_default())
            }
            fn write(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
            fn apply(self, other: Self, op: Op) -> Self {
                match op {
                    Op::ncclSum => self.wrapping_add(other),
                    Op::ncclProd => self.wrapping_mul(other),
                    Op::ncclMax => self.max(other),
                    _ => self.min(other),
                }
            }
        }
    };
    ($t:ty, float) => {
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn read(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap_or_default())
            }
            fn write(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
            fn apply(self, other: Self, op: Op) -> Self {
                match op {
                    Op::ncclSum => self + other,
                    Op::ncclProd => self * other,
                    Op::ncclMax => self.max(other),
                    _ => self.min(other),
                }
            }
        }
    };
}

element!(i8, int);
element!(u8, int);
element!(i32, int);
element!(u32, int);
element!(i64, int);
element!(u64, int);
element!(f32, float);
element!(f64, float);

fn combine_as<E: Element>(acc: &mut [u8], x: &[u8], op: Op) {
    for (a, b) in acc.chunks_exact_mut(E::SIZE).zip(x.chunks_exact(E::SIZE)) {
        E::read(a).apply(E::read(b), op).write(a);
    }
}

/// Combines `x` into `acc` elementwise (`acc = acc op x`). Integers wrap, as on the GPU; float
/// min/max skip a NaN (as `fminf`/`fmaxf`).
pub fn combine(acc: &mut [u8], x: &[u8], dtype: u32, op: u32) {
    let op = [Op::ncclSum, Op::ncclProd, Op::ncclMax, Op::ncclMin]
        .into_iter()
        .find(|&o| o as u32 == op)
        .unwrap_or(Op::ncclSum);
    let is = |t: T| t as u32 == dtype;
    if is(T::ncclInt8) {
        combine_as::<i8>(acc, x, op)
    } else if is(T::ncclUint8) {
        combine_as::<u8>(acc, x, op)
    } else if is(T::ncclInt32) {
        combine_as::<i32>(acc, x, op)
    } else if is(T::ncclUint32) {
        combine_as::<u32>(acc, x, op)
    } else if is(T::ncclInt64) {
        combine_as::<i64>(acc, x, op)
    } else if is(T::ncclUint64) {
        combine_as::<u64>(acc, x, op)
    } else if is(T::ncclFloat32) {
        combine_as::<f32>(acc, x, op)
    } else if is(T::ncclFloat64) {
        combine_as::<f64>(acc, x, op)
    }
}

/// The all-reduce of `buffers` (one per rank, in rank order, of equal length).
pub fn all_reduce(buffers: &[Vec<u8>], dtype: u32, op: u32) -> Vec<u8> {
    let mut acc = buffers.first().cloned().unwrap_or_default();
    for b in &buffers[1.min(buffers.len())..] {
        combine(&mut acc, b, dtype, op);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn floats_reduce_in_rank_order() {
        // (1 + 1e8) - 1e8 = 0 in f32; (1e8 - 1e8) + 1 = 1 would be another order.
        let bufs = [f32s(&[1.0, 1.0, 3.0]), f32s(&[1e8, f32::NAN, -3.0]), f32s(&[-1e8, 2.0, 0.5])];
        let sum = all_reduce(&bufs, T::ncclFloat32 as u32, Op::ncclSum as u32);
        let sum: Vec<f32> = sum.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(sum[0], 0.0, "rank order");
        assert!(sum[1].is_nan());
        assert_eq!(sum[2], 0.5);
        let max = all_reduce(&bufs, T::ncclFloat32 as u32, Op::ncclMax as u32);
        assert_eq!(max, f32s(&[1e8, 2.0, 3.0]));
        let min = all_reduce(&bufs, T::ncclFloat32 as u32, Op::ncclMin as u32);
        assert_eq!(min, f32s(&[-1e8, 1.0, -3.0]));
    }

    #[test]
    fn integers_wrap_like_the_gpu() {
        let u = |v: u64| v.to_le_bytes().to_vec();
        let sum = all_reduce(&[u(u64::MAX), u(2)], T::ncclUint64 as u32, Op::ncclSum as u32);
        assert_eq!(sum, u(1));
        let max = all_reduce(&[u(5), u(9), u(7)], T::ncclUint64 as u32, Op::ncclMax as u32);
        assert_eq!(max, u(9));
        assert_eq!(element_size(T::ncclUint64 as u32), Some(8));
        assert_eq!(element_size(T::ncclFloat16 as u32), None);
        assert!(supported_op(Op::ncclMin as u32) && !supported_op(Op::ncclAvg as u32));
    }
}
