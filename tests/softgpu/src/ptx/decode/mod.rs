//! The syntax tree of one `.entry` to a [`Kernel`]: registers to slots, labels to instruction
//! indices, `.shared` variables to offsets of the block's shared window, parameters to offsets
//! of the parameter buffer, and each instruction to an [`Op`].
//!
//! Each family of instructions has its own file; [`instruction`] dispatches on the mnemonic. To
//! add an instruction: decode it in its family's file (taking the qualifiers it implements, so
//! that any other one is an error), add its [`Op`] if no existing one fits, and run it in the
//! matching file of `exec`.

mod arith;
mod compare;
mod control;
mod memory;
mod mov;
mod operands;
mod quals;
mod regs;

use std::collections::HashMap;

use super::inst::{Inst, Op};
use super::syntax::{AddressBase, EntrySyntax, ModuleSyntax, Operand, Stmt, VarDecl};
use super::types::{RegClass, Scalar};
use super::{Kernel, LoadError, ParamInfo};
pub(crate) use operands::Ctx;
use quals::Quals;
use regs::RegTable;

/// The most threads a block may have when the kernel sets no bound.
pub(crate) const MAX_THREADS_PER_BLOCK: u32 = 1024;

/// The alignment of the dynamic shared memory that follows the static variables.
const DYNAMIC_SHARED_ALIGN: u64 = 16;

/// The most value registers (and, apart, predicates) a kernel may declare: far above what
/// nvcc writes (a few thousand), and what keeps a block's register file within reason.
pub(crate) const MAX_REGISTERS: u32 = 1 << 16;

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError { line, message: message.into() })
}

/// The bytes and alignment of a variable.
fn var_layout(v: &VarDecl<'_>) -> Result<(u64, u64), LoadError> {
    let Some(ty) = Scalar::parse(v.ty).filter(|t| *t != Scalar::Pred) else {
        return err(v.line, format!("unsupported variable type `{}`", v.ty));
    };
    let mut size = u64::from(ty.bytes());
    for d in &v.dims {
        match d {
            Some(n) => size = size.saturating_mul(*n),
            None if v.is_extern && v.dims.len() == 1 => size = 0,
            None => return err(v.line, format!("`{}`: an array without a size must be `.extern`", v.name)),
        }
    }
    let align = v.align.unwrap_or(u64::from(ty.bytes()));
    if align == 0 || !align.is_power_of_two() {
        return err(v.line, format!("`{}`: bad alignment {align}", v.name));
    }
    if v.is_extern && size != 0 {
        return err(v.line, format!("`{}`: an `.extern .shared` variable must be an unsized array", v.name));
    }
    Ok((size, align))
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

/// The names an instruction refers to (to know which module-level variables a kernel uses).
fn symbols<'a>(ops: &[Operand<'a>], out: &mut Vec<&'a str>) {
    for op in ops {
        match op {
            Operand::Symbol(s) => out.push(s),
            Operand::Address { base: Some(AddressBase::Symbol(s)), .. } => out.push(s),
            Operand::Vector(v) => symbols(v, out),
            _ => {}
        }
    }
}

/// Decodes every `.entry` of `m`.
pub(crate) fn module(m: &ModuleSyntax<'_>, text: &str) -> Result<Vec<Kernel>, LoadError> {
    let source: Vec<&str> = text.lines().collect();
    let mut names = HashMap::new();
    for v in &m.variables {
        if names.insert(v.name, v.line).is_some() {
            return err(v.line, format!("variable `{}` declared twice", v.name));
        }
    }
    let mut kernels = Vec::with_capacity(m.entries.len());
    for e in &m.entries {
        if kernels.iter().any(|k: &Kernel| k.name == e.name) {
            return err(e.line, format!("kernel `{}` defined twice", e.name));
        }
        kernels.push(kernel(e, &m.variables, &source)?);
    }
    Ok(kernels)
}

/// Decodes one `.entry`.
fn kernel(e: &EntrySyntax<'_>, module_vars: &[VarDecl<'_>], text: &[&str]) -> Result<Kernel, LoadError> {
    // Parameters: laid out in order, each at its alignment.
    let mut params = Vec::with_capacity(e.params.len());
    let mut param_offsets = Vec::with_capacity(e.params.len());
    let mut param_names = HashMap::new();
    let mut offset = 0u64;
    for p in &e.params {
        let Some(ty) = Scalar::parse(p.ty).filter(|t| *t != Scalar::Pred) else {
            return err(p.line, format!("unsupported parameter type `{}`", p.ty));
        };
        let size = p.dims.iter().fold(u64::from(ty.bytes()), |s, d| s.saturating_mul(*d));
        let align = p.align.unwrap_or(u64::from(ty.bytes()));
        if align == 0 || !align.is_power_of_two() || size == 0 || size > 4096 {
            return err(p.line, format!("parameter `{}`: bad size or alignment", p.name));
        }
        offset = align_up(offset, align);
        if param_names.insert(p.name, (offset, size)).is_some() {
            return err(p.line, format!("parameter `{}` declared twice", p.name));
        }
        params.push(ParamInfo { size: size as usize, align: align as usize });
        param_offsets.push(offset as usize);
        offset += size;
    }
    let param_bytes = offset as usize;

    // Shared memory: the kernel's variables in order, then the module's that it uses, then the
    // dynamic part (every `.extern .shared` array starts there).
    let mut used = Vec::new();
    for s in &e.body {
        if let Stmt::Inst(i) = s {
            symbols(&i.operands, &mut used);
        }
    }
    let mut shared = HashMap::new();
    let mut cursor = 0u64;
    let mut externs = Vec::new();
    let mut dyn_align = DYNAMIC_SHARED_ALIGN;
    let locals = e.body.iter().filter_map(|s| if let Stmt::Var(v) = s { Some(v) } else { None });
    for v in locals {
        if shared.contains_key(v.name) {
            return err(v.line, format!("variable `{}` declared twice", v.name));
        }
        let (size, align) = var_layout(v)?;
        cursor = align_up(cursor, align);
        shared.insert(v.name, cursor);
        cursor = cursor.saturating_add(size);
    }
    for v in module_vars {
        if shared.contains_key(v.name) || !used.contains(&v.name) {
            continue;
        }
        let (size, align) = var_layout(v)?;
        if v.is_extern {
            externs.push(v.name);
            dyn_align = dyn_align.max(align);
        } else {
            cursor = align_up(cursor, align);
            shared.insert(v.name, cursor);
            cursor = cursor.saturating_add(size);
        }
    }
    let static_shared_bytes = cursor;
    let dynamic_shared_offset = align_up(cursor, dyn_align);
    for name in externs {
        shared.insert(name, dynamic_shared_offset);
    }
    if static_shared_bytes > u64::from(u32::MAX) {
        return err(e.line, "too much shared memory");
    }

    // Labels: the index of the next instruction.
    let mut labels = HashMap::new();
    let mut count = 0u32;
    for s in &e.body {
        match s {
            Stmt::Inst(_) => count += 1,
            Stmt::Label(line, name) if labels.insert(*name, count).is_some() => {
                return err(*line, format!("label `{name}` defined twice"));
            }
            _ => {}
        }
    }

    let mut ctx = Ctx::new(RegTable::new(), labels, shared, param_names);
    let mut code = Vec::with_capacity(count as usize);
    let mut lines = Vec::with_capacity(count as usize);
    let mut source = Vec::with_capacity(count as usize);
    let mut last_line = e.line;
    for s in &e.body {
        match s {
            Stmt::Open => ctx.regs.open(),
            Stmt::Close => ctx.regs.close(last_line)?,
            Stmt::Label(..) | Stmt::Var(_) => {}
            Stmt::Reg(r) => {
                let class = Scalar::parse(r.ty).and_then(RegClass::of);
                let Some(class) = class else {
                    return err(r.line, format!("unsupported register type `{}`", r.ty));
                };
                ctx.regs.declare(r.name, class, r.count, r.line)?;
            }
            Stmt::Inst(i) => {
                last_line = i.line;
                ctx.line = i.line;
                code.push(instruction(&mut ctx, i)?);
                lines.push(u32::try_from(i.line).unwrap_or(u32::MAX));
                let t = text.get(i.line.wrapping_sub(1)).map_or("", |l| l.trim());
                source.push(t.trim_end_matches(';').trim().into());
            }
        }
    }
    // Running past the last instruction would run whatever follows on a GPU.
    match code.last() {
        Some(Inst { guard: None, op: Op::Exit | Op::Bra { .. } }) => {}
        _ => return err(last_line, format!("kernel `{}` can run past its last instruction", e.name)),
    }
    for (inst, line) in code.iter().zip(&lines) {
        if let Op::Bra { target } = inst.op
            && target as usize >= code.len()
        {
            return err(*line as usize, format!("kernel `{}`: a branch past its last instruction", e.name));
        }
    }

    if ctx.regs.max_values > MAX_REGISTERS || ctx.regs.max_preds > MAX_REGISTERS {
        return err(e.line, format!("kernel `{}` declares more than {MAX_REGISTERS} registers", e.name));
    }
    let bound = e.reqntid.or(e.maxntid);
    let max_threads = match bound {
        Some([x, y, z]) => {
            let n = u64::from(x) * u64::from(y) * u64::from(z);
            if n == 0 || n > u64::from(MAX_THREADS_PER_BLOCK) {
                return err(e.line, format!("kernel `{}`: bad thread bound {n}", e.name));
            }
            n as u32
        }
        None => MAX_THREADS_PER_BLOCK,
    };
    Ok(Kernel {
        name: e.name.to_string(),
        params,
        param_offsets,
        param_bytes,
        static_shared_bytes: static_shared_bytes as usize,
        dynamic_shared_offset: dynamic_shared_offset as usize,
        max_threads_per_block: max_threads,
        reqntid: e.reqntid,
        num_regs: ctx.regs.declared_words.min(255) as u32,
        value_regs: ctx.regs.max_values,
        pred_regs: ctx.regs.max_preds,
        code,
        lines,
        source,
    })
}

/// Decodes one instruction.
fn instruction(ctx: &mut Ctx<'_>, i: &super::syntax::InstSyntax<'_>) -> Result<Inst, LoadError> {
    let guard = match i.guard {
        None => None,
        Some((negate, name)) => Some(ctx.pred_named(name, negate)?),
    };
    let (mnemonic, mut q) = Quals::new(i.opcode, i.line);
    let ops = i.operands.as_slice();
    let op = match mnemonic {
        "add" | "sub" | "mul" | "mad" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr"
        | "fma" | "not" | "neg" | "abs" | "rcp" | "sqrt" => arith::decode(ctx, mnemonic, &mut q, ops)?,
        "setp" | "selp" => compare::decode(ctx, mnemonic, &mut q, ops)?,
        "mov" | "cvt" | "cvta" => mov::decode(ctx, mnemonic, &mut q, ops)?,
        "ld" | "st" | "atom" | "red" => memory::decode(ctx, mnemonic, &mut q, ops)?,
        "bra" | "ret" | "exit" | "bar" | "barrier" | "shfl" => control::decode(ctx, mnemonic, &mut q, ops)?,
        _ => return err(i.line, format!("unsupported instruction `{}`", i.opcode)),
    };
    q.finish()?;
    Ok(Inst { guard, op })
}
