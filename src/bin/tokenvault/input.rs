//! Tokens read as JSON for `save`: one object, or an array of them.
//!
//! Invariants: the input is bounded in size and held in a [`SecretBuf`] (no copy left
//! behind as it grows); it is parsed
//! straight into tokens (no intermediate JSON tree holding copies of secrets); an error
//! message never repeats a value from the input (serde's "invalid type" messages would);
//! a token carrying the `[REDACTED]` placeholder as a secret, or with nothing to store, is
//! refused before anything is written.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokenvault::OAuthToken;

use crate::failure::Failure;
use crate::output::REDACTED;
use crate::secret_buf::{self, ReadError};

/// More than this on stdin is not a batch of tokens.
const MAX_INPUT_BYTES: usize = 256 * 1024 * 1024;

/// What `save` read: the tokens, and whether they came as an array.
pub struct Tokens {
    /// The tokens, in input order.
    pub tokens: Vec<OAuthToken>,
    /// Whether the input was an array (the output then is one too).
    pub array: bool,
}

/// Reads and checks the tokens on stdin.
///
/// # Errors
/// Unreadable, oversized or malformed input, or a token that cannot be saved.
pub fn read_stdin() -> Result<Tokens, Failure> {
    let unreadable = |e: std::io::Error| Failure::error(format!("cannot read stdin: {e}"));
    let (mut stdin, hint) = secret_buf::stdin().map_err(unreadable)?;
    let bytes = secret_buf::read_bounded(&mut stdin, MAX_INPUT_BYTES, hint).map_err(|e| match e {
        ReadError::Io(e) => unreadable(e),
        ReadError::TooLarge => Failure::error("stdin holds more than 256 MiB; save fewer tokens at a time"),
    })?;
    parse(bytes.as_bytes())
}

/// Parses and checks tokens.
///
/// # Errors
/// As [`read_stdin`].
pub fn parse(bytes: &[u8]) -> Result<Tokens, Failure> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de
        .deserialize_any(OneOrMany)
        .and_then(|t| de.end().map(|()| t))
        .map_err(json_failure)?;
    let (tokens, array) = match parsed {
        Parsed::One(t) => (vec![*t], false),
        Parsed::Many(ts) => (ts, true),
    };
    if tokens.is_empty() {
        return Err(Failure::error(
            "stdin holds an empty array: there is nothing to save",
        ));
    }
    for (i, token) in tokens.iter().enumerate() {
        let which = if array {
            format!("token {} of {}", i + 1, tokens.len())
        } else {
            "the token".to_owned()
        };
        let present = |v: Option<&str>| v.is_some_and(|s| !s.is_empty());
        if !present(token.grant_token()) && !present(token.refresh_token()) && !present(token.access_token())
        {
            return Err(Failure::error(format!(
                "{which} has no grant, refresh or access token; nothing was saved"
            )));
        }
        let secrets = [
            ("client_secret", token.client_secret()),
            ("refresh_token", token.refresh_token()),
            ("access_token", token.access_token()),
            ("grant_token", token.grant_token()),
        ];
        if let Some((field, _)) = secrets.iter().find(|(_, v)| *v == Some(REDACTED)) {
            return Err(Failure::error(format!(
                "{which} has the placeholder {REDACTED} as its {field} (export with --reveal to copy \
                 secrets); nothing was saved"
            )));
        }
    }
    Ok(Tokens { tokens, array })
}

/// A JSON error as one sentence that quotes no input value.
fn json_failure(e: serde_json::Error) -> Failure {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => Failure::error(format!("cannot read stdin: {e}")),
        Category::Syntax | Category::Eof => Failure::error(format!("stdin is not valid JSON: {e}")),
        Category::Data => {
            let text = e.to_string();
            // These name a field, never a value.
            if ["unknown field", "duplicate field", "missing field"]
                .iter()
                .any(|p| text.starts_with(p))
            {
                Failure::error(format!("stdin does not hold valid tokens: {text}"))
            } else {
                Failure::error(format!(
                    "stdin does not hold valid tokens: a value has the wrong type at {at} (expected a \
                     token object or an array of them, with a number for expiry_time and a string or \
                     null for every other field)"
                ))
            }
        }
    }
}

enum Parsed {
    One(Box<OAuthToken>),
    Many(Vec<OAuthToken>),
}

struct OneOrMany;

impl<'de> Visitor<'de> for OneOrMany {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token object or an array of token objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Parsed, A::Error> {
        OAuthToken::deserialize(MapAccessDeserializer::new(map)).map(|t| Parsed::One(Box::new(t)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Parsed, A::Error> {
        Vec::<OAuthToken>::deserialize(SeqAccessDeserializer::new(seq)).map(Parsed::Many)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(input: &str) -> String {
        match parse(input.as_bytes()) {
            Ok(_) => panic!("accepted {input}"),
            Err(f) => f.to_string(),
        }
    }

    #[test]
    fn reads_an_object_or_an_array() {
        let one = parse(br#"{"user_name":"a","access_token":"t","expiry_time":5}"#).unwrap();
        assert!(!one.array);
        assert_eq!(one.tokens[0].expiry_time(), Some(5));
        let many = parse(br#" [{"access_token":"t"}, {"refresh_token":"r","id":null}] "#).unwrap();
        assert!(many.array);
        assert_eq!(many.tokens.len(), 2);
    }

    #[test]
    fn errors_name_fields_but_never_values() {
        assert!(message("{").starts_with("stdin is not valid JSON"));
        assert!(message(r#"{"access_token":"t"} x"#).starts_with("stdin is not valid JSON"));
        assert!(message(r#"{"user":"u"}"#).contains("unknown field `user`"));
        let e = message(r#"{"access_token":"t","expiry_time":"SECRET-value"}"#);
        assert!(e.contains("wrong type at line 1") && !e.contains("SECRET"), "{e}");
        let e = message(r#""SECRET-string""#);
        assert!(!e.contains("SECRET"), "{e}");
        assert!(message("[]").contains("nothing to save"));
        assert!(message(r#"{"user_name":"u"}"#).contains("no grant, refresh or access token"));
        assert!(message(r#"{"access_token":""}"#).contains("no grant, refresh or access token"));
        assert!(
            message(r#"[{"access_token":"t"},{"access_token":"t","client_secret":"[REDACTED]"}]"#)
                .contains("token 2 of 2 has the placeholder [REDACTED] as its client_secret")
        );
    }
}
