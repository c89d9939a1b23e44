//! The token's fields as data: their names, and which of them are secret.
//!
//! Invariants: this is the one place that decides which fields are secret and what each
//! field is called. `Debug`, the command line's output, its refusal of the `[REDACTED]`
//! placeholder on input, and the importers' column mapping all read [`Field::ALL`],
//! [`Field::name`] and [`Field::is_secret`]; so a field added to the token is added here
//! once, and the compiler then asks every exhaustive `match` over fields what to do with
//! it. [`Field::name`] is the field's serde (JSON) name; [`Field::ALL`] is the order of the
//! token's serde and stored forms.

/// One field of an [`OAuthToken`](crate::OAuthToken).
///
/// ```
/// use tokenvault::{Field, FieldValue, OAuthToken};
///
/// let t = OAuthToken::default()
///     .with_user_name("alice@example.com")
///     .with_refresh_token("1000.refresh");
/// let shown: Vec<String> = Field::ALL
///     .into_iter()
///     .filter_map(|f| {
///         let value = match t.get(f)? {
///             _ if f.is_secret() => "[REDACTED]".to_owned(),
///             FieldValue::Text(s) => s.to_owned(),
///             FieldValue::Millis(ms) => ms.to_string(),
///         };
///         Some(format!("{}={value}", f.name()))
///     })
///     .collect();
/// assert_eq!(shown, ["user_name=alice@example.com", "refresh_token=[REDACTED]"]);
/// ```
///
/// Deliberately not `#[non_exhaustive]`: a new field must be a change that every `match`
/// over fields answers (is it secret? which column holds it?), not one a wildcard arm
/// absorbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// The store-assigned id.
    Id,
    /// The user name (the SDK's user signature).
    UserName,
    /// The OAuth client id.
    ClientId,
    /// The OAuth client secret (a secret).
    ClientSecret,
    /// The refresh token (a secret).
    RefreshToken,
    /// The access token (a secret).
    AccessToken,
    /// The grant token (a secret).
    GrantToken,
    /// The access token's expiry, in milliseconds since the Unix epoch: the one field
    /// that is a number, not text.
    ExpiryTime,
    /// The redirect URL.
    RedirectUrl,
    /// The API domain.
    ApiDomain,
}

impl Field {
    /// Every field, in the token's order (that of its JSON form and of its stored encoding).
    pub const ALL: [Field; 10] = [
        Field::Id,
        Field::UserName,
        Field::ClientId,
        Field::ClientSecret,
        Field::RefreshToken,
        Field::AccessToken,
        Field::GrantToken,
        Field::ExpiryTime,
        Field::RedirectUrl,
        Field::ApiDomain,
    ];

    /// The field's name in the token's JSON form (and in the Zoho SDK's stores, but for
    /// the file store's CSV, which calls the redirect URL `redirect_uri`).
    pub const fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::UserName => "user_name",
            Field::ClientId => "client_id",
            Field::ClientSecret => "client_secret",
            Field::RefreshToken => "refresh_token",
            Field::AccessToken => "access_token",
            Field::GrantToken => "grant_token",
            Field::ExpiryTime => "expiry_time",
            Field::RedirectUrl => "redirect_url",
            Field::ApiDomain => "api_domain",
        }
    }

    /// Whether the field's value is a secret: never shown by `Debug`, shown as
    /// `[REDACTED]` by the command line unless the user asks to reveal it.
    pub const fn is_secret(self) -> bool {
        // Every field answered, none by default: a new field must be decided here.
        match self {
            Field::ClientSecret | Field::RefreshToken | Field::AccessToken | Field::GrantToken => true,
            Field::Id
            | Field::UserName
            | Field::ClientId
            | Field::ExpiryTime
            | Field::RedirectUrl
            | Field::ApiDomain => false,
        }
    }

    /// The field whose [`name`](Field::name) is `name`, if any (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The value of one field of a token, borrowed from it (see
/// [`OAuthToken::get`](crate::OAuthToken::get)).
///
/// It may borrow a secret: its `Debug` shows the value, as printing the `&str` that
/// [`OAuthToken::access_token`](crate::OAuthToken::access_token) returns would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// Every field but the expiry.
    Text(&'a str),
    /// The expiry ([`Field::ExpiryTime`]), in milliseconds since the Unix epoch.
    Millis(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_listed_once_and_found_by_its_name() {
        for (i, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(Field::from_name(field.name()), Some(field));
            assert!(!Field::ALL[..i].contains(&field), "{field:?} listed twice");
        }
        assert_eq!(Field::from_name("redirect_uri"), None);
        assert_eq!(Field::from_name("User_Name"), None);
    }

    #[test]
    fn the_secret_fields_are_the_client_secret_and_the_three_tokens() {
        let secret: Vec<&str> = Field::ALL
            .into_iter()
            .filter(|f| f.is_secret())
            .map(Field::name)
            .collect();
        assert_eq!(
            secret,
            ["client_secret", "refresh_token", "access_token", "grant_token"]
        );
    }
}
