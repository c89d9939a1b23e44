//! The one error type of the crate.
//!
//! Invariant: no variant carries a secret. Messages name what failed and where, never a
//! passphrase, a key, or a token field's value.

use std::fmt;

/// Everything that can go wrong in tokenvault.
///
/// Every failure of the library, whatever the input, is one of these variants; nothing
/// panics. The enum is `#[non_exhaustive]`: match with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The passphrase does not unlock the vault's data key. Nothing was changed.
    WrongPassphrase,
    /// A header or record failed authentication or decoding: the vault's files were damaged
    /// or tampered with. `what` names the part that failed.
    Corrupted {
        /// Which part of the vault failed its checks (never a secret).
        what: String,
    },
    /// A save carried nothing to store or to match on, or would break an invariant of the
    /// store (such as one token per user name). Nothing was written.
    InvalidToken {
        /// Why the token was refused.
        reason: &'static str,
    },
    /// `create` found a vault, or some other non-empty directory, at the path.
    VaultExists,
    /// `open` found no vault at the path.
    VaultNotFound,
    /// The vault is open elsewhere (another process, or another handle in this one).
    VaultLocked,
    /// Argon2id parameters outside the accepted floor and ceiling.
    InvalidKdfParams {
        /// Which bound was crossed.
        reason: String,
    },
    /// An operating-system I/O error.
    Io(std::io::Error),
    /// The storage engine failed (other than plain I/O).
    Storage {
        /// The engine's own description of the failure.
        message: String,
    },
    /// tokenvault itself could not go on: the operating system's random source failed, a
    /// worker thread panicked, or a counter that never runs out in practice (key epochs,
    /// storage generations) ran out. Nothing was changed.
    Internal {
        /// What failed.
        what: String,
    },
}

impl Error {
    pub(crate) fn corrupted(what: impl Into<String>) -> Self {
        Error::Corrupted { what: what.into() }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        Error::Internal { what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongPassphrase => f.write_str("the passphrase does not unlock this vault"),
            Error::Corrupted { what } => write!(f, "the vault is corrupted: {what}"),
            Error::InvalidToken { reason } => write!(f, "invalid token: {reason}"),
            Error::VaultExists => {
                f.write_str("a vault or other non-empty directory already exists at this path")
            }
            Error::VaultNotFound => f.write_str("no vault exists at this path"),
            Error::VaultLocked => f.write_str("the vault is open elsewhere"),
            Error::InvalidKdfParams { reason } => write!(f, "invalid KDF parameters: {reason}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Storage { message } => write!(f, "storage error: {message}"),
            Error::Internal { what } => write!(f, "internal error: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
    }

    #[test]
    fn io_error_keeps_its_source() {
        let e = Error::from(std::io::Error::other("disk"));
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("disk"));
    }
}
