//! The header of a `.npy` file, read as numpy reads it: a Python literal dict with exactly the
//! keys `descr` (a string), `fortran_order` (`True` or `False`) and `shape` (a tuple of
//! non-negative integers), e.g.
//!
//! ```text
//! {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//! ```
//!
//! numpy writes it with `repr` and reads it back with `ast.literal_eval`, then checks the keys
//! and the types of the values. This parser takes the part of that literal grammar a header
//! uses: strings in single or double quotes (without escapes or prefixes), `True`/`False`,
//! decimal integers (Python's digit rules: no leading zeros, `_` between digits; in format
//! versions 1.0 and 2.0 also Python 2's `L` suffix, which numpy filters out of such headers),
//! tuples (`()`, `(5,)`, `(2, 3)` with an optional trailing comma), a dict with an optional
//! trailing comma, and whitespace between tokens. Everything else is refused: text after the
//! closing `}`, unknown, missing or repeated keys (numpy would let the last of repeated keys
//! win), a `fortran_order` that is not a boolean, a shape that is not a tuple of integers, and
//! the Python expressions numpy would evaluate but never writes (escapes, comments, hexadecimal
//! or negative numbers, nested containers).

/// The three fields of a `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NpyHeader {
    /// The dtype, as numpy's `dtype.str` (e.g. `<f4`).
    pub descr: String,
    /// Whether the data is in column-major order.
    pub fortran_order: bool,
    /// The dimensions.
    pub shape: Vec<usize>,
}

/// A value of the header dict.
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Tuple(_) => "a tuple",
        }
    }
}

/// Parses the header text (already decoded: latin-1 for versions 1.0 and 2.0, UTF-8 for 3.0).
/// `python2_longs` accepts the `L` suffix of Python 2 integers (versions 1.0 and 2.0).
pub(crate) fn parse(text: &str, python2_longs: bool) -> Result<NpyHeader, String> {
    let mut p = Parser { text, at: 0, python2_longs };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.skip_space();
    p.expect('{')?;
    loop {
        p.skip_space();
        if p.eat('}') {
            break;
        }
        let key = p.string()?;
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            _ => return Err(format!("unknown key {key:?} (a .npy header has 'descr', 'fortran_order' and 'shape')")),
        };
        if slot.is_some() {
            return Err(format!("the key {key:?} is repeated"));
        }
        p.skip_space();
        p.expect(':')?;
        p.skip_space();
        *slot = Some(p.value().map_err(|e| format!("'{key}': {e}"))?);
        p.skip_space();
        if p.eat(',') {
            continue;
        }
        p.skip_space();
        p.expect('}')?;
        break;
    }
    p.skip_space();
    if p.at < text.len() {
        return Err(format!("text after the closing '}}' at byte {}", p.at));
    }
    let missing = |key: &str| format!("no '{key}' key");
    let descr = match descr.ok_or_else(|| missing("descr"))? {
        Value::Str(s) => s,
        v => return Err(format!("'descr' is {}: qcalib reads a dtype string such as '<f4'", v.kind())),
    };
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(b) => b,
        v => return Err(format!("'fortran_order' is {}, not True or False", v.kind())),
    };
    let shape = match shape.ok_or_else(|| missing("shape"))? {
        Value::Tuple(t) => t,
        v => return Err(format!("'shape' is {}, not a tuple of integers", v.kind())),
    };
    Ok(NpyHeader { descr, fortran_order, shape })
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
    python2_longs: bool,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// What is at the current position, for messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the header".into(),
            Some(c) => format!("{c:?} at byte {}", self.at),
        }
    }

    /// Python's whitespace between tokens inside brackets (a header is one logical line).
    fn skip_space(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0c']);
        self.at += rest.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(format!("expected {c:?}, found {}", self.found())) }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('\'' | '"') => self.string().map(Value::Str),
            Some('(') => self.tuple().map(Value::Tuple),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let word = self.word();
                match word {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    _ => Err(format!("unexpected name {word:?} (a header value is a string, True, False or a tuple)")),
                }
            }
            Some(c) if c.is_ascii_digit() => {
                Err(format!("a bare number at byte {} (only 'shape' holds numbers, in a tuple)", self.at))
            }
            _ => Err(format!("expected a value, found {}", self.found())),
        }
    }

    /// A Python identifier-like word (to be matched against `True` and `False`).
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        self.at += len;
        &rest[..len]
    }

    /// A string in single or double quotes, without escapes.
    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a quoted string, found {}", self.found())),
        };
        let start = self.at;
        self.at += 1;
        let rest = self.rest();
        let Some(end) = rest.find([quote, '\\', '\n', '\r']) else {
            return Err(format!("the string at byte {start} is not closed"));
        };
        match rest[end..].chars().next() {
            Some(c) if c == quote => {}
            Some('\\') => return Err(format!("an escape in the string at byte {start} (numpy writes none)")),
            _ => return Err(format!("the string at byte {start} is not closed on its line")),
        }
        let s = rest[..end].to_string();
        self.at += end + 1;
        Ok(s)
    }

    /// `()`, `(n,)`, `(n, m, …)` with an optional trailing comma; `(n)` is not a tuple.
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        let start = self.at;
        self.expect('(')?;
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_space();
            if self.eat(')') {
                break;
            }
            items.push(self.integer()?);
            self.skip_space();
            trailing_comma = self.eat(',');
            if !trailing_comma {
                self.skip_space();
                self.expect(')')?;
                break;
            }
        }
        if items.len() == 1 && !trailing_comma {
            return Err(format!("'shape' at byte {start} is an integer in parentheses, not a tuple (write (n,))"));
        }
        Ok(items)
    }

    /// A non-negative decimal integer by Python's rules.
    fn integer(&mut self) -> Result<usize, String> {
        let start = self.at;
        let rest = self.rest();
        let len = rest.find(|c: char| !(c.is_ascii_digit() || c == '_')).unwrap_or(rest.len());
        let literal = &rest[..len];
        let bad = |why: &str| Err(format!("bad dimension {literal:?} at byte {start}: {why}"));
        if literal.is_empty() {
            return Err(format!("bad dimension: expected a non-negative integer, found {}", self.found()));
        }
        if literal.starts_with('_') || literal.ends_with('_') || literal.contains("__") {
            return bad("'_' only goes between digits");
        }
        let digits: String = literal.chars().filter(|&c| c != '_').collect();
        if digits.len() > 1 && digits.starts_with('0') && digits.bytes().any(|b| b != b'0') {
            return bad("leading zeros are not allowed in a Python integer");
        }
        self.at += len;
        if self.python2_longs && self.peek() == Some('L') {
            self.at += 1;
        }
        if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '.') {
            return Err(format!("bad dimension at byte {start}: {:?} is not a decimal integer", self.found()));
        }
        digits.parse::<usize>().or_else(|_| bad("too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> NpyHeader {
        parse(text, false).unwrap_or_else(|e| panic!("{text:?} refused: {e}"))
    }

    fn refused(text: &str) -> String {
        match parse(text, false) {
            Ok(h) => panic!("{text:?} accepted as {h:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn reads_what_numpy_writes() {
        let h = ok("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n");
        assert_eq!(h, NpyHeader { descr: "<f4".into(), fortran_order: false, shape: vec![2, 3] });
        assert_eq!(ok("{'descr': '<f2', 'fortran_order': True, 'shape': (5,), }\n").shape, vec![5]);
        assert_eq!(ok("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").shape, Vec::<usize>::new());
    }

    #[test]
    fn reads_what_numpy_reads() {
        // Double quotes, any key order, no trailing commas, whitespace anywhere between tokens.
        let h = ok("{\"shape\": (7, 1,),\"fortran_order\":True,\n\t\"descr\" : \"<f4\"}");
        assert_eq!(h, NpyHeader { descr: "<f4".into(), fortran_order: true, shape: vec![7, 1] });
        assert_eq!(ok("{'descr':'<f4','fortran_order':False,'shape':( 1_000 , 0 )}").shape, vec![1000, 0]);
        assert_eq!(ok("{'descr': '<f4', 'fortran_order': False, 'shape': (00,)}").shape, vec![0]);
        assert_eq!(parse("{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 4L), }", true).unwrap().shape, [3, 4]);
    }

    #[test]
    fn refuses_what_numpy_refuses_or_never_writes() {
        assert!(refused("{'descr': '<f4', 'fortran_order': Truthy, 'shape': (2,), }").contains("Truthy"));
        assert!(refused("{'descr': '<f4', 'fortran_order': 1, 'shape': (2,), }").contains("number"));
        assert!(refused("{'descr': '<f4', 'fortran_order': 'True', 'shape': (2,), }").contains("fortran_order"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk").contains("after"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }}").contains("after"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}").contains("unknown"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False}").contains("shape"));
        assert!(refused("{'descr': '<f4', 'shape': (1,), 'fortran_order': False, 'shape': (2,)}").contains("repeated"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }").contains("not a tuple"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }").contains("value"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }").contains("dimension"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (0x2,), }").contains("decimal"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (07,), }").contains("leading"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }").contains("decimal"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (1_,), }").contains('_'));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }").contains("decimal"));
        assert!(
            refused("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }")
                .contains("large")
        );
        assert!(refused("{'descr': '\\x3cf4', 'fortran_order': False, 'shape': (2,), }").contains("escape"));
        assert!(refused("{'descr': '<f4\", 'fortran_order': False, 'shape': (2,), }").contains("expected"));
        assert!(refused("{'descr': '<f4").contains("not closed"));
        assert!(refused("{'descr': '<f4\n', 'fortran_order': False, 'shape': (2,), }").contains("line"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2,),, }").contains("quoted"));
        assert!(refused("'descr': '<f4'").contains("'{'"));
        assert!(refused("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) 'x': 1}").contains("'}'"));
        assert!(refused("").contains("end"));
    }
}
