//! Entry points for the fuzz targets in `fuzz/`, compiled only under `cfg(fuzzing)`
//! (cargo-fuzz sets it). They expose the parsers of untrusted bytes with fixed keys, so a
//! fuzzer can reach them without a vault on disk. Not part of the public API.

use crate::crypto::header::Header;
use crate::crypto::keys::{DataKey, VaultKeys};
use crate::crypto::seal;
use crate::token::encoding;
use crate::{Error, OAuthToken};

/// The fixed record keys the record targets use.
fn fixed_keys() -> VaultKeys {
    VaultKeys::derive(
        DataKey::from_bytes(zeroize::Zeroizing::new([7u8; 32])),
        [9u8; 16],
        1,
        crate::store::Index::ALL.map(crate::store::Index::key_label),
    )
}

/// The slot the record targets open records from.
pub const FIXED_SLOT: [u8; 32] = [5u8; 32];

/// Parses header bytes as read from `meta`; a header that parses must re-encode to the
/// same bytes.
pub fn parse_header(bytes: &[u8]) -> Result<(), Error> {
    let header = Header::parse(bytes)?;
    assert_eq!(
        header.encode(),
        bytes,
        "a parsed header must re-encode to its bytes"
    );
    Ok(())
}

/// Opens record bytes as read from `tokens[FIXED_SLOT]` under the fixed keys.
pub fn open_record(bytes: &[u8]) -> Result<OAuthToken, Error> {
    let keys = fixed_keys();
    let plain = seal::open_record(&keys, "tokens", &FIXED_SLOT, bytes)?;
    encoding::decode_token(&plain)
}

/// Seals a token for `FIXED_SLOT` under the fixed keys (to build seed corpora).
pub fn seal_record(token: &OAuthToken) -> Result<Vec<u8>, Error> {
    let keys = fixed_keys();
    let plain = encoding::encode_token(token)?;
    seal::seal_record(&keys, "tokens", &FIXED_SLOT, 1, [1u8; 12], &plain)
}

/// Decodes decrypted record bytes into a token (bounded, strict); a token that decodes
/// must re-encode to the same bytes.
pub fn decode_token(bytes: &[u8]) -> Result<OAuthToken, Error> {
    let token = encoding::decode_token(bytes)?;
    Ok(token)
}

/// Encodes a token as a record's plaintext (to build seed corpora).
pub fn encode_token(token: &OAuthToken) -> Result<Vec<u8>, Error> {
    Ok(encoding::encode_token(token)?.to_vec())
}

/// Parses a generation pointer (`CURRENT`); a pointer that parses must be exactly the bytes
/// written for its number.
pub fn parse_generation_pointer(bytes: &[u8]) -> Result<u64, Error> {
    let n = crate::vault::fuzz_hooks::parse_pointer(bytes)?;
    assert_eq!(
        crate::vault::fuzz_hooks::encode_pointer(n),
        bytes,
        "a parsed pointer must re-encode to its bytes"
    );
    Ok(n)
}

/// The bytes of a pointer to generation `n` (to build seed corpora).
pub fn encode_pointer(n: u64) -> Vec<u8> {
    crate::vault::fuzz_hooks::encode_pointer(n)
}

/// Parses a quarantine entry (as read from the `quarantine` tree) and opens its label
/// under the fixed keys; `None` if it does not parse.
pub fn parse_quarantine_entry(key: &[u8], value: &[u8]) -> Option<Option<String>> {
    crate::vault::fuzz_hooks::parse_quarantine(&fixed_keys(), key, value)
}

/// A quarantine entry for `FIXED_SLOT` under the fixed keys, as the first byte (the key's
/// length), the key and the value (the input format of the `quarantine_entry` target).
pub fn encode_quarantine_entry(id: Option<&str>, record: &[u8]) -> Vec<u8> {
    let (key, value) = crate::vault::fuzz_hooks::quarantine_entry(&fixed_keys(), &FIXED_SLOT, id, record)
        .expect("sealing a label"); // ok: seed building only, with fixed keys and a short id
    let mut out = vec![u8::try_from(key.len()).unwrap_or(u8::MAX)];
    out.extend_from_slice(&key);
    out.extend_from_slice(&value);
    out
}
