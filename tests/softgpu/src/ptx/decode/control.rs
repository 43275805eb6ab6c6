//! Control flow and warp/block communication: `bra`, `ret`, `exit`, `bar.sync`, `shfl.sync`.

use super::super::LoadError;
use super::super::inst::{Op, ShflMode};
use super::super::syntax::Operand;
use super::super::types::Scalar;
use super::{Ctx, Quals};

/// Barriers per block (`bar.sync 0` to `bar.sync 15`).
pub(crate) const BARRIERS: u32 = 16;

pub(super) fn decode(ctx: &mut Ctx<'_>, m: &str, q: &mut Quals<'_>, ops: &[Operand<'_>]) -> Result<Op, LoadError> {
    match m {
        "bra" => {
            // `.uni` promises that the branch does not diverge: a hint, same semantics.
            let _uni = q.take(".uni");
            ctx.count(ops, 1, q.opcode)?;
            Ok(Op::Bra { target: ctx.label(&ops[0])? })
        }
        "ret" | "exit" => {
            ctx.count(ops, 0, q.opcode)?;
            Ok(Op::Exit)
        }
        "bar" | "barrier" => {
            let _cta = q.take(".cta");
            if !q.take(".sync") {
                return Err(q.error("only `.sync` barriers are implemented"));
            }
            // `bar.sync` is `barrier.sync.aligned`; the unaligned form has other rules.
            if m == "barrier" && !q.take(".aligned") {
                return Err(q.error("only `.aligned` barriers are implemented"));
            }
            if ops.len() != 1 {
                return Err(ctx.error("`bar.sync` with a thread count is not implemented"));
            }
            match &ops[0] {
                Operand::Int(v) if (0..i128::from(BARRIERS)).contains(v) => Ok(Op::BarSync { barrier: *v as u32 }),
                _ => Err(ctx.error("the barrier of `bar.sync` must be an immediate 0 to 15")),
            }
        }
        _ => {
            if !q.take(".sync") {
                return Err(q.error("only `shfl.sync` is implemented"));
            }
            let mode = match q.take_any(&[".up", ".down", ".bfly", ".idx"]) {
                Some(".up") => ShflMode::Up,
                Some(".down") => ShflMode::Down,
                Some(".bfly") => ShflMode::Bfly,
                Some(_) => ShflMode::Idx,
                None => return Err(q.error("no shuffle mode")),
            };
            let ty = q.one_type()?;
            if ty != Scalar::B32 {
                return Err(q.bad_type(ty));
            }
            ctx.count(ops, 5, q.opcode)?;
            let (d, p) = match &ops[0] {
                Operand::Pair(d, p) => (ctx.dst_named(d, 32)?, ctx.pred_dst_named(p)?),
                other => (ctx.dst(other, 32)?, None),
            };
            Ok(Op::Shfl {
                mode,
                d,
                p,
                a: ctx.src(&ops[1], ty)?,
                b: ctx.src(&ops[2], ty)?,
                c: ctx.src(&ops[3], ty)?,
                mask: ctx.src(&ops[4], ty)?,
            })
        }
    }
}
