//! The docs/design.md section 3 semantics, checked against `MemoryStore`.
#[macro_use]
mod common;

conformance_suite!((tokenvault::MemoryStore::new(), ()));
