//! Register declarations and their scopes: `.reg .b32 %r<66>;` declares `%r0` to `%r65`, a
//! nested `{ .reg .b32 %temp; ... }` declares `%temp` until its `}`. Each register gets a slot
//! (values) or a mask (predicates); the slots of a closed scope are reused.

use std::collections::HashMap;

use super::super::LoadError;
use super::super::types::RegClass;

/// One register range or single register of a scope.
#[derive(Clone, Copy, Debug)]
struct Decl {
    class: RegClass,
    first: u32,
    /// `Some(n)` for a range `%r<n>`.
    count: Option<u32>,
}

#[derive(Debug, Default)]
struct Scope<'a> {
    decls: HashMap<&'a str, Decl>,
    saved_values: u32,
    saved_preds: u32,
}

/// The registers visible at a point of a function body.
#[derive(Debug)]
pub(crate) struct RegTable<'a> {
    scopes: Vec<Scope<'a>>,
    next_value: u32,
    next_pred: u32,
    /// The most value slots and predicate masks alive at once.
    pub max_values: u32,
    pub max_preds: u32,
    /// 32-bit register equivalents declared (for the `NUM_REGS` attribute).
    pub declared_words: u64,
}

impl<'a> RegTable<'a> {
    pub(crate) fn new() -> Self {
        RegTable {
            scopes: vec![Scope::default()],
            next_value: 0,
            next_pred: 0,
            max_values: 0,
            max_preds: 0,
            declared_words: 0,
        }
    }

    pub(crate) fn open(&mut self) {
        self.scopes.push(Scope { decls: HashMap::new(), saved_values: self.next_value, saved_preds: self.next_pred });
    }

    pub(crate) fn close(&mut self, line: usize) -> Result<(), LoadError> {
        if self.scopes.len() <= 1 {
            return Err(LoadError { line, message: "`}` without `{`".into() });
        }
        if let Some(s) = self.scopes.pop() {
            self.next_value = s.saved_values;
            self.next_pred = s.saved_preds;
        }
        Ok(())
    }

    /// Declares `name` (a range of `count` when given).
    pub(crate) fn declare(
        &mut self,
        name: &'a str,
        class: RegClass,
        count: Option<u32>,
        line: usize,
    ) -> Result<(), LoadError> {
        let n = count.unwrap_or(1);
        let scope = self.scopes.last_mut().ok_or_else(|| LoadError { line, message: "no scope".into() })?;
        if scope.decls.contains_key(name) {
            return Err(LoadError { line, message: format!("register `{name}` declared twice") });
        }
        let first = match class {
            RegClass::Pred => {
                let f = self.next_pred;
                self.next_pred =
                    f.checked_add(n).ok_or_else(|| LoadError { line, message: "too many registers".into() })?;
                self.max_preds = self.max_preds.max(self.next_pred);
                f
            }
            RegClass::Bits(bits) => {
                let f = self.next_value;
                self.next_value =
                    f.checked_add(n).ok_or_else(|| LoadError { line, message: "too many registers".into() })?;
                self.max_values = self.max_values.max(self.next_value);
                self.declared_words += u64::from(n) * u64::from(bits.div_ceil(32));
                f
            }
        };
        scope.decls.insert(name, Decl { class, first, count });
        Ok(())
    }

    /// The class and index of register `name`, innermost scope first.
    pub(crate) fn lookup(&self, name: &str) -> Option<(RegClass, u32)> {
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = name.split_at(name.len() - digits);
        let index =
            (digits > 0 && (number == "0" || !number.starts_with('0'))).then(|| number.parse::<u32>().ok()).flatten();
        for scope in self.scopes.iter().rev() {
            if let Some(d) = scope.decls.get(name)
                && d.count.is_none()
            {
                return Some((d.class, d.first));
            }
            if let (Some(i), Some(d)) = (index, scope.decls.get(prefix))
                && let Some(count) = d.count
                && i < count
            {
                return Some((d.class, d.first + i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_singles_and_scopes() {
        let mut t = RegTable::new();
        t.declare("%r", RegClass::Bits(32), Some(10), 1).unwrap();
        t.declare("%p", RegClass::Pred, Some(3), 1).unwrap();
        assert_eq!(t.lookup("%r9").map(|r| r.1), Some(9));
        assert_eq!(t.lookup("%r10"), None);
        assert_eq!(t.lookup("%r01"), None);
        assert_eq!(t.lookup("%p2"), Some((RegClass::Pred, 2)));
        t.open();
        t.declare("%temp", RegClass::Bits(32), None, 2).unwrap();
        assert_eq!(t.lookup("%temp"), Some((RegClass::Bits(32), 10)));
        t.close(3).unwrap();
        assert_eq!(t.lookup("%temp"), None);
        t.open();
        t.declare("%temp", RegClass::Bits(64), None, 4).unwrap();
        assert_eq!(t.lookup("%temp"), Some((RegClass::Bits(64), 10)), "the closed scope's slot is reused");
        assert_eq!(t.max_values, 11);
        assert!(t.declare("%temp", RegClass::Bits(64), None, 5).is_err());
    }
}
