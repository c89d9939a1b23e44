//! `OAuthToken`: the SDK's token, every field optional.
//!
//! Invariants: the fields that [`Field::is_secret`] names never appear in `Debug` output,
//! and every field is zeroized when the token is dropped. An empty string given to a
//! builder or setter is stored as absent (`None`). The fields are listed once, in
//! [`field`]; the serde names of the struct's fields are [`Field::name`]s (a unit test
//! holds them together). How a token is stored is [`encoding`].

pub(crate) mod encoding;
mod field;

use std::fmt;

use serde::{Deserialize, Serialize};
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
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct OAuthToken {
    id: Option<String>,
    user_name: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    access_token: Option<String>,
    grant_token: Option<String>,
    expiry_time: Option<i64>,
    redirect_url: Option<String>,
    api_domain: Option<String>,
}

/// An empty string is absent.
fn present(value: String) -> Option<String> {
    if value.is_empty() {
        None
    } else {
        Some(value)
    }
}

macro_rules! string_field {
    ($field:ident, $with:ident, $set:ident, $what:literal) => {
        #[doc = concat!("Returns the ", $what, ", if present.")]
        pub fn $field(&self) -> Option<&str> {
            self.$field.as_deref()
        }

        #[doc = concat!("Sets the ", $what, " (an empty string means absent).")]
        #[must_use]
        pub fn $with(mut self, value: impl Into<String>) -> Self {
            self.$set(Some(value));
            self
        }

        #[doc = concat!("Sets or clears the ", $what, " (an empty string means absent).")]
        pub fn $set(&mut self, value: Option<impl Into<String>>) {
            replace(&mut self.$field, value.map(Into::into));
        }
    };
}

/// Stores `value` in `slot` (an empty string as absent), zeroizing what it held.
fn replace(slot: &mut Option<String>, value: Option<String>) {
    if let Some(old) = slot.as_mut() {
        old.zeroize();
    }
    *slot = value.and_then(present);
}

impl OAuthToken {
    string_field!(id, with_id, set_id, "store-assigned id");
    string_field!(
        user_name,
        with_user_name,
        set_user_name,
        "user name (the SDK's user signature)"
    );
    string_field!(client_id, with_client_id, set_client_id, "OAuth client id");
    string_field!(
        client_secret,
        with_client_secret,
        set_client_secret,
        "OAuth client secret (a secret)"
    );
    string_field!(
        grant_token,
        with_grant_token,
        set_grant_token,
        "grant token (a secret)"
    );
    string_field!(
        refresh_token,
        with_refresh_token,
        set_refresh_token,
        "refresh token (a secret)"
    );
    string_field!(
        access_token,
        with_access_token,
        set_access_token,
        "access token (a secret)"
    );
    string_field!(redirect_url, with_redirect_url, set_redirect_url, "redirect URL");
    string_field!(api_domain, with_api_domain, set_api_domain, "API domain");

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
        match self.text(field) {
            Some(slot) => slot.as_deref().map(FieldValue::Text),
            None => self.expiry_time.map(FieldValue::Millis),
        }
    }

    /// Sets or clears a text field, that is any field but [`Field::ExpiryTime`] (an empty
    /// string means absent). The value is moved into the token, not copied.
    ///
    /// # Errors
    /// `InvalidToken` for [`Field::ExpiryTime`], a number (see
    /// [`set_expiry_time`](Self::set_expiry_time)); the token is unchanged.
    pub fn set_text(&mut self, field: Field, value: Option<impl Into<String>>) -> Result<(), Error> {
        let slot = self.text_mut(field).ok_or(Error::InvalidToken {
            reason: "expiry_time is a number of milliseconds, not text",
        })?;
        replace(slot, value.map(Into::into));
        Ok(())
    }

    /// The slot of a text field; `None` for the expiry, the one field that is not text.
    fn text(&self, field: Field) -> Option<&Option<String>> {
        match field {
            Field::Id => Some(&self.id),
            Field::UserName => Some(&self.user_name),
            Field::ClientId => Some(&self.client_id),
            Field::ClientSecret => Some(&self.client_secret),
            Field::RefreshToken => Some(&self.refresh_token),
            Field::AccessToken => Some(&self.access_token),
            Field::GrantToken => Some(&self.grant_token),
            Field::ExpiryTime => None,
            Field::RedirectUrl => Some(&self.redirect_url),
            Field::ApiDomain => Some(&self.api_domain),
        }
    }

    /// [`text`](Self::text), mutably.
    fn text_mut(&mut self, field: Field) -> Option<&mut Option<String>> {
        match field {
            Field::Id => Some(&mut self.id),
            Field::UserName => Some(&mut self.user_name),
            Field::ClientId => Some(&mut self.client_id),
            Field::ClientSecret => Some(&mut self.client_secret),
            Field::RefreshToken => Some(&mut self.refresh_token),
            Field::AccessToken => Some(&mut self.access_token),
            Field::GrantToken => Some(&mut self.grant_token),
            Field::ExpiryTime => None,
            Field::RedirectUrl => Some(&mut self.redirect_url),
            Field::ApiDomain => Some(&mut self.api_domain),
        }
    }

    /// The same token with every empty string made absent (the stored form).
    pub(crate) fn normalize(&mut self) {
        for field in Field::ALL {
            if let Some(slot) = self.text_mut(field) {
                if slot.as_deref() == Some("") {
                    *slot = None;
                }
            }
        }
    }

    /// Overwrites every field of `self` that is present in `update`; absent fields keep
    /// their value (the SDK never writes a null over a stored value).
    pub(crate) fn merge_from(&mut self, update: &OAuthToken) {
        for field in Field::ALL {
            let new = update
                .text(field)
                .and_then(|v| v.as_deref())
                .filter(|v| !v.is_empty());
            if let (Some(slot), Some(new)) = (self.text_mut(field), new) {
                replace(slot, Some(new.to_owned()));
            }
        }
        if update.expiry_time.is_some() {
            self.expiry_time = update.expiry_time;
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

    #[test]
    fn json_rejects_unknown_fields() {
        assert!(serde_json::from_str::<OAuthToken>(r#"{"user":"x"}"#).is_err());
    }
}
