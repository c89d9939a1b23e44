//! The secret keys of `find` (access, grant and refresh token, client secret), from an
//! argument, from stdin (the value `-`) or from a file (`--…-file F`). An argument is
//! readable by other local users (`ps`, `/proc`) while the command runs and stays in the
//! shell's history; stdin and a file are not.
//!
//! Invariants: at most one key reads stdin (it holds one value); a value read is the
//! content less one trailing newline (`\n` or `\r\n`), at most [`MAX_FIELD_BYTES`], UTF-8
//! and not empty; it is read unbuffered into a [`SecretBuf`] and kept zeroized, so no
//! copy of it is left behind.

use std::fs::File;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::args::FindArgs;
use crate::failure::{quoted, Failure};
use crate::limits::{MAX_FIELD_BYTES, MAX_FIELD_TEXT};
use crate::secret_buf::{self, ReadError, SecretBuf};

/// The value that means "read it from stdin".
const STDIN: &str = "-";

/// A key's value, zeroized on drop.
pub type Secret = Zeroizing<String>;

/// The secret keys of one `find`, wherever they came from.
#[derive(Default)]
pub struct Keys {
    /// `--access-token`.
    pub access_token: Option<Secret>,
    /// `--grant-token`.
    pub grant_token: Option<Secret>,
    /// `--refresh-token`.
    pub refresh_token: Option<Secret>,
    /// `--client-secret`.
    pub client_secret: Option<Secret>,
}

/// One secret key's two forms.
struct Key<'a> {
    flag: &'static str,
    what: &'static str,
    arg: Option<&'a str>,
    file: Option<&'a Path>,
}

/// Reads the secret keys `args` names.
///
/// # Errors
/// A usage error (exit 2) if more than one key is `-` or a value read is empty; an
/// error if stdin or a file cannot be read, is over the cap or is not UTF-8.
pub fn read(args: &FindArgs) -> Result<Keys, Failure> {
    let keys = [
        key(
            "--access-token",
            "access token",
            &args.access_token,
            &args.access_token_file,
        ),
        key(
            "--grant-token",
            "grant token",
            &args.grant_token,
            &args.grant_token_file,
        ),
        key(
            "--refresh-token",
            "refresh token",
            &args.refresh_token,
            &args.refresh_token_file,
        ),
        key(
            "--client-secret",
            "client secret",
            &args.client_secret,
            &args.client_secret_file,
        ),
    ];
    let from_stdin: Vec<&'static str> = keys
        .iter()
        .filter(|k| k.arg == Some(STDIN))
        .map(|k| k.flag)
        .collect();
    if from_stdin.len() > 1 {
        let files: Vec<String> = from_stdin.iter().map(|f| format!("{f}-file")).collect();
        return Err(Failure::usage(format!(
            "{} {} read stdin (-), which holds one value; give all but one of them with {}",
            join(&from_stdin, "and"),
            if from_stdin.len() == 2 { "both" } else { "all" },
            join(&files, "or")
        )));
    }
    let [access, grant, refresh, secret] = keys;
    Ok(Keys {
        access_token: value(&access)?,
        grant_token: value(&grant)?,
        refresh_token: value(&refresh)?,
        client_secret: value(&secret)?,
    })
}

fn key<'a>(
    flag: &'static str,
    what: &'static str,
    arg: &'a Option<String>,
    file: &'a Option<PathBuf>,
) -> Key<'a> {
    Key {
        flag,
        what,
        arg: arg.as_deref(),
        file: file.as_deref(),
    }
}

/// "a", "a and b", "a, b and c".
fn join(items: &[impl AsRef<str>], last: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == items.len() { " " } else { ", " });
            if i + 1 == items.len() {
                out.push_str(last);
                out.push(' ');
            }
        }
        out.push_str(item.as_ref());
    }
    out
}

fn value(key: &Key<'_>) -> Result<Option<Secret>, Failure> {
    match (key.arg, key.file) {
        (Some(STDIN), _) => {
            let (mut stdin, hint) = secret_buf::stdin()
                .map_err(|e| Failure::error(format!("cannot read the {} from stdin: {e}", key.what)))?;
            read_value(key, &mut stdin, hint, "stdin".to_owned()).map(Some)
        }
        (Some(arg), _) => Ok(Some(Zeroizing::new(arg.to_owned()))),
        (None, Some(path)) => {
            let source = format!("the file {}", quoted(&path.display().to_string()));
            let unreadable = |e: std::io::Error| {
                Failure::error(format!("cannot read the {} from {source}: {e}", key.what))
            };
            let mut file = File::open(path).map_err(unreadable)?;
            let hint = file
                .metadata()
                .map_err(unreadable)?
                .len()
                .try_into()
                .unwrap_or(usize::MAX);
            read_value(key, &mut file, hint, source).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// The content of `reader` less one trailing newline.
fn read_value(key: &Key<'_>, reader: &mut File, hint: usize, source: String) -> Result<Secret, Failure> {
    // One byte more than the cap, for the newline that ends a line.
    let mut bytes = secret_buf::read_bounded(reader, MAX_FIELD_BYTES + 2, hint).map_err(|e| match e {
        ReadError::Io(e) => Failure::error(format!("cannot read the {} from {source}: {e}", key.what)),
        ReadError::TooLarge => Failure::error(format!(
            "the {} read from {source} is longer than {MAX_FIELD_TEXT}",
            key.what
        )),
    })?;
    strip_newline(&mut bytes);
    if bytes.len() > MAX_FIELD_BYTES {
        return Err(Failure::error(format!(
            "the {} read from {source} is longer than {MAX_FIELD_TEXT}",
            key.what
        )));
    }
    let text = bytes
        .into_text()
        .ok_or_else(|| Failure::error(format!("the {} read from {source} is not valid UTF-8", key.what)))?;
    if text.is_empty() {
        return Err(Failure::usage(format!(
            "the {} read from {source} is empty",
            key.what
        )));
    }
    Ok(text)
}

/// Drops one trailing `\n` or `\r\n`.
fn strip_newline(bytes: &mut SecretBuf) {
    let content = bytes.as_bytes();
    let cut = if content.ends_with(b"\r\n") {
        2
    } else if content.ends_with(b"\n") {
        1
    } else {
        0
    };
    bytes.truncate(content.len() - cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(join(&["a"], "and"), "a");
        assert_eq!(join(&["a", "b"], "and"), "a and b");
        assert_eq!(join(&["a", "b", "c"], "or"), "a, b or c");
    }

    #[test]
    fn one_trailing_newline_goes() {
        for (input, kept) in [
            (&b"tok\n"[..], &b"tok"[..]),
            (b"tok\r\n", b"tok"),
            (b"tok", b"tok"),
            (b"tok\n\n", b"tok\n"),
            (b"a\r\nb\r\n", b"a\r\nb"),
            (b"\n", b""),
            (b"", b""),
        ] {
            let mut buf = SecretBuf::with_capacity(0);
            buf.push(input);
            strip_newline(&mut buf);
            assert_eq!(buf.as_bytes(), kept);
        }
    }
}
