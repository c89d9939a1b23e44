//! The etcd cluster the etcd tests run against: its endpoints and fresh vault locations.

use std::sync::atomic::{AtomicU64, Ordering};

/// The cluster's client endpoints, from `TOKENVAULT_ETCD_ENDPOINTS`.
pub(crate) fn endpoints() -> String {
    std::env::var("TOKENVAULT_ETCD_ENDPOINTS").unwrap_or_else(|_| {
        panic!(
            "TOKENVAULT_ETCD_ENDPOINTS is not set: run scripts/test.sh, which starts an etcd \
             cluster for these tests (or scripts/etcd-cluster.sh run DIR -- cargo test --features etcd)"
        )
    })
}

/// A location no other test (of this process or another) uses.
pub(crate) fn fresh_location() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).unwrap();
    format!(
        "etcd://{}/tokenvault-test/{}-{}-{:x}",
        endpoints(),
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        u64::from_le_bytes(r)
    )
}
