//! How the command line fails: one plain sentence on stderr and a documented exit code.
//!
//! Invariants: a message is one line, names what failed and where, and never carries a
//! passphrase or a token's secret; library errors map to the exit codes of
//! docs/design.md section 6 in this one place.

use std::fmt;
use std::path::Path;

use tokenvault::Error;

/// Success.
pub const EXIT_OK: u8 = 0;
/// An error: no match, bad input, a corrupted vault, an I/O failure.
pub const EXIT_FAILURE: u8 = 1;
/// A usage error (clap's own errors exit with 2 too).
pub const EXIT_USAGE: u8 = 2;
/// The passphrase does not unlock the vault.
pub const EXIT_WRONG_PASSPHRASE: u8 = 3;
/// The vault is open in another process.
pub const EXIT_LOCKED: u8 = 4;

/// A failed command: what to tell the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    message: String,
}

impl Failure {
    /// An error (exit 1).
    pub fn error(message: impl Into<String>) -> Self {
        Failure::with_code(EXIT_FAILURE, message)
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::with_code(EXIT_USAGE, message)
    }

    /// A failure with this exit code.
    pub fn with_code(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: one_line(&message.into()),
        }
    }

    /// What failed, as a library error on the vault at `dir`.
    pub fn vault(error: Error, dir: &Path) -> Self {
        let dir = dir.display();
        match error {
            Error::WrongPassphrase => Failure::with_code(
                EXIT_WRONG_PASSPHRASE,
                format!("the passphrase does not unlock the vault at {dir}"),
            ),
            Error::VaultLocked => Failure::with_code(
                EXIT_LOCKED,
                format!("the vault at {dir} is open in another process"),
            ),
            Error::VaultNotFound => Failure::error(format!(
                "no vault exists at {dir} (create one with `tokenvault --vault {dir} init`)"
            )),
            Error::VaultExists => Failure::error(format!(
                "{dir} already holds a vault or other files; init needs a missing or empty directory"
            )),
            // `what` may name a token by its id, which may hold control characters.
            Error::Corrupted { what } => Failure::error(format!(
                "the vault at {dir} is corrupted: {}",
                crate::output::Escaped(&what)
            )),
            other => Failure::error(other.to_string()),
        }
    }

    /// The message, if there is one to print.
    pub fn message(&self) -> Option<&str> {
        (!self.message.is_empty()).then_some(self.message.as_str())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Keeps a message on one line (an I/O error or a path may carry a newline).
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An input-derived name (an id, a column) made safe to quote in a message: control
/// characters escaped, long values cut.
pub fn quoted(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::from("\"");
    for (i, c) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_the_documented_codes() {
        let dir = Path::new("/tmp/v");
        assert_eq!(
            Failure::vault(Error::WrongPassphrase, dir).code,
            EXIT_WRONG_PASSPHRASE
        );
        assert_eq!(Failure::vault(Error::VaultLocked, dir).code, EXIT_LOCKED);
        assert_eq!(Failure::vault(Error::VaultNotFound, dir).code, EXIT_FAILURE);
        let corrupted = Error::Corrupted {
            what: "header".into(),
        };
        assert_eq!(Failure::vault(corrupted, dir).code, EXIT_FAILURE);
    }

    #[test]
    fn messages_stay_on_one_line() {
        let f = Failure::error("a\nb\r\nc");
        assert_eq!(f.message(), Some("a b  c"));
        assert_eq!(quoted("x\ny\"z"), "\"x\\ny\\\"z\"");
        assert!(quoted(&"a".repeat(1000)).len() < 100);
    }
}
