//! The command line's parsers of untrusted bytes, as the targets call them: the import of
//! the SDK's stores (its CSV file, its SQLite `oauthtoken` table) and `save`'s JSON input.
//!
//! These are the binary's own functions (its modules are compiled into this crate, see the
//! crate root), called as the binary calls them; only the bytes come from elsewhere (a file
//! the target wrote instead of the user's file, a slice instead of stdin).

use std::path::Path;

pub use crate::failure::Failure;
pub use crate::import::{Location, Row, Store};
pub use crate::input::Tokens;
pub use crate::limits::{MAX_FIELD_BYTES, MAX_RECORD_BYTES, MAX_ROWS};
pub use crate::output::REDACTED;
use crate::secret_buf::{self, ReadError, SecretBuf};

/// `tokenvault import FILE`'s reading of `path`: the checks of the whole file, before
/// anything would be written.
///
/// # Errors
/// What the command would print, and its exit code.
pub fn import(path: &Path) -> Result<Store, Failure> {
    crate::import::check(path)
}

/// `tokenvault save`'s checks of what it read from stdin.
///
/// # Errors
/// What the command would print, and its exit code.
pub fn save_json(bytes: &[u8]) -> Result<Tokens, Failure> {
    let mut buf = SecretBuf::with_capacity(bytes.len());
    buf.push(bytes);
    crate::input::check(buf)
}

/// The bounded read `save` does of stdin (and `import` of a CSV file), with the cap `max`
/// instead of 256 MiB, from a reader that hands out at most `step` bytes per call (as a
/// pipe does); `hint` is the size the caller expects. `None` when the input is over the
/// cap.
///
/// # Panics
/// If reading a slice fails (it cannot).
pub fn read_bounded(bytes: &[u8], step: usize, max: usize, hint: usize) -> Option<Vec<u8>> {
    let mut reader = Trickle { data: bytes, step };
    match secret_buf::read_bounded(&mut reader, max, hint) {
        Ok(buf) => Some(buf.as_bytes().to_vec()),
        Err(ReadError::TooLarge) => None,
        Err(ReadError::Io(e)) => panic!("reading a slice failed: {e}"),
    }
}

/// A reader over a slice that hands out at most `step` bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.max(1).min(buf.len()).min(self.data.len());
        let (now, later) = self.data.split_at(n);
        buf[..n].copy_from_slice(now);
        self.data = later;
        Ok(n)
    }
}
