//! The syntax tree of a PTX module, as the parser leaves it: names and numbers still as written,
//! nothing resolved. [`super::decode`] turns it into kernels.

/// A whole module.
#[derive(Debug)]
pub(crate) struct ModuleSyntax<'a> {
    /// Variables declared outside every function (`.extern .shared .align 16 .b8 counts[];`).
    pub variables: Vec<VarDecl<'a>>,
    /// The kernels (`.entry`), in order.
    pub entries: Vec<EntrySyntax<'a>>,
}

/// A `.shared` variable declaration (`.shared .align 8 .b8 name[2048];`), the only state space
/// of variables implemented.
#[derive(Clone, Debug)]
pub(crate) struct VarDecl<'a> {
    pub line: usize,
    pub is_extern: bool,
    pub align: Option<u64>,
    /// The element type as written (`.b8`, `.f32`).
    pub ty: &'a str,
    pub name: &'a str,
    /// Array dimensions: `Some(n)` for `[n]`, `None` for `[]` (an unsized `.extern` array).
    pub dims: Vec<Option<u64>>,
}

/// A kernel parameter (`.param .u64 name`, `.param .align 8 .b8 name[16]`).
#[derive(Clone, Debug)]
pub(crate) struct ParamDecl<'a> {
    pub line: usize,
    pub align: Option<u64>,
    pub ty: &'a str,
    pub name: &'a str,
    pub dims: Vec<u64>,
}

/// A `.entry` with its performance directives and body.
#[derive(Debug)]
pub(crate) struct EntrySyntax<'a> {
    pub line: usize,
    pub name: &'a str,
    pub params: Vec<ParamDecl<'a>>,
    /// `.maxntid x, y, z` (missing dimensions are 1).
    pub maxntid: Option<[u32; 3]>,
    /// `.reqntid x, y, z`.
    pub reqntid: Option<[u32; 3]>,
    pub body: Vec<Stmt<'a>>,
}

/// A register declaration (`.reg .b32 %r<66>;` or `.reg .b32 %temp;`).
#[derive(Clone, Debug)]
pub(crate) struct RegDecl<'a> {
    pub line: usize,
    pub ty: &'a str,
    /// The name, or the prefix of a numbered range.
    pub name: &'a str,
    /// `Some(n)` for `%r<n>`: registers `%r0` to `%r{n-1}`.
    pub count: Option<u32>,
}

/// One statement of a function body.
#[derive(Clone, Debug)]
pub(crate) enum Stmt<'a> {
    /// `{`: a nested scope opens.
    Open,
    /// `}`: it closes.
    Close,
    Label(usize, &'a str),
    Reg(RegDecl<'a>),
    Var(VarDecl<'a>),
    Inst(InstSyntax<'a>),
}

/// An instruction as written.
#[derive(Clone, Debug)]
pub(crate) struct InstSyntax<'a> {
    pub line: usize,
    /// `@%p` or `@!%p`: (negated, predicate name).
    pub guard: Option<(bool, &'a str)>,
    /// The opcode with its qualifiers (`add.rn.f64`).
    pub opcode: &'a str,
    pub operands: Vec<Operand<'a>>,
}

/// An operand as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Operand<'a> {
    /// `%r1`, `%tid.x`.
    Reg(&'a str),
    /// A label, variable or parameter name.
    Symbol(&'a str),
    /// An integer literal (with its sign applied).
    Int(i128),
    /// `0fXXXXXXXX`: the bits of an f32.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX`: the bits of an f64.
    F64(u64),
    /// `!%p`.
    NotReg(&'a str),
    /// `_`.
    Sink,
    /// `[base+offset]`, `[base]`, `[offset]`.
    Address { base: Option<AddressBase<'a>>, offset: i64 },
    /// `{a, b, ...}`.
    Vector(Vec<Operand<'a>>),
    /// `d|p`: a destination and a predicate destination.
    Pair(&'a str, &'a str),
}

/// The base of an address operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AddressBase<'a> {
    Reg(&'a str),
    Symbol(&'a str),
}
