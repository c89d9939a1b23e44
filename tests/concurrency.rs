//! Many threads on one store: saves, updates, finds and deletes of overlapping users.
//!
//! Protects against: two records for one user name after concurrent saves, a reader seeing
//! a token that mixes two saves, an index entry left pointing at the wrong record, and
//! lookups that miss a record they should find once the writers are done.
//!
//! The vault tests run on each engine (`sled::NAME`, `redb::NAME`); the threads share the
//! vault the test made, on its engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

mod common {
    pub(crate) mod stamped;
    pub(crate) mod vaults;
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use common::stamped::{assert_untorn, stamped};
use common::vaults::options;
use tokenvault::{MemoryStore, OAuthToken, TokenStore};

const USERS: u64 = 12;
const THREADS: u64 = 8;
const OPS: u64 = 300;

fn hammer<S: TokenStore + Sync>(store: &S) {
    let stamp = AtomicU64::new(1);
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, stamp, barrier) = (store, &stamp, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let user = x % USERS;
                    match (x >> 8) % 10 {
                        0 => {
                            let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
                            if let Some(found) = store.find_token(&q).unwrap() {
                                store.delete_token(found.id().unwrap()).unwrap();
                            }
                        }
                        1..=4 => {
                            let mut tok = stamped(user, stamp.fetch_add(1, Ordering::SeqCst));
                            store.save_token(&mut tok).unwrap();
                            assert_untorn(&tok);
                        }
                        _ => {
                            let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
                            if let Some(found) = store.find_token(&q).unwrap() {
                                assert_untorn(&found);
                                if let Some(by_id) = store.find_token_by_id(found.id().unwrap()).unwrap() {
                                    assert_untorn(&by_id);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    let all = store.get_tokens().unwrap();
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for t in &all {
        assert_untorn(t);
        *per_user.entry(t.user_name().unwrap().to_owned()).or_default() += 1;
        let client = |q: OAuthToken| q.with_client_id("1000.CONC").with_client_secret("x");
        for q in [
            OAuthToken::default().with_user_name(t.user_name().unwrap()),
            OAuthToken::default().with_access_token(t.access_token().unwrap()),
            client(OAuthToken::default().with_refresh_token(t.refresh_token().unwrap())),
            client(OAuthToken::default().with_grant_token(t.grant_token().unwrap())),
        ] {
            assert_eq!(store.find_token(&q).unwrap().as_ref(), Some(t));
        }
    }
    assert!(
        per_user.values().all(|&n| n == 1),
        "one record per user name: {per_user:?}"
    );
}

common::vaults::engine_suite! {
    fn concurrent_writers_and_readers_on_a_vault_keep_every_invariant() {
        let tmp = tempfile::tempdir().unwrap();
        let vault = options().durable(false).create(tmp.path().join("vault"), "p").unwrap();
        hammer(&vault);
        let report = vault.verify().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
    }

    fn concurrent_first_saves_of_one_user_make_one_record() {
        let tmp = tempfile::tempdir().unwrap();
        let vault = options().create(tmp.path().join("vault"), "p").unwrap();
        let barrier = Barrier::new(8);
        std::thread::scope(|s| {
            for n in 0..8u64 {
                let (vault, barrier) = (&vault, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    vault.save_token(&mut stamped(0, n + 1)).unwrap();
                });
            }
        });
        assert_eq!(vault.get_tokens().unwrap().len(), 1);
        assert!(vault.verify().unwrap().is_clean());
    }
}

/// No engine: the same hammer on the in-memory store.
#[test]
fn concurrent_writers_and_readers_on_a_memory_store_keep_every_invariant() {
    hammer(&MemoryStore::new());
}
