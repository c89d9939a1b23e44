//! `MemoryStore` against an independent model of DESIGN.md section 3, on random sequences of
//! operations (64 cases unless `PROPTEST_CASES` says otherwise).
mod common;

use proptest::prelude::*;

proptest! {
    #![proptest_config(common::model::config())]

    #[test]
    fn memory_store_behaves_like_the_model(ops in common::model::ops()) {
        common::model::check_against_model(&tokenvault::MemoryStore::new(), &ops);
    }
}
