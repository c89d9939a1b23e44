//! Vaults and tokens to test with: options at the KDF floor, a numbered token, a vault
//! made and filled in one call.
//!
//! A test file takes the modules of `tests/common/` it uses, and only those, with
//! `mod common { pub mod vaults; ... }`. A helper that some of the files including its
//! module do not call carries its own `allow(dead_code)`; there is no blanket allowance, so
//! other dead code in `common` (a conformance check left out of the suite's list, say) is
//! still reported.

use std::path::Path;

use tokenvault::{KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

/// The passphrase of the vaults these helpers make.
pub(crate) const PASSPHRASE: &str = "pass";

/// Options with the KDF at its floor: what every test that is not about the KDF uses, so
/// that an open costs milliseconds.
pub(crate) fn options() -> VaultOptions {
    VaultOptions::new().kdf(KdfParams::FLOOR)
}

/// Token `n`: every key field set (user name, client id and secret, refresh, access and
/// grant tokens) and an expiry, no id (the store assigns one). Its values have a fixed
/// width for `n` below 10,000, so such tokens encode, and seal, to records of one length.
#[allow(dead_code, reason = "not every test file that uses this module makes tokens")]
pub(crate) fn token(n: usize) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(format!("user{n:04}@example.com"))
        .with_client_id("1000.CLIENT")
        .with_client_secret(format!("secret-{n:04}"))
        .with_refresh_token(format!("1000.refresh.{n:04}"))
        .with_access_token(format!("1000.access.{n:04}"))
        .with_grant_token(format!("1000.grant.{n:04}"))
        .with_expiry_time(1_764_000_000_000 + i64::try_from(n).expect("a small n"))
}

/// Creates a vault at `path` (with [`options`] and [`PASSPHRASE`]) holding tokens 0 to
/// `n - 1`, and closes it; returns the tokens as saved (with their ids).
#[allow(dead_code, reason = "not every test file that uses this module fills a vault")]
pub(crate) fn create_with_tokens(path: &Path, n: usize) -> Vec<OAuthToken> {
    let v = options().create(path, PASSPHRASE).expect("create a vault");
    (0..n)
        .map(|i| {
            let mut t = token(i);
            v.save_token(&mut t).expect("save a token");
            t
        })
        .collect()
}

/// An empty vault in a temporary directory of its own, which must outlive it. Writes are
/// not flushed one by one (`durable(false)`): these tests are about what the vault
/// returns, and crash durability has tests of its own.
#[allow(
    dead_code,
    reason = "not every test file that uses this module wants an empty vault"
)]
pub(crate) fn fresh_vault() -> (Vault, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let vault = options()
        .durable(false)
        .create(tmp.path().join("vault"), PASSPHRASE)
        .expect("create vault");
    (vault, tmp)
}
