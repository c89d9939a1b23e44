//! The docs/design.md section 3 semantics, checked against `Vault` (the same suite as
//! `MemoryStore`), on a fresh vault in a temporary directory per test.
#[macro_use]
mod common;

fn fresh_vault() -> (tokenvault::Vault, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let vault = tokenvault::VaultOptions::new()
        .kdf(tokenvault::KdfParams::FLOOR)
        // Every test writes through the durable path's transaction; flushing each write
        // only adds disk time here (crash durability has its own tests).
        .durable(false)
        .create(tmp.path().join("vault"), "conformance")
        .expect("create vault");
    (vault, tmp)
}

conformance_suite!(fresh_vault());
