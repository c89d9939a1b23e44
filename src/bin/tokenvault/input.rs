//! Tokens read as JSON for `save`: one object, or an array of them.
//!
//! Invariants: the input is bounded in size (256 MiB, and at most 1,000,000 tokens) and
//! held in a [`SecretBuf`]; it is parsed straight into tokens (no intermediate JSON tree
//! holding copies of secrets), one token at a time, so memory is the input plus one
//! token whatever it holds; the whole input is checked before any token is handed on; an error
//! message never repeats a value from the input (serde's "invalid type" messages would);
//! a token carrying the `[REDACTED]` placeholder as a secret, or with nothing to store, is
//! refused before anything is written.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer as _, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokenvault::{Field, FieldValue, OAuthToken};

use crate::failure::Failure;
use crate::limits::{grouped, MAX_ROWS, MAX_STDIN_BYTES};
use crate::output::REDACTED;
use crate::secret_buf::{self, ReadError, SecretBuf};

/// What `save` read, checked: the tokens are parsed again, one at a time, to be saved.
pub struct Tokens {
    bytes: SecretBuf,
    count: usize,
    array: bool,
}

impl Tokens {
    /// How many tokens there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether the input was an array (the output then is one too).
    pub fn array(&self) -> bool {
        self.array
    }

    /// Calls `each` with every token in input order (1-based position), one token alive
    /// at a time; stops at the first error `each` returns, and returns it.
    ///
    /// # Errors
    /// What `each` returned.
    pub fn for_each(
        &self,
        mut each: impl FnMut(usize, OAuthToken) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let stopped = RefCell::new(None);
        let mut visit = |i: usize, token: OAuthToken| match each(i, token) {
            Ok(()) => true,
            Err(f) => {
                stopped.borrow_mut().get_or_insert(f);
                false
            }
        };
        let parsed = parse_with(self.bytes.as_bytes(), &mut visit, self.count);
        if let Some(f) = stopped.into_inner() {
            return Err(f);
        }
        // The same bytes parsed cleanly when they were checked.
        parsed.map_err(json_failure)
    }
}

/// Reads and checks the tokens on stdin.
///
/// # Errors
/// Unreadable, oversized or malformed input, or a token that cannot be saved.
pub fn read_stdin() -> Result<Tokens, Failure> {
    let unreadable = |e: std::io::Error| Failure::error(format!("cannot read stdin: {e}"));
    let (mut stdin, hint) = secret_buf::stdin().map_err(unreadable)?;
    let bytes = secret_buf::read_bounded(&mut stdin, MAX_STDIN_BYTES, hint).map_err(|e| match e {
        ReadError::Io(e) => unreadable(e),
        ReadError::TooLarge => Failure::error("stdin holds more than 256 MiB; save fewer tokens at a time"),
    })?;
    check(bytes)
}

/// Checks tokens in three bounded passes, none of which holds more than one token: the
/// JSON syntax and the count (capped at [`MAX_ROWS`]); then each token's fields and
/// whether it can be saved. Nothing has been saved when an error is returned.
///
/// # Errors
/// As [`read_stdin`].
pub fn check(bytes: SecretBuf) -> Result<Tokens, Failure> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes.as_bytes());
    let shape = de
        .deserialize_any(Shape { too_many: &too_many })
        .and_then(|s| de.end().map(|()| s));
    if too_many.get() {
        return Err(Failure::error(format!(
            "stdin holds more than {max} tokens; save at most {max} at a time; nothing was saved",
            max = grouped(MAX_ROWS)
        )));
    }
    let (count, array) = match shape.map_err(json_failure)? {
        Counted::One => (1, false),
        Counted::Many(0) => {
            return Err(Failure::error(
                "stdin holds an empty array: there is nothing to save",
            ))
        }
        Counted::Many(n) => (n, true),
    };
    // A type error anywhere is reported before a token that cannot be saved, as one
    // parse of the whole input would.
    let problem = RefCell::new(None);
    let mut visit = |i: usize, token: OAuthToken| {
        if problem.borrow().is_none() {
            if let Err(f) = savable(&token, i, count, array) {
                *problem.borrow_mut() = Some(f);
            }
        }
        true
    };
    parse_with(bytes.as_bytes(), &mut visit, count).map_err(json_failure)?;
    if let Some(f) = problem.into_inner() {
        return Err(f);
    }
    Ok(Tokens { bytes, count, array })
}

/// Refuses a token with nothing to store or with the `[REDACTED]` placeholder as a secret.
fn savable(token: &OAuthToken, i: usize, count: usize, array: bool) -> Result<(), Failure> {
    let which = if array {
        format!("token {i} of {count}")
    } else {
        "the token".to_owned()
    };
    let present = |v: Option<&str>| v.is_some_and(|s| !s.is_empty());
    if !present(token.grant_token()) && !present(token.refresh_token()) && !present(token.access_token()) {
        return Err(Failure::error(format!(
            "{which} has no grant, refresh or access token; nothing was saved"
        )));
    }
    let placeholder = Field::ALL
        .into_iter()
        .find(|f| f.is_secret() && token.get(*f) == Some(FieldValue::Text(REDACTED)));
    if let Some(field) = placeholder {
        return Err(Failure::error(format!(
            "{which} has the placeholder {REDACTED} as its {} (export with --reveal to copy \
             secrets); nothing was saved",
            field.name()
        )));
    }
    Ok(())
}

/// Parses the tokens in `bytes` one at a time, handing each to `visit` (which returns
/// whether to go on) with its 1-based position; `count` is what the first pass counted.
fn parse_with(
    bytes: &[u8],
    visit: &mut dyn FnMut(usize, OAuthToken) -> bool,
    count: usize,
) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_any(Each { visit, count })?;
    de.end()
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

/// What the first pass found: one object, or an array of this many values.
enum Counted {
    One,
    Many(usize),
}

/// The first pass: syntax and the count, allocating nothing per value.
struct Shape<'a> {
    too_many: &'a Cell<bool>,
}

const EXPECTING: &str = "a token object or an array of token objects";

impl<'de> Visitor<'de> for Shape<'_> {
    type Value = Counted;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counted, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Counted::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            if n == MAX_ROWS {
                self.too_many.set(true);
                return Err(A::Error::custom("too many tokens"));
            }
            n += 1;
        }
        Ok(Counted::Many(n))
    }
}

/// The later passes: each token in turn, handed on and dropped.
struct Each<'a> {
    visit: &'a mut dyn FnMut(usize, OAuthToken) -> bool,
    count: usize,
}

impl<'de> Visitor<'de> for Each<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let token = OAuthToken::deserialize(MapAccessDeserializer::new(map))?;
        if (self.visit)(1, token) {
            Ok(())
        } else {
            Err(A::Error::custom("stopped"))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(token) = seq.next_element::<OAuthToken>()? {
            i += 1;
            if i > self.count {
                // The input changed since it was counted: it cannot, it is in memory.
                return Err(A::Error::custom("more tokens than counted"));
            }
            if !(self.visit)(i, token) {
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Tokens, Failure> {
        let mut bytes = SecretBuf::with_capacity(0);
        bytes.push(input);
        check(bytes)
    }

    fn tokens(checked: &Tokens) -> Vec<OAuthToken> {
        let mut out = Vec::new();
        checked
            .for_each(|i, t| {
                assert_eq!(i, out.len() + 1);
                out.push(t);
                Ok(())
            })
            .unwrap();
        out
    }

    fn message(input: &str) -> String {
        match parse(input.as_bytes()) {
            Ok(_) => panic!("accepted {input}"),
            Err(f) => f.to_string(),
        }
    }

    #[test]
    fn reads_an_object_or_an_array() {
        let one = parse(br#"{"user_name":"a","access_token":"t","expiry_time":5}"#).unwrap();
        assert!(!one.array());
        assert_eq!(one.count(), 1);
        assert_eq!(tokens(&one)[0].expiry_time(), Some(5));
        let many = parse(br#" [{"access_token":"t"}, {"refresh_token":"r","id":null}] "#).unwrap();
        assert!(many.array());
        assert_eq!(many.count(), 2);
        let got = tokens(&many);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].refresh_token(), Some("r"));
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
        let e = message(r#"["SECRET-string"]"#);
        assert!(e.contains("wrong type at line 1") && !e.contains("SECRET"), "{e}");
        assert!(message("[]").contains("nothing to save"));
        assert!(message(r#"{"user_name":"u"}"#).contains("no grant, refresh or access token"));
        assert!(message(r#"{"access_token":""}"#).contains("no grant, refresh or access token"));
        assert!(
            message(r#"[{"access_token":"t"},{"access_token":"t","client_secret":"[REDACTED]"}]"#)
                .contains("token 2 of 2 has the placeholder [REDACTED] as its client_secret")
        );
    }

    #[test]
    fn the_placeholder_is_refused_in_every_secret_field_and_only_there() {
        for field in Field::ALL.into_iter().filter(|f| *f != Field::ExpiryTime) {
            // A token that could be saved but for the placeholder.
            let other = if field == Field::AccessToken {
                "refresh_token"
            } else {
                "access_token"
            };
            let input = format!(r#"{{"{other}":"t","{}":"[REDACTED]"}}"#, field.name());
            match parse(input.as_bytes()) {
                Ok(_) => assert!(!field.is_secret(), "{field:?} accepted the placeholder"),
                Err(f) => {
                    let e = f.to_string();
                    assert!(field.is_secret(), "{field:?}: {e}");
                    assert!(
                        e.contains(&format!("placeholder [REDACTED] as its {} ", field.name())),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_type_error_anywhere_wins_over_a_token_that_cannot_be_saved() {
        let e = message(r#"[{"user_name":"u"},{"access_token":"t","expiry_time":"x"}]"#);
        assert!(e.contains("wrong type at line 1 column 56"), "{e}");
        let e = message(r#"[{"user_name":"u"},{"access_token":"t"}"#);
        assert!(e.starts_with("stdin is not valid JSON"), "{e}");
    }

    #[test]
    fn the_token_count_is_capped_before_any_token_is_built() {
        let at_cap = format!("[{}{{}}]", "{},".repeat(MAX_ROWS - 1));
        // At the cap, the count passes and the first token is what is wrong.
        assert_eq!(
            message(&at_cap),
            "token 1 of 1000000 has no grant, refresh or access token; nothing was saved"
        );
        let over = format!("[{}{{}}]", "{},".repeat(MAX_ROWS));
        assert_eq!(
            message(&over),
            "stdin holds more than 1,000,000 tokens; save at most 1,000,000 at a time; nothing was saved"
        );
    }

    #[test]
    fn for_each_stops_at_the_first_error_it_is_given() {
        let checked = parse(br#"[{"access_token":"a"},{"access_token":"b"},{"access_token":"c"}]"#).unwrap();
        let mut seen = Vec::new();
        let e = checked
            .for_each(|i, t| {
                seen.push(t.access_token().map(str::to_owned));
                if i == 2 {
                    Err(Failure::error("stop here"))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "stop here");
        assert_eq!(seen, [Some("a".to_owned()), Some("b".to_owned())]);
    }
}
