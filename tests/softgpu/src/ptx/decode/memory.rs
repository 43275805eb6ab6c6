//! Memory instructions: `ld`, `st` (global, shared, param), `atom`, `red` (global, shared).

use super::super::LoadError;
use super::super::inst::{AtomOp, Op, Reg, Space, Src};
use super::super::syntax::Operand;
use super::super::types::Scalar;
use super::{Ctx, Quals};

pub(super) fn decode(ctx: &mut Ctx<'_>, m: &str, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    match m {
        "ld" => ld(ctx, q, ops),
        "st" => st(ctx, q, ops),
        _ => atom(ctx, m == "red", q, ops),
    }
}

/// `.v2` / `.v4`: the element count.
fn vector(q: &mut Quals<'_>) -> u8 {
    match q.take_any(&[".v2", ".v4"]) {
        Some(".v2") => 2,
        Some(_) => 4,
        None => 1,
    }
}

/// `.global` or `.shared` (or `.shared::cta`, the same for a block).
fn space(q: &mut Quals<'_>) -> Option<Space> {
    if q.take(".global") {
        Some(Space::Global)
    } else if q.take(".shared") || q.take(".shared::cta") {
        Some(Space::Shared)
    } else {
        None
    }
}

fn element(q: &Quals<'_>, n: u8, ty: Scalar) -> Result<u8, LoadError> {
    if ty == Scalar::Pred || u32::from(n) * ty.bytes() > 16 {
        return Err(q.bad_type(ty));
    }
    Ok(ty.bytes() as u8)
}

fn ld(ctx: &mut Ctx<'_>, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let _weak = q.take(".weak");
    let is_param = q.take(".param");
    let space = if is_param { None } else { space(q) };
    if !is_param && space.is_none() {
        return Err(q.error("only `.global`, `.shared` and `.param` loads are implemented"));
    }
    // ld.global.nc reads through the non-coherent cache: for a kernel that does not write the
    // data it reads this way (the rule for .nc), the values are those of a plain load.
    let _nc = space == Some(Space::Global) && q.take(".nc");
    let n = vector(q);
    let ty = q.one_type()?;
    let size = element(q, n, ty)?;
    ctx.count(ops, 2, q.opcode)?;
    let bits = ty.bits();
    let dst = |ctx: &Ctx<'_>, op: &Operand<'_>| -> Result<(Reg, u32), LoadError> {
        if ty.is_float() { Ok((ctx.dst(op, bits)?, bits)) } else { ctx.dst_wide(op, bits) }
    };
    let mut regs = [0 as Reg; 4];
    let mut dst_bits = 0;
    match &ops[0] {
        Operand::Vector(parts) if parts.len() == usize::from(n) && n > 1 => {
            for (slot, p) in regs.iter_mut().zip(parts) {
                let (r, b) = dst(ctx, p)?;
                if dst_bits != 0 && b != dst_bits {
                    return Err(ctx.error("the registers of a vector load differ in width"));
                }
                *slot = r;
                dst_bits = b;
            }
        }
        op if n == 1 => (regs[0], dst_bits) = dst(ctx, op)?,
        _ => return Err(ctx.error(format!("`{}` needs {n} destination registers", q.opcode))),
    }
    let signed = ty.is_signed();
    match space {
        None => {
            if n != 1 {
                return Err(q.error("vector parameter loads are not implemented"));
            }
            let offset = ctx.param_addr(&ops[1], u64::from(size))?;
            let offset = u32::try_from(offset).map_err(|_| ctx.error("parameter offset out of range"))?;
            Ok(Op::LdParam { d: regs[0], offset, size, signed, dst_bits: dst_bits as u8 })
        }
        Some(space) => {
            Ok(Op::Ld { space, size, signed, n, d: regs, dst_bits: dst_bits as u8, addr: ctx.addr(&ops[1])? })
        }
    }
}

fn st(ctx: &mut Ctx<'_>, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let _weak = q.take(".weak");
    let Some(space) = space(q) else { return Err(q.error("only `.global` and `.shared` stores are implemented")) };
    let n = vector(q);
    let ty = q.one_type()?;
    let size = element(q, n, ty)?;
    ctx.count(ops, 2, q.opcode)?;
    let mut src = [Src::Imm(0); 4];
    match &ops[1] {
        Operand::Vector(parts) if parts.len() == usize::from(n) && n > 1 => {
            for (slot, p) in src.iter_mut().zip(parts) {
                *slot = ctx.src_wide(p, ty)?;
            }
        }
        op if n == 1 => src[0] = ctx.src_wide(op, ty)?,
        _ => return Err(ctx.error(format!("`{}` needs {n} source operands", q.opcode))),
    }
    Ok(Op::St { space, size, n, src, addr: ctx.addr(&ops[0])? })
}

fn atom(ctx: &mut Ctx<'_>, is_red: bool, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let Some(space) = space(q) else {
        return Err(q.error("only `.global` and `.shared` atomics are implemented"));
    };
    let op = match q.take_any(&[".add", ".min", ".max", ".and", ".or", ".xor", ".exch", ".cas", ".inc", ".dec"]) {
        Some(".add") => AtomOp::Add,
        Some(".min") => AtomOp::Min,
        Some(".max") => AtomOp::Max,
        Some(".and") => AtomOp::And,
        Some(".or") => AtomOp::Or,
        Some(".xor") => AtomOp::Xor,
        Some(".exch") => AtomOp::Exch,
        Some(".cas") => AtomOp::Cas,
        Some(".inc") => AtomOp::Inc,
        Some(_) => AtomOp::Dec,
        None => return Err(q.error("no atomic operation")),
    };
    let ty = q.one_type()?;
    let is_bits = matches!(ty, Scalar::B32 | Scalar::B64);
    // The types the PTX ISA defines for each operation (integers only here).
    let allowed = match op {
        AtomOp::And | AtomOp::Or | AtomOp::Xor | AtomOp::Exch | AtomOp::Cas => is_bits,
        AtomOp::Add => matches!(ty, Scalar::U32 | Scalar::S32 | Scalar::U64),
        AtomOp::Inc | AtomOp::Dec => ty == Scalar::U32,
        AtomOp::Min | AtomOp::Max => matches!(ty, Scalar::U32 | Scalar::S32 | Scalar::U64 | Scalar::S64),
    };
    let Some(ity) = ty.int_ty().filter(|_| allowed) else { return Err(q.bad_type(ty)) };
    if is_red && op == AtomOp::Cas {
        return Err(q.error("`red` has no `.cas`"));
    }
    let n = usize::from(!is_red) + 2 + usize::from(op == AtomOp::Cas);
    ctx.count(ops, n, q.opcode)?;
    let bits = ty.bits();
    let (d, rest) = if is_red { (None, ops) } else { (Some(ctx.dst(&ops[0], bits)?), &ops[1..]) };
    let addr = ctx.addr(&rest[0])?;
    let b = ctx.src(&rest[1], ty)?;
    let c = if op == AtomOp::Cas { ctx.src(&rest[2], ty)? } else { Src::Imm(0) };
    Ok(Op::Atom { space, op, ty: ity, d, addr, b, c })
}
