//! Where passphrases come from: a file, the environment, or a no-echo prompt.
//!
//! Invariants: a passphrase never comes from a command-line argument (other users can read
//! those); every copy this program makes is zeroized on drop, and a file is read without
//! leaving copies behind (`SecretBuf`); the prompt only appears on
//! a terminal, so a script without a passphrase fails at once instead of hanging.

use std::fs::File;
use std::io::IsTerminal;
use std::path::Path;

use zeroize::Zeroizing;

use crate::failure::{quoted, Failure};
use crate::secret_buf::{self, ReadError};

/// The environment variable holding the passphrase.
pub const ENV_PASSPHRASE: &str = "TOKENVAULT_PASSPHRASE";
/// The environment variable holding the new passphrase for `passwd`.
pub const ENV_NEW_PASSPHRASE: &str = "TOKENVAULT_NEW_PASSPHRASE";
/// A passphrase file larger than this is not a passphrase file.
const MAX_FILE_BYTES: usize = 64 * 1024;

/// A passphrase, zeroized on drop.
pub type Passphrase = Zeroizing<String>;

/// Where to look for one passphrase, in order.
pub struct Source<'a> {
    /// A file given on the command line.
    pub file: Option<&'a Path>,
    /// The environment variable to read.
    pub env: &'static str,
    /// The flag that names a file, for messages.
    pub file_flag: &'static str,
    /// What to call it on the prompt ("Passphrase", "New passphrase").
    pub label: &'static str,
}

/// The passphrase of an existing vault (asked once on a prompt).
///
/// # Errors
/// A usage error if no source is available; an error if the file cannot be read.
pub fn existing(source: &Source<'_>, dir: &Path) -> Result<Passphrase, Failure> {
    if let Some(p) = from_file_or_env(source)? {
        return Ok(p);
    }
    prompt(source, &format!("{} for {}: ", source.label, dir.display()))
}

/// A passphrase being set (asked twice on a prompt); refuses an empty one.
///
/// # Errors
/// As [`existing`]; an error if the passphrase is empty or the two entries differ.
pub fn new(source: &Source<'_>, dir: &Path) -> Result<Passphrase, Failure> {
    let passphrase = match from_file_or_env(source)? {
        Some(p) => p,
        None => {
            let first = prompt(source, &format!("{} for {}: ", source.label, dir.display()))?;
            if !first.is_empty() {
                let again = prompt(source, &format!("{} again: ", source.label))?;
                if *first != *again {
                    return Err(Failure::error("the two passphrases differ; nothing was changed"));
                }
            }
            first
        }
    };
    if passphrase.is_empty() {
        return Err(Failure::error(format!(
            "the {} is empty; choose a long one",
            source.label.to_lowercase()
        )));
    }
    Ok(passphrase)
}

fn from_file_or_env(source: &Source<'_>) -> Result<Option<Passphrase>, Failure> {
    if let Some(path) = source.file {
        return read_file(path).map(Some);
    }
    match std::env::var(source.env) {
        Ok(value) => Ok(Some(Zeroizing::new(value))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure::error(format!("{} is not valid UTF-8", source.env)))
        }
    }
}

/// The file's content less one trailing newline (`\n` or `\r\n`).
fn read_file(path: &Path) -> Result<Passphrase, Failure> {
    let shown = quoted(&path.display().to_string());
    let unreadable =
        |e: std::io::Error| Failure::error(format!("cannot read the passphrase file {shown}: {e}"));
    let mut file = File::open(path).map_err(unreadable)?;
    let hint = file
        .metadata()
        .map_err(unreadable)?
        .len()
        .try_into()
        .unwrap_or(usize::MAX);
    let bytes = secret_buf::read_bounded(&mut file, MAX_FILE_BYTES, hint).map_err(|e| match e {
        ReadError::Io(e) => unreadable(e),
        ReadError::TooLarge => Failure::error(format!("the passphrase file {shown} is larger than 64 KiB")),
    })?;
    let mut text: &[u8] = bytes.as_bytes();
    if let Some(rest) = text.strip_suffix(b"\n") {
        text = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| Failure::error(format!("the passphrase file {shown} is not valid UTF-8")))?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn prompt(source: &Source<'_>, text: &str) -> Result<Passphrase, Failure> {
    if !(std::io::stdin().is_terminal() || std::io::stderr().is_terminal()) {
        return Err(Failure::usage(format!(
            "no {} given: use {}, set {}, or run on a terminal",
            source.label.to_lowercase(),
            source.file_flag,
            source.env
        )));
    }
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Failure::error(format!("cannot read the passphrase from the terminal: {e}")))
}
