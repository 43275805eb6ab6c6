//! The decoded instruction set: what [`crate::exec`] runs. Registers are indices, branch targets
//! are instruction indices, immediates are bit patterns of the operation's width, and every
//! qualifier that changes the result is a field: nothing is looked up by name at run time.
//!
//! Values are held in 64-bit slots, zero-extended from the register's width (an `.f32` register
//! holds the 32 bits of the float). Predicates live apart, one bit per lane.

use super::types::{FloatTy, IntTy};

/// A value register: the index of a slot (one 64-bit value per lane).
pub(crate) type Reg = u32;

/// A predicate register: the index of a mask (one bit per lane).
pub(crate) type Pred = u32;

/// A source operand: a register or an immediate (its bits, zero-extended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    Reg(Reg),
    Imm(u64),
}

/// A predicate operand, possibly negated (`!%p1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PredSrc {
    pub pred: Pred,
    pub negate: bool,
}

/// One instruction: its guard (`@%p`, `@!%p`) and its operation.
#[derive(Clone, Debug)]
pub(crate) struct Inst {
    pub guard: Option<PredSrc>,
    pub op: Op,
}

/// Integer operations of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    /// `shl`: the shift amount is a 32-bit operand, clamped to the width.
    Shl,
    /// `shr`: arithmetic for signed types, logical otherwise.
    Shr,
}

/// The part of the product that `mad` adds to its third operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MadPart {
    /// `mad.lo`: the low half (the operands' width).
    Lo,
    /// `mad.hi`: the high half.
    Hi,
    /// `mad.wide`: all of it, twice the operands' width.
    Wide,
}

/// Integer operations of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntUnOp {
    Not,
    Neg,
    Abs,
}

/// Floating-point operations of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `min`: a NaN operand yields the other one; `-0.0 < +0.0`.
    Min,
    Max,
    /// `min.NaN`: a NaN operand yields the canonical NaN.
    MinNan,
    MaxNan,
}

/// Floating-point operations of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatUnOp {
    Abs,
    Neg,
    /// `rcp.rn`: the correctly rounded reciprocal.
    Rcp,
    /// `sqrt.rn`: the correctly rounded square root.
    Sqrt,
    /// `rcp.approx.ftz.f64`, as the PTX ISA describes it (see `exec::float`).
    RcpApproxFtzF64,
}

/// The modifiers of a floating-point operation (rounding is `.rn`: the only mode implemented
/// for arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FloatMode {
    /// `.ftz`: subnormal inputs and results of `.f32` become zeros of the same sign.
    pub ftz: bool,
    /// `.sat`: the result is clamped to [0, 1], NaN to +0.
    pub sat: bool,
}

/// A comparison of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Unordered: true when either operand is NaN.
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    /// Neither operand is NaN.
    Num,
    /// Either operand is NaN.
    Nan,
}

/// The operand type of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpTy {
    Int(IntTy),
    F32 { ftz: bool },
    F64,
}

/// A boolean operation on predicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

/// A floating-point rounding mode (`.rn`, `.rz`, `.rm`, `.rp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rounding {
    NearestEven,
    TowardZero,
    Down,
    Up,
}

/// A conversion of `cvt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conv {
    /// Integer to integer: extended by the source type, truncated to the destination (clamped
    /// with `.sat`).
    IntInt { from: IntTy, to_bits: u32, to_signed: bool, sat: bool },
    /// Float to float of another format, rounded by `rnd` when it narrows.
    FloatFloat { from: FloatTy, to: FloatTy, rnd: Rounding, ftz: bool, sat: bool },
    /// Float to an integral value of the same format (`cvt.rni.f32.f32`).
    FloatRound { ty: FloatTy, rnd: Rounding, ftz: bool, sat: bool },
    /// Float to integer: rounded by `rnd`, clamped to the destination's range; NaN as the ISA
    /// says (see `exec::convert`).
    FloatInt { from: FloatTy, to_bits: u32, to_signed: bool, rnd: Rounding, ftz: bool },
    /// Integer to float, rounded by `rnd`.
    IntFloat { from: IntTy, to: FloatTy, rnd: Rounding, ftz: bool, sat: bool },
}

/// A special register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
}

/// A state space of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Shared,
}

/// An address: a register (its 64-bit value; a 32-bit register zero-extended) plus an offset,
/// or an offset alone (variables are resolved to their shared-window offset when decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addr {
    pub base: Option<Reg>,
    pub offset: i64,
}

/// An atomic operation (`atom`, `red`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
    Exch,
    Cas,
    /// `inc`: `old >= b ? 0 : old + 1`.
    Inc,
    /// `dec`: `old == 0 || old > b ? b : old - 1`.
    Dec,
}

/// A mode of `shfl.sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// What one instruction does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// `mov` of a value (register or immediate); also `cvta.to.global` (generic addresses of
    /// global memory are global addresses).
    Mov {
        d: Reg,
        a: Src,
    },
    /// `mov` from a special register (`%tid.x`, ...).
    Special {
        d: Reg,
        which: Special,
    },
    /// `mov.b64 d, {a, b}`: `n` parts of `bits` bits, the first one lowest.
    Pack {
        d: Reg,
        parts: [Src; 4],
        n: u8,
        bits: u8,
    },
    /// `mov.b64 {a, b}, s`: the inverse; a `None` part is a sink.
    Unpack {
        a: Src,
        parts: [Option<Reg>; 4],
        n: u8,
        bits: u8,
    },
    Int {
        op: IntOp,
        ty: IntTy,
        d: Reg,
        a: Src,
        b: Src,
    },
    IntUn {
        op: IntUnOp,
        ty: IntTy,
        d: Reg,
        a: Src,
    },
    /// `mul.wide`: the full product of two `ty` operands, twice as wide.
    MulWide {
        ty: IntTy,
        d: Reg,
        a: Src,
        b: Src,
    },
    /// `mad.lo`, `mad.hi`, `mad.wide`: `part` of the product of two `ty` operands plus `c` (of
    /// the result's width), wrapping.
    IntMad {
        part: MadPart,
        ty: IntTy,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Float {
        op: FloatOp,
        ty: FloatTy,
        mode: FloatMode,
        d: Reg,
        a: Src,
        b: Src,
    },
    FloatUn {
        op: FloatUnOp,
        ty: FloatTy,
        mode: FloatMode,
        d: Reg,
        a: Src,
    },
    Fma {
        ty: FloatTy,
        mode: FloatMode,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Setp {
        cmp: Cmp,
        ty: CmpTy,
        p: Option<Pred>,
        q: Option<Pred>,
        a: Src,
        b: Src,
        combine: Option<(BoolOp, PredSrc)>,
    },
    /// `selp`: `d = c ? a : b`.
    Selp {
        d: Reg,
        a: Src,
        b: Src,
        c: PredSrc,
    },
    /// `and`, `or`, `xor` of predicates; with `b == None`, `mov.pred` / `not.pred` of `a`.
    PredLogic {
        op: BoolOp,
        d: Pred,
        a: PredSrc,
        b: Option<PredSrc>,
    },
    /// `mov.pred d, imm`.
    PredConst {
        d: Pred,
        value: bool,
    },
    Cvt {
        conv: Conv,
        d: Reg,
        a: Src,
    },
    /// `ld`: `n` elements of `size` bytes, each extended (sign-extended when `signed`) to its
    /// destination register's width `dst_bits`.
    Ld {
        space: Space,
        size: u8,
        signed: bool,
        n: u8,
        d: [Reg; 4],
        dst_bits: u8,
        addr: Addr,
    },
    /// `st`: `n` elements of `size` bytes (the low bytes of each source).
    St {
        space: Space,
        size: u8,
        n: u8,
        src: [Src; 4],
        addr: Addr,
    },
    /// `ld.param`: `size` bytes at `offset` of the parameter buffer.
    LdParam {
        d: Reg,
        offset: u32,
        size: u8,
        signed: bool,
        dst_bits: u8,
    },
    /// `atom` (with `d`) and `red` (without).
    Atom {
        space: Space,
        op: AtomOp,
        ty: IntTy,
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Src,
    },
    /// `bra`: to the instruction at `target`.
    Bra {
        target: u32,
    },
    /// `ret` from the kernel, `exit`.
    Exit,
    /// `bar.sync a` (all threads of the block; `.aligned`).
    BarSync {
        barrier: u32,
    },
    /// `shfl.sync.mode.b32 d[|p], a, b, c, membermask`.
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Option<Pred>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
}
