//! Helpers shared by the fuzz targets and the seed generator: sample tokens, scratch
//! directories, copying a vault directory; the command line's parsers ([`cli`]), the SDK's
//! CSV written back ([`sdk_csv`]), inputs grown past the fuzzer's length ([`expand`]) and
//! peak memory ([`peak`]).
//!
//! Everything here runs only in fuzz builds and tools; it panics freely on harness errors
//! (a harness failure must never be mistaken for a library result).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokenvault::OAuthToken;

pub mod cli;
pub mod expand;
pub mod peak;
pub mod sdk_csv;

// The command line's modules that read untrusted bytes, and those they depend on, compiled
// from the binary's own source files: the binary is not a library, so they are declared
// again here, at the crate root where their `crate::` paths look for each other. Only
// [`cli`] is visible outside; the parts of them the importers and `save` do not use are
// dead code here.
#[allow(dead_code)]
#[path = "../../src/bin/tokenvault/failure.rs"]
mod failure;
#[allow(dead_code)]
#[path = "../../src/bin/tokenvault/import/mod.rs"]
mod import;
#[allow(dead_code)]
#[path = "../../src/bin/tokenvault/input.rs"]
mod input;
#[allow(dead_code)]
#[path = "../../src/bin/tokenvault/limits.rs"]
mod limits;
#[allow(dead_code)]
#[path = "../../src/bin/tokenvault/output.rs"]
mod output;
#[allow(dead_code)]
#[path = "../../src/bin/tokenvault/secret_buf.rs"]
mod secret_buf;

/// The passphrase of every vault the targets build.
pub const PASSPHRASE: &str = "fuzz passphrase";

/// A scratch root: `/dev/shm` when present (no disk I/O per execution), else the temp dir.
pub fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// This process's scratch directory, `tokenvault-fuzz-<pid>` under [`scratch_root`]:
/// everything the targets write (template vaults, per-input copies) lives there. libFuzzer
/// ends a process with `exit` (time limit, crash), which runs no destructor, so the first
/// call also removes the directories of processes that are gone; `fuzz/run.sh` does the same
/// after its runs.
pub fn process_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = scratch_root();
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("tokenvault-fuzz-")) else {
                    continue;
                };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!("tokenvault-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("process scratch dir");
        dir
    })
}

/// A fresh scratch directory inside [`process_root`], removed on drop.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(process_root())
        .expect("scratch dir")
}

/// A directory for the life of the process (a target's template vault), inside
/// [`process_root`].
pub fn process_dir(name: &str) -> PathBuf {
    let dir = process_root().join(name);
    fs::create_dir_all(&dir).expect("process dir");
    dir
}

/// Copies the directory tree `from` into `to` (which must not exist yet). The vault's lock
/// file is copied as it is: the OS lock on it belongs to an open file, not to the bytes.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy dir");
    for entry in fs::read_dir(from).expect("read template dir") {
        let entry = entry.expect("template entry");
        let ty = entry.file_type().expect("file type");
        let dst = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &dst);
        } else if ty.is_file() {
            fs::copy(entry.path(), &dst).expect("copy template file");
        }
    }
}

#[path = "../../tests/common/sample_tokens.rs"]
mod samples;

/// A few tokens of the shapes the SDK stores: full, minimal, odd bytes, long values (the
/// tests' `tests/common/sample_tokens.rs`, which the regression tests replay inputs on).
pub fn sample_tokens() -> Vec<OAuthToken> {
    samples::sample_tokens()
}

/// The name of an error's variant, for comparing results across stores.
pub fn variant(e: &tokenvault::Error) -> &'static str {
    use tokenvault::Error;
    match e {
        Error::WrongPassphrase => "WrongPassphrase",
        Error::Corrupted { .. } => "Corrupted",
        Error::InvalidToken { .. } => "InvalidToken",
        Error::VaultExists => "VaultExists",
        Error::VaultNotFound => "VaultNotFound",
        Error::VaultLocked => "VaultLocked",
        Error::InvalidKdfParams { .. } => "InvalidKdfParams",
        Error::Io(_) => "Io",
        Error::Storage { .. } => "Storage",
        _ => "(another variant)",
    }
}

/// The live generation's database directory of a vault (the one `CURRENT` names).
pub fn sled_dir(vault: &Path) -> PathBuf {
    let pointer = std::fs::read_to_string(vault.join("CURRENT")).expect("a generation pointer");
    let n = pointer
        .strip_prefix("tokenvault generation ")
        .and_then(|p| p.strip_suffix('\n'))
        .expect("a well-formed generation pointer");
    vault.join(format!("gen-{n}"))
}
