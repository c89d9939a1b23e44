//! Bytes as `tokenvault save`'s stdin: one token object or an array of them, checked in
//! bounded passes before anything is saved (an input may repeat parts of itself past the
//! 1,000,000-token cap: see `expand`); and the bounded read of stdin itself, with a cap
//! at the input's length.
//!
//! Protects against, beyond a panic:
//! - an input accepted or refused against serde's own reading of it (the tokens parsed
//!   in one go, as `OAuthToken` or `Vec<OAuthToken>`): what is accepted is exactly those
//!   tokens, in order; what is refused is invalid JSON, an empty array, or a token with
//!   nothing to store or with the `[REDACTED]` placeholder as a secret, and the message
//!   names that token and why;
//! - a token saved with the placeholder, or with nothing to store;
//! - memory that is not the input plus one token: the Rust heap `save`'s checks hold at
//!   once is at most four times the input plus 1 MiB (and libFuzzer's `-rss_limit_mb`,
//!   set by fuzz/run.sh, bounds the process);
//! - a bounded read that loses or keeps bytes, or lets one byte past its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::OAuthToken;
use tokenvault_fuzz::cli::{self, MAX_ROWS, REDACTED};
use tokenvault_fuzz::expand::expand;
use tokenvault_fuzz::peak::{self, PeakAlloc};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Inputs up to this size are also parsed in one go by serde (the reference).
const MAX_REFERENCE_BYTES: usize = 1 << 20;

/// Why `save` must refuse a token, if it must.
fn unsavable(token: &OAuthToken) -> Option<&'static str> {
    let present = |v: Option<&str>| v.is_some_and(|s| !s.is_empty());
    if !present(token.grant_token()) && !present(token.refresh_token()) && !present(token.access_token()) {
        return Some("has no grant, refresh or access token");
    }
    let secrets = [
        token.client_secret(),
        token.refresh_token(),
        token.access_token(),
        token.grant_token(),
    ];
    secrets
        .contains(&Some(REDACTED))
        .then_some("has the placeholder [REDACTED]")
}

/// serde's reading of the whole input: the tokens, and whether they came as an array
/// (a derived struct also reads from an array of its fields, so the first byte decides).
fn reference(bytes: &[u8]) -> Option<(Vec<OAuthToken>, bool)> {
    let array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if array {
        serde_json::from_slice::<Vec<OAuthToken>>(bytes)
            .ok()
            .map(|tokens| (tokens, true))
    } else {
        serde_json::from_slice::<OAuthToken>(bytes)
            .ok()
            .map(|token| (vec![token], false))
    }
}

fuzz_target!(|data: &[u8]| {
    // The bounded read: everything at a cap of the input's length, nothing at one less.
    let step = data.last().map_or(1, |&b| usize::from(b) + 1);
    let hint = data.first().map_or(0, |&b| usize::from(b) * 64);
    assert_eq!(
        cli::read_bounded(data, step, data.len(), hint).as_deref(),
        Some(data),
        "a read under its cap lost or changed bytes"
    );
    if let Some(under) = data.len().checked_sub(1) {
        assert!(
            cli::read_bounded(data, step, under, hint).is_none(),
            "a read went past its cap"
        );
    }

    let bytes = expand(data);
    let (checked, held) = peak::measure(|| cli::save_json(&bytes));
    // The input (copied into a buffer), one token, and serde's scratch for a string with
    // escapes.
    let bound = 4 * bytes.len() + (1 << 20);
    assert!(
        held <= bound,
        "checking {} bytes held {held} bytes at once (bound {bound})",
        bytes.len()
    );

    // The tokens handed on (kept for the comparison below only from small inputs).
    let mut got = Vec::new();
    if let Ok(tokens) = &checked {
        assert!(tokens.count() >= 1 && tokens.count() <= MAX_ROWS);
        let mut handed = 0;
        tokens
            .for_each(|i, token| {
                handed += 1;
                assert_eq!(i, handed, "tokens handed on out of order");
                assert_eq!(unsavable(&token), None, "token {i} would be saved");
                if bytes.len() <= MAX_REFERENCE_BYTES {
                    got.push(token);
                }
                Ok(())
            })
            .unwrap_or_else(|f| panic!("checked tokens could not be read again: {f}"));
        assert_eq!(handed, tokens.count(), "tokens handed on vs tokens counted");
    }
    if bytes.len() > MAX_REFERENCE_BYTES {
        if let Err(f) = &checked {
            assert!(f.to_string().starts_with("stdin ") || f.to_string().contains("nothing was saved"));
        }
        return;
    }
    match (checked, reference(&bytes)) {
        (Ok(tokens), Some((want, array))) => {
            assert_eq!(
                tokens.array(),
                array,
                "an array read as an object, or the reverse"
            );
            assert!(got == want, "the tokens read are not serde's");
        }
        (Ok(_), None) => panic!("input serde refuses was accepted"),
        (Err(f), None) => {
            let m = f.to_string();
            assert!(
                m.starts_with("stdin is not valid JSON") || m.starts_with("stdin does not hold valid tokens"),
                "{m}"
            );
        }
        (Err(f), Some((want, array))) => {
            let m = f.to_string();
            if array && want.is_empty() {
                assert!(m.contains("empty array"), "{m}");
                return;
            }
            let (i, why) = want
                .iter()
                .enumerate()
                .find_map(|(i, t)| unsavable(t).map(|why| (i + 1, why)))
                .unwrap_or_else(|| panic!("tokens serde reads were refused: {m}"));
            let which = if array {
                format!("token {i} of {}", want.len())
            } else {
                "the token".to_owned()
            };
            assert!(
                m.starts_with(&format!("{which} {why}")) && m.ends_with("nothing was saved"),
                "{m}"
            );
        }
    }
});
