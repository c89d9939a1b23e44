//! `OAuthToken`: the SDK's token, every field optional.
//!
//! Invariants: the secret fields (client secret, grant, refresh and access tokens) never
//! appear in `Debug` output, and every field is zeroized when the token is dropped. An
//! empty string given to a builder or setter is stored as absent (`None`).

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

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
            if let Some(old) = self.$field.as_mut() {
                old.zeroize();
            }
            self.$field = value.map(Into::into).and_then(present);
        }
    };
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

    /// The same token with every empty string made absent (the stored form).
    pub(crate) fn normalize(&mut self) {
        for field in self.string_fields_mut() {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
    }

    fn string_fields_mut(&mut self) -> [&mut Option<String>; 9] {
        [
            &mut self.id,
            &mut self.user_name,
            &mut self.client_id,
            &mut self.client_secret,
            &mut self.refresh_token,
            &mut self.access_token,
            &mut self.grant_token,
            &mut self.redirect_url,
            &mut self.api_domain,
        ]
    }

    /// Overwrites every field of `self` that is present in `update`; absent fields keep
    /// their value (the SDK never writes a null over a stored value).
    pub(crate) fn merge_from(&mut self, update: &OAuthToken) {
        fn take(dst: &mut Option<String>, src: &Option<String>) {
            if let Some(v) = src.as_deref().filter(|v| !v.is_empty()) {
                if let Some(old) = dst.as_mut() {
                    old.zeroize();
                }
                *dst = Some(v.to_owned());
            }
        }
        take(&mut self.id, &update.id);
        take(&mut self.user_name, &update.user_name);
        take(&mut self.client_id, &update.client_id);
        take(&mut self.client_secret, &update.client_secret);
        take(&mut self.refresh_token, &update.refresh_token);
        take(&mut self.access_token, &update.access_token);
        take(&mut self.grant_token, &update.grant_token);
        take(&mut self.redirect_url, &update.redirect_url);
        take(&mut self.api_domain, &update.api_domain);
        if update.expiry_time.is_some() {
            self.expiry_time = update.expiry_time;
        }
    }
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn secret(v: &Option<String>) -> Option<&'static str> {
            v.as_ref().map(|_| "[REDACTED]")
        }
        f.debug_struct("OAuthToken")
            .field("id", &self.id)
            .field("user_name", &self.user_name)
            .field("client_id", &self.client_id)
            .field("client_secret", &secret(&self.client_secret))
            .field("refresh_token", &secret(&self.refresh_token))
            .field("access_token", &secret(&self.access_token))
            .field("grant_token", &secret(&self.grant_token))
            .field("expiry_time", &self.expiry_time)
            .field("redirect_url", &self.redirect_url)
            .field("api_domain", &self.api_domain)
            .finish()
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
