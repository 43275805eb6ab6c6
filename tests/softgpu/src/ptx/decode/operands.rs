//! Operands of one instruction to registers, immediates, predicates and addresses, checked
//! against the instruction's type.

use std::collections::HashMap;

use super::super::LoadError;
use super::super::inst::{Addr, Pred, PredSrc, Reg, Src};
use super::super::syntax::{AddressBase, Operand};
use super::super::types::{RegClass, Scalar};
use super::regs::RegTable;

/// What decoding one kernel's instructions needs.
pub(crate) struct Ctx<'a> {
    pub regs: RegTable<'a>,
    labels: HashMap<&'a str, u32>,
    /// Shared variables: offsets in the block's shared window.
    shared: HashMap<&'a str, u64>,
    /// Parameters: (offset, size) in the parameter buffer.
    params: HashMap<&'a str, (u64, u64)>,
    /// The line of the instruction being decoded.
    pub line: usize,
}

/// An operand's description for error messages.
fn show(op: &Operand<'_>) -> String {
    match op {
        Operand::Reg(r) | Operand::Symbol(r) => format!("`{r}`"),
        Operand::NotReg(r) => format!("`!{r}`"),
        Operand::Int(v) => format!("`{v}`"),
        Operand::F32(b) => format!("`0f{b:08X}`"),
        Operand::F64(b) => format!("`0d{b:016X}`"),
        Operand::Sink => "`_`".into(),
        Operand::Address { .. } => "an address".into(),
        Operand::Vector(_) => "a vector".into(),
        Operand::Pair(a, b) => format!("`{a}|{b}`"),
    }
}

/// `v` as the bits of a `bits`-wide integer, if it fits (signed or unsigned).
pub(crate) fn int_bits(v: i128, bits: u32) -> Option<u64> {
    let min = -(1i128 << (bits - 1));
    let max = (1i128 << bits) - 1;
    (min..=max).contains(&v).then(|| (v as u128 & ((1u128 << bits) - 1)) as u64)
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        regs: RegTable<'a>,
        labels: HashMap<&'a str, u32>,
        shared: HashMap<&'a str, u64>,
        params: HashMap<&'a str, (u64, u64)>,
    ) -> Self {
        Ctx { regs, labels, shared, params, line: 0 }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> LoadError {
        LoadError { line: self.line, message: message.into() }
    }

    fn reg(&self, name: &str) -> Result<(RegClass, u32), LoadError> {
        self.regs.lookup(name).ok_or_else(|| self.error(format!("undeclared register `{name}`")))
    }

    /// Fails unless there are exactly `n` operands.
    pub(crate) fn count(&self, ops: &[Operand<'_>], n: usize, opcode: &str) -> Result<(), LoadError> {
        if ops.len() == n {
            Ok(())
        } else {
            Err(self.error(format!("`{opcode}` takes {n} operands, found {}", ops.len())))
        }
    }

    /// A value register named `name` of exactly `bits` bits.
    fn value_reg(&self, name: &str, bits: u32) -> Result<Reg, LoadError> {
        match self.reg(name)? {
            (RegClass::Bits(b), r) if b == bits => Ok(r),
            (RegClass::Bits(b), _) => Err(self.error(format!("`{name}` has {b} bits, the instruction needs {bits}"))),
            (RegClass::Pred, _) => Err(self.error(format!("`{name}` is a predicate, the instruction needs a value"))),
        }
    }

    /// A destination register of exactly `bits` bits.
    pub(crate) fn dst(&self, op: &Operand<'_>, bits: u32) -> Result<Reg, LoadError> {
        match op {
            Operand::Reg(name) => self.value_reg(name, bits),
            other => Err(self.error(format!("expected a destination register, found {}", show(other)))),
        }
    }

    /// A destination register of at least `bits` bits, and its width (`ld` extends into a wider
    /// register).
    pub(crate) fn dst_wide(&self, op: &Operand<'_>, bits: u32) -> Result<(Reg, u32), LoadError> {
        match op {
            Operand::Reg(name) => match self.reg(name)? {
                (RegClass::Bits(b), r) if b >= bits => Ok((r, b)),
                _ => Err(self.error(format!("`{name}` cannot receive {bits} bits"))),
            },
            other => Err(self.error(format!("expected a destination register, found {}", show(other)))),
        }
    }

    /// A source of type `ty`: a register of its width, an immediate of the type, or the
    /// address of a shared variable.
    pub(crate) fn src(&self, op: &Operand<'_>, ty: Scalar) -> Result<Src, LoadError> {
        self.src_of(op, ty, false)
    }

    /// [`Ctx::src`], where a wider register is allowed for an integer type: `st` and `cvt` then
    /// use its low bits (the ISA's "operand size exceeding instruction-type size").
    pub(crate) fn src_wide(&self, op: &Operand<'_>, ty: Scalar) -> Result<Src, LoadError> {
        self.src_of(op, ty, true)
    }

    fn src_of(&self, op: &Operand<'_>, ty: Scalar, wide: bool) -> Result<Src, LoadError> {
        let bits = ty.bits();
        match op {
            Operand::Reg(name) => match self.reg(name)? {
                (RegClass::Bits(b), r) if b == bits || (wide && b > bits && ty.is_int()) => Ok(Src::Reg(r)),
                (RegClass::Bits(b), _) => Err(self.error(format!("`{name}` has {b} bits, the operand is {bits}"))),
                (RegClass::Pred, _) => Err(self.error(format!("`{name}` is a predicate, the operand is a value"))),
            },
            Operand::Int(v) if ty.is_int() => int_bits(*v, bits)
                .map(Src::Imm)
                .ok_or_else(|| self.error(format!("immediate {v} does not fit {bits} bits"))),
            Operand::F32(b) if ty == Scalar::F32 => Ok(Src::Imm(u64::from(*b))),
            Operand::F64(b) if ty == Scalar::F64 => Ok(Src::Imm(*b)),
            Operand::Symbol("WARP_SZ") if ty.is_int() => Ok(Src::Imm(32)),
            Operand::Symbol(s) if ty.is_int() && bits >= 32 => match self.shared.get(s) {
                Some(offset) => Ok(Src::Imm(*offset)),
                None if self.params.contains_key(s) => {
                    Err(self.error(format!("the address of parameter `{s}` is not supported")))
                }
                None => Err(self.error(format!("unknown symbol `{s}`"))),
            },
            other => Err(self.error(format!("{} is not an operand of type `{}`", show(other), type_name(ty)))),
        }
    }

    /// A predicate named `name`, negated or not.
    pub(crate) fn pred_named(&self, name: &str, negate: bool) -> Result<PredSrc, LoadError> {
        match self.reg(name)? {
            (RegClass::Pred, p) => Ok(PredSrc { pred: p, negate }),
            _ => Err(self.error(format!("`{name}` is not a predicate"))),
        }
    }

    /// A predicate source: `%p` or `!%p`.
    pub(crate) fn pred_src(&self, op: &Operand<'_>) -> Result<PredSrc, LoadError> {
        match op {
            Operand::Reg(name) => self.pred_named(name, false),
            Operand::NotReg(name) => self.pred_named(name, true),
            other => Err(self.error(format!("expected a predicate, found {}", show(other)))),
        }
    }

    /// A predicate destination (`None` for the sink `_`).
    pub(crate) fn pred_dst(&self, op: &Operand<'_>) -> Result<Option<Pred>, LoadError> {
        match op {
            Operand::Sink => Ok(None),
            Operand::Reg(name) => Ok(Some(self.pred_named(name, false)?.pred)),
            other => Err(self.error(format!("expected a predicate destination, found {}", show(other)))),
        }
    }

    /// A predicate destination named `name` (of `d|p`).
    pub(crate) fn pred_dst_named(&self, name: &str) -> Result<Option<Pred>, LoadError> {
        if name == "_" { Ok(None) } else { Ok(Some(self.pred_named(name, false)?.pred)) }
    }

    /// A value register named `name` of exactly `bits` bits (of `d|p`).
    pub(crate) fn dst_named(&self, name: &str, bits: u32) -> Result<Reg, LoadError> {
        self.value_reg(name, bits)
    }

    /// The address of a `.global` or `.shared` access: `[reg]`, `[reg+imm]`, `[var+imm]`,
    /// `[imm]`. The register may have 32 or 64 bits (zero-extended).
    pub(crate) fn addr(&self, op: &Operand<'_>) -> Result<Addr, LoadError> {
        let Operand::Address { base, offset } = op else {
            return Err(self.error(format!("expected an address, found {}", show(op))));
        };
        match base {
            None => Ok(Addr { base: None, offset: *offset }),
            Some(AddressBase::Reg(name)) => match self.reg(name)? {
                (RegClass::Bits(32 | 64), r) => Ok(Addr { base: Some(r), offset: *offset }),
                _ => Err(self.error(format!("`{name}` cannot hold an address"))),
            },
            Some(AddressBase::Symbol(s)) => match self.shared.get(s) {
                Some(at) => Ok(Addr { base: None, offset: (*at as i64).wrapping_add(*offset) }),
                None => Err(self.error(format!("unknown variable `{s}`"))),
            },
        }
    }

    /// The (offset, size) in the parameter buffer of `[param+imm]`, for an access of `bytes`.
    pub(crate) fn param_addr(&self, op: &Operand<'_>, bytes: u64) -> Result<u64, LoadError> {
        let Operand::Address { base: Some(AddressBase::Symbol(s)), offset } = op else {
            return Err(self.error("`ld.param` supports `[parameter+offset]` addresses only"));
        };
        let Some(&(at, size)) = self.params.get(s) else {
            return Err(self.error(format!("unknown parameter `{s}`")));
        };
        let off = u64::try_from(*offset).ok().filter(|o| o.checked_add(bytes).is_some_and(|end| end <= size));
        match off {
            Some(o) if (at + o) % bytes == 0 => Ok(at + o),
            Some(_) => Err(self.error(format!("misaligned access to parameter `{s}`"))),
            None => Err(self.error(format!("access outside parameter `{s}`"))),
        }
    }

    /// The instruction index of a label.
    pub(crate) fn label(&self, op: &Operand<'_>) -> Result<u32, LoadError> {
        match op {
            Operand::Symbol(name) => {
                self.labels.get(name).copied().ok_or_else(|| self.error(format!("unknown label `{name}`")))
            }
            other => Err(self.error(format!("expected a label, found {}", show(other)))),
        }
    }
}

fn type_name(t: Scalar) -> &'static str {
    super::quals::type_name(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates_fit_their_width() {
        assert_eq!(int_bits(-1, 32), Some(0xFFFF_FFFF));
        assert_eq!(int_bits(0xFFFF_FFFF, 32), Some(0xFFFF_FFFF));
        assert_eq!(int_bits(1 << 32, 32), None);
        assert_eq!(int_bits(-(1 << 31) - 1, 32), None);
        assert_eq!(int_bits(-2146435073, 32), Some(0x800F_FFFF));
        assert_eq!(int_bits(-1, 64), Some(u64::MAX));
        assert_eq!(int_bits(u64::MAX as i128, 64), Some(u64::MAX));
    }
}
