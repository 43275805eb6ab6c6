//! Tokens to a [`ModuleSyntax`]: the grammar of the PTX that nvcc writes, strictly. A directive
//! that is not listed here is an error naming it, never skipped.

use super::LoadError;
use super::lexer::{Tok, Token, lex};
use super::syntax::{AddressBase, EntrySyntax, InstSyntax, ModuleSyntax, Operand, ParamDecl, RegDecl, Stmt, VarDecl};

/// The PTX ISA versions whose semantics the interpreter follows.
const VERSIONS: std::ops::RangeInclusive<u32> = 6..=9;

/// Parses a whole module.
pub(crate) fn parse(text: &str) -> Result<ModuleSyntax<'_>, LoadError> {
    let tokens = lex(text)?;
    let mut p = Parser { tokens, pos: 0 };
    p.module()
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError { line, message: message.into() })
}

fn describe(t: Option<&Token<'_>>) -> String {
    match t.map(|t| t.tok) {
        None => "the end of the text".into(),
        Some(Tok::Word(w)) | Some(Tok::Num(w)) => format!("`{w}`"),
        Some(Tok::Str(s)) => format!("\"{s}\""),
        Some(Tok::Punct(c)) => format!("`{c}`"),
    }
}

/// An integer literal of PTX: decimal, `0x` hexadecimal, `0b` binary, `0` octal, optional `U`.
pub(crate) fn parse_int(s: &str) -> Option<i128> {
    let s = s.strip_suffix('U').unwrap_or(s);
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (b, 2)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // 64-bit literals at most: anything wider is an error, not a silent truncation.
    let v = u64::from_str_radix(digits, radix).ok()?;
    Some(i128::from(v))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.tokens.get(self.pos).map(|t| t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<Tok<'a>> {
        self.tokens.get(self.pos + k).map(|t| t.tok)
    }

    /// The line of the next token (or of the last one at the end).
    fn line(&self) -> usize {
        self.tokens.get(self.pos).or_else(|| self.tokens.last()).map_or(0, |t| t.line)
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.tokens.get(self.pos).copied();
        self.pos += 1;
        t
    }

    fn unexpected<T>(&self, wanted: &str) -> Result<T, LoadError> {
        err(self.line(), format!("expected {wanted}, found {}", describe(self.tokens.get(self.pos))))
    }

    fn punct(&mut self, c: char) -> Result<(), LoadError> {
        if self.peek() == Some(Tok::Punct(c)) {
            self.pos += 1;
            Ok(())
        } else {
            self.unexpected(&format!("`{c}`"))
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.peek() == Some(Tok::Word(w)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, wanted: &str) -> Result<&'a str, LoadError> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => self.unexpected(wanted),
        }
    }

    fn number(&mut self) -> Result<u64, LoadError> {
        let line = self.line();
        match self.peek() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                match parse_int(n) {
                    Some(v) if v >= 0 => Ok(v as u64),
                    _ => err(line, format!("bad number `{n}`")),
                }
            }
            _ => self.unexpected("a number"),
        }
    }

    /// Skips the rest of the current line (for `.file` and `.loc`, which end without `;`).
    fn skip_line(&mut self, line: usize) {
        while self.tokens.get(self.pos).is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    fn module(&mut self) -> Result<ModuleSyntax<'a>, LoadError> {
        let mut m = ModuleSyntax { variables: Vec::new(), entries: Vec::new() };
        let mut seen_version = false;
        while let Some(t) = self.next() {
            let line = t.line;
            let Tok::Word(w) = t.tok else {
                return err(line, format!("expected a directive, found {}", describe(Some(&t))));
            };
            match w {
                ".version" => {
                    let line = self.line();
                    let v = match self.next().map(|t| t.tok) {
                        Some(Tok::Num(v)) => v,
                        _ => return err(line, "expected a version after `.version`"),
                    };
                    let major = v.split('.').next().and_then(|m| m.parse::<u32>().ok());
                    if !major.is_some_and(|m| VERSIONS.contains(&m)) {
                        return err(line, format!("unsupported PTX version `{v}`"));
                    }
                    seen_version = true;
                }
                ".target" => loop {
                    let t = self.word("a target")?;
                    let ok = t.strip_prefix("sm_").is_some_and(|s| {
                        let digits = s.trim_end_matches(['a', 'f']);
                        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
                    });
                    if !ok {
                        return err(line, format!("unsupported target `{t}`"));
                    }
                    if !self.eat(',') {
                        break;
                    }
                },
                ".address_size" => {
                    if self.number()? != 64 {
                        return err(line, "only `.address_size 64` is supported");
                    }
                }
                ".file" => self.skip_line(line),
                ".pragma" => self.pragma(line)?,
                ".visible" | ".weak" | ".extern" | ".entry" | ".shared" => {
                    let mut is_extern = w == ".extern";
                    let mut d = w;
                    while matches!(d, ".visible" | ".weak" | ".extern") {
                        d = self.word("a directive")?;
                        is_extern |= d == ".extern";
                    }
                    match d {
                        ".entry" => m.entries.push(self.entry(line)?),
                        ".shared" => m.variables.push(self.var(line, is_extern)?),
                        ".func" => return err(line, "device functions (`.func`) are not supported"),
                        other => return err(line, format!("unsupported directive `{other}`")),
                    }
                }
                ".func" => return err(line, "device functions (`.func`) are not supported"),
                other => return err(line, format!("unsupported directive `{other}`")),
            }
        }
        if !seen_version {
            return err(1, "no `.version` directive");
        }
        Ok(m)
    }

    fn pragma(&mut self, line: usize) -> Result<(), LoadError> {
        match self.next().map(|t| t.tok) {
            // A hint to the optimiser, with no effect on what the code computes.
            Some(Tok::Str("nounroll")) => {}
            Some(Tok::Str(s)) => return err(line, format!("unsupported pragma \"{s}\"")),
            _ => return err(line, "expected a string after `.pragma`"),
        }
        self.punct(';')
    }

    /// After `.shared` (and `.extern`, `.align`): `[.align n] .type name[dims] ;`.
    fn var(&mut self, line: usize, is_extern: bool) -> Result<VarDecl<'a>, LoadError> {
        let mut align = None;
        if self.eat_word(".align") {
            align = Some(self.number()?);
        }
        let ty = self.word("a type")?;
        let name = self.word("a variable name")?;
        let mut dims = Vec::new();
        while self.eat('[') {
            if self.eat(']') {
                dims.push(None);
            } else {
                dims.push(Some(self.number()?));
                self.punct(']')?;
            }
        }
        if self.peek() == Some(Tok::Punct('=')) {
            return err(line, format!("initialisers of `.shared` variables are not supported (`{name}`)"));
        }
        self.punct(';')?;
        Ok(VarDecl { line, is_extern, align, ty, name, dims })
    }

    fn entry(&mut self, line: usize) -> Result<EntrySyntax<'a>, LoadError> {
        let name = self.word("the kernel's name")?;
        let mut params = Vec::new();
        if self.eat('(') && !self.eat(')') {
            loop {
                params.push(self.param()?);
                if self.eat(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        let mut entry = EntrySyntax { line, name, params, maxntid: None, reqntid: None, body: Vec::new() };
        loop {
            let dline = self.line();
            match self.peek() {
                Some(Tok::Punct('{')) => break,
                Some(Tok::Word(d @ (".maxntid" | ".reqntid"))) => {
                    self.pos += 1;
                    let mut dims = [1u32; 3];
                    for (k, slot) in dims.iter_mut().enumerate() {
                        if k > 0 && !self.eat(',') {
                            break;
                        }
                        *slot = u32::try_from(self.number()?)
                            .map_err(|_| LoadError { line: dline, message: format!("`{d}` out of range") })?;
                    }
                    if d == ".maxntid" {
                        entry.maxntid = Some(dims);
                    } else {
                        entry.reqntid = Some(dims);
                    }
                }
                // Occupancy hints for ptxas: no effect on what the kernel computes.
                Some(Tok::Word(".minnctapersm" | ".maxnreg")) => {
                    self.pos += 1;
                    self.number()?;
                }
                Some(Tok::Word(".pragma")) => {
                    self.pos += 1;
                    self.pragma(dline)?;
                }
                Some(Tok::Word(other)) => return err(dline, format!("unsupported directive `{other}`")),
                _ => return self.unexpected("`{`"),
            }
        }
        self.punct('{')?;
        let mut depth = 1usize;
        while depth > 0 {
            let line = self.line();
            match self.peek() {
                None => return err(line, format!("kernel `{name}` has no closing `}}`")),
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    depth += 1;
                    entry.body.push(Stmt::Open);
                }
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    depth -= 1;
                    if depth > 0 {
                        entry.body.push(Stmt::Close);
                    }
                }
                Some(Tok::Word(w)) if self.peek_at(1) == Some(Tok::Punct(':')) && !w.starts_with('.') => {
                    self.pos += 2;
                    entry.body.push(Stmt::Label(line, w));
                }
                Some(Tok::Word(".reg")) => {
                    self.pos += 1;
                    self.regs(line, &mut entry.body)?;
                }
                Some(Tok::Word(".shared")) => {
                    self.pos += 1;
                    let v = self.var(line, false)?;
                    entry.body.push(Stmt::Var(v));
                }
                Some(Tok::Word(".pragma")) => {
                    self.pos += 1;
                    self.pragma(line)?;
                }
                Some(Tok::Word(".loc")) => self.skip_line(line),
                Some(Tok::Word(w)) if w.starts_with('.') => return err(line, format!("unsupported directive `{w}`")),
                Some(Tok::Word(_) | Tok::Punct('@')) => {
                    let i = self.instruction()?;
                    entry.body.push(Stmt::Inst(i));
                }
                _ => return self.unexpected("an instruction"),
            }
        }
        Ok(entry)
    }

    /// `.param [.align n] .type [.ptr [.space] [.align n]] name[[n]]`.
    fn param(&mut self) -> Result<ParamDecl<'a>, LoadError> {
        let line = self.line();
        if !self.eat_word(".param") {
            return self.unexpected("`.param`");
        }
        let mut align = None;
        if self.eat_word(".align") {
            align = Some(self.number()?);
        }
        let ty = self.word("a parameter type")?;
        if self.eat_word(".ptr") {
            // Pointer attributes are hints to the optimiser; the parameter stays a 64-bit value.
            let _ = self.eat_word(".global") || self.eat_word(".shared") || self.eat_word(".const");
            if self.eat_word(".align") {
                self.number()?;
            }
        }
        let name = self.word("a parameter name")?;
        let mut dims = Vec::new();
        while self.eat('[') {
            dims.push(self.number()?);
            self.punct(']')?;
        }
        Ok(ParamDecl { line, align, ty, name, dims })
    }

    /// After `.reg`: `.type name[<n>] [, name[<n>]]* ;`.
    fn regs(&mut self, line: usize, body: &mut Vec<Stmt<'a>>) -> Result<(), LoadError> {
        let ty = self.word("a register type")?;
        if matches!(ty, ".v2" | ".v4") {
            return err(line, format!("vector registers (`.reg {ty}`) are not supported"));
        }
        loop {
            let name = self.word("a register name")?;
            let mut count = None;
            if self.eat('<') {
                let n = self.number()?;
                count = Some(u32::try_from(n).map_err(|_| LoadError { line, message: "too many registers".into() })?);
                self.punct('>')?;
            }
            body.push(Stmt::Reg(RegDecl { line, ty, name, count }));
            if !self.eat(',') {
                break;
            }
        }
        self.punct(';')
    }

    fn instruction(&mut self) -> Result<InstSyntax<'a>, LoadError> {
        let line = self.line();
        let mut guard = None;
        if self.eat('@') {
            let negated = self.eat('!');
            guard = Some((negated, self.word("a predicate")?));
        }
        let opcode = self.word("an opcode")?;
        let mut operands = Vec::new();
        if !self.eat(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat(';') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(InstSyntax { line, guard, opcode, operands })
    }

    fn literal(&mut self, negative: bool) -> Result<Operand<'a>, LoadError> {
        let line = self.line();
        let Some(Tok::Num(n)) = self.peek() else {
            return self.unexpected("a number");
        };
        self.pos += 1;
        let float = |digits: &str, len: usize| {
            (digits.len() == len && digits.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(digits, 16).ok())
                .flatten()
        };
        if let Some(h) = n.strip_prefix("0f").or_else(|| n.strip_prefix("0F")) {
            let Some(bits) = float(h, 8) else { return err(line, format!("bad f32 literal `{n}`")) };
            let bits = if negative { bits ^ 0x8000_0000 } else { bits };
            return Ok(Operand::F32(bits as u32));
        }
        if let Some(h) = n.strip_prefix("0d").or_else(|| n.strip_prefix("0D")) {
            let Some(bits) = float(h, 16) else { return err(line, format!("bad f64 literal `{n}`")) };
            let bits = if negative { bits ^ (1 << 63) } else { bits };
            return Ok(Operand::F64(bits));
        }
        match parse_int(n) {
            Some(v) => Ok(Operand::Int(if negative { -v } else { v })),
            None if n.contains('.') || n.contains('e') => {
                err(line, format!("decimal floating-point literals are not supported (`{n}`)"))
            }
            None => err(line, format!("bad number `{n}`")),
        }
    }

    fn operand(&mut self) -> Result<Operand<'a>, LoadError> {
        let line = self.line();
        match self.peek() {
            Some(Tok::Punct('!')) => {
                self.pos += 1;
                Ok(Operand::NotReg(self.word("a predicate")?))
            }
            Some(Tok::Punct('-')) => {
                self.pos += 1;
                self.literal(true)
            }
            Some(Tok::Num(_)) => self.literal(false),
            Some(Tok::Word("_")) => {
                self.pos += 1;
                Ok(Operand::Sink)
            }
            Some(Tok::Word(w)) => {
                self.pos += 1;
                if self.eat('|') {
                    return Ok(Operand::Pair(w, self.word("a predicate")?));
                }
                Ok(if w.starts_with('%') { Operand::Reg(w) } else { Operand::Symbol(w) })
            }
            Some(Tok::Punct('[')) => {
                self.pos += 1;
                let mut base = None;
                let mut offset: i128 = 0;
                match self.peek() {
                    Some(Tok::Word(w)) => {
                        self.pos += 1;
                        base = Some(if w.starts_with('%') { AddressBase::Reg(w) } else { AddressBase::Symbol(w) });
                        if self.eat('+') {
                            let neg = self.eat('-');
                            offset = self.address_offset(neg)?;
                        } else if self.eat('-') {
                            offset = self.address_offset(true)?;
                        }
                    }
                    Some(Tok::Punct('-')) => {
                        self.pos += 1;
                        offset = self.address_offset(true)?;
                    }
                    Some(Tok::Num(_)) => offset = self.address_offset(false)?,
                    _ => return self.unexpected("an address"),
                }
                self.punct(']')?;
                let offset = i64::try_from(offset)
                    .map_err(|_| LoadError { line, message: "address offset out of range".into() })?;
                Ok(Operand::Address { base, offset })
            }
            Some(Tok::Punct('{')) => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    items.push(self.operand()?);
                    if self.eat('}') {
                        break;
                    }
                    self.punct(',')?;
                }
                Ok(Operand::Vector(items))
            }
            _ => self.unexpected("an operand"),
        }
    }

    fn address_offset(&mut self, negative: bool) -> Result<i128, LoadError> {
        let line = self.line();
        match self.literal(negative)? {
            Operand::Int(v) => Ok(v),
            _ => err(line, "an address offset must be an integer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
.version 9.0
.target sm_75
.address_size 64
.extern .shared .align 16 .b8 counts[];

.visible .entry k(
	.param .u64 k_param_0,
	.param .u32 k_param_1
)
.maxntid 256, 1, 1
.minnctapersm 2
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<10>;
	.shared .align 4 .f32 q;
	ld.param.u32 	%r1, [k_param_1];
	@!%p1 bra 	$L__BB0_2;
	{
	.reg .b32 %temp;
	mov.b64 	{%temp, %r2}, %fd1;
	}
	shfl.sync.bfly.b32 	%r3|%p2, %r1, 16, 31, -1;
	ld.shared.u32 %r4, [%r5+-8];
$L__BB0_2:
	ret;
}
"#;

    #[test]
    fn a_kernel_parses() {
        let m = parse(TEXT).unwrap();
        assert_eq!(m.variables.len(), 1);
        assert!(m.variables[0].is_extern);
        assert_eq!(m.variables[0].dims, vec![None]);
        let e = &m.entries[0];
        assert_eq!(e.name, "k");
        assert_eq!(e.params.len(), 2);
        assert_eq!(e.params[1].ty, ".u32");
        assert_eq!(e.maxntid, Some([256, 1, 1]));
        let insts: Vec<_> = e
            .body
            .iter()
            .filter_map(|s| match s {
                Stmt::Inst(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(insts[0].line, 17);
        assert_eq!(insts[1].guard, Some((true, "%p1")));
        assert_eq!(insts[2].operands[0], Operand::Vector(vec![Operand::Reg("%temp"), Operand::Reg("%r2")]));
        assert_eq!(insts[3].operands[0], Operand::Pair("%r3", "%p2"));
        assert_eq!(insts[3].operands[4], Operand::Int(-1));
        assert_eq!(insts[4].operands[1], Operand::Address { base: Some(AddressBase::Reg("%r5")), offset: -8 });
        assert!(e.body.iter().any(|s| matches!(s, Stmt::Label(25, "$L__BB0_2"))));
    }

    #[test]
    fn integers_in_every_radix() {
        assert_eq!(parse_int("255"), Some(255));
        assert_eq!(parse_int("0xFF"), Some(255));
        assert_eq!(parse_int("0377"), Some(255));
        assert_eq!(parse_int("0b11111111"), Some(255));
        assert_eq!(parse_int("255U"), Some(255));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("09"), None);
        assert_eq!(parse_int("18446744073709551615"), Some(u64::MAX as i128));
        assert_eq!(parse_int("18446744073709551616"), None);
    }

    #[test]
    fn unknown_directives_are_named() {
        let e = parse(".version 9.0\n.target sm_75\n.global .u32 g;").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (3, "unsupported directive `.global`"));
        let e = parse(".version 9.0\n.func f() { ret; }").unwrap_err();
        assert!(e.message.contains(".func"), "{e}");
        let e = parse(".version 5.0").unwrap_err();
        assert!(e.message.contains("version"), "{e}");
    }
}
