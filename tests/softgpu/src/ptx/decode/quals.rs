//! The qualifiers of an opcode (`add.rn.f64` → `add` with `.rn`, `.f64`): each decoder takes the
//! ones it implements, and any left over makes the load fail, naming it.

use super::super::LoadError;
use super::super::types::Scalar;

/// An opcode split into its mnemonic and qualifiers.
pub(crate) struct Quals<'a> {
    pub opcode: &'a str,
    pub line: usize,
    rest: Vec<(&'a str, bool)>,
}

impl<'a> Quals<'a> {
    /// Splits `opcode`: `mnemonic` is the part before the first dot.
    pub(crate) fn new(opcode: &'a str, line: usize) -> (&'a str, Quals<'a>) {
        let mnemonic = opcode.split('.').next().unwrap_or(opcode);
        let mut quals = Vec::new();
        let tail = &opcode[mnemonic.len()..];
        let mut start = 0;
        for (i, c) in tail.char_indices().skip(1) {
            if c == '.' {
                quals.push((&tail[start..i], false));
                start = i;
            }
        }
        if !tail.is_empty() {
            quals.push((&tail[start..], false));
        }
        (mnemonic, Quals { opcode, line, rest: quals })
    }

    /// Takes `q` (e.g. `".rn"`) if present.
    pub(crate) fn take(&mut self, q: &str) -> bool {
        for (s, used) in &mut self.rest {
            if !*used && *s == q {
                *used = true;
                return true;
            }
        }
        false
    }

    /// Takes the first of `qs` present.
    pub(crate) fn take_any(&mut self, qs: &[&'static str]) -> Option<&'static str> {
        qs.iter().copied().find(|q| self.take(q))
    }

    /// Takes every type qualifier, in order.
    pub(crate) fn types(&mut self) -> Vec<Scalar> {
        let mut out = Vec::new();
        for (s, used) in &mut self.rest {
            if !*used && let Some(t) = Scalar::parse(s) {
                *used = true;
                out.push(t);
            }
        }
        out
    }

    /// Takes exactly one type qualifier.
    pub(crate) fn one_type(&mut self) -> Result<Scalar, LoadError> {
        match self.types().as_slice() {
            [t] => Ok(*t),
            [] => Err(self.error("no type qualifier")),
            _ => Err(self.error("more than one type qualifier")),
        }
    }

    /// An error about this instruction.
    pub(crate) fn error(&self, what: impl std::fmt::Display) -> LoadError {
        LoadError { line: self.line, message: format!("{what} in `{}`", self.opcode) }
    }

    /// The error for a type this instruction does not implement.
    pub(crate) fn bad_type(&self, t: Scalar) -> LoadError {
        self.error(format!("unsupported type `{}`", type_name(t)))
    }

    /// Fails when a qualifier was not taken.
    pub(crate) fn finish(&self) -> Result<(), LoadError> {
        match self.rest.iter().find(|(_, used)| !used) {
            Some((q, _)) => Err(self.error(format!("unsupported qualifier `{q}`"))),
            None => Ok(()),
        }
    }
}

/// The qualifier of a type (`.u32`).
pub(crate) fn type_name(t: Scalar) -> &'static str {
    match t {
        Scalar::B8 => ".b8",
        Scalar::B16 => ".b16",
        Scalar::B32 => ".b32",
        Scalar::B64 => ".b64",
        Scalar::U8 => ".u8",
        Scalar::U16 => ".u16",
        Scalar::U32 => ".u32",
        Scalar::U64 => ".u64",
        Scalar::S8 => ".s8",
        Scalar::S16 => ".s16",
        Scalar::S32 => ".s32",
        Scalar::S64 => ".s64",
        Scalar::F16 => ".f16",
        Scalar::Bf16 => ".bf16",
        Scalar::F32 => ".f32",
        Scalar::F64 => ".f64",
        Scalar::Pred => ".pred",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers_split_and_leftovers_are_named() {
        let (m, mut q) = Quals::new("cvt.rzi.u32.f32", 7);
        assert_eq!(m, "cvt");
        assert!(q.take(".rzi"));
        assert_eq!(q.types(), vec![Scalar::U32, Scalar::F32]);
        assert!(q.finish().is_ok());
        let (_, mut q) = Quals::new("add.rz.f32", 3);
        q.types();
        let e = q.finish().unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (3, "unsupported qualifier `.rz` in `add.rz.f32`"));
        let (m, q) = Quals::new("ret", 1);
        assert_eq!(m, "ret");
        assert!(q.finish().is_ok());
    }
}
