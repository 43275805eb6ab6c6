//! PTX text to tokens, each with its line.
//!
//! The token classes are those of the PTX grammar that nvcc writes: words (directives such as
//! `.reg`, opcodes such as `add.rn.f64`, registers such as `%r1` and `%tid.x`, labels and
//! symbols), numbers (decimal, hexadecimal, octal, binary, and the `0f`/`0d` float bit patterns),
//! strings (of `.pragma`) and single-character punctuation. Comments (`//` and `/* */`) are
//! dropped.

use super::LoadError;

/// One token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    /// A directive, opcode, register, label or symbol (`.reg`, `add.s32`, `%r1`, `$L__BB0_2`).
    Word(&'a str),
    /// A number as written (`256`, `0x1F`, `0f3F800000`, `0d4350000000000000`).
    Num(&'a str),
    /// A string, without its quotes.
    Str(&'a str),
    /// One of `, ; : { } [ ] ( ) + - | @ ! < > =`.
    Punct(char),
}

/// A token and the line it starts on (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    pub line: usize,
}

fn starts_word(c: u8) -> bool {
    c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

fn continues_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.')
}

/// Splits `text` into tokens.
pub(crate) fn lex(text: &str) -> Result<Vec<Token<'_>>, LoadError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::with_capacity(text.len() / 4);
    let mut line = 1usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let start = line;
            i += 2;
            loop {
                if i + 1 >= bytes.len() {
                    return Err(LoadError { line: start, message: "unterminated comment `/*`".into() });
                }
                if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                if bytes[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' && bytes[j] != b'\n' {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] != b'"' {
                return Err(LoadError { line, message: "unterminated string".into() });
            }
            tokens.push(Token { tok: Tok::Str(&text[start..j]), line });
            i = j + 1;
        } else if starts_word(c) {
            let start = i;
            i += 1;
            loop {
                if i < bytes.len() && continues_word(bytes[i]) {
                    i += 1;
                } else if bytes[i..].starts_with(b"::") && i + 2 < bytes.len() && continues_word(bytes[i + 2]) {
                    // Sub-qualifiers such as `.shared::cta` belong to the word.
                    i += 2;
                } else {
                    break;
                }
            }
            tokens.push(Token { tok: Tok::Word(&text[start..i]), line });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push(Token { tok: Tok::Num(&text[start..i]), line });
        } else if b",;:{}[]()+-|@!<>=".contains(&c) {
            tokens.push(Token { tok: Tok::Punct(c as char), line });
            i += 1;
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(LoadError { line, message: format!("unexpected character `{ch}`") });
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_lines() {
        let t = lex("// c\n\t@!%p1 bra \t$L__BB0_2;\n/* a\nb */ ld.shared::cta.u32 %r1, [x+-8];").unwrap();
        let words: Vec<_> = t.iter().map(|t| (t.tok, t.line)).collect();
        assert_eq!(words[0], (Tok::Punct('@'), 2));
        assert_eq!(words[1], (Tok::Punct('!'), 2));
        assert_eq!(words[2], (Tok::Word("%p1"), 2));
        assert_eq!(words[3], (Tok::Word("bra"), 2));
        assert_eq!(words[4], (Tok::Word("$L__BB0_2"), 2));
        assert_eq!(words[6], (Tok::Word("ld.shared::cta.u32"), 4));
        assert_eq!(words[10], (Tok::Word("x"), 4));
        assert_eq!(words[11], (Tok::Punct('+'), 4));
        assert_eq!(words[12], (Tok::Punct('-'), 4));
        assert_eq!(words[13], (Tok::Num("8"), 4));
    }

    #[test]
    fn labels_keep_their_colon_apart() {
        let t = lex("$L__BB0_2:").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].tok, Tok::Punct(':'));
    }

    #[test]
    fn bad_text_is_an_error_with_its_line() {
        assert_eq!(lex("\n\n  #").unwrap_err().line, 3);
        assert_eq!(lex("\n/* open").unwrap_err().line, 2);
    }
}
