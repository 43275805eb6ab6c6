//! Data movement and conversion between registers: `mov`, `cvt`, `cvta`.

use super::super::LoadError;
use super::super::inst::{BoolOp, Conv, Op, Reg, Rounding, Special, Src};
use super::super::syntax::Operand;
use super::super::types::{FloatTy, Scalar};
use super::{Ctx, Quals};

pub(super) fn decode(ctx: &mut Ctx<'_>, m: &str, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    match m {
        "mov" => mov(ctx, q, ops),
        "cvt" => cvt(ctx, q, ops),
        _ => cvta(ctx, q, ops),
    }
}

/// The special registers `mov` reads (all `.u32`).
fn special(name: &str) -> Option<Special> {
    let axis = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    let (reg, dim) = name.split_once('.').unwrap_or((name, ""));
    Some(match reg {
        "%tid" => Special::Tid(axis(dim)?),
        "%ntid" => Special::Ntid(axis(dim)?),
        "%ctaid" => Special::Ctaid(axis(dim)?),
        "%nctaid" => Special::Nctaid(axis(dim)?),
        "%laneid" if dim.is_empty() => Special::LaneId,
        _ => return None,
    })
}

fn mov(ctx: &mut Ctx<'_>, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let ty = q.one_type()?;
    ctx.count(ops, 2, q.opcode)?;
    if ty == Scalar::Pred {
        let Some(d) = ctx.pred_dst(&ops[0])? else { return Err(ctx.error("`mov.pred` needs a destination")) };
        return match &ops[1] {
            Operand::Int(v @ (0 | 1)) => Ok(Op::PredConst { d, value: *v == 1 }),
            other => Ok(Op::PredLogic { op: BoolOp::And, d, a: ctx.pred_src(other)?, b: None }),
        };
    }
    let bits = ty.bits();
    if bits < 16 {
        return Err(q.bad_type(ty));
    }
    match (&ops[0], &ops[1]) {
        (Operand::Vector(parts), src) => {
            let n = parts.len();
            if !matches!(ty, Scalar::B32 | Scalar::B64) || !(n == 2 || n == 4) || bits / (n as u32) < 8 {
                return Err(ctx.error(format!("`{}` cannot split into {n} parts", q.opcode)));
            }
            let part_bits = bits / n as u32;
            let mut out: [Option<Reg>; 4] = [None; 4];
            for (slot, p) in out.iter_mut().zip(parts) {
                *slot = match p {
                    Operand::Sink => None,
                    other => Some(ctx.dst(other, part_bits)?),
                };
            }
            let a = ctx.src(src, ty)?;
            Ok(Op::Unpack { a, parts: out, n: n as u8, bits: part_bits as u8 })
        }
        (dst, Operand::Vector(parts)) => {
            let n = parts.len();
            if !matches!(ty, Scalar::B32 | Scalar::B64) || !(n == 2 || n == 4) || bits / (n as u32) < 8 {
                return Err(ctx.error(format!("`{}` cannot join {n} parts", q.opcode)));
            }
            let part_bits = bits / n as u32;
            let part_ty = match part_bits {
                16 => Scalar::B16,
                32 => Scalar::B32,
                _ => return Err(ctx.error(format!("`{}`: parts of {part_bits} bits", q.opcode))),
            };
            let mut srcs = [Src::Imm(0); 4];
            for (slot, p) in srcs.iter_mut().zip(parts) {
                *slot = ctx.src(p, part_ty)?;
            }
            Ok(Op::Pack { d: ctx.dst(dst, bits)?, parts: srcs, n: n as u8, bits: part_bits as u8 })
        }
        (dst, Operand::Reg(name)) if name.starts_with("%") && ctx.regs.lookup(name).is_none() => {
            let Some(which) = special(name) else {
                return Err(ctx.error(format!("unsupported special register or undeclared register `{name}`")));
            };
            if bits != 32 {
                return Err(ctx.error(format!("`{name}` is a 32-bit register")));
            }
            Ok(Op::Special { d: ctx.dst(dst, 32)?, which })
        }
        (dst, src) => Ok(Op::Mov { d: ctx.dst(dst, bits)?, a: ctx.src(src, ty)? }),
    }
}

fn cvta(ctx: &mut Ctx<'_>, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    // Generic addresses of global memory are the global addresses themselves, both ways.
    let _to = q.take(".to");
    if !q.take(".global") {
        return Err(q.error("only `.global` conversions are implemented"));
    }
    let ty = q.one_type()?;
    if ty != Scalar::U64 {
        return Err(q.bad_type(ty));
    }
    ctx.count(ops, 2, q.opcode)?;
    Ok(Op::Mov { d: ctx.dst(&ops[0], 64)?, a: ctx.src(&ops[1], ty)? })
}

fn cvt(ctx: &mut Ctx<'_>, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    let int_rnd = q.take_any(&[".rni", ".rzi", ".rmi", ".rpi"]).map(|r| match r {
        ".rni" => Rounding::NearestEven,
        ".rzi" => Rounding::TowardZero,
        ".rmi" => Rounding::Down,
        _ => Rounding::Up,
    });
    let float_rnd = q.take_any(&[".rn", ".rz", ".rm", ".rp"]).map(|r| match r {
        ".rn" => Rounding::NearestEven,
        ".rz" => Rounding::TowardZero,
        ".rm" => Rounding::Down,
        _ => Rounding::Up,
    });
    let ftz = q.take(".ftz");
    let sat = q.take(".sat");
    let types = q.types();
    let [to, from] = types.as_slice() else { return Err(q.error("`cvt` needs two types")) };
    let (to, from) = (*to, *from);
    for t in [to, from] {
        if t == Scalar::Pred || t.bits() < 16 || matches!(t, Scalar::B16 | Scalar::B32 | Scalar::B64) {
            return Err(q.bad_type(t));
        }
    }
    if ftz && to != Scalar::F32 && from != Scalar::F32 {
        return Err(q.error("`.ftz` applies to `.f32` only"));
    }
    if int_rnd.is_some() && float_rnd.is_some() {
        return Err(q.error("two rounding modifiers"));
    }
    ctx.count(ops, 2, q.opcode)?;
    let d = ctx.dst(&ops[0], to.bits())?;
    let a = ctx.src_wide(&ops[1], from)?;
    let conv = match (FloatTy::of(to), FloatTy::of(from), to.int_ty(), from.int_ty()) {
        (None, None, Some(_), Some(fi)) => {
            if int_rnd.is_some() || float_rnd.is_some() || ftz {
                return Err(q.error("integer conversions take no rounding or `.ftz`"));
            }
            Conv::IntInt { from: fi, to_bits: to.bits(), to_signed: to.is_signed(), sat }
        }
        (Some(tf), Some(ff), _, _) if tf == ff => {
            if float_rnd.is_some() {
                return Err(q.error("a float rounding modifier on a same-size conversion"));
            }
            match int_rnd {
                Some(rnd) => Conv::FloatRound { ty: tf, rnd, ftz, sat },
                None => Conv::FloatFloat { from: ff, to: tf, rnd: Rounding::NearestEven, ftz, sat },
            }
        }
        (Some(tf), Some(ff), _, _) => {
            let narrowing = tf.bits() < ff.bits() || (tf.bits() == ff.bits() && tf != ff);
            let rnd = match (narrowing, float_rnd, int_rnd) {
                (true, Some(r), None) => r,
                (false, None, None) => Rounding::NearestEven,
                (true, _, _) => return Err(q.error("a narrowing float conversion needs `.rn`, `.rz`, `.rm` or `.rp`")),
                (false, _, _) => return Err(q.error("a widening float conversion takes no rounding modifier")),
            };
            Conv::FloatFloat { from: ff, to: tf, rnd, ftz, sat }
        }
        (None, Some(ff), Some(_), _) => {
            let Some(rnd) = int_rnd else {
                return Err(q.error("a float-to-integer conversion needs `.rni`, `.rzi`, `.rmi` or `.rpi`"));
            };
            Conv::FloatInt { from: ff, to_bits: to.bits(), to_signed: to.is_signed(), rnd, ftz }
        }
        (Some(tf), None, _, Some(fi)) => {
            let Some(rnd) = float_rnd else {
                return Err(q.error("an integer-to-float conversion needs `.rn`, `.rz`, `.rm` or `.rp`"));
            };
            Conv::IntFloat { from: fi, to: tf, rnd, ftz, sat }
        }
        _ => return Err(q.error("unsupported conversion")),
    };
    Ok(Op::Cvt { conv, d, a })
}
