//! Vaults and tokens to test with: options at the KDF floor, a numbered token, a vault
//! made and filled in one call.
//!
//! A test file takes the modules of `tests/common/` it uses, and only those, with
//! `mod common { pub mod vaults; ... }`. A helper that some of the files including its
//! module do not call carries its own `allow(dead_code)`; there is no blanket allowance, so
//! other dead code in `common` (a conformance check left out of the suite's list, say) is
//! still reported.

use std::cell::Cell;
use std::path::Path;

use tokenvault::{Engine, KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

thread_local! {
    /// The engine the running test is on: set by the tests [`engine_suite!`] makes.
    static ENGINE: Cell<Option<Engine>> = const { Cell::new(None) };
}

/// Every engine this build has: each suite runs once on each.
#[allow(dead_code, reason = "not every test file that uses this module lists engines")]
pub(crate) const ENGINES: &[Engine] = &[
    Engine::Sled,
    #[cfg(feature = "redb")]
    Engine::Redb,
];

/// The engine of the running test (sled outside [`engine_suite!`]).
pub(crate) fn engine() -> Engine {
    ENGINE.with(Cell::get).unwrap_or(Engine::Sled)
}

/// Runs `f` on this thread with `engine` as the test's engine.
#[allow(dead_code, reason = "not every test file that uses this module runs suites")]
pub(crate) fn on<T>(engine: Engine, f: impl FnOnce() -> T) -> T {
    ENGINE.with(|e| e.set(Some(engine)));
    f()
}

/// Makes each function given one test per engine: `sled::NAME` and, with the feature
/// `redb`, `redb::NAME`, each running the function with [`options`] on its engine.
/// Attributes (`#[ignore]`, ...) go to the tests; write none of `#[test]`.
///
/// ```ignore
/// common::vaults::engine_suite! {
///     fn a_vault_opens() { let (v, _tmp) = common::vaults::fresh_vault(); ... }
/// }
/// ```
#[allow(
    unused_macros,
    reason = "not every test file that uses this module runs suites"
)]
macro_rules! engine_suite {
    ($($(#[$attr:meta])* fn $name:ident() $body:block)*) => {
        $(fn $name() $body)*

        /// The suite on sled.
        mod sled {
            $(
                #[test]
                $(#[$attr])*
                fn $name() {
                    $crate::common::vaults::on(tokenvault::Engine::Sled, super::$name)
                }
            )*
        }

        /// The suite on redb.
        #[cfg(feature = "redb")]
        mod redb {
            $(
                #[test]
                $(#[$attr])*
                fn $name() {
                    $crate::common::vaults::on(tokenvault::Engine::Redb, super::$name)
                }
            )*
        }
    };
}
#[allow(
    unused_imports,
    reason = "not every test file that uses this module runs suites"
)]
pub(crate) use engine_suite;

/// The passphrase of the vaults these helpers make.
pub(crate) const PASSPHRASE: &str = "pass";

/// Options with the KDF at its floor: what every test that is not about the KDF uses, so
/// that an open costs milliseconds.
/// On the running test's [`engine`].
pub(crate) fn options() -> VaultOptions {
    VaultOptions::new().kdf(KdfParams::FLOOR).engine(engine())
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
