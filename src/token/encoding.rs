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
    use crate::{Field, FieldValue};

    /// bincode 2's standard varint of an unsigned integer, as docs/format.md names it.
    #[allow(clippy::cast_possible_truncation)] // each arm's range fits its cast
    fn varint(out: &mut Vec<u8>, n: u64) {
        match n {
            0..=250 => out.push(n as u8),
            251..=0xffff => {
                out.push(251);
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(252);
                out.extend_from_slice(&(n as u32).to_le_bytes());
            }
            _ => {
                out.push(253);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    /// The encoding of `fields` (each field in `Field::ALL`'s order, present or not) built
    /// from docs/format.md's words, not from the code under test.
    fn by_the_format(fields: &[Option<FieldValue<'_>>]) -> Vec<u8> {
        let mut out = Vec::new();
        for value in fields {
            match value {
                None => out.push(0),
                Some(FieldValue::Text(s)) => {
                    out.push(1);
                    varint(&mut out, s.len() as u64);
                    out.extend_from_slice(s.as_bytes());
                }
                Some(FieldValue::Millis(ms)) => {
                    out.push(1);
                    varint(&mut out, ((ms << 1) ^ (ms >> 63)) as u64);
                }
            }
        }
        out
    }

    /// Every pattern of present and absent fields, with values of several lengths (one
    /// past a one-byte length, one multi-byte character): encoded as the format says,
    /// decoded back to the same token, which reads back every field.
    #[test]
    fn every_pattern_of_fields_is_encoded_as_the_format_says_and_decodes_back() {
        let long = "x".repeat(300);
        let value = |i: usize| match i % 3 {
            0 => format!("v{i}"),
            1 => format!("{long}{i}"),
            _ => format!("\u{e9}t\u{e9}-{i}"),
        };
        for mask in 0..(1u32 << Field::ALL.len()) {
            let mut t = OAuthToken::default();
            let mut texts = Vec::new();
            for (i, field) in Field::ALL.into_iter().enumerate() {
                let text = (mask & (1 << i) != 0).then(|| value(i + mask as usize));
                match (field, &text) {
                    (Field::ExpiryTime, Some(_)) => {
                        t.set_expiry_time(Some(-1_700_000_000_000 - i64::from(mask)))
                    }
                    (Field::ExpiryTime, None) => {}
                    (_, text) => t.set_text(field, text.clone()).unwrap(),
                }
                texts.push(text);
            }
            let expected: Vec<Option<FieldValue<'_>>> = Field::ALL
                .into_iter()
                .zip(&texts)
                .map(|(field, text)| match field {
                    Field::ExpiryTime => t.expiry_time().map(FieldValue::Millis),
                    _ => text.as_deref().map(FieldValue::Text),
                })
                .collect();
            let bytes = encode_token(&t).unwrap();
            assert_eq!(bytes.as_slice(), by_the_format(&expected), "mask {mask:#b}");
            let back = decode_token(&bytes).unwrap();
            assert_eq!(back, t, "mask {mask:#b}");
            for (field, want) in Field::ALL.into_iter().zip(&expected) {
                assert_eq!(back.get(field), *want, "mask {mask:#b}, {field:?}");
            }
        }
    }

    /// A stored empty string (never written by this code, but well-formed) decodes as
    /// present and empty, and encodes back to the same bytes: one token, one encoding.
    #[test]
    fn a_stored_empty_string_decodes_and_encodes_back_unchanged() {
        let fields = [
            Some(FieldValue::Text("")),
            Some(FieldValue::Text("alice")),
            None,
            Some(FieldValue::Text("")),
            None,
            None,
            None,
            Some(FieldValue::Millis(7)),
            None,
            Some(FieldValue::Text("")),
        ];
        let bytes = by_the_format(&fields);
        let t = decode_token(&bytes).unwrap();
        assert_eq!(t.id(), Some(""));
        assert_eq!(t.user_name(), Some("alice"));
        assert_eq!(t.client_secret(), Some(""));
        assert_eq!(t.api_domain(), Some(""));
        assert_eq!(encode_token(&t).unwrap().as_slice(), bytes);
        let mut normalized = t.clone();
        normalized.normalize();
        assert_eq!(
            normalized,
            OAuthToken::default().with_user_name("alice").with_expiry_time(7)
        );
    }

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
