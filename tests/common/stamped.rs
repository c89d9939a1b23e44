//! Tokens whose every field carries one stamp, so that a token mixing two saves shows:
//! for the tests of many writers at once.

use tokenvault::OAuthToken;

/// Every field carries the same stamp, so a token mixing two saves shows.
pub(crate) fn stamped(user: u64, stamp: u64) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(format!("user{user}@example.com"))
        .with_client_id("1000.CONC")
        .with_client_secret(format!("secret-{user}-{stamp}"))
        .with_refresh_token(format!("refresh-{user}-{stamp}"))
        .with_access_token(format!("access-{user}-{stamp}"))
        .with_grant_token(format!("grant-{user}-{stamp}"))
        .with_expiry_time(stamp as i64)
}

pub(crate) fn assert_untorn(t: &OAuthToken) {
    let stamp = t.expiry_time().unwrap();
    let user = t
        .user_name()
        .unwrap()
        .trim_start_matches("user")
        .trim_end_matches("@example.com");
    for (field, v) in [
        ("secret", t.client_secret()),
        ("refresh", t.refresh_token()),
        ("access", t.access_token()),
        ("grant", t.grant_token()),
    ] {
        assert_eq!(v.unwrap(), format!("{field}-{user}-{stamp}"), "torn token");
    }
}
