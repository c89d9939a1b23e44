//! Findings of the fuzz campaign (`fuzz/CAMPAIGN.md`), replayed through the public API.
//!
//! Protects against: a fuzz finding coming back once it is fixed. Each test names the fuzz
//! target that found it; the minimized input is kept under `fuzz/regressions/<target>/`
//! (replay it with `cargo fuzz run <target> fuzz/regressions/<target>/<file>`). A test
//! that still fails is `#[ignore]`d with the reason "fuzz finding, fix pending".

use tokenvault::{KdfParams, MemoryStore, OAuthToken, TokenStore, Vault, VaultOptions};

fn vault(dir: &tempfile::TempDir) -> Vault {
    VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .durable(false)
        .create(dir.path().join("vault"), "passphrase")
        .expect("create")
}

/// Two users share an access token; the one that claimed it last moves on to another
/// value. DESIGN.md section 3: "when the owner drops the value ... the entry goes, and the
/// value finds nothing". Both stores do that; `verify` must not call this state damaged,
/// and `repair` must not change what a lookup finds.
///
/// Found by `differential` (fuzz/regressions/differential/verify-unindexed-shared-value).
#[test]
fn verify_accepts_a_shared_value_its_last_owner_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let vault = vault(&tmp);
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
