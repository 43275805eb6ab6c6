//! One warp: 32 lanes that run together, each with its own program counter.
//!
//! The lanes with the lowest program counter among those that can run form the current group
//! and run together; the others wait. A branch that splits the group puts each lane's target in
//! its counter and picks the lowest again, so the two sides of an `if` run one after the other
//! and the lanes merge again where their counters meet (the join after the `if`, or the exit of
//! a loop whose trip count differs by lane). A lane waiting at `bar.sync` or at a `shfl.sync`
//! whose partners are elsewhere cannot run until released.
//!
//! Registers are held lane by lane (`[u64; 32]` per register, zero-extended values) and
//! predicates as one bit per lane, so each instruction runs as a loop over 32 values.

use super::block::Env;
use super::lanes::{Lanes, Val};
use super::{Fault, FaultKind, compare, convert, float, int, shuffle};
use crate::ptx::inst::{BoolOp, Op, Pred, PredSrc, Reg, ShflMode, Special, Src};

/// The pattern registers hold before a kernel writes them.
const UNWRITTEN_REGISTER: u64 = 0xDEAD_BEEF_DEAD_BEEF;

/// A fault of one lane, before it is placed in its block and PTX line.
#[derive(Debug)]
pub(crate) struct LaneFault {
    pub lane: u32,
    pub kind: FaultKind,
    pub detail: String,
}

/// Iterates over the set bits of `mask`, lowest first.
pub(crate) fn bits(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            None
        } else {
            let l = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some(l)
        }
    })
}

fn combine(op: BoolOp, a: u32, b: u32) -> u32 {
    match op {
        BoolOp::And => a & b,
        BoolOp::Or => a | b,
        BoolOp::Xor => a ^ b,
    }
}

/// One warp of a block.
pub(crate) struct Warp {
    /// Its index in the block.
    pub index: u32,
    pub regs: Vec<Lanes>,
    pub preds: Vec<u32>,
    /// Lanes that are threads of the block.
    pub present: u32,
    /// Present lanes that have not exited.
    pub live: u32,
    /// Lanes waiting at `bar.sync` (their counter is at the instruction).
    pub bar_wait: u32,
    /// Lanes waiting at `shfl.sync` for lanes named in their mask.
    pub shfl_wait: u32,
    /// The program counter of each lane not in the current group (for an exited lane, where it
    /// exited).
    pub pcs: [u32; 32],
    cur_pc: u32,
    cur_mask: u32,
    /// The lanes in `cur_mask` (counted when it changes, for the statistics).
    cur_lanes: u32,
    /// The lowest counter of the runnable lanes outside the current group (`u32::MAX`: none).
    next_other: u32,
}

impl Warp {
    pub(crate) fn new(index: u32, value_regs: u32, pred_regs: u32) -> Self {
        Warp {
            index,
            regs: vec![[UNWRITTEN_REGISTER; 32]; value_regs as usize],
            preds: vec![0; pred_regs as usize],
            present: 0,
            live: 0,
            bar_wait: 0,
            shfl_wait: 0,
            pcs: [0; 32],
            cur_pc: 0,
            cur_mask: 0,
            cur_lanes: 0,
            next_other: u32::MAX,
        }
    }

    /// Starts a new block with the lanes `present` at the first instruction.
    pub(crate) fn start(&mut self, present: u32) {
        self.present = present;
        self.live = present;
        self.bar_wait = 0;
        self.shfl_wait = 0;
        self.pcs = [0; 32];
        self.cur_pc = 0;
        self.cur_mask = present;
        self.cur_lanes = present.count_ones();
        self.next_other = u32::MAX;
    }

    /// The thread index (x, y, z) of `lane` in a block of `dim`.
    pub(crate) fn thread(&self, lane: u32, dim: [u32; 3]) -> [u32; 3] {
        let t = self.index * 32 + lane;
        [t % dim[0], (t / dim[0]) % dim[1], t / (dim[0] * dim[1])]
    }

    /// Releases the lanes waiting at a completed barrier.
    pub(crate) fn release(&mut self) {
        for l in bits(self.bar_wait) {
            self.pcs[l] += 1;
        }
        self.bar_wait = 0;
        self.cur_mask = 0;
    }

    /// Picks the runnable lanes with the lowest counter; false when no lane can run.
    fn schedule(&mut self) -> bool {
        for l in bits(self.cur_mask) {
            self.pcs[l] = self.cur_pc;
        }
        let runnable = self.live & !self.bar_wait & !self.shfl_wait;
        let (mut lo, mut lo_mask, mut next) = (u32::MAX, 0u32, u32::MAX);
        for l in bits(runnable) {
            let p = self.pcs[l];
            if p < lo {
                next = lo;
                lo = p;
                lo_mask = 1 << l;
            } else if p == lo {
                lo_mask |= 1 << l;
            } else if p < next {
                next = p;
            }
        }
        self.cur_pc = lo;
        self.cur_mask = lo_mask;
        self.cur_lanes = lo_mask.count_ones();
        self.next_other = next;
        runnable != 0
    }

    /// The current group goes on to the next instruction.
    #[inline]
    fn advance(&mut self) {
        self.cur_pc += 1;
        if self.cur_pc >= self.next_other {
            self.schedule();
        }
    }

    /// The lanes of `mask` leave the current group, waiting (at `bar.sync`, `shfl.sync`) or
    /// exited, with their counter at the current instruction; the others go on.
    fn leave(&mut self, mask: u32) {
        for l in bits(mask) {
            self.pcs[l] = self.cur_pc;
        }
        self.cur_mask &= !mask;
        self.cur_lanes = self.cur_mask.count_ones();
        if self.cur_mask == 0 {
            self.schedule();
        } else {
            self.advance();
        }
    }

    fn branch(&mut self, taken: u32, target: u32) {
        let stay = self.cur_mask & !taken;
        if stay == 0 {
            self.cur_pc = target;
            if target >= self.next_other {
                self.schedule();
            }
        } else if taken == 0 {
            self.advance();
        } else {
            for l in bits(taken) {
                self.pcs[l] = target;
            }
            for l in bits(stay) {
                self.pcs[l] = self.cur_pc + 1;
            }
            self.cur_mask = 0;
            self.schedule();
        }
    }

    #[inline]
    fn pred(&self, p: PredSrc) -> u32 {
        let v = self.preds[p.pred as usize];
        if p.negate { !v } else { v }
    }

    #[inline]
    fn set_pred(&mut self, p: Pred, mask: u32, v: u32) {
        let slot = &mut self.preds[p as usize];
        *slot = (*slot & !mask) | (v & mask);
    }

    /// The values of a source operand.
    #[inline(always)]
    fn val(&self, s: Src) -> Val<'_> {
        match s {
            Src::Reg(r) => Val::Lanes(&self.regs[r as usize]),
            Src::Imm(v) => Val::Splat(v),
        }
    }

    /// A copy of the values of a source operand.
    fn read(&self, s: Src) -> Lanes {
        match s {
            Src::Reg(r) => self.regs[r as usize],
            Src::Imm(v) => [v; 32],
        }
    }

    #[inline]
    fn write(&mut self, d: Reg, mask: u32, v: &Lanes) {
        let dst = &mut self.regs[d as usize];
        if mask == u32::MAX {
            *dst = *v;
        } else {
            for (lane, (o, &x)) in dst.iter_mut().zip(v.iter()).enumerate() {
                if mask >> lane & 1 != 0 {
                    *o = x;
                }
            }
        }
    }

    /// Runs until no lane can run: all exited, or waiting at a barrier.
    pub(crate) fn run(&mut self, env: &mut Env<'_>) -> Result<(), Fault> {
        let kernel = env.kernel;
        loop {
            if self.cur_mask == 0 && !self.schedule() {
                return if self.shfl_wait != 0 { Err(self.shuffle_deadlock(env)) } else { Ok(()) };
            }
            let pc = self.cur_pc;
            let Some(inst) = kernel.code.get(pc as usize) else {
                return Err(env.fault(FaultKind::IllegalAddress, pc, [0; 3], "ran past the last instruction".into()));
            };
            env.stats.warp_instructions += 1;
            env.stats.lane_instructions += u64::from(self.cur_lanes);
            let mask = match inst.guard {
                None => self.cur_mask,
                Some(g) => self.cur_mask & self.pred(g),
            };
            match inst.op {
                Op::Bra { target } => self.branch(mask, target),
                Op::Exit => {
                    self.live &= !mask;
                    self.leave(mask);
                }
                Op::BarSync { .. } => {
                    self.bar_wait |= mask;
                    self.leave(mask);
                }
                Op::Shfl { mode, d, p, a, b, c, mask: m } => self.shuffle(env, pc, mask, (mode, d, p, a, b, c, m))?,
                ref op => {
                    if mask != 0 {
                        self.execute(env, pc, op, mask)?;
                    }
                    self.advance();
                }
            }
        }
    }

    fn lane_fault(&self, env: &Env<'_>, pc: u32, f: LaneFault) -> Fault {
        env.fault(f.kind, pc, self.thread(f.lane, env.block_dim), f.detail)
    }

    /// The destination register and the source operands of an instruction, when the
    /// destination is none of the sources (then the result can be written in place).
    #[inline(always)]
    fn operands<const N: usize>(&mut self, d: Reg, src: [Src; N]) -> Option<(&mut Lanes, [Val<'_>; N])> {
        let len = self.regs.len();
        let bad = |s: &Src| matches!(*s, Src::Reg(r) if r == d || r as usize >= len);
        if d as usize >= len || src.iter().any(bad) {
            return None;
        }
        let base = self.regs.as_mut_ptr();
        // SAFETY: every index is in bounds, and `d` differs from every source register, so the
        // one mutable reference aliases none of the shared ones; all come from one borrow of
        // `self.regs`, which they do not outlive.
        let out = unsafe { &mut *base.add(d as usize) };
        let vals = src.map(|s| match s {
            Src::Reg(r) => Val::Lanes(unsafe { &*base.add(r as usize) }),
            Src::Imm(v) => Val::Splat(v),
        });
        Some((out, vals))
    }

    /// Runs a data instruction for the lanes of `mask`.
    fn execute(&mut self, env: &mut Env<'_>, pc: u32, op: &Op, mask: u32) -> Result<(), Fault> {
        // `d = f(sources)`: in place for a full warp whose destination is no source, else
        // through a temporary written to the lanes of `mask`.
        macro_rules! compute {
            ($d:expr, [$($s:ident),*], |$out:ident, [$($v:ident),*]| $call:expr) => {{
                let srcs = [$($s),*];
                if mask == u32::MAX && let Some(($out, [$($v),*])) = self.operands($d, srcs) {
                    $call;
                } else {
                    let mut tmp: Lanes = [0; 32];
                    {
                        let $out = &mut tmp;
                        let [$($v),*] = srcs.map(|s| self.val(s));
                        $call;
                    }
                    self.write($d, mask, &tmp);
                }
            }};
        }
        match *op {
            Op::Mov { d, a } => compute!(d, [a], |out, [x]| super::lanes::map1(x, out, |v| v)),
            Op::Special { d, which } => {
                let mut out: Lanes = [0; 32];
                for (lane, o) in out.iter_mut().enumerate() {
                    let t = self.thread(lane as u32, env.block_dim);
                    *o = u64::from(match which {
                        Special::Tid(axis) => t[usize::from(axis)],
                        Special::Ntid(axis) => env.block_dim[usize::from(axis)],
                        Special::Ctaid(axis) => env.block[usize::from(axis)],
                        Special::Nctaid(axis) => env.grid[usize::from(axis)],
                        Special::LaneId => lane as u32,
                    });
                }
                self.write(d, mask, &out);
            }
            Op::Pack { d, parts, n, bits: b } => {
                let part_mask = if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
                let mut out: Lanes = [0; 32];
                for (k, &s) in parts.iter().enumerate().take(usize::from(n)) {
                    let v = self.val(s);
                    for (lane, o) in out.iter_mut().enumerate() {
                        *o |= (super::lanes::at(v, lane) & part_mask) << (k as u32 * u32::from(b));
                    }
                }
                self.write(d, mask, &out);
            }
            Op::Unpack { a, parts, n, bits: b } => {
                let v = self.read(a);
                let part_mask = if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
                let mut out: Lanes = [0; 32];
                for (k, part) in parts.iter().enumerate().take(usize::from(n)) {
                    if let Some(r) = *part {
                        for (o, x) in out.iter_mut().zip(v) {
                            *o = (x >> (k as u32 * u32::from(b))) & part_mask;
                        }
                        self.write(r, mask, &out);
                    }
                }
            }
            Op::Int { op, ty, d, a, b } => compute!(d, [a, b], |out, [x, y]| int::binary(op, ty, x, y, out)),
            Op::IntUn { op, ty, d, a } => compute!(d, [a], |out, [x]| int::unary(op, ty, x, out)),
            Op::MulWide { ty, d, a, b } => compute!(d, [a, b], |out, [x, y]| int::mul_wide(ty, x, y, out)),
            Op::IntMad { part, ty, d, a, b, c } => {
                compute!(d, [a, b, c], |out, [x, y, z]| int::mad(part, ty, x, y, z, out))
            }
            Op::Float { op, ty, mode, d, a, b } => {
                compute!(d, [a, b], |out, [x, y]| float::binary(op, ty, mode, x, y, out))
            }
            Op::FloatUn { op, ty, mode, d, a } => compute!(d, [a], |out, [x]| float::unary(op, ty, mode, x, out)),
            Op::Fma { ty, mode, d, a, b, c } => {
                compute!(d, [a, b, c], |out, [x, y, z]| float::fma(ty, mode, x, y, z, out))
            }
            Op::Cvt { conv, d, a } => compute!(d, [a], |out, [x]| convert::cvt(conv, x, out)),
            Op::Setp { cmp, ty, p, q, a, b, combine: with } => {
                let t = compare::setp(cmp, ty, self.val(a), self.val(b));
                let (pv, qv) = match with {
                    None => (t, !t),
                    Some((op, c)) => {
                        let c = self.pred(c);
                        (combine(op, t, c), combine(op, !t, c))
                    }
                };
                if let Some(p) = p {
                    self.set_pred(p, mask, pv);
                }
                if let Some(q) = q {
                    self.set_pred(q, mask, qv);
                }
            }
            Op::Selp { d, a, b, c } => {
                let c = self.pred(c);
                compute!(d, [a, b], |out, [x, y]| compare::selp(x, y, c, out))
            }
            Op::PredLogic { op, d, a, b } => {
                let v = match b {
                    None => self.pred(a),
                    Some(b) => combine(op, self.pred(a), self.pred(b)),
                };
                self.set_pred(d, mask, v);
            }
            Op::PredConst { d, value } => self.set_pred(d, mask, if value { u32::MAX } else { 0 }),
            Op::LdParam { d, offset, size, signed, dst_bits } => {
                let v = env.mem.param(offset, size, signed, dst_bits);
                self.write(d, mask, &[v; 32]);
            }
            Op::Ld { space, size, signed, n, d, dst_bits, addr } => {
                let r = env.mem.ld(&mut self.regs, mask, space, size, signed, n, d, dst_bits, addr);
                r.map_err(|f| self.lane_fault(env, pc, f))?;
            }
            Op::St { space, size, n, src, addr } => {
                let r = env.mem.st(&self.regs, mask, space, size, n, src, addr);
                r.map_err(|f| self.lane_fault(env, pc, f))?;
            }
            Op::Atom { space, op, ty, d, addr, b, c } => {
                let r = env.mem.atom(&mut self.regs, mask, space, op, ty, d, addr, b, c);
                r.map_err(|f| self.lane_fault(env, pc, f))?;
            }
            // Control instructions are run by `run`.
            Op::Bra { .. } | Op::Exit | Op::BarSync { .. } | Op::Shfl { .. } => {}
        }
        Ok(())
    }

    /// `shfl.sync`: the lanes of `mask` arrive; when every lane of the membermask is there, the
    /// values are exchanged, else the arrived lanes wait.
    #[allow(clippy::type_complexity)]
    fn shuffle(
        &mut self,
        env: &mut Env<'_>,
        pc: u32,
        mask: u32,
        (mode, d, p, a, b, c, m): (ShflMode, Reg, Option<Pred>, Src, Src, Src, Src),
    ) -> Result<(), Fault> {
        let waiting_here = bits(self.shfl_wait).filter(|&l| self.pcs[l] == pc).fold(0u32, |acc, l| acc | 1 << l);
        let part = mask | waiting_here;
        let masks = self.read(m);
        let mut member: Option<(u32, usize)> = None;
        for lane in bits(part) {
            let mm = masks[lane] as u32;
            let fault = |detail: String| {
                self.lane_fault(env, pc, LaneFault { lane: lane as u32, kind: FaultKind::ShuffleMask, detail })
            };
            if mm >> lane & 1 == 0 {
                return Err(fault(format!(
                    "lane {lane} executes shfl.sync with membermask {mm:#010x}, which misses it"
                )));
            }
            match member {
                Some((first, fl)) if first != mm => {
                    return Err(fault(format!(
                        "lane {lane} passes membermask {mm:#010x}, lane {fl} passes {first:#010x} to the same shfl.sync"
                    )));
                }
                Some(_) => {}
                None => member = Some((mm, lane)),
            }
        }
        let Some((mm, first)) = member else {
            // Every lane of the group is guarded off.
            self.advance();
            return Ok(());
        };
        let gone = mm & !self.live;
        if gone != 0 {
            let j = gone.trailing_zeros();
            let what = if self.present >> j & 1 != 0 { "has exited" } else { "is not a thread of the block" };
            let detail = format!("membermask {mm:#010x} names lane {j}, which {what}");
            return Err(self.lane_fault(
                env,
                pc,
                LaneFault { lane: first as u32, kind: FaultKind::ShuffleMask, detail },
            ));
        }
        if mm & !part != 0 {
            // Lanes named in the mask run elsewhere: wait for them here.
            self.shfl_wait |= mask;
            self.leave(mask);
            return Ok(());
        }
        let mut out: Lanes = self.regs[d as usize];
        let mut pbits = 0u32;
        let r = shuffle::exchange(mode, &self.read(a), &self.read(b), &self.read(c), part, mm, &mut out, &mut pbits);
        r.map_err(|f| self.lane_fault(env, pc, f))?;
        self.write(d, part, &out);
        if let Some(p) = p {
            self.set_pred(p, part, pbits);
        }
        self.shfl_wait &= !waiting_here;
        self.cur_mask |= waiting_here;
        self.cur_lanes = self.cur_mask.count_ones();
        self.advance();
        Ok(())
    }

    /// The fault of a warp whose lanes wait at `shfl.sync` for lanes that cannot arrive.
    fn shuffle_deadlock(&self, env: &Env<'_>) -> Fault {
        let lane = self.shfl_wait.trailing_zeros();
        let pc = self.pcs[lane as usize];
        let mm = match env.kernel.code.get(pc as usize).map(|i| i.op) {
            Some(Op::Shfl { mask: m, .. }) => self.read(m)[lane as usize] as u32,
            _ => 0,
        };
        let here = bits(self.shfl_wait).filter(|&l| self.pcs[l] == pc).fold(0u32, |acc, l| acc | 1 << l);
        let j = (mm & !here).trailing_zeros().min(31);
        let line = |l: usize| env.kernel.lines.get(self.pcs[l] as usize).copied().unwrap_or(0);
        let where_j = if self.bar_wait >> j & 1 != 0 {
            format!("waits at bar.sync (PTX line {})", line(j as usize))
        } else if self.shfl_wait >> j & 1 != 0 {
            format!("waits at another shfl.sync (PTX line {})", line(j as usize))
        } else {
            "cannot arrive".to_string()
        };
        let detail = format!("shfl.sync with membermask {mm:#010x} waits for lane {j}, which {where_j}");
        env.fault(FaultKind::ShuffleMask, pc, self.thread(lane, env.block_dim), detail)
    }
}
