//! `MemoryStore` and `Vault` against an independent model of docs/design.md section 3, on random
//! sequences of operations (64 cases unless `PROPTEST_CASES` says otherwise).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]
mod common {
    pub(crate) mod fresh_id;
    pub(crate) mod model;
    pub(crate) mod vaults;
}

use std::sync::OnceLock;

use proptest::prelude::*;
use tokenvault::Vault;

/// One vault for every case (the model check empties the store first), so the cases pay
/// for the KDF and sled's start-up once.
fn shared_vault() -> &'static Vault {
    static VAULT: OnceLock<(Vault, tempfile::TempDir)> = OnceLock::new();
    &VAULT.get_or_init(common::vaults::fresh_vault).0
}

proptest! {
    #![proptest_config(common::model::config())]

    #[test]
    fn memory_store_behaves_like_the_model(ops in common::model::ops()) {
        common::model::check_against_model(&tokenvault::MemoryStore::new(), &ops);
    }

    #[test]
    fn vault_behaves_like_the_model(ops in common::model::ops()) {
        common::model::check_against_model(shared_vault(), &ops);
    }
}
