//! Integer, floating-point and logic instructions: `add sub mul mad div rem min max and or xor
//! not shl shr neg abs fma rcp sqrt` (`mad` of integers only).

use super::super::LoadError;
use super::super::inst::{BoolOp, FloatMode, FloatOp, FloatUnOp, IntOp, IntUnOp, MadPart, Op};
use super::super::syntax::Operand;
use super::super::types::{FloatTy, Scalar};
use super::{Ctx, Quals};

pub(super) fn decode(ctx: &mut Ctx<'_>, m: &str, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let ty = q.one_type()?;
    if ty == Scalar::Pred {
        return pred_logic(ctx, m, q, ops);
    }
    if let Some(fty) = FloatTy::of(ty) {
        return float(ctx, m, q, ops, ty, fty);
    }
    int(ctx, m, q, ops, ty)
}

/// `and or xor not` on predicates.
fn pred_logic(ctx: &mut Ctx<'_>, m: &str, q: &Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let op = match m {
        "and" => BoolOp::And,
        "or" => BoolOp::Or,
        "xor" => BoolOp::Xor,
        "not" => {
            ctx.count(ops, 2, q.opcode)?;
            let Some(d) = ctx.pred_dst(&ops[0])? else { return Err(ctx.error("`not.pred` needs a destination")) };
            let mut a = ctx.pred_src(&ops[1])?;
            a.negate = !a.negate;
            return Ok(Op::PredLogic { op: BoolOp::And, d, a, b: None });
        }
        _ => return Err(q.bad_type(Scalar::Pred)),
    };
    ctx.count(ops, 3, q.opcode)?;
    let Some(d) = ctx.pred_dst(&ops[0])? else { return Err(ctx.error("a predicate operation needs a destination")) };
    Ok(Op::PredLogic { op, d, a: ctx.pred_src(&ops[1])?, b: Some(ctx.pred_src(&ops[2])?) })
}

fn int(ctx: &mut Ctx<'_>, m: &str, q: &mut Quals<'_>, ops: &[Operand<'_>], ty: Scalar) -> Result<Op, LoadError> {
    let Some(ity) = ty.int_ty() else { return Err(q.bad_type(ty)) };
    let bits = ty.bits();
    let is_bit_type = matches!(ty, Scalar::B16 | Scalar::B32 | Scalar::B64);
    if m == "mad" && !is_bit_type {
        let part = match q.take_any(&[".lo", ".hi", ".wide"]) {
            Some(".lo") => MadPart::Lo,
            Some(".hi") => MadPart::Hi,
            Some(_) => MadPart::Wide,
            None => return Err(q.error("`mad` without `.lo`, `.hi` or `.wide`")),
        };
        // `c` and the result are twice as wide for `.wide`.
        let (d_bits, c_ty) = match (part, ty) {
            (MadPart::Wide, Scalar::U16) => (32, Scalar::U32),
            (MadPart::Wide, Scalar::S16) => (32, Scalar::S32),
            (MadPart::Wide, Scalar::U32) => (64, Scalar::U64),
            (MadPart::Wide, Scalar::S32) => (64, Scalar::S64),
            (MadPart::Wide, _) => return Err(q.error("`.wide` of 64-bit operands")),
            _ => (bits, ty),
        };
        ctx.count(ops, 4, q.opcode)?;
        let d = ctx.dst(&ops[0], d_bits)?;
        let (a, b, c) = (ctx.src(&ops[1], ty)?, ctx.src(&ops[2], ty)?, ctx.src(&ops[3], c_ty)?);
        return Ok(Op::IntMad { part, ty: ity, d, a, b, c });
    }
    // The operations PTX defines for each type class.
    let binary = match m {
        "add" | "sub" | "div" | "rem" | "min" | "max" if !is_bit_type => Some(match m {
            "add" => IntOp::Add,
            "sub" => IntOp::Sub,
            "div" => IntOp::Div,
            "rem" => IntOp::Rem,
            "min" => IntOp::Min,
            _ => IntOp::Max,
        }),
        "mul" if !is_bit_type => match q.take_any(&[".lo", ".hi", ".wide"]) {
            Some(".lo") => Some(IntOp::MulLo),
            Some(".hi") => Some(IntOp::MulHi),
            Some(_) => {
                if bits == 64 {
                    return Err(q.error("`.wide` of 64-bit operands"));
                }
                ctx.count(ops, 3, q.opcode)?;
                let d = ctx.dst(&ops[0], 2 * bits)?;
                return Ok(Op::MulWide { ty: ity, d, a: ctx.src(&ops[1], ty)?, b: ctx.src(&ops[2], ty)? });
            }
            None => return Err(q.error("`mul` without `.lo`, `.hi` or `.wide`")),
        },
        "and" | "or" | "xor" if is_bit_type => Some(match m {
            "and" => IntOp::And,
            "or" => IntOp::Or,
            _ => IntOp::Xor,
        }),
        "shl" if is_bit_type => Some(IntOp::Shl),
        "shr" => Some(IntOp::Shr),
        _ => None,
    };
    if let Some(op) = binary {
        ctx.count(ops, 3, q.opcode)?;
        // Where signedness does not change the bits of the result, run the unsigned form.
        let ity = match op {
            IntOp::MulHi | IntOp::Div | IntOp::Rem | IntOp::Min | IntOp::Max | IntOp::Shr => ity,
            _ => ity.unsigned(),
        };
        let d = ctx.dst(&ops[0], bits)?;
        let a = ctx.src(&ops[1], ty)?;
        // Shift amounts are unsigned 32-bit values whatever the type.
        let b =
            if matches!(op, IntOp::Shl | IntOp::Shr) { ctx.src(&ops[2], Scalar::U32)? } else { ctx.src(&ops[2], ty)? };
        return Ok(Op::Int { op, ty: ity, d, a, b });
    }
    let unary = match m {
        "not" if is_bit_type => IntUnOp::Not,
        "neg" if ty.is_signed() => IntUnOp::Neg,
        "abs" if ty.is_signed() => IntUnOp::Abs,
        "add" | "sub" | "mul" | "mad" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "not"
        | "neg" | "abs" => return Err(q.bad_type(ty)),
        _ => return Err(q.bad_type(ty)),
    };
    ctx.count(ops, 2, q.opcode)?;
    let ity = if unary == IntUnOp::Abs { ity } else { ity.unsigned() };
    Ok(Op::IntUn { op: unary, ty: ity, d: ctx.dst(&ops[0], bits)?, a: ctx.src(&ops[1], ty)? })
}

/// `.rn` (the default where PTX has one); any other rounding mode is not implemented for
/// arithmetic and stays in the qualifiers, so that the load fails naming it.
fn nearest(q: &mut Quals<'_>, required: bool) -> Result<(), LoadError> {
    if q.take(".rn") || !required {
        Ok(())
    } else if q.take_any(&[".rz", ".rm", ".rp"]).is_some() {
        Err(q.error("only the rounding `.rn` is implemented"))
    } else {
        Err(q.error("no rounding modifier"))
    }
}

fn float(
    ctx: &mut Ctx<'_>,
    m: &str,
    q: &mut Quals<'_>,
    ops: &[Operand<'_>],
    ty: Scalar,
    fty: FloatTy,
) -> Result<Op, LoadError> {
    if !matches!(fty, FloatTy::F32 | FloatTy::F64) {
        return Err(q.bad_type(ty));
    }
    let f32_only = |q: &mut Quals<'_>, qual: &str| fty == FloatTy::F32 && q.take(qual);
    let bits = ty.bits();
    let binary = match m {
        "add" | "sub" | "mul" => {
            nearest(q, false)?;
            Some(match m {
                "add" => FloatOp::Add,
                "sub" => FloatOp::Sub,
                _ => FloatOp::Mul,
            })
        }
        "div" => {
            nearest(q, true)?;
            Some(FloatOp::Div)
        }
        "min" | "max" => {
            let nan = f32_only(q, ".NaN");
            Some(match (m, nan) {
                ("min", false) => FloatOp::Min,
                ("min", true) => FloatOp::MinNan,
                (_, false) => FloatOp::Max,
                _ => FloatOp::MaxNan,
            })
        }
        _ => None,
    };
    if let Some(op) = binary {
        let ftz = f32_only(q, ".ftz");
        let sat = matches!(op, FloatOp::Add | FloatOp::Sub | FloatOp::Mul) && f32_only(q, ".sat");
        ctx.count(ops, 3, q.opcode)?;
        let d = ctx.dst(&ops[0], bits)?;
        let (a, b) = (ctx.src(&ops[1], ty)?, ctx.src(&ops[2], ty)?);
        return Ok(Op::Float { op, ty: fty, mode: FloatMode { ftz, sat }, d, a, b });
    }
    if m == "fma" {
        nearest(q, true)?;
        let ftz = f32_only(q, ".ftz");
        let sat = f32_only(q, ".sat");
        ctx.count(ops, 4, q.opcode)?;
        let d = ctx.dst(&ops[0], bits)?;
        let (a, b, c) = (ctx.src(&ops[1], ty)?, ctx.src(&ops[2], ty)?, ctx.src(&ops[3], ty)?);
        return Ok(Op::Fma { ty: fty, mode: FloatMode { ftz, sat }, d, a, b, c });
    }
    let op = match m {
        "abs" => FloatUnOp::Abs,
        "neg" => FloatUnOp::Neg,
        "rcp" if fty == FloatTy::F64 && q.take(".approx") => {
            if !q.take(".ftz") {
                return Err(q.error("`rcp.approx.f64` without `.ftz`"));
            }
            FloatUnOp::RcpApproxFtzF64
        }
        "rcp" | "sqrt" => {
            nearest(q, true)?;
            if m == "rcp" { FloatUnOp::Rcp } else { FloatUnOp::Sqrt }
        }
        _ => return Err(q.bad_type(ty)),
    };
    let ftz = f32_only(q, ".ftz");
    ctx.count(ops, 2, q.opcode)?;
    Ok(Op::FloatUn {
        op,
        ty: fty,
        mode: FloatMode { ftz, sat: false },
        d: ctx.dst(&ops[0], bits)?,
        a: ctx.src(&ops[1], ty)?,
    })
}
