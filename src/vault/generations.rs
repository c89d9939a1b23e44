//! Storage generations: where in the vault directory the live database is.
//!
//! A vault's sled database lives in a subdirectory `gen-N/`, and the file `CURRENT` names
//! the live one (`tokenvault generation N` and a newline). Compaction writes every live
//! value into a fresh `gen-N+1/`, makes it durable, and then replaces `CURRENT` by an
//! atomic rename: a crash before the rename leaves generation N live, after it N+1; the
//! generation that is not live is removed on the next open. Vaults written before
//! generations existed keep the database in the directory itself (the *legacy* layout);
//! opening one moves it into `gen-1/` by a compaction.
//!
//! Invariants: `CURRENT` is only ever replaced by a rename of a file that was synced first;
//! nothing of the live generation is ever removed; the pointer is parsed strictly.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::backend::{Engine, SledStorage};
use crate::Error;

/// The pointer to the live generation.
pub(super) const CURRENT: &str = "CURRENT";
/// The pointer being written, before its rename.
const CURRENT_TMP: &str = "CURRENT.tmp";
const POINTER_PREFIX: &[u8] = b"tokenvault generation ";
/// The longest valid pointer: the prefix, 20 digits and a newline.
const MAX_POINTER: usize = 22 + 20 + 1;

/// Where a vault's live database is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Generation {
    /// The database files sit in the vault directory itself (vaults from before
    /// generations).
    Legacy,
    /// `gen-N/`.
    Numbered(u64),
}

impl Generation {
    /// The directory that holds this generation's database.
    pub(super) fn dir(self, vault: &Path) -> PathBuf {
        match self {
            Generation::Legacy => vault.to_path_buf(),
            Generation::Numbered(n) => vault.join(format!("gen-{n}")),
        }
    }

    /// The generation a compaction writes next.
    pub(super) fn next(self) -> Result<Generation, Error> {
        match self {
            Generation::Legacy => Ok(Generation::Numbered(1)),
            Generation::Numbered(n) => n
                .checked_add(1)
                .map(Generation::Numbered)
                .ok_or_else(|| Error::internal("storage generations exhausted")),
        }
    }
}

/// The bytes of a pointer to generation `n`.
pub(super) fn encode_pointer(n: u64) -> Vec<u8> {
    let mut out = POINTER_PREFIX.to_vec();
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'\n');
    out
}

/// Parses a pointer strictly: the prefix, a decimal number from 1 without leading zeros,
/// one newline, nothing else.
pub(super) fn parse_pointer(bytes: &[u8]) -> Result<u64, Error> {
    let bad = || Error::corrupted("the generation pointer (CURRENT) is malformed");
    let digits = bytes
        .strip_prefix(POINTER_PREFIX)
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .ok_or_else(bad)?;
    if digits.len() > 20
        || digits.first().is_none_or(|&d| d == b'0')
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)
}

/// Whether `dir` holds a database.
fn holds_database(dir: &Path) -> bool {
    Engine::in_dir(dir).is_some()
}

/// The live generation of the vault directory `dir`: `None` when it holds no database
/// at all.
///
/// # Errors
/// `Corrupted` if `CURRENT` is malformed, not a plain file, or names a generation whose
/// database is missing; `Io`.
pub(super) fn live(dir: &Path) -> Result<Option<Generation>, Error> {
    let pointer = dir.join(CURRENT);
    match fs::symlink_metadata(&pointer) {
        Ok(meta) if meta.is_file() => {
            let mut bytes = Vec::new();
            fs::File::open(&pointer)?
                .take(MAX_POINTER as u64 + 1)
                .read_to_end(&mut bytes)?;
            let generation = Generation::Numbered(parse_pointer(&bytes)?);
            if !holds_database(&generation.dir(dir)) {
                return Err(Error::corrupted(
                    "the generation that CURRENT names is missing: the vault's files are damaged",
                ));
            }
            Ok(Some(generation))
        }
        Ok(_) => Err(Error::corrupted("CURRENT is not a plain file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(holds_database(dir).then_some(Generation::Legacy))
        }
        Err(e) => Err(Error::Io(e)),
    }
}

/// Makes generation `n` the live one: writes and syncs `CURRENT.tmp`, renames it over
/// `CURRENT`, and syncs the directory, so that after a crash `CURRENT` names either the
/// old generation or `n`, never neither.
///
/// # Errors
/// `Io`.
pub(super) fn switch(dir: &Path, n: u64) -> Result<(), Error> {
    let tmp = dir.join(CURRENT_TMP);
    let _ = fs::remove_file(&tmp);
    {
        let mut file = create_private_file(&tmp)?;
        file.write_all(&encode_pointer(n))?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CURRENT))?;
    sync_dir(dir)
}

/// Removes everything of the vault directory `dir` that is not the live generation: other
/// `gen-*` directories, a leftover `CURRENT.tmp`, and the legacy layout's database files
/// once a numbered generation is live.
///
/// # Errors
/// `Io`.
pub(super) fn remove_stale(dir: &Path, live: Generation) -> Result<(), Error> {
    let live_dir = live.dir(dir);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let stale_generation = name
            .strip_prefix("gen-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && path != live_dir;
        let legacy_file = live != Generation::Legacy && SledStorage::is_engine_file(name);
        if stale_generation || legacy_file || name == CURRENT_TMP {
            let ty = entry.file_type()?;
            if ty.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    sync_dir(dir)
}

/// Syncs every file below `dir`, and the directories themselves, so a generation is on
/// disk before `CURRENT` names it.
///
/// # Errors
/// `Io`.
pub(super) fn sync_tree(dir: &Path) -> Result<(), Error> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            sync_tree(&entry.path())?;
        } else if ty.is_file() {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Creates a new file, 0600 on Unix; an existing file or link at the path is an error.
fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_parse_strictly() {
        for n in [1, 9, 10, 12_345, u64::MAX] {
            assert_eq!(parse_pointer(&encode_pointer(n)).unwrap(), n);
        }
        assert_eq!(encode_pointer(7), b"tokenvault generation 7\n");
        for bad in [
            &b""[..],
            b"tokenvault generation \n",
            b"tokenvault generation 0\n",
            b"tokenvault generation 07\n",
            b"tokenvault generation 7",
            b"tokenvault generation 7\n\n",
            b"tokenvault generation +7\n",
            b"tokenvault generation 7 \n",
            b"tokenvault generation 18446744073709551616\n",
            b"tokenvault generation 123456789012345678901\n",
            b"Tokenvault generation 7\n",
        ] {
            assert!(parse_pointer(bad).is_err(), "{bad:?}");
        }
    }
}
