//! Entry points for the fuzz targets in `fuzz/`, compiled only under `cfg(fuzzing)`
//! (cargo-fuzz sets it). They expose the parsers of untrusted bytes with fixed keys, so a
//! fuzzer can reach them without a vault on disk. Not part of the public API.

use crate::crypto::header::Header;
use crate::crypto::keys::{DataKey, VaultKeys};
use crate::crypto::seal;
use crate::{Error, OAuthToken};

/// The fixed record keys the record targets use.
fn fixed_keys() -> VaultKeys {
    VaultKeys::derive(DataKey(zeroize::Zeroizing::new([7u8; 32])), [9u8; 16], 1)
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
    seal::decode_token(&plain)
}

/// Seals a token for `FIXED_SLOT` under the fixed keys (to build seed corpora).
pub fn seal_record(token: &OAuthToken) -> Result<Vec<u8>, Error> {
    let keys = fixed_keys();
    let plain = seal::encode_token(token)?;
    seal::seal_record(&keys, "tokens", &FIXED_SLOT, 1, [1u8; 12], &plain)
}

/// Decodes decrypted record bytes into a token (bounded, strict); a token that decodes
/// must re-encode to the same bytes.
pub fn decode_token(bytes: &[u8]) -> Result<OAuthToken, Error> {
    let token = seal::decode_token(bytes)?;
    Ok(token)
}

/// Encodes a token as a record's plaintext (to build seed corpora).
pub fn encode_token(token: &OAuthToken) -> Result<Vec<u8>, Error> {
    Ok(seal::encode_token(token)?.to_vec())
}
