//! A few tokens of the shapes the SDK stores. Shared by the fuzz targets (the fuzz crate's
//! `sample_tokens`, which includes this file) and the tests that replay a fuzz input on
//! the vault the target builds from them.

use tokenvault::OAuthToken;

/// A few tokens of the shapes the SDK stores: full, minimal, odd bytes, long values.
pub(crate) fn sample_tokens() -> Vec<OAuthToken> {
    vec![
        OAuthToken::default()
            .with_id("id-full")
            .with_user_name("alice@example.com")
            .with_client_id("1000.CLIENT")
            .with_client_secret("client-secret")
            .with_grant_token("1000.grant.alice")
            .with_refresh_token("1000.refresh.alice")
            .with_access_token("1000.access.alice")
            .with_expiry_time(1_764_000_000_000)
            .with_redirect_url("https://example.com/cb")
            .with_api_domain("https://www.zohoapis.com"),
        OAuthToken::default()
            .with_id("id-min")
            .with_access_token("1000.access.only"),
        OAuthToken::default()
            .with_id("id-odd")
            .with_user_name("bob'; DROP TABLE oauthtoken; --")
            .with_client_id("1000.CLIENT")
            .with_client_secret("s\0cret")
            .with_refresh_token("1000.refresh.\u{1F511}\u{0}")
            .with_expiry_time(i64::MIN),
        OAuthToken::default()
            .with_id("id-long")
            .with_user_name("carol@example.com")
            .with_client_id("1000.OTHER")
            .with_client_secret("other-secret")
            .with_grant_token("g".repeat(300))
            .with_access_token("a".repeat(2_000))
            .with_expiry_time(-1),
    ]
}
