//! The token's storage encoding: the plaintext a record seals.
//!
//! bincode 2 (`config::standard()`) of the token's serde form, as docs/format.md specifies
//! it byte by byte.
//!
//! Invariants: an encoding is at most [`MAX_ENCODED_LEN`] bytes, written into one buffer of
//! its exact size that is zeroized on drop; decoding is bounded by the same limit (a
//! declared length is never allocated beyond it) and rejects trailing bytes, so one token
//! has one encoding.

use zeroize::Zeroizing;

use crate::{Error, OAuthToken};

/// The largest encoded token a record may hold (16 MiB).
pub(crate) const MAX_ENCODED_LEN: usize = 16 * 1024 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_ENCODED_LEN>()
}

/// Encodes a token for sealing, into one buffer of the exact size that is zeroized on
/// drop: a growing buffer would leave copies of the secrets wherever it reallocated.
///
/// # Errors
/// `InvalidToken` if the encoding exceeds [`MAX_ENCODED_LEN`].
pub(crate) fn encode_token(token: &OAuthToken) -> Result<Zeroizing<Vec<u8>>, Error> {
    let unencodable = || Error::InvalidToken {
        reason: "the token could not be encoded",
    };
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(token, &mut size, bincode_config()).map_err(|_| unencodable())?;
    if size.bytes_written > MAX_ENCODED_LEN {
        return Err(Error::InvalidToken {
            reason: "the token is larger than 16 MiB",
        });
    }
    let mut bytes = Zeroizing::new(vec![0u8; size.bytes_written]);
    let written = bincode::serde::encode_into_slice(token, bytes.as_mut_slice(), bincode_config())
        .map_err(|_| unencodable())?;
    if written != bytes.len() {
        return Err(unencodable());
    }
    Ok(bytes)
}

/// Decodes a token from opened record bytes: bounded, no trailing bytes.
///
/// # Errors
/// `Corrupted` on any malformed input.
pub(crate) fn decode_token(bytes: &[u8]) -> Result<OAuthToken, Error> {
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(Error::corrupted("record: too large"));
    }
    let (token, used): (OAuthToken, usize) = bincode::serde::decode_from_slice(bytes, bincode_config())
        .map_err(|_| Error::corrupted("record: undecodable token"))?;
    if used != bytes.len() {
        return Err(Error::corrupted("record: trailing bytes"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_decoding_is_bounded_and_strict() {
        let t = OAuthToken::default().with_user_name("u").with_access_token("a");
        let bytes = encode_token(&t).unwrap();
        assert_eq!(decode_token(&bytes).unwrap(), t);
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(decode_token(&trailing).is_err());
        // A huge declared string length must be refused, not allocated.
        let hostile = [1u8, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode_token(&hostile).is_err());
    }
}
