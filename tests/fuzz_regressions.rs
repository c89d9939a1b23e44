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
    pub(crate) mod vaults;
}

use common::vaults::fresh_vault;
use tokenvault::{MemoryStore, OAuthToken, TokenStore};

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
