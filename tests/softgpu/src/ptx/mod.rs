//! PTX text to a decoded module: parsed and checked once, when the module loads.
//!
//! Every instruction, type and qualifier that the interpreter implements is decoded here; any
//! other makes [`Module::load`] fail with a [`LoadError`] that names it and its line.
//!
//! The grammar is the PTX that nvcc writes (`.version` 6 to 9, `.target sm_*`, `.address_size
//! 64`): `.visible .entry` kernels with their `.param`s and `.maxntid`/`.reqntid`, `.reg`
//! declarations (ranges `%r<n>` and nested scopes), `.shared` variables with alignment (in the
//! kernel, or `.extern` unsized arrays at module level for dynamic shared memory), labels, and
//! `.pragma "nounroll"`, `.minnctapersm`, `.maxnreg`, `.file`, `.loc` (hints and debug
//! information, with no effect on results). Device functions (`.func`), `.global`/`.const`
//! variables and `.local` memory are not implemented: a module using them does not load.
//!
//! The instructions, by family (see `decode/` for the qualifiers each takes):
//!
//! - integer: `add sub mul.lo mul.hi mul.wide mad.lo mad.hi mad.wide div rem min max neg abs`
//!   (16, 32, 64 bits);
//! - logic and shifts: `and or xor not` (bit types and `.pred`), `shl shr`;
//! - floating point (`.f32`, `.f64`): `add sub mul fma div` (`.rn`), `min max` (`.NaN`),
//!   `abs neg`, `rcp.rn`, `sqrt.rn`, `rcp.approx.ftz.f64`, with `.ftz` and `.sat` on `.f32`;
//! - comparison and selection: `setp` (every comparison, unordered ones included, with
//!   `.and/.or/.xor` and `p|q`), `selp`;
//! - movement and conversion: `mov` (values, special registers `%tid %ntid %ctaid %nctaid
//!   %laneid`, shared-variable addresses, packing `{a, b}`), `cvt` (integers, `.f16`,
//!   `.bf16`, `.f32`, `.f64`, with `.rn .rz .rm .rp .rni .rzi .rmi .rpi .ftz .sat`),
//!   `cvta.to.global`;
//! - memory: `ld` (`.global`, `.global.nc`, `.shared`, `.param`; `.v2`, `.v4`), `st` (`.global`,
//!   `.shared`; `.v2`, `.v4`), `atom` and `red` (`.global`, `.shared`; `add min max and or xor
//!   exch cas inc dec` on 32- and 64-bit integers);
//! - control: `bra` (`.uni`), `ret`, `exit`, `bar.sync` (`barrier.sync.aligned`), and
//!   `shfl.sync` (`up down bfly idx`).

mod decode;
pub(crate) mod inst;
mod lexer;
mod parser;
mod syntax;
pub(crate) mod types;

use std::sync::Arc;

use inst::Inst;

/// Why a module did not load: the line of the PTX text (1-based) and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The line of the PTX text, counting from 1 (0 when the error concerns the whole text).
    pub line: usize,
    /// What is wrong, e.g. "unsupported instruction `tex.1d.v4.f32.s32`".
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LoadError {}

/// One kernel parameter, as the `.entry` declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Its size in bytes (the bytes the launch's `kernelParams[i]` points to).
    pub size: usize,
    /// Its alignment in the parameter space.
    pub align: usize,
}

/// A module: its kernels (`.visible .entry`), decoded.
#[derive(Debug)]
pub struct Module {
    kernels: Vec<Arc<Kernel>>,
}

/// A decoded kernel, ready to run any number of times.
#[derive(Debug)]
pub struct Kernel {
    pub(crate) name: String,
    pub(crate) params: Vec<ParamInfo>,
    /// The offset of each parameter in the parameter buffer.
    pub(crate) param_offsets: Vec<usize>,
    /// The size of the parameter buffer.
    pub(crate) param_bytes: usize,
    pub(crate) static_shared_bytes: usize,
    /// Where dynamic shared memory starts in the block's shared window.
    pub(crate) dynamic_shared_offset: usize,
    pub(crate) max_threads_per_block: u32,
    /// `.reqntid`: the block shape every launch must have.
    pub(crate) reqntid: Option<[u32; 3]>,
    pub(crate) num_regs: u32,
    /// Value slots per thread.
    pub(crate) value_regs: u32,
    /// Predicate registers per thread.
    pub(crate) pred_regs: u32,
    /// The decoded instructions.
    pub(crate) code: Vec<Inst>,
    /// The PTX line of each instruction.
    pub(crate) lines: Vec<u32>,
    /// The text of each instruction (for faults).
    pub(crate) source: Vec<Box<str>>,
}

impl Module {
    /// Parses and decodes `text` (PTX as nvcc writes it).
    ///
    /// ```
    /// let ptx = ".version 9.0\n.target sm_75\n.address_size 64\n\
    ///            .visible .entry k(.param .u64 out) { ret; }";
    /// let m = softgpu::ptx::Module::load(ptx).unwrap();
    /// assert_eq!(m.kernel("k").unwrap().params()[0].size, 8);
    /// let bad = softgpu::ptx::Module::load(&ptx.replace("ret", "trap")).unwrap_err();
    /// assert_eq!(bad.to_string(), "PTX line 4: unsupported instruction `trap`");
    /// ```
    pub fn load(text: &str) -> Result<Module, LoadError> {
        let syntax = parser::parse(text)?;
        let kernels = decode::module(&syntax, text)?;
        Ok(Module { kernels: kernels.into_iter().map(Arc::new).collect() })
    }

    /// The kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<Arc<Kernel>> {
        self.kernels.iter().find(|k| k.name == name).cloned()
    }

    /// The names of every kernel.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.kernels.iter().map(|k| k.name.as_str())
    }
}

impl Kernel {
    /// The `.entry` name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The bytes of `.shared` variables the kernel declares (dynamic shared memory comes on top).
    pub fn static_shared_bytes(&self) -> usize {
        self.static_shared_bytes
    }

    /// The most threads a block may have: the product of `.maxntid` when given, else 1024.
    pub fn max_threads_per_block(&self) -> u32 {
        self.max_threads_per_block
    }

    /// The registers the kernel declares, in 32-bit words and at most 255 (for
    /// `CU_FUNC_ATTRIBUTE_NUM_REGS`; a real GPU reports what ptxas allocated, which is fewer).
    pub fn num_regs(&self) -> u32 {
        self.num_regs
    }

    /// The block shape `.reqntid` requires, if the kernel sets one.
    pub fn required_block(&self) -> Option<[u32; 3]> {
        self.reqntid
    }

    /// The number of decoded instructions.
    pub fn instruction_count(&self) -> usize {
        self.code.len()
    }
}
