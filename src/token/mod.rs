//! `OAuthToken`: the SDK's token, every field optional.
//!
//! Invariants: the fields that [`Field::is_secret`] names never appear in `Debug` output,
//! and every field is zeroized when the token is dropped. An empty string given to a
//! builder or setter is stored as absent (`None`). The fields are listed once, in
//! [`field`]; the serde form's names are [`Field::name`]s (a unit test holds them
//! together). How a token is stored is [`encoding`].
//!
//! In memory, a token's text fields share one buffer of exactly their length (with where
//! each ends, and which are present): one allocation per token instead of one per field.
//! Measured with the peers bench on redb at 100,000 tokens (alternating builds, three runs
//! each): `get_tokens` 306k-365k tokens/s against 202k-241k, and 100-104 MiB resident
//! after it against 122-123. Setting a field copies the token's text into a new buffer
//! and zeroizes the old one and the string given; a token built from many values at once
//! (an importer's row) is built by [`OAuthToken::from_text_pieces`], which copies each
//! value once.

pub(crate) mod encoding;
mod field;

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use field::{Field, FieldValue};

use crate::Error;

/// An OAuth token as the Zoho CRM SDKs persist it: every field optional.
///
/// ```
/// use tokenvault::OAuthToken;
///
/// let t = OAuthToken::default()
///     .with_user_name("alice@example.com")
///     .with_client_id("1000.ABC")
///     .with_refresh_token("1000.refresh")
///     .with_expiry_time(1_764_000_000_000);
/// assert_eq!(t.user_name(), Some("alice@example.com"));
/// assert_eq!(t.access_token(), None);
/// // Debug never shows a secret.
/// assert!(!format!("{t:?}").contains("1000.refresh"));
/// ```
///
/// The serde form (used for JSON by the command line) carries the secrets in the clear,
/// deliberately: serialize a token only where its secrets belong.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OAuthToken {
    /// Every present text field's value, one after another in slot order ([`slot`]): one
    /// allocation of exactly this length, so a token is one block to allocate, copy and
    /// wipe (a vault of 100,000 tokens read whole holds 100,000 of them at once).
    text: String,
    /// Where each text field's value ends in `text`; it starts where the previous one ends.
    ends: [usize; TEXT_COUNT],
    /// Bit `i`: text field `i` is present. An absent field is empty in `text`; a present
    /// one may be empty too (a deserialized `""`, until [`normalize`](Self::normalize)).
    present: u16,
    expiry_time: Option<i64>,
}

const TEXT_COUNT: usize = 9;

/// The slot of a text field in [`OAuthToken::text`] (the fields in [`Field::ALL`]'s
/// order, less the expiry); `None` for the expiry, the one field that is not text.
const fn slot(field: Field) -> Option<usize> {
    match field {
        Field::Id => Some(0),
        Field::UserName => Some(1),
        Field::ClientId => Some(2),
        Field::ClientSecret => Some(3),
        Field::RefreshToken => Some(4),
        Field::AccessToken => Some(5),
        Field::GrantToken => Some(6),
        Field::ExpiryTime => None,
        Field::RedirectUrl => Some(7),
        Field::ApiDomain => Some(8),
    }
}

/// An empty string is absent.
fn present(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

macro_rules! string_field {
    ($field:ident, $with:ident, $set:ident, $which:expr, $what:literal) => {
        #[doc = concat!("Returns the ", $what, ", if present.")]
        pub fn $field(&self) -> Option<&str> {
            slot($which).and_then(|i| self.text_at(i))
        }

        #[doc = concat!("Sets the ", $what, " (an empty string means absent).")]
        #[must_use]
        pub fn $with(mut self, value: impl Into<String>) -> Self {
            self.$set(Some(value));
            self
        }

        #[doc = concat!("Sets or clears the ", $what, " (an empty string means absent).")]
        pub fn $set(&mut self, value: Option<impl Into<String>>) {
            if let Some(i) = slot($which) {
                self.put(i, value.map(Into::into));
            }
        }
    };
}

impl OAuthToken {
    string_field!(id, with_id, set_id, Field::Id, "store-assigned id");
    string_field!(
        user_name,
        with_user_name,
        set_user_name,
        Field::UserName,
        "user name (the SDK's user signature)"
    );
    string_field!(
        client_id,
        with_client_id,
        set_client_id,
        Field::ClientId,
        "OAuth client id"
    );
    string_field!(
        client_secret,
        with_client_secret,
        set_client_secret,
        Field::ClientSecret,
        "OAuth client secret (a secret)"
    );
    string_field!(
        grant_token,
        with_grant_token,
        set_grant_token,
        Field::GrantToken,
        "grant token (a secret)"
    );
    string_field!(
        refresh_token,
        with_refresh_token,
        set_refresh_token,
        Field::RefreshToken,
        "refresh token (a secret)"
    );
    string_field!(
        access_token,
        with_access_token,
        set_access_token,
        Field::AccessToken,
        "access token (a secret)"
    );
    string_field!(
        redirect_url,
        with_redirect_url,
        set_redirect_url,
        Field::RedirectUrl,
        "redirect URL"
    );
    string_field!(
        api_domain,
        with_api_domain,
        set_api_domain,
        Field::ApiDomain,
        "API domain"
    );

    /// Returns the access token's expiry, in milliseconds since the Unix epoch.
    pub fn expiry_time(&self) -> Option<i64> {
        self.expiry_time
    }

    /// Sets the access token's expiry, in milliseconds since the Unix epoch.
    #[must_use]
    pub fn with_expiry_time(mut self, ms: i64) -> Self {
        self.expiry_time = Some(ms);
        self
    }

    /// Sets or clears the access token's expiry (milliseconds since the Unix epoch).
    pub fn set_expiry_time(&mut self, ms: Option<i64>) {
        self.expiry_time = ms;
    }

    /// The value of `field`, if present.
    pub fn get(&self, field: Field) -> Option<FieldValue<'_>> {
        match slot(field) {
            Some(i) => self.text_at(i).map(FieldValue::Text),
            None => self.expiry_time.map(FieldValue::Millis),
        }
    }

    /// Sets or clears a text field, that is any field but [`Field::ExpiryTime`] (an empty
    /// string means absent). The value is copied into the token's one buffer of text, and
    /// the string given is zeroized.
    ///
    /// # Errors
    /// `InvalidToken` for [`Field::ExpiryTime`], a number (see
    /// [`set_expiry_time`](Self::set_expiry_time)); the token is unchanged.
    pub fn set_text(&mut self, field: Field, value: Option<impl Into<String>>) -> Result<(), Error> {
        let value = value.map(Into::into);
        let Some(i) = slot(field) else {
            if let Some(mut v) = value {
                v.zeroize();
            }
            return Err(Error::InvalidToken {
                reason: "expiry_time is a number of milliseconds, not text",
            });
        };
        self.put(i, value);
        Ok(())
    }

    /// A token of the text fields given, each value as the pieces it is made of (a value
    /// read in parts, such as a CSV field split where its quotes were doubled), copied
    /// once into the token's one buffer: building a token this way holds its text once,
    /// however the values arrive. An empty value is absent; a field given twice keeps the
    /// later value. The expiry is not text: set it with
    /// [`set_expiry_time`](Self::set_expiry_time).
    ///
    /// `fields` is read twice (to measure, then to copy), so it is `Clone`; the two reads
    /// must give the same pieces (a value whose length changed is an error).
    ///
    /// ```
    /// use tokenvault::{Field, OAuthToken};
    ///
    /// // A value in two pieces, as `a""b` is read from a quoted CSV field.
    /// let fields = [
    ///     (Field::UserName, vec!["alice@example.com"]),
    ///     (Field::AccessToken, vec!["1000.a\"", "b"]),
    ///     (Field::GrantToken, vec![]),
    /// ];
    /// let t = OAuthToken::from_text_pieces(fields.iter().map(|(f, p)| (*f, p.iter().copied())))?;
    /// assert_eq!(t.user_name(), Some("alice@example.com"));
    /// assert_eq!(t.access_token(), Some("1000.a\"b"));
    /// assert_eq!(t.grant_token(), None);
    /// # Ok::<(), tokenvault::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidToken` if a field is [`Field::ExpiryTime`], a number; or if the second read
    /// of `fields` gives a value of another length. Nothing is kept: what was copied is
    /// zeroized.
    pub fn from_text_pieces<'a, F, P>(fields: F) -> Result<OAuthToken, Error>
    where
        F: IntoIterator<Item = (Field, P)> + Clone,
        P: IntoIterator<Item = &'a str>,
    {
        const EXPIRY: Error = Error::InvalidToken {
            reason: "expiry_time is a number of milliseconds, not text",
        };
        const CHANGED: Error = Error::InvalidToken {
            reason: "the fields read a second time were not those read the first",
        };
        // First read: which item holds each slot's value (the last one given), and its
        // length.
        let mut chosen: [Option<(usize, usize)>; TEXT_COUNT] = [None; TEXT_COUNT];
        for (n, (field, pieces)) in fields.clone().into_iter().enumerate() {
            let i = slot(field).ok_or(EXPIRY)?;
            let len = pieces
                .into_iter()
                .try_fold(0usize, |sum, p| sum.checked_add(p.len()))
                .ok_or(CHANGED)?;
            if let Some(c) = chosen.get_mut(i) {
                *c = Some((n, len));
            }
        }
        // Where each slot's value goes: `spans[i]` (start, end); present if not empty.
        let mut spans = [(0usize, 0usize); TEXT_COUNT];
        let mut present = 0u16;
        let mut total = 0usize;
        for (i, (c, span)) in chosen.iter().zip(&mut spans).enumerate() {
            let start = total;
            if let Some((_, len)) = c.filter(|(_, len)| *len > 0) {
                total = total.checked_add(len).ok_or(CHANGED)?;
                present |= 1 << i;
            }
            *span = (start, total);
        }
        // Second read: each chosen value copied to its place.
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; total]);
        let mut filled = 0u16;
        for (n, (field, pieces)) in fields.into_iter().enumerate() {
            let i = slot(field).ok_or(CHANGED)?;
            let (Some(Some((m, len))), Some(&(mut at, end))) = (chosen.get(i), spans.get(i)) else {
                return Err(CHANGED);
            };
            if *m != n || *len == 0 {
                continue;
            }
            for piece in pieces {
                let to = at
                    .checked_add(piece.len())
                    .filter(|to| *to <= end)
                    .ok_or(CHANGED)?;
                bytes
                    .get_mut(at..to)
                    .ok_or(CHANGED)?
                    .copy_from_slice(piece.as_bytes());
                at = to;
            }
            if at != end {
                return Err(CHANGED);
            }
            filled |= 1 << i;
        }
        // Every present value copied: a second read that gave fewer fields is an error,
        // not a value of zeros.
        if filled != present {
            return Err(CHANGED);
        }
        // Pieces of `str`s end to end: UTF-8 (checked all the same, as the second read
        // may have given other pieces of the same lengths).
        let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            e.into_bytes().zeroize();
            CHANGED
        })?;
        Ok(OAuthToken {
            text,
            ends: spans.map(|(_, end)| end),
            present,
            expiry_time: None,
        })
    }

    /// Text field `i`, if present.
    fn text_at(&self, i: usize) -> Option<&str> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        // By construction a range of `text` on character boundaries: never `None`.
        self.text.get(start..*self.ends.get(i)?)
    }

    /// Every text field, in slot order.
    fn texts(&self) -> [Option<&str>; TEXT_COUNT] {
        std::array::from_fn(|i| self.text_at(i))
    }

    /// Replaces the text with `values` (present as given: an empty string stays present),
    /// zeroizing the old buffer.
    fn install(&mut self, (text, ends, present): Packed) {
        let mut old = std::mem::replace(&mut self.text, text);
        old.zeroize();
        self.ends = ends;
        self.present = present;
    }

    /// Stores `value` in text field `i` (an empty string as absent), zeroizing what the
    /// token held and the string given.
    fn put(&mut self, i: usize, mut value: Option<String>) {
        let mut values = self.texts();
        if let Some(v) = values.get_mut(i) {
            *v = value.as_deref().and_then(present);
        }
        let packed = pack(values);
        self.install(packed);
        if let Some(v) = value.as_mut() {
            v.zeroize();
        }
    }

    /// The same token with every empty string made absent (the stored form).
    pub(crate) fn normalize(&mut self) {
        let packed = pack(self.texts().map(|v| v.and_then(present)));
        self.install(packed);
    }

    /// Overwrites every field of `self` that is present in `update`; absent fields keep
    /// their value (the SDK never writes a null over a stored value).
    pub(crate) fn merge_from(&mut self, update: &OAuthToken) {
        let mut values = self.texts();
        for (value, new) in values.iter_mut().zip(update.texts()) {
            if let Some(new) = new.and_then(present) {
                *value = Some(new);
            }
        }
        let packed = pack(values);
        self.install(packed);
        if update.expiry_time.is_some() {
            self.expiry_time = update.expiry_time;
        }
    }
}

/// A token's text as [`OAuthToken`] holds it: the buffer, the ends, the present bits.
type Packed = (String, [usize; TEXT_COUNT], u16);

/// `values` (in slot order) packed into one buffer of exactly their length; a value
/// given is present, even empty.
fn pack(values: [Option<&str>; TEXT_COUNT]) -> Packed {
    let len = values.iter().flatten().map(|v| v.len()).sum();
    let mut text = String::with_capacity(len);
    let mut ends = [0; TEXT_COUNT];
    let mut present = 0;
    for (i, (value, end)) in values.into_iter().zip(&mut ends).enumerate() {
        if let Some(v) = value {
            text.push_str(v);
            present |= 1 << i;
        }
        *end = text.len();
    }
    (text, ends, present)
}

impl Zeroize for OAuthToken {
    fn zeroize(&mut self) {
        self.text.zeroize();
        self.ends = [0; TEXT_COUNT];
        self.present = 0;
        self.expiry_time.zeroize();
    }
}

impl Drop for OAuthToken {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for OAuthToken {}

/// The serde form: a struct `OAuthToken` of the fields in [`Field::ALL`]'s order, by
/// their [`Field::name`]s, each an optional string but the expiry, an optional integer
/// (the shape a derive over one `Option` per field gives, which stored records were
/// written in).
impl Serialize for OAuthToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("OAuthToken", Field::ALL.len())?;
        for field in Field::ALL {
            match slot(field) {
                Some(i) => out.serialize_field(field.name(), &self.text_at(i))?,
                None => out.serialize_field(field.name(), &self.expiry_time)?,
            }
        }
        out.end()
    }
}

impl<'de> Deserialize<'de> for OAuthToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = wire::OAuthToken::deserialize(deserializer)?;
        let (text, ends, present) = pack(wire.texts());
        Ok(OAuthToken {
            text,
            ends,
            present,
            expiry_time: wire.expiry_time,
        })
    }
}

/// What the serde form is read into: the derive gives the struct's shape (a map or a
/// sequence, unknown and duplicate fields refused), and each value borrows from the input
/// where the input allows it (a record's plaintext) or is a copy zeroized when dropped.
mod wire {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserializer, Error, Unexpected, Visitor};
    use serde::Deserialize;
    use zeroize::Zeroize;

    use super::TEXT_COUNT;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct OAuthToken<'a> {
        #[serde(borrow)]
        id: Option<Text<'a>>,
        #[serde(borrow)]
        user_name: Option<Text<'a>>,
        #[serde(borrow)]
        client_id: Option<Text<'a>>,
        #[serde(borrow)]
        client_secret: Option<Text<'a>>,
        #[serde(borrow)]
        refresh_token: Option<Text<'a>>,
        #[serde(borrow)]
        access_token: Option<Text<'a>>,
        #[serde(borrow)]
        grant_token: Option<Text<'a>>,
        pub(super) expiry_time: Option<i64>,
        #[serde(borrow)]
        redirect_url: Option<Text<'a>>,
        #[serde(borrow)]
        api_domain: Option<Text<'a>>,
    }

    impl OAuthToken<'_> {
        /// The text fields in slot order.
        pub(super) fn texts(&self) -> [Option<&str>; TEXT_COUNT] {
            [
                &self.id,
                &self.user_name,
                &self.client_id,
                &self.client_secret,
                &self.refresh_token,
                &self.access_token,
                &self.grant_token,
                &self.redirect_url,
                &self.api_domain,
            ]
            .map(|t| t.as_ref().map(|t| &*t.0))
        }
    }

    /// A string value as read: borrowed from the input, or a copy zeroized on drop. Like
    /// `String`'s own, it also takes bytes that are UTF-8.
    struct Text<'a>(Cow<'a, str>);

    impl Drop for Text<'_> {
        fn drop(&mut self) {
            if let Cow::Owned(s) = &mut self.0 {
                s.zeroize();
            }
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Read;
            fn not_utf8<E: Error>(bytes: &[u8]) -> E {
                E::invalid_value(Unexpected::Bytes(bytes), &Read)
            }
            impl<'de> Visitor<'de> for Read {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E: Error>(self, v: &str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_owned())))
                }
                fn visit_string<E: Error>(self, v: String) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v)))
                }
                fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Text<'de>, E> {
                    let s = std::str::from_utf8(v).map_err(|_| not_utf8::<E>(v))?;
                    Ok(Text(Cow::Borrowed(s)))
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Text<'de>, E> {
                    let s = std::str::from_utf8(v).map_err(|_| not_utf8::<E>(v))?;
                    Ok(Text(Cow::Owned(s.to_owned())))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Text<'de>, E> {
                    match String::from_utf8(v) {
                        Ok(s) => Ok(Text(Cow::Owned(s))),
                        Err(e) => {
                            let mut bytes = e.into_bytes();
                            let err = not_utf8::<E>(&bytes);
                            bytes.zeroize();
                            Err(err)
                        }
                    }
                }
            }
            deserializer.deserialize_str(Read)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde::de::value::{BorrowedBytesDeserializer, BytesDeserializer, Error as E, StrDeserializer};

        /// A value takes what a `String` takes, as the derived form did, and nothing else.
        #[test]
        fn a_value_takes_what_a_string_takes() {
            let inputs: [&[u8]; 4] = [b"", b"abc", "\u{e9}t\u{e9}".as_bytes(), b"\xff\xfe"];
            for bytes in inputs {
                let string = String::deserialize(BytesDeserializer::<E>::new(bytes)).ok();
                let copied = Text::deserialize(BytesDeserializer::<E>::new(bytes)).ok();
                let borrowed = Text::deserialize(BorrowedBytesDeserializer::<E>::new(bytes)).ok();
                assert_eq!(copied.as_ref().map(|t| &*t.0), string.as_deref(), "{bytes:?}");
                assert_eq!(borrowed.as_ref().map(|t| &*t.0), string.as_deref(), "{bytes:?}");
            }
            let text = Text::deserialize(StrDeserializer::<E>::new("x")).unwrap();
            assert_eq!(&*text.0, "x");
            assert!(Text::deserialize(serde::de::value::I64Deserializer::<E>::new(1)).is_err());
        }
    }
}

/// The fields in order, each secret one present shown as `[REDACTED]` (the shape a
/// derived `Debug` would have).
impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("OAuthToken");
        for field in Field::ALL {
            match self.get(field) {
                Some(_) if field.is_secret() => out.field(field.name(), &Some("[REDACTED]")),
                Some(FieldValue::Text(v)) => out.field(field.name(), &Some(v)),
                Some(FieldValue::Millis(ms)) => out.field(field.name(), &Some(ms)),
                None => out.field(field.name(), &None::<()>),
            };
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> OAuthToken {
        OAuthToken::default()
            .with_id("id-1")
            .with_user_name("alice@example.com")
            .with_client_id("1000.CLIENT")
            .with_client_secret("SECRET-client")
            .with_grant_token("SECRET-grant")
            .with_refresh_token("SECRET-refresh")
            .with_access_token("SECRET-access")
            .with_expiry_time(42)
            .with_redirect_url("https://example.com/cb")
            .with_api_domain("https://www.zohoapis.com")
    }

    /// A token with every field present: text fields hold `value-of-<name>`, the expiry
    /// [`EXPIRY`].
    fn every_field() -> OAuthToken {
        let mut t = OAuthToken::default().with_expiry_time(EXPIRY);
        for field in Field::ALL {
            if field != Field::ExpiryTime {
                t.set_text(field, Some(marker(field))).unwrap();
            }
        }
        t
    }

    const EXPIRY: i64 = 1_234_567_891_011;

    /// What [`every_field`] holds in `field`, as text.
    fn marker(field: Field) -> String {
        match field {
            Field::ExpiryTime => EXPIRY.to_string(),
            _ => format!("value-of-{}", field.name()),
        }
    }

    #[test]
    fn debug_shows_every_field_and_no_secret_one() {
        let t = every_field();
        for shown in [format!("{t:?}"), format!("{t:#?}")] {
            for field in Field::ALL {
                assert!(shown.contains(field.name()), "{field:?} missing: {shown}");
                assert_eq!(
                    shown.contains(&marker(field)),
                    !field.is_secret(),
                    "{field:?}: {shown}"
                );
            }
        }
    }

    #[test]
    fn debug_keeps_the_shape_of_a_derived_debug() {
        let t = OAuthToken::default()
            .with_id("id-1")
            .with_client_secret("s")
            .with_expiry_time(42);
        assert_eq!(
            format!("{t:?}"),
            "OAuthToken { id: Some(\"id-1\"), user_name: None, client_id: None, client_secret: \
             Some(\"[REDACTED]\"), refresh_token: None, access_token: None, grant_token: None, \
             expiry_time: Some(42), redirect_url: None, api_domain: None }"
        );
    }

    #[test]
    fn the_serde_names_are_the_field_names_in_order() {
        let json = serde_json::to_string(&every_field()).unwrap();
        let names: Vec<String> = Field::ALL.map(|f| format!("\"{}\":", f.name())).to_vec();
        let expected = format!(
            "{{{}}}",
            Field::ALL
                .into_iter()
                .zip(&names)
                .map(|(f, name)| match f {
                    Field::ExpiryTime => format!("{name}{EXPIRY}"),
                    _ => format!("{name}\"{}\"", marker(f)),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(json, expected);
    }

    #[test]
    fn get_and_set_text_reach_every_field() {
        let t = every_field();
        for field in Field::ALL {
            let text = marker(field);
            let want = match field {
                Field::ExpiryTime => FieldValue::Millis(EXPIRY),
                _ => FieldValue::Text(&text),
            };
            assert_eq!(t.get(field), Some(want), "{field:?}");
        }
        assert_eq!(t.get(Field::UserName), t.user_name().map(FieldValue::Text));
        assert_eq!(t.get(Field::RedirectUrl), t.redirect_url().map(FieldValue::Text));
        let mut cleared = t.clone();
        for field in Field::ALL {
            match cleared.set_text(field, None::<String>) {
                Ok(()) => assert_eq!(cleared.get(field), None),
                Err(Error::InvalidToken { .. }) => assert_eq!(field, Field::ExpiryTime),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(cleared, OAuthToken::default().with_expiry_time(EXPIRY));
        cleared.set_text(Field::ApiDomain, Some("")).unwrap();
        assert_eq!(cleared.get(Field::ApiDomain), None, "empty is absent");
    }

    #[test]
    fn debug_redacts_every_secret() {
        let s = format!("{:?} {:#?}", full(), full());
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("[REDACTED]"));
        assert!(s.contains("alice@example.com"));
    }

    #[test]
    fn empty_strings_are_absent() {
        let t = OAuthToken::default().with_user_name("").with_access_token("");
        assert_eq!(t.user_name(), None);
        assert_eq!(t.access_token(), None);
        let mut t: OAuthToken = serde_json::from_str(r#"{"user_name":"","id":""}"#).unwrap();
        t.normalize();
        assert_eq!(t, OAuthToken::default());
    }

    #[test]
    fn merge_overwrites_present_and_keeps_absent() {
        let mut stored = full();
        let update = OAuthToken::default().with_access_token("new").with_user_name("");
        stored.merge_from(&update);
        assert_eq!(stored.access_token(), Some("new"));
        assert_eq!(stored.user_name(), Some("alice@example.com"));
        assert_eq!(stored.refresh_token(), Some("SECRET-refresh"));
        assert_eq!(stored.expiry_time(), Some(42));
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let json = serde_json::to_string(&full()).unwrap();
        let back: OAuthToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back, full());
    }

    /// One token, one form: the same fields set in any order, or replaced along the way,
    /// give equal tokens, and replacing a field leaves every other one as it was.
    #[test]
    fn the_same_fields_set_in_any_order_give_the_same_token() {
        let forward = every_field();
        let mut backward = OAuthToken::default().with_expiry_time(EXPIRY);
        for field in Field::ALL.into_iter().rev() {
            if field != Field::ExpiryTime {
                backward
                    .set_text(field, Some("a value longer than the final one"))
                    .unwrap();
                backward.set_text(field, Some(marker(field))).unwrap();
            }
        }
        assert_eq!(backward, forward);
        let original = every_field();
        for field in Field::ALL.into_iter().filter(|&f| f != Field::ExpiryTime) {
            let mut t = every_field();
            for value in ["", "x", "a much longer value than any marker"] {
                t.set_text(field, Some(value)).unwrap();
                for other in Field::ALL {
                    let want = if other == field {
                        (!value.is_empty()).then_some(FieldValue::Text(value))
                    } else {
                        original.get(other)
                    };
                    assert_eq!(t.get(other), want, "{field:?} set to {value:?}: {other:?}");
                }
            }
        }
    }

    /// A token built from pieces is the token the setters build from the joined values,
    /// for every pattern of present, empty and absent fields, in any order, a field given
    /// twice keeping the later value.
    #[test]
    fn a_token_from_pieces_is_the_token_the_setters_build() {
        let texts: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|&f| f != Field::ExpiryTime)
            .collect();
        // Each field: absent, empty, one piece, or three pieces (one of them empty).
        for pattern in 0..4u32.pow(3) {
            for rotate in [0, 4] {
                let mut want = OAuthToken::default();
                let mut given: Vec<(Field, Vec<String>)> = Vec::new();
                for (k, &field) in texts.iter().enumerate() {
                    let kind = (pattern >> (2 * (k % 3))) & 3;
                    let m = marker(field);
                    let pieces = match kind {
                        0 => continue,
                        1 => vec![String::new()],
                        2 => vec![m.clone()],
                        _ => vec![m[..3].to_owned(), String::new(), m[3..].to_owned()],
                    };
                    want.set_text(field, Some(pieces.concat())).unwrap();
                    given.push((field, pieces));
                }
                let by = rotate.min(given.len());
                given.rotate_left(by);
                // A field given earlier with another value: the later one is kept.
                if let Some((field, _)) = given.last().cloned() {
                    given.insert(0, (field, vec!["earlier".to_owned()]));
                }
                let t = OAuthToken::from_text_pieces(
                    given.iter().map(|(f, p)| (*f, p.iter().map(String::as_str))),
                )
                .unwrap();
                assert_eq!(t, want, "pattern {pattern}, rotated {rotate}");
                assert_eq!(t.text.len(), t.text.capacity(), "one buffer of the text's length");
            }
        }
    }

    /// The expiry is refused, and a second read that differs from the first is an error,
    /// not a token of other text.
    #[test]
    fn pieces_that_are_not_text_or_change_are_refused() {
        let expiry = [(Field::ExpiryTime, ["1"])];
        assert!(matches!(
            OAuthToken::from_text_pieces(expiry.iter().map(|(f, p)| (*f, p.iter().copied()))),
            Err(Error::InvalidToken { .. })
        ));
        #[derive(Clone)]
        struct Changing<'a>(&'a std::cell::Cell<u32>, [&'a str; 2]);
        impl<'a> IntoIterator for Changing<'a> {
            type Item = (Field, std::iter::Once<&'a str>);
            type IntoIter = std::iter::Once<Self::Item>;
            fn into_iter(self) -> Self::IntoIter {
                let n = self.0.get();
                self.0.set(n + 1);
                let value = self.1[usize::from(n > 0)];
                std::iter::once((Field::AccessToken, std::iter::once(value)))
            }
        }
        let reads = std::cell::Cell::new(0);
        for (first, second) in [("abc", "abcd"), ("abc", "ab"), ("abc", "")] {
            reads.set(0);
            assert!(
                matches!(
                    OAuthToken::from_text_pieces(Changing(&reads, [first, second])),
                    Err(Error::InvalidToken { .. })
                ),
                "{first:?} then {second:?}"
            );
        }
        reads.set(0);
        let same = OAuthToken::from_text_pieces(Changing(&reads, ["abc", "xyz"])).unwrap();
        assert_eq!(
            same.access_token(),
            Some("xyz"),
            "the same lengths: the second read's text"
        );
        // A second read that gives no field at all.
        #[derive(Clone)]
        struct Vanishing<'a>(&'a std::cell::Cell<u32>);
        impl<'a> IntoIterator for Vanishing<'a> {
            type Item = (Field, std::iter::Once<&'a str>);
            type IntoIter = std::option::IntoIter<Self::Item>;
            fn into_iter(self) -> Self::IntoIter {
                let n = self.0.get();
                self.0.set(n + 1);
                (n == 0)
                    .then(|| (Field::AccessToken, std::iter::once("abc")))
                    .into_iter()
            }
        }
        reads.set(0);
        assert!(matches!(
            OAuthToken::from_text_pieces(Vanishing(&reads)),
            Err(Error::InvalidToken { .. })
        ));
        reads.set(0);
        let absent = OAuthToken::from_text_pieces(Changing(&reads, ["", "xyz"])).unwrap();
        assert_eq!(
            absent,
            OAuthToken::default(),
            "empty at the first read: absent, not read again"
        );
    }

    #[test]
    fn json_keeps_an_empty_string_until_normalized_and_refuses_duplicates() {
        let t: OAuthToken = serde_json::from_str(r#"{"user_name":"","id":"i\u00e9"}"#).unwrap();
        assert_eq!(t.user_name(), Some(""));
        assert_eq!(t.id(), Some("i\u{e9}"));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "{\"id\":\"i\u{e9}\",\"user_name\":\"\",\"client_id\":null,\"client_secret\":null,\
             \"refresh_token\":null,\"access_token\":null,\"grant_token\":null,\"expiry_time\":null,\
             \"redirect_url\":null,\"api_domain\":null}"
        );
        assert!(serde_json::from_str::<OAuthToken>(r#"{"id":"a","id":"b"}"#).is_err());
        assert!(serde_json::from_str::<OAuthToken>(r#"{"id":1}"#).is_err());
    }

    #[test]
    fn zeroize_empties_every_field() {
        let mut t = every_field();
        t.zeroize();
        assert_eq!(t, OAuthToken::default());
    }

    #[test]
    fn json_rejects_unknown_fields() {
        assert!(serde_json::from_str::<OAuthToken>(r#"{"user":"x"}"#).is_err());
    }
}
