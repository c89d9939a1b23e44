//! The docs/design.md section 3 semantics, checked against `MemoryStore`.
#[macro_use]
mod common {
    #[macro_use]
    pub mod conformance;
    pub mod fresh_id;
}

conformance_suite!((tokenvault::MemoryStore::new(), ()));
