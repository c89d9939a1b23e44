//! The docs/design.md section 3 semantics, checked against `Vault` (the same suite as
//! `MemoryStore`), on a fresh vault in a temporary directory per test.
#[macro_use]
mod common {
    #[macro_use]
    pub mod conformance;
    pub mod fresh_id;
    pub mod vaults;
}

conformance_suite!(common::vaults::fresh_vault());
