//! The docs/design.md section 3 semantics, checked against `Vault` (the same suite as
//! `MemoryStore`), on a fresh vault in a temporary directory per test.
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

conformance_suite!(common::vaults::fresh_vault());
