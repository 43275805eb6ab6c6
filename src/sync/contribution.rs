//! What one rank brings to a collective, and how the CPU groups combine the contributions of all
//! ranks: in rank order, after checking that every rank called the same collective.

use std::fmt;

use super::ReduceOp;
use crate::error::{Error, Result};

/// The array one rank contributes to an all-reduce.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Contribution {
    /// `all_reduce_f32`.
    F32(ReduceOp, Vec<f32>),
    /// `all_reduce_u64`.
    U64(ReduceOp, Vec<u64>),
}

/// Which collective a rank called: what every rank must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CollectiveShape {
    /// `true` for `all_reduce_f32`, `false` for `all_reduce_u64`.
    pub floats: bool,
    /// The reduction.
    pub op: ReduceOp,
    /// The number of elements.
    pub len: usize,
}

impl CollectiveShape {
    /// The shape as one word (for groups that can only compare numbers across ranks):
    /// bit 63 the element type, bits 61..63 the op, the rest the length.
    pub(crate) fn to_word(self) -> u64 {
        let op = match self.op {
            ReduceOp::Min => 0u64,
            ReduceOp::Max => 1,
            ReduceOp::Sum => 2,
        };
        (u64::from(self.floats) << 63) | (op << 61) | (self.len as u64 & ((1 << 61) - 1))
    }
}

impl fmt::Display for CollectiveShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = if self.floats { "f32" } else { "u64" };
        write!(f, "{} {ty} ({:?})", self.len, self.op)
    }
}

impl Contribution {
    /// Copies the reduced f32 values into `data` (an error when the result is of u64 values).
    pub(crate) fn write_f32(self, data: &mut [f32]) -> Result<()> {
        match self {
            Contribution::F32(_, v) if v.len() == data.len() => {
                data.copy_from_slice(&v);
                Ok(())
            }
            _ => Err(Error::Sync("an f32 all-reduce returned something else".into())),
        }
    }

    /// Copies the reduced u64 values into `data` (an error when the result is of f32 values).
    pub(crate) fn write_u64(self, data: &mut [u64]) -> Result<()> {
        match self {
            Contribution::U64(_, v) if v.len() == data.len() => {
                data.copy_from_slice(&v);
                Ok(())
            }
            _ => Err(Error::Sync("a u64 all-reduce returned something else".into())),
        }
    }

    /// Which collective this is.
    pub(crate) fn shape(&self) -> CollectiveShape {
        match self {
            Contribution::F32(op, v) => CollectiveShape { floats: true, op: *op, len: v.len() },
            Contribution::U64(op, v) => CollectiveShape { floats: false, op: *op, len: v.len() },
        }
    }

    /// Little-endian bytes: a tag byte (0 f32, 1 u64), an op byte, then the values.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let op = |op: &ReduceOp| match op {
            ReduceOp::Min => 0u8,
            ReduceOp::Max => 1,
            ReduceOp::Sum => 2,
        };
        match self {
            Contribution::F32(o, v) => {
                let mut out = vec![0, op(o)];
                out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                out
            }
            Contribution::U64(o, v) => {
                let mut out = vec![1, op(o)];
                out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                out
            }
        }
    }

    /// Reads [`Contribution::to_bytes`]; `None` when the bytes are not such a contribution.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Contribution> {
        let (&tag, rest) = bytes.split_first()?;
        let (&op, values) = rest.split_first()?;
        let op = match op {
            0 => ReduceOp::Min,
            1 => ReduceOp::Max,
            2 => ReduceOp::Sum,
            _ => return None,
        };
        match tag {
            0 if values.len() % 4 == 0 => Some(Contribution::F32(
                op,
                values.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            )),
            1 if values.len() % 8 == 0 => Some(Contribution::U64(
                op,
                values
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// Combines the contributions of ranks `0, 1, …` in that order (so that every rank computes
/// bit-identical results), after checking that all ranks called the same collective. The error,
/// computed from the same inputs, is the same on every rank.
pub(crate) fn reduce_in_rank_order(seq: u64, parts: &[&Contribution]) -> Result<Contribution> {
    let Some(first) = parts.first() else {
        return Err(Error::Sync(format!("collective #{seq} has no contributions")));
    };
    let shape = first.shape();
    if parts.iter().any(|p| p.shape() != shape) {
        let calls: Vec<String> = parts.iter().enumerate().map(|(r, p)| format!("rank {r}: {}", p.shape())).collect();
        return Err(Error::Sync(format!(
            "the ranks called different collectives at collective #{seq} ({}); every rank must run the same \
             observers with the same settings on the same tensors",
            calls.join(", ")
        )));
    }
    let mut acc = (*first).clone();
    for part in &parts[1..] {
        match (&mut acc, part) {
            (Contribution::F32(op, a), Contribution::F32(_, b)) => {
                for (x, &y) in a.iter_mut().zip(b) {
                    *x = match op {
                        ReduceOp::Min => x.min(y),
                        ReduceOp::Max => x.max(y),
                        ReduceOp::Sum => *x + y,
                    };
                }
            }
            (Contribution::U64(op, a), Contribution::U64(_, b)) => {
                for (x, &y) in a.iter_mut().zip(b) {
                    *x = match op {
                        ReduceOp::Min => (*x).min(y),
                        ReduceOp::Max => (*x).max(y),
                        ReduceOp::Sum => x
                            .checked_add(y)
                            .ok_or_else(|| Error::Sync(format!("collective #{seq}: a u64 sum overflows")))?,
                    };
                }
            }
            _ => return Err(Error::Sync(format!("collective #{seq}: mixed element types"))),
        }
    }
    Ok(acc)
}

/// `ranks` as people read them: `rank 2` or `ranks 1, 3`.
pub(crate) fn name_ranks(ranks: &[usize]) -> String {
    let list: Vec<String> = ranks.iter().map(usize::to_string).collect();
    match ranks.len() {
        1 => format!("rank {}", list[0]),
        _ => format!("ranks {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        for c in [
            Contribution::F32(ReduceOp::Min, vec![1.5, -0.0, f32::INFINITY]),
            Contribution::U64(ReduceOp::Sum, vec![0, u64::MAX, 7]),
            Contribution::U64(ReduceOp::Max, vec![]),
        ] {
            assert_eq!(Contribution::from_bytes(&c.to_bytes()), Some(c));
        }
        assert_eq!(Contribution::from_bytes(&[0, 1, 2]), None);
        assert_eq!(Contribution::from_bytes(&[2, 0]), None);
    }

    #[test]
    fn reduces_in_rank_order_and_refuses_mismatches() {
        let a = Contribution::F32(ReduceOp::Max, vec![1.0, -2.0]);
        let b = Contribution::F32(ReduceOp::Max, vec![0.5, 3.0]);
        assert_eq!(reduce_in_rank_order(0, &[&a, &b]).unwrap(), Contribution::F32(ReduceOp::Max, vec![1.0, 3.0]));
        let c = Contribution::U64(ReduceOp::Max, vec![1, 2]);
        let e = reduce_in_rank_order(4, &[&a, &c]).unwrap_err().to_string();
        assert!(e.contains("collective #4") && e.contains("rank 1: 2 u64 (Max)"), "{e}");
        let big = Contribution::U64(ReduceOp::Sum, vec![u64::MAX]);
        assert!(reduce_in_rank_order(0, &[&big, &big]).is_err());
        assert_eq!(CollectiveShape { floats: true, op: ReduceOp::Sum, len: 5 }.to_word(), (1 << 63) | (2 << 61) | 5);
    }

    #[test]
    fn names_ranks() {
        assert_eq!(name_ranks(&[2]), "rank 2");
        assert_eq!(name_ranks(&[1, 3]), "ranks 1, 3");
    }
}
