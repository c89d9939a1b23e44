//! What the vault leaves in memory it gives back to the allocator.
//!
//! Protects against: Argon2's working memory (19 MiB to 1 GiB, all of it derived from the
//! passphrase) freed unwiped; a token's secrets left behind in a buffer that grew, and so
//! was copied, while the token was encoded for sealing. The global allocator of this test
//! binary (`tests/wipe-probe`) reads every block as it is freed or moved.
//!
//! The vault's tests run on each engine (`sled::NAME`, `redb::NAME`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

mod common {
    pub(crate) mod vaults;
}

use std::sync::{Mutex, MutexGuard};

use common::vaults::options;
use tokenvault::{OAuthToken, TokenStore};
use zeroize::Zeroizing;

#[global_allocator]
static PROBE: wipe_probe::WipeProbe = wipe_probe::WipeProbe;

/// The probe is global: the tests of this file take turns.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control: the probe sees a planted secret in a freed block, and a large block freed
/// with data in it, and sees neither once they are wiped.
#[test]
fn the_probe_sees_what_is_left_in_freed_memory() {
    let _turn = one_at_a_time();
    let secret = b"planted-secret-9b1e4c7a";
    wipe_probe::arm(secret, 1 << 20);
    drop(std::hint::black_box(secret.to_vec()));
    drop(std::hint::black_box(vec![1u8; 2 << 20]));
    drop(std::hint::black_box(Zeroizing::new(secret.to_vec())));
    drop(std::hint::black_box(Zeroizing::new(vec![1u8; 2 << 20])));
    let report = wipe_probe::disarm();
    assert_eq!(
        report,
        wipe_probe::Report {
            needle_hits: 1,
            large_frees: 2,
            large_unwiped: 1,
        }
    );
}

common::vaults::engine_suite! {
    /// Every Argon2 run (create, open) frees its 19 MiB at the floor; nothing else the vault
    /// frees is that large. All of it must be zeros when it is freed.
    fn argon2_working_memory_is_wiped_before_it_is_freed() {
        let _turn = one_at_a_time();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        wipe_probe::arm(b"", 16 << 20);
        drop(options().create(&path, "a passphrase").unwrap());
        drop(options().open(&path, "a passphrase").unwrap());
        let report = wipe_probe::disarm();
        assert!(
            report.large_frees >= 2,
            "Argon2's memory was never freed? {report:?}"
        );
        assert_eq!(report.large_unwiped, 0, "{report:?}");
    }

    /// A save, the lookups and a listing, with a client secret planted: no block freed on the
    /// way holds it. Long tokens after the secret make a growing encode buffer reallocate.
    fn no_freed_block_holds_a_token_secret() {
        let _turn = one_at_a_time();
        let tmp = tempfile::tempdir().unwrap();
        let vault = options()
            .create(tmp.path().join("vault"), "a passphrase")
            .unwrap();
        let secret = "SECRET-client-5f0c2e9d7a41b836";
        let long = |what: &str| format!("1000.{what}.{}", "x".repeat(300));
        let token = OAuthToken::default()
            .with_user_name("alice@example.com")
            .with_client_id("1000.CLIENT")
            .with_client_secret(secret)
            .with_refresh_token(long("refresh"))
            .with_access_token(long("access"))
            .with_grant_token(long("grant"))
            .with_expiry_time(1_764_000_000_000);
        let query = OAuthToken::default().with_user_name("alice@example.com");

        wipe_probe::arm(secret.as_bytes(), usize::MAX);
        let mut saved = token.clone();
        vault.save_token(&mut saved).unwrap();
        let found = vault.find_token(&query).unwrap().unwrap();
        let by_id = vault.find_token_by_id(saved.id().unwrap()).unwrap().unwrap();
        let all = vault.get_tokens().unwrap();
        let mut update = found.clone().with_access_token(long("access-2"));
        vault.save_token(&mut update).unwrap();
        assert_eq!(found.client_secret(), Some(secret));
        assert_eq!(by_id, found);
        assert_eq!(all, vec![found.clone()]);
        drop((saved, found, by_id, all, update));
        let report = wipe_probe::disarm();
        assert_eq!(report.needle_hits, 0, "{report:?}");
    }
}
