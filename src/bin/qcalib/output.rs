//! How `qcalib` ends: what it prints when a command fails, how a failed write to stdout ends the
//! run, and the escaping of names in text meant for a terminal.
//!
//! - A broken pipe (the reader of stdout went away, as in `qcalib … | head -1`) ends the run
//!   quietly with [`BROKEN_PIPE_STATUS`], like a tool killed by `SIGPIPE`.
//! - Any other failed write to stdout (a full disk) prints one line on stderr and exits with 1.
//! - Errors print one line, `error: …`, on stderr (and, under torchrun, in its error file: see
//!   [`crate::elastic_error`]); when stderr cannot be written either, the
//!   exit status still says it failed. Nothing here panics.

use std::borrow::Cow;
use std::io::{self, ErrorKind, Write};
use std::process::ExitCode;

/// The exit status after a broken pipe on stdout: 128 + `SIGPIPE`, what a shell reports for a
/// process the signal ended.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// An error to report on stderr.
    Message(String),
    /// Writing the output on stdout failed.
    Output(io::Error),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Message(message.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

impl Failure {
    /// Reports the failure on stderr (nothing for a broken pipe) and gives the exit status.
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Output(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::from(BROKEN_PIPE_STATUS),
            Failure::Output(e) => {
                print_error(&format!("cannot write the output: {e}"));
                ExitCode::FAILURE
            }
            Failure::Message(m) => {
                print_error(&m);
                crate::elastic_error::record(&m);
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints `error: MESSAGE` as one line on stderr, control characters escaped; a failed write
/// is ignored (there is nowhere left to report it).
pub fn print_error(message: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "error: {}", escape_controls(message));
    let _ = err.flush();
}

/// `text` with every control character (C0, DEL, C1) and every bidirectional formatting
/// character escaped as Rust's `{:?}` escapes them (`\n`, `\u{1b}`, `\u{202e}`), so that a
/// tensor name or a file name cannot colour the terminal, move the cursor or forge an output
/// line: `"a\x1b[31mb\n"` becomes `a\u{1b}[31mb\n`. Text without such characters (also text
/// already escaped) is returned as it is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_only() {
        assert_eq!(escape_controls("a\x1b[31mb\n"), r"a\u{1b}[31mb\n");
        assert_eq!(escape_controls("\u{202e}x\u{7f}\u{85}\t"), r"\u{202e}x\u{7f}\u{85}\t");
        assert!(matches!(escape_controls("plain é 名前 \"q\" \\"), Cow::Borrowed(_)));
        assert_eq!(escape_controls(r"a\u{1b}"), r"a\u{1b}");
    }
}
