//! Comparison and selection: `setp`, `selp`.

use super::super::LoadError;
use super::super::inst::{BoolOp, Cmp, CmpTy, Op};
use super::super::syntax::Operand;
use super::super::types::Scalar;
use super::{Ctx, Quals};

const INT_CMPS: &[&str] = &[".eq", ".ne", ".lt", ".le", ".gt", ".ge", ".lo", ".ls", ".hi", ".hs"];
const FLOAT_CMPS: &[&str] =
    &[".eq", ".ne", ".lt", ".le", ".gt", ".ge", ".equ", ".neu", ".ltu", ".leu", ".gtu", ".geu", ".num", ".nan"];

pub(super) fn decode(ctx: &mut Ctx<'_>, m: &str, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let ty = q.one_type()?;
    if m == "selp" {
        if ty == Scalar::Pred || ty.bits() < 16 {
            return Err(q.bad_type(ty));
        }
        ctx.count(ops, 4, q.opcode)?;
        let d = ctx.dst(&ops[0], ty.bits())?;
        let (a, b) = (ctx.src(&ops[1], ty)?, ctx.src(&ops[2], ty)?);
        return Ok(Op::Selp { d, a, b, c: ctx.pred_src(&ops[3])? });
    }
    let (cmp_ty, names) = match ty {
        Scalar::F32 => (CmpTy::F32 { ftz: q.take(".ftz") }, FLOAT_CMPS),
        Scalar::F64 => (CmpTy::F64, FLOAT_CMPS),
        Scalar::B16 | Scalar::B32 | Scalar::B64 => {
            (CmpTy::Int(ty.int_ty().ok_or_else(|| q.bad_type(ty))?), &INT_CMPS[..2])
        }
        t if t.is_signed() => (CmpTy::Int(t.int_ty().ok_or_else(|| q.bad_type(t))?), &INT_CMPS[..6]),
        t => (CmpTy::Int(t.int_ty().ok_or_else(|| q.bad_type(t))?), INT_CMPS),
    };
    let Some(name) = q.take_any(names) else { return Err(q.error("no comparison operator")) };
    let cmp = match name {
        ".eq" => Cmp::Eq,
        ".ne" => Cmp::Ne,
        ".lt" | ".lo" => Cmp::Lt,
        ".le" | ".ls" => Cmp::Le,
        ".gt" | ".hi" => Cmp::Gt,
        ".ge" | ".hs" => Cmp::Ge,
        ".equ" => Cmp::Equ,
        ".neu" => Cmp::Neu,
        ".ltu" => Cmp::Ltu,
        ".leu" => Cmp::Leu,
        ".gtu" => Cmp::Gtu,
        ".geu" => Cmp::Geu,
        ".num" => Cmp::Num,
        _ => Cmp::Nan,
    };
    let bool_op = match q.take_any(&[".and", ".or", ".xor"]) {
        Some(".and") => Some(BoolOp::And),
        Some(".or") => Some(BoolOp::Or),
        Some(_) => Some(BoolOp::Xor),
        None => None,
    };
    ctx.count(ops, if bool_op.is_some() { 4 } else { 3 }, q.opcode)?;
    let (p, qd) = match &ops[0] {
        Operand::Pair(p, qn) => (ctx.pred_dst_named(p)?, ctx.pred_dst_named(qn)?),
        other => (ctx.pred_dst(other)?, None),
    };
    let (a, b) = (ctx.src(&ops[1], ty)?, ctx.src(&ops[2], ty)?);
    let combine = match bool_op {
        Some(op) => Some((op, ctx.pred_src(&ops[3])?)),
        None => None,
    };
    Ok(Op::Setp { cmp, ty: cmp_ty, p, q: qd, a, b, combine })
}
