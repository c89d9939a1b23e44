//! Bytes as the SDK file store's CSV through `tokenvault import`'s reading: the strict
//! reader, the header-to-column mapping, the row-to-token mapping and the row, record and
//! field caps (an input may repeat parts of itself past them: see `expand`).
//!
//! Protects against, beyond a panic:
//! - memory that is not the file plus one record: the Rust heap the import holds at once
//!   is at most twice the file plus 1 MiB, however many rows (and libFuzzer's
//!   `-rss_limit_mb`, set by fuzz/run.sh, bounds the process);
//! - a row reported on the wrong line: every row, accepted or rejected, names the line its
//!   record starts on (found here by a separate scan); a file refused for its form names a
//!   line of the file;
//! - the two passes disagreeing: the rows handed on are as many as were counted;
//! - an accepted file that does not round-trip: its accepted tokens written back as the
//!   SDK's CSV import again, every row accepted, to the same tokens in the same order
//!   (checked for files of up to 100,000 rows: past that it is the same per-row work, at
//!   seconds an input).
//!
//! A file that starts with the SQLite magic is read as SQLite (import_sqlite's concern): it
//! must only end in a clean result.
#![no_main]

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tokenvault::OAuthToken;
use tokenvault_fuzz::cli::{self, Location, Store};
use tokenvault_fuzz::peak::{self, PeakAlloc};
use tokenvault_fuzz::{expand::expand, process_dir, sdk_csv};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn file(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| process_dir("import_csv")).join(name)
}

/// Feeds a token's fields, absent ones told apart from present ones, to `digest` (without
/// a copy: the import's memory is measured with the digest running).
fn digest_token(digest: &mut Sha256, token: &OAuthToken) {
    let expiry = token.expiry_time().map(i64::to_le_bytes);
    let fields = [
        token.id().map(str::as_bytes),
        token.user_name().map(str::as_bytes),
        token.client_id().map(str::as_bytes),
        token.client_secret().map(str::as_bytes),
        token.refresh_token().map(str::as_bytes),
        token.access_token().map(str::as_bytes),
        token.grant_token().map(str::as_bytes),
        expiry.as_ref().map(|e| &e[..]),
        token.redirect_url().map(str::as_bytes),
        token.api_domain().map(str::as_bytes),
    ];
    for field in fields {
        match field {
            None => digest.update([0]),
            Some(bytes) => {
                digest.update([1]);
                digest.update((bytes.len() as u64).to_le_bytes());
                digest.update(bytes);
            }
        }
    }
}

/// What one pass over the rows saw: where each row is, whether it was accepted, and a
/// digest of the accepted tokens.
struct Pass {
    at: Vec<(Location, bool)>,
    accepted: usize,
    digest: [u8; 32],
}

/// Reads every row, holding none of them; `export` gets each accepted token.
fn pass(store: &Store, mut export: impl FnMut(&OAuthToken)) -> Pass {
    let mut at = Vec::with_capacity(store.rows());
    let mut digest = Sha256::new();
    let mut accepted = 0;
    store
        .for_each_row(|row| {
            at.push((row.at, row.token.is_ok()));
            match &row.token {
                Ok(token) => {
                    accepted += 1;
                    digest_token(&mut digest, token);
                    export(token);
                }
                Err(why) => assert!(!why.is_empty(), "a row rejected without a reason"),
            }
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|f| panic!("a checked CSV could not be read again: {f}"));
    Pass {
        at,
        accepted,
        digest: digest.finalize().into(),
    }
}

/// The number of lines of `bytes` (the last one may lack its line feed).
fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

/// A file refused as a whole: the message says where, and that nothing was imported.
fn check_refusal(bytes: &[u8], message: &str) {
    assert!(!message.contains('\n'), "a message on two lines: {message}");
    // The header is line 1, and the messages about it say so in words.
    let about_the_header = ["the file is empty", "its first line", "the CSV header"]
        .iter()
        .any(|p| message.contains(p));
    if about_the_header {
        return;
    }
    assert!(
        message.ends_with("nothing was imported"),
        "a refusal that does not say nothing was imported: {message}"
    );
    let line = message
        .split("line ")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .unwrap_or_else(|| panic!("a refused CSV whose message names no line: {message}"));
    assert!(
        (1..=line_count(bytes)).contains(&line),
        "a refusal names line {line} of a {}-line file: {message}",
        line_count(bytes)
    );
}

/// Files with more rows than this are not written back (see the module's doc).
const MAX_ROUND_TRIP_ROWS: usize = 100_000;

fn import(path: &Path, bytes: &[u8]) -> (Result<Store, cli::Failure>, Option<Pass>, usize) {
    fs::write(path, bytes).expect("write the CSV file");
    let ((store, first), held) = peak::measure(|| {
        let store = cli::import(path);
        let first = store.as_ref().ok().map(|s| pass(s, |_| {}));
        (store, first)
    });
    (store, first, held)
}

fuzz_target!(|data: &[u8]| {
    let bytes = expand(data);
    let path = file("sdk_tokens.txt");
    let (store, first, held) = import(&path, &bytes);
    // The file (read once, into one buffer), one record's fields and one token; the
    // pass's list of row positions is the harness's own.
    let rows_listed = first
        .as_ref()
        .map_or(0, |p| p.at.capacity() * std::mem::size_of::<(Location, bool)>());
    let bound = 2 * bytes.len() + rows_listed + (1 << 20);
    assert!(
        held <= bound,
        "importing a {}-byte CSV held {held} bytes at once (bound {bound})",
        bytes.len()
    );
    if bytes.starts_with(b"SQLite format 3\0") {
        if let Err(f) = store {
            assert!(!f.to_string().contains('\n'), "a message on two lines: {f}");
        }
        return;
    }
    let store = match store {
        Ok(store) => store,
        Err(f) => return check_refusal(&bytes, &f.to_string()),
    };
    let first = first.expect("a pass over an accepted file");
    assert_eq!(first.at.len(), store.rows(), "rows handed on vs rows counted");

    // Every row names the line its record starts on (the header's is the first).
    let lines = sdk_csv::record_lines(&bytes);
    assert_eq!(lines.len(), store.rows() + 1, "records found by the scan vs rows");
    for ((at, _), line) in first.at.iter().zip(&lines[1..]) {
        assert_eq!(*at, Location::Line(*line), "a row names the wrong line");
    }

    // The accepted tokens, written back, import again to the same tokens.
    if store.rows() > MAX_ROUND_TRIP_ROWS {
        return;
    }
    let mut exported = sdk_csv::header();
    let second = pass(&store, |t| sdk_csv::write_token(&mut exported, t));
    assert_eq!(second.at, first.at, "a second pass saw other rows");
    assert_eq!(second.digest, first.digest, "a second pass saw other tokens");
    drop(store);
    let again = file("exported.txt");
    let (store, third, _) = import(&again, &exported);
    let store = store.unwrap_or_else(|f| panic!("the accepted tokens, written back, are refused: {f}"));
    let third = third.expect("a pass over an accepted file");
    assert_eq!(
        store.rows(),
        first.accepted,
        "rows written back vs rows read again"
    );
    assert_eq!(third.accepted, first.accepted, "a token written back is rejected");
    assert_eq!(
        third.digest, first.digest,
        "tokens written back read as other tokens"
    );
});
