//! Buffers for bytes that may hold secrets (stdin, files, output text), and bounded reads
//! into them.
//!
//! Invariants: a [`SecretBuf`] grows by copying into a new allocation and wiping the old
//! one, so no freed block keeps a copy of what it held (a `Vec` or `String` that grows
//! leaves its old block to the allocator as it was); every allocation it owns is wiped
//! before it is freed; the bytes past its length are zero. Standard input and output are
//! used unbuffered, so std's own buffers never hold a secret either. A read stops one byte
//! past its cap.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};

use zeroize::{Zeroize, Zeroizing};

/// The first allocation when nothing hints at the size.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// A growable byte buffer that never leaves a copy behind.
pub struct SecretBuf {
    /// Always initialized (zero) to its full length, which is the capacity in use.
    bytes: Zeroizing<Vec<u8>>,
    /// How many bytes are content.
    len: usize,
}

impl SecretBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        SecretBuf {
            bytes: Zeroizing::new(vec![0; capacity]),
            len: 0,
        }
    }

    /// The content.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// The content's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Moves the content to a new block of `capacity` bytes (at least the content's
    /// length) and wipes the old one.
    fn grow_to(&mut self, capacity: usize) {
        let capacity = capacity.max(self.len);
        let mut bigger = Zeroizing::new(vec![0; capacity]);
        if let Some(dest) = bigger.get_mut(..self.len) {
            dest.copy_from_slice(self.as_bytes());
        }
        // The old block is wiped as it drops.
        self.bytes = bigger;
    }

    /// Appends `data`.
    pub fn push(&mut self, data: &[u8]) {
        let end = self.len.saturating_add(data.len());
        if end > self.bytes.len() {
            self.grow_to(end.max(self.bytes.len().saturating_mul(2)));
        }
        if let Some(dest) = self.bytes.get_mut(self.len..end) {
            dest.copy_from_slice(data);
            self.len = end;
        }
    }

    /// Cuts the content to `len` bytes, wiping the rest.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            if let Some(tail) = self.bytes.get_mut(len..self.len) {
                tail.zeroize();
            }
            self.len = len;
        }
    }

    /// The content as text, without a copy; `None` (and the bytes wiped) if it is not
    /// UTF-8.
    pub fn into_text(mut self) -> Option<Zeroizing<String>> {
        let mut bytes = std::mem::take(&mut *self.bytes);
        // The bytes past the content are zero: only the length changes.
        bytes.truncate(self.len);
        match String::from_utf8(bytes) {
            Ok(text) => Some(Zeroizing::new(text)),
            Err(e) => {
                e.into_bytes().zeroize();
                None
            }
        }
    }
}

impl Write for SecretBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.push(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Write for SecretBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Why a bounded read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The reader failed.
    Io(io::Error),
    /// There was more than the cap.
    TooLarge,
}

/// Reads everything from `reader`, at most `max` bytes; `hint` is the expected size (a
/// file's length), so that a file is read into one allocation.
///
/// # Errors
/// [`ReadError::TooLarge`] past `max` bytes (having read one more), or the reader's error.
pub fn read_bounded(reader: &mut impl Read, max: usize, hint: usize) -> Result<SecretBuf, ReadError> {
    // One byte past the cap tells a full input from an oversized one.
    let limit = max.saturating_add(1);
    let first = if hint == 0 {
        INITIAL_CAPACITY
    } else {
        hint.saturating_add(1)
    };
    let mut buf = SecretBuf::with_capacity(first.min(limit));
    loop {
        if buf.len == buf.bytes.len() {
            if buf.len >= limit {
                return Err(ReadError::TooLarge);
            }
            buf.grow_to(buf.bytes.len().saturating_mul(2).clamp(1, limit));
        }
        let len = buf.len;
        let Some(room) = buf.bytes.get_mut(len..) else {
            return Err(ReadError::TooLarge);
        };
        match reader.read(room) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Standard input, unbuffered, and its size if it is a regular file.
///
/// # Errors
/// Standard input cannot be duplicated (it is closed).
pub fn stdin() -> io::Result<(File, usize)> {
    let file = File::from(duplicate(&io::stdin())?);
    let hint = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX));
    Ok((file, hint))
}

/// Writes `data` to standard output, unbuffered.
///
/// # Errors
/// Standard output is closed or the write failed.
pub fn write_stdout(data: &[u8]) -> io::Result<()> {
    let mut out = File::from(duplicate(&io::stdout())?);
    out.write_all(data)
}

#[cfg(unix)]
fn duplicate(stream: &impl std::os::fd::AsFd) -> io::Result<std::os::fd::OwnedFd> {
    stream.as_fd().try_clone_to_owned()
}

#[cfg(windows)]
fn duplicate(stream: &impl std::os::windows::io::AsHandle) -> io::Result<std::os::windows::io::OwnedHandle> {
    stream.as_handle().try_clone_to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per call, as a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read(data: &[u8], step: usize, max: usize, hint: usize) -> Result<Vec<u8>, ReadError> {
        read_bounded(&mut Trickle { data, step }, max, hint).map(|b| b.as_bytes().to_vec())
    }

    #[test]
    fn reads_everything_up_to_the_cap_and_refuses_one_byte_more() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (step, hint) in [
            (1, 0),
            (7, 0),
            (4096, 0),
            (100_000, 0),
            (4096, 300_000),
            (4096, 10),
        ] {
            assert_eq!(
                read(&data, step, data.len(), hint).unwrap(),
                data,
                "{step} {hint}"
            );
            assert!(
                matches!(read(&data, step, data.len() - 1, hint), Err(ReadError::TooLarge)),
                "{step} {hint}"
            );
        }
        assert_eq!(read(b"", 10, 0, 0).unwrap(), b"");
        assert!(matches!(read(b"x", 10, 0, 0), Err(ReadError::TooLarge)));
    }

    #[test]
    fn growing_keeps_the_content_and_leaves_zeros_past_it() {
        let mut buf = SecretBuf::with_capacity(2);
        for i in 0..1000u32 {
            buf.push(&i.to_le_bytes());
        }
        assert_eq!(buf.len(), 4000);
        assert!(buf
            .as_bytes()
            .chunks(4)
            .enumerate()
            .all(|(i, c)| c == u32::try_from(i).unwrap().to_le_bytes()));
        assert!(buf.bytes[buf.len..].iter().all(|&b| b == 0));
        buf.truncate(3);
        assert_eq!(buf.as_bytes(), [0, 0, 0]);
        assert!(buf.bytes[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn text_comes_out_without_a_copy_or_not_at_all() {
        let mut buf = SecretBuf::with_capacity(0);
        fmt::Write::write_str(&mut buf, "héllo").unwrap();
        buf.write_all(b", world").unwrap();
        assert_eq!(buf.into_text().unwrap().as_str(), "héllo, world");
        let mut bad = SecretBuf::with_capacity(0);
        bad.push(b"\xff");
        assert!(bad.into_text().is_none());
    }
}
