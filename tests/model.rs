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
use tokenvault::{Engine, Vault};

/// One vault per engine for every case (the model check empties the store first), so the
/// cases pay for the KDF and the engine's start-up once.
fn shared_vault(engine: Engine) -> &'static Vault {
    static SLED: OnceLock<(Vault, tempfile::TempDir)> = OnceLock::new();
    static REDB: OnceLock<(Vault, tempfile::TempDir)> = OnceLock::new();
    let cell = match engine {
        Engine::Redb => &REDB,
        _ => &SLED,
    };
    &cell
        .get_or_init(|| common::vaults::on(engine, common::vaults::fresh_vault))
        .0
}

proptest! {
    #![proptest_config(common::model::config())]

    #[test]
    fn memory_store_behaves_like_the_model(ops in common::model::ops()) {
        common::model::check_against_model(&tokenvault::MemoryStore::new(), &ops);
    }

    #[test]
    fn vault_behaves_like_the_model(ops in common::model::ops()) {
        common::model::check_against_model(shared_vault(Engine::Sled), &ops);
    }

    #[test]
    #[cfg(feature = "redb")]
    fn redb_vault_behaves_like_the_model(ops in common::model::ops()) {
        common::model::check_against_model(shared_vault(Engine::Redb), &ops);
    }
}
