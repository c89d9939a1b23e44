//! The docs/design.md section 3 semantics, checked against `Vault` (the same suite as
//! `MemoryStore`), on a fresh vault in a temporary directory per test, on each engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]
#[macro_use]
mod common {
    #[macro_use]
    pub(crate) mod conformance;
    pub(crate) mod fresh_id;
    pub(crate) mod vaults;
}

/// The suite on sled.
mod sled {
    conformance_suite!(crate::common::vaults::on(
        tokenvault::Engine::Sled,
        crate::common::vaults::fresh_vault
    ));
}

/// The suite on redb.
#[cfg(feature = "redb")]
mod redb {
    conformance_suite!(crate::common::vaults::on(
        tokenvault::Engine::Redb,
        crate::common::vaults::fresh_vault
    ));
}
