//! Findings of the fuzz campaign (`fuzz/CAMPAIGN.md`), replayed through the public API.
//!
//! Protects against: a fuzz finding coming back once it is fixed. Each test names the fuzz
//! target that found it; the minimized input is kept under `fuzz/regressions/<target>/`
//! (replay it with `cargo fuzz run <target> fuzz/regressions/<target>/<file>`). A test
//! that still fails is `#[ignore]`d with the reason "fuzz finding, fix pending".
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

mod common {
    pub(crate) mod raw_edit;
    pub(crate) mod sample_tokens;
    pub(crate) mod sled_log;
    pub(crate) mod vaults;
}

use std::time::{Duration, Instant};

use common::vaults::fresh_vault;
use tokenvault::{KdfParams, MemoryStore, OAuthToken, TokenStore, VaultOptions};

common::vaults::engine_suite! {
    /// Two users share an access token; the one that claimed it last moves on to another
    /// value. docs/design.md section 3: "when the owner drops the value ... the entry goes, and the
    /// value finds nothing". Both stores do that; `verify` must not call this state damaged,
    /// and `repair` must not change what a lookup finds.
    ///
    /// Found by `differential` (fuzz/regressions/differential/verify-unindexed-shared-value).
    fn verify_accepts_a_shared_value_its_last_owner_dropped() {
        let fresh = fresh_vault();
        let vault = &fresh.0;
        let memory = MemoryStore::new();
        let saves = [
            OAuthToken::default()
                .with_user_name("ua")
                .with_access_token("shared"),
            OAuthToken::default()
                .with_user_name("ub")
                .with_access_token("shared"),
            OAuthToken::default()
                .with_user_name("ub")
                .with_access_token("other"),
        ];
        for t in &saves {
            vault.save_token(&mut t.clone()).expect("vault save");
            memory.save_token(&mut t.clone()).expect("memory save");
        }
        let query = OAuthToken::default().with_access_token("shared");
        assert_eq!(memory.find_token(&query).expect("memory find"), None);
        assert_eq!(vault.find_token(&query).expect("vault find"), None);

        let report = vault.verify().expect("verify");
        assert!(
            report.is_clean(),
            "verify reports problems in a vault only the API touched: {:?}",
            report.problems
        );
        let report = vault.repair().expect("repair");
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(
            vault.find_token(&query).expect("vault find after repair"),
            None,
            "repair changed what a lookup finds"
        );
    }

    /// Two users share a refresh token; the one that claimed it last moves on to another
    /// value. docs/design.md section 3: "when the owner drops the value ... the entry goes, and the
    /// value finds nothing". Both stores do that; `verify` must not call this state damaged
    /// (it reported `MissingIndexEntry { index: "refresh" }` for the first token), and `repair`
    /// must not change what a lookup finds (it re-added the entry, so the value found the first
    /// token again, unlike `MemoryStore`).
    ///
    /// The minimized input itself: the three saves of
    /// fuzz/regressions/differential/verify-unindexed-shared-value (found by `differential` at
    /// 053681c), with the values the target's pools give them. Fixed in 9667b26 (verify checks
    /// only that user names are indexed).
    fn verify_accepts_a_shared_refresh_token_its_last_owner_dropped() {
        let fresh = fresh_vault();
        let vault = &fresh.0;
        let memory = MemoryStore::new();
        let saves = [
            OAuthToken::default()
                .with_user_name("v3")
                .with_client_id("v3")
                .with_refresh_token("ü🔑")
                .with_access_token("ü🔑")
                .with_grant_token("ü🔑")
                .with_expiry_time(0),
            OAuthToken::default()
                .with_user_name("v1")
                .with_client_id("v2")
                .with_client_secret("ü🔑")
                .with_refresh_token("ü🔑")
                .with_redirect_url("ü🔑")
                .with_api_domain("ü🔑"),
            // The second token (found by its user name) drops the shared refresh token.
            OAuthToken::default()
                .with_user_name("v1")
                .with_client_secret("v1")
                .with_refresh_token("v2"),
        ];
        for t in &saves {
            vault.save_token(&mut t.clone()).expect("vault save");
            memory.save_token(&mut t.clone()).expect("memory save");
        }
        // The first token's client id, so only the refresh-token rule decides.
        let query = OAuthToken::default()
            .with_client_id("v3")
            .with_client_secret("any")
            .with_refresh_token("ü🔑");
        assert_eq!(memory.find_token(&query).expect("memory find"), None);
        assert_eq!(vault.find_token(&query).expect("vault find"), None);

        let report = vault.verify().expect("verify");
        assert!(
            report.is_clean(),
            "verify reports problems in a vault only the API touched: {:?}",
            report.problems
        );
        let report = vault.repair().expect("repair");
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(
            vault.find_token(&query).expect("vault find after repair"),
            memory.find_token(&query).expect("memory find"),
            "repair changed what a lookup finds"
        );
    }
}

/// A forged log on which `verify` spun inside sled for minutes and past 2 GiB
/// (fuzz/CAMPAIGN.md, finding 6): `Tree::view_for_pid` helped finish a merge that a forged
/// node announces and looped without a bound while it never completed. The vendored sled
/// now gives up after 100,000 turns with a corruption error.
///
/// The minimized input itself: fuzz/regressions/sled_log/hang-verify-iteration (found by
/// `sled_log` at 72233b8), whose first eight forgeries (all the target applies) are below,
/// applied as the target does to a vault of the target's template tokens. Shown to hang
/// (this test then fails at its time limit) with the loop's bound removed.
#[test]
fn a_forged_merge_that_never_completes_ends_instead_of_spinning() {
    // (message, offset, byte), each taken modulo the message count and the length of the
    // message after its CRC, as `sled_log` does; each changed message's CRC recomputed.
    const FORGERIES: [(usize, usize, u8); 8] = [
        (17, 60395, 235),
        (60395, 60387, 235),
        (65535, 65535, 255),
        (65535, 65535, 255),
        (65535, 65535, 255),
        (65535, 65535, 255),
        (65535, 65535, 255),
        (65535, 65535, 255),
    ];
    let options = VaultOptions::new().kdf(KdfParams::FLOOR).durable(false);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    let vault = options.create(&path, "fuzz-passphrase").unwrap();
    let tokens = common::sample_tokens::sample_tokens();
    for t in &tokens {
        vault.save_token(&mut t.clone()).unwrap();
    }
    drop(vault);

    let file = common::raw_edit::db_files(&path).remove(0);
    let mut log = std::fs::read(&file).unwrap();
    let all = common::sled_log::messages(&log);
    let mut touched = Vec::new();
    for (message, at, byte) in FORGERIES {
        let m = all[message % all.len()];
        log[m.header + 4 + at % (m.end - m.header - 4)] = byte;
        touched.push(m);
    }
    for m in &touched {
        common::sled_log::forge(&mut log, m);
    }
    std::fs::write(&file, &log).unwrap();

    // What the target does with the vault, on a thread, so that a hang fails the test.
    let (done, finished) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        if let Ok(vault) = options.open(&path, "fuzz-passphrase") {
            for t in &tokens {
                if let Ok(Some(hit)) = vault.find_token_by_id(t.id().unwrap()) {
                    assert_eq!(&hit, t, "a forged log changed a token");
                }
            }
            if let Ok(all) = vault.get_tokens() {
                assert!(all.iter().all(|hit| tokens.contains(hit)));
            }
            let _ = vault.verify();
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the vault finished with the forged log (it spun inside sled before the fix)");
    eprintln!("the forged log took {:?}", started.elapsed());
}
