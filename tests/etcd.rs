//! The vault on a real etcd cluster (feature `etcd`): the conformance suite and the model
//! on an etcd vault, two handles (as two app servers would) writing the same users, what
//! etcd holds at rest, and the errors of a bad location or an unreachable cluster.
//!
//! Needs a running cluster: `scripts/test.sh` starts a 3-member cluster on loopback and
//! sets `TOKENVAULT_ETCD_ENDPOINTS` (`HOST:PORT,...`); without it these tests fail and
//! say so (they never pass silently).
#![cfg(feature = "etcd")]
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
    pub(crate) mod etcd;
    #[macro_use]
    pub(crate) mod conformance;
    pub(crate) mod fresh_id;
    pub(crate) mod model;
    pub(crate) mod stamped;
    pub(crate) mod vaults;
}

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use common::etcd::{endpoints, fresh_location};
use common::stamped::{assert_untorn, stamped};
use common::vaults::{options, PASSPHRASE};
use proptest::prelude::*;
use tokenvault::{Engine, Error, OAuthToken, TokenStore, Vault};

/// A new, empty vault on the cluster; no guard (the cluster is the test run's).
fn fresh_etcd_vault() -> (Vault, ()) {
    let vault = options().create_at(&fresh_location(), PASSPHRASE).unwrap();
    assert_eq!(vault.engine(), Engine::Etcd);
    (vault, ())
}

conformance_suite!(crate::fresh_etcd_vault());

proptest! {
    #![proptest_config(common::model::config())]

    #[test]
    fn an_etcd_vault_behaves_like_the_model(ops in common::model::ops()) {
        static VAULT: OnceLock<Vault> = OnceLock::new();
        common::model::check_against_model(VAULT.get_or_init(|| fresh_etcd_vault().0), &ops);
    }
}

#[test]
fn a_vault_is_created_once_and_opened_by_its_passphrase() {
    let at = fresh_location();
    let mut t = OAuthToken::default()
        .with_user_name("alice@example.com")
        .with_refresh_token("1000.refresh.alice");
    {
        let v = options().create_at(&at, PASSPHRASE).unwrap();
        v.save_token(&mut t).unwrap();
    }
    assert!(matches!(
        options().create_at(&at, PASSPHRASE),
        Err(Error::VaultExists)
    ));
    assert!(matches!(
        options().open_at(&at, "wrong"),
        Err(Error::WrongPassphrase)
    ));
    let v = options().open_at(&at, PASSPHRASE).unwrap();
    assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap(), Some(t));
    // Two handles at once: an etcd vault has no single opener.
    let w = options().open_at(&at, PASSPHRASE).unwrap();
    assert_eq!(w.get_tokens().unwrap().len(), 1);
    let missing = fresh_location();
    assert!(matches!(
        options().open_at(&missing, PASSPHRASE),
        Err(Error::VaultNotFound)
    ));
}

#[test]
fn passphrase_changes_rotations_and_rekeys_elsewhere_reach_the_other_handles() {
    let at = fresh_location();
    let a = options().create_at(&at, PASSPHRASE).unwrap();
    let b = options().open_at(&at, PASSPHRASE).unwrap();
    let mut t = OAuthToken::default().with_user_name("u").with_access_token("a1");
    a.save_token(&mut t).unwrap();
    // b rotates the key epoch; a's next save and lookups still work, and b reads a's.
    b.rotate_key().unwrap();
    let mut t2 = OAuthToken::default().with_user_name("v").with_access_token("a2");
    b.save_token(&mut t2).unwrap();
    assert_eq!(
        a.find_token(&OAuthToken::default().with_user_name("v")).unwrap(),
        Some(t2.clone())
    );
    let mut t3 = OAuthToken::default().with_user_name("w").with_access_token("a3");
    a.save_token(&mut t3).unwrap();
    assert_eq!(b.get_tokens().unwrap().len(), 3);
    assert!(a.verify().unwrap().is_clean());
    // A passphrase change is seen by the next open.
    b.change_passphrase("new").unwrap();
    assert!(matches!(
        options().open_at(&at, PASSPHRASE),
        Err(Error::WrongPassphrase)
    ));
    let c = options().open_at(&at, "new").unwrap();
    assert_eq!(c.get_tokens().unwrap().len(), 3);
}

#[test]
fn two_handles_and_eight_threads_saving_updating_and_deleting_the_same_users_keep_one_record_per_user() {
    let at = fresh_location();
    // A small seal budget: the handles also race to rotate the key epoch.
    let opts = options().seals_per_key(64);
    let handles = [
        opts.create_at(&at, PASSPHRASE).unwrap(),
        opts.open_at(&at, PASSPHRASE).unwrap(),
    ];
    const USERS: u64 = 10;
    const CHURN: u64 = 5;
    const OPS: u64 = 40;
    let stamp = AtomicU64::new(1);
    let barrier = Barrier::new(8);
    let acknowledged = std::sync::Mutex::new(HashMap::<u64, Vec<u64>>::new());
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (vault, stamp, barrier, acknowledged) =
                (&handles[(t % 2) as usize], &stamp, &barrier, &acknowledged);
            s.spawn(move || {
                barrier.wait();
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = stamp.fetch_add(1, Ordering::SeqCst);
                    if (x >> 8) % 4 == 0 {
                        // Users past USERS are saved and deleted by id, concurrently.
                        let user = USERS + x % CHURN;
                        let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
                        match vault.find_token(&q).unwrap() {
                            Some(found) => vault.delete_token(found.id().unwrap()).unwrap(),
                            None => vault.save_token(&mut stamped(user, n)).unwrap(),
                        }
                        continue;
                    }
                    let user = x % USERS;
                    let mut tok = stamped(user, n);
                    if (x >> 8) % 4 == 1 {
                        // An update by id (of the token this thread just found).
                        let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
                        if let Some(found) = vault.find_token(&q).unwrap() {
                            tok = tok.with_id(found.id().unwrap());
                        }
                    }
                    vault.save_token(&mut tok).unwrap();
                    assert_untorn(&tok);
                    acknowledged.lock().unwrap().entry(user).or_default().push(n);
                }
            });
        }
    });
    let all = handles[0].get_tokens().unwrap();
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for t in &all {
        assert_untorn(t);
        *per_user.entry(t.user_name().unwrap().to_owned()).or_default() += 1;
        assert_eq!(
            handles[1]
                .find_token(&OAuthToken::default().with_access_token(t.access_token().unwrap()))
                .unwrap()
                .as_ref(),
            Some(t)
        );
    }
    assert!(
        per_user.values().all(|&n| n == 1),
        "one record per user name: {per_user:?}"
    );
    // Every user saved (and never deleted) is there, holding one of its acknowledged saves
    // (which one depends on the order the transactions committed in).
    let ack = acknowledged.lock().unwrap();
    for user in 0..USERS {
        let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
        let stored = handles[1].find_token(&q).unwrap().expect("a saved user is there");
        let stamp = stored.expiry_time().unwrap() as u64;
        assert!(
            ack[&user].contains(&stamp),
            "user {user}: {stamp} was never acknowledged"
        );
    }
    let report = handles[1].verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn nothing_etcd_holds_is_a_secret_an_id_or_a_user_name() {
    let at = fresh_location();
    let v = options().create_at(&at, PASSPHRASE).unwrap();
    let mut t = OAuthToken::default()
        .with_id("id-visible-if-leaked")
        .with_user_name("user-visible-if-leaked@example.com")
        .with_client_secret("secret-visible-if-leaked")
        .with_refresh_token("refresh-visible-if-leaked")
        .with_access_token("access-visible-if-leaked")
        .with_grant_token("grant-visible-if-leaked");
    v.save_token(&mut t).unwrap();
    // Read every key and value under the prefix with a plain client (etcdctl).
    let (_hosts, prefix) = at.strip_prefix("etcd://").unwrap().split_once('/').unwrap();
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints(),
            "get",
            "--prefix",
            prefix,
            "-w",
            "json",
        ])
        .output()
        .expect("etcdctl (scripts/etcd-cluster.sh install puts it there)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kvs = json["kvs"].as_array().expect("the vault's keys");
    assert!(
        kvs.len() >= 7,
        "header, seals, record, id entry, four index entries: {kvs:?}"
    );
    use base64::Engine as _;
    let mut all = Vec::new();
    for kv in kvs {
        for field in ["key", "value"] {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(kv[field].as_str().unwrap())
                .unwrap();
            all.extend_from_slice(&bytes);
            all.push(0);
        }
    }
    for needle in [
        "visible-if-leaked",
        "id-visible",
        "user-visible",
        "secret-visible",
    ] {
        assert!(
            memchr::memmem::find(&all, needle.as_bytes()).is_none(),
            "{needle} is in etcd"
        );
    }
    // The scan sees what it looks for: the prefix itself is there.
    assert!(memchr::memmem::find(&all, prefix.as_bytes()).is_some());
}

#[test]
fn a_bad_location_or_an_unreachable_cluster_is_a_clear_error_within_the_deadline() {
    for bad in ["etcd://127.0.0.1:2379", "etcd://nohost/p", "etcd://h:1,/p"] {
        let e = options().create_at(bad, PASSPHRASE).unwrap_err();
        assert!(e.to_string().contains("not an etcd location"), "{bad}: {e}");
    }
    // A port nothing listens on.
    let t = Instant::now();
    let e = options()
        .timeout(Duration::from_millis(500))
        .open_at("etcd://127.0.0.1:9/tokenvault-test/none", PASSPHRASE)
        .unwrap_err();
    assert!(matches!(e, Error::Storage { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A plain etcd client on the test cluster, for what the vault must not be able to tell
/// from a hostile or crashed peer: raw reads and writes of its keys.
mod raw {
    use std::future::Future;

    pub(crate) fn with_client<T, F: Future<Output = T>>(f: impl FnOnce(etcd_client::Client) -> F) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let endpoints: Vec<String> = super::endpoints()
                .split(',')
                .map(|h| format!("http://{h}"))
                .collect();
            f(etcd_client::Client::connect(endpoints, None).await.unwrap()).await
        })
    }

    /// Every key and value under `prefix`.
    pub(crate) fn under(prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefix = prefix.to_owned();
        with_client(|mut c| async move {
            let options = etcd_client::GetOptions::new().with_prefix();
            let resp = c.get(prefix, Some(options)).await.unwrap();
            resp.kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
                .collect()
        })
    }

    pub(crate) fn put(entries: Vec<(Vec<u8>, Vec<u8>)>) {
        with_client(|mut c| async move {
            for (k, v) in entries {
                c.put(k, v, None).await.unwrap();
            }
        });
    }
}

/// The prefix of an `etcd://` location, with its trailing `/`.
fn prefix_of(location: &str) -> String {
    let (_hosts, prefix) = location.strip_prefix("etcd://").unwrap().split_once('/').unwrap();
    format!("{prefix}/")
}

/// The keys under the vault's prefix, each without it, as text where it is text.
fn key_names(location: &str) -> Vec<String> {
    let prefix = prefix_of(location);
    raw::under(&prefix)
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect()
}

fn sorted(mut tokens: Vec<OAuthToken>) -> Vec<OAuthToken> {
    tokens.sort_by(|a, b| a.id().cmp(&b.id()));
    tokens
}

#[test]
fn a_rekey_and_a_repair_of_hundreds_of_tokens_each_write_a_new_generation_and_leave_none_of_the_old() {
    let at = fresh_location();
    let v = options().create_at(&at, PASSPHRASE).unwrap();
    for n in 0..300 {
        v.save_token(&mut stamped(n, 1)).unwrap();
    }
    let before = sorted(v.get_tokens().unwrap());
    let same_passphrase = options().open_at(&at, PASSPHRASE).unwrap();
    let other_passphrase = options().open_at(&at, PASSPHRASE).unwrap();

    // 300 tokens: some 1,800 records and entries replaced, far past one transaction.
    v.rekey("second").unwrap();
    let names = key_names(&at);
    assert!(names.contains(&"current".to_owned()), "{names:?}");
    assert!(
        names.iter().all(|k| k == "current" || k.starts_with("gen.1/")),
        "only the new generation and its pointer are left: {:?}",
        names
            .iter()
            .filter(|k| !k.starts_with("gen.1/"))
            .collect::<Vec<_>>()
    );
    assert!(names.len() > 1800, "{}", names.len());
    assert_eq!(sorted(v.get_tokens().unwrap()), before);
    // A handle opened before, under the old passphrase: a clear error, never a miss.
    let q = OAuthToken::default().with_user_name(before[0].user_name().unwrap());
    assert!(matches!(
        other_passphrase.find_token(&q),
        Err(Error::WrongPassphrase)
    ));
    assert!(matches!(
        other_passphrase.get_tokens(),
        Err(Error::WrongPassphrase)
    ));
    assert!(matches!(
        options().open_at(&at, PASSPHRASE),
        Err(Error::WrongPassphrase)
    ));
    drop(same_passphrase);
    let reopened = options().open_at(&at, "second").unwrap();
    assert_eq!(sorted(reopened.get_tokens().unwrap()), before);
    assert!(reopened.verify().unwrap().is_clean());

    // Damage 60 records as a peer with write access could: a byte of each flipped.
    let records = format!("{}gen.1/tokens/", prefix_of(&at));
    let damaged: Vec<(Vec<u8>, Vec<u8>)> = raw::under(&records)
        .into_iter()
        .take(60)
        .map(|(k, mut v)| {
            let last = v.len() - 1;
            v[last] ^= 0x40;
            (k, v)
        })
        .collect();
    raw::put(damaged);
    let follower = options().open_at(&at, "second").unwrap();
    assert!(matches!(reopened.get_tokens(), Err(Error::Corrupted { .. })));
    // Sixty set aside: three writes each, more than one transaction again.
    let report = reopened.repair().unwrap();
    assert_eq!(report.set_aside.len(), 60, "{:?}", report.problems);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.quarantined.len(), 60);
    let names = key_names(&at);
    assert!(
        names.iter().all(|k| k == "current" || k.starts_with("gen.2/")),
        "{:?}",
        names
            .iter()
            .filter(|k| !k.starts_with("gen.2/"))
            .collect::<Vec<_>>()
    );
    // The handle opened before the repair follows it: same keys, nothing to re-enter.
    let left = follower.get_tokens().unwrap();
    assert_eq!(left.len(), 240);
    for t in &left {
        assert!(before.contains(t));
    }
    assert!(follower.verify().unwrap().is_clean());
    let again = follower.repair().unwrap();
    assert!(again.set_aside.is_empty() && again.is_clean());
}

#[test]
fn a_small_rekey_also_moves_the_generation_so_other_handles_never_miss_or_write_under_old_keys() {
    let at = fresh_location();
    let a = options().create_at(&at, PASSPHRASE).unwrap();
    let b = options().open_at(&at, PASSPHRASE).unwrap();
    let mut t = stamped(1, 1);
    a.save_token(&mut t).unwrap();
    assert_eq!(b.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(&t));
    // Three tokens' worth of writes would fit one transaction; a re-key still switches.
    a.rekey("second").unwrap();
    assert!(key_names(&at)
        .iter()
        .all(|k| k == "current" || k.starts_with("gen.1/")));
    let q = OAuthToken::default().with_user_name(t.user_name().unwrap());
    assert!(matches!(b.find_token(&q), Err(Error::WrongPassphrase)));
    assert!(matches!(
        b.save_token(&mut stamped(2, 1)),
        Err(Error::WrongPassphrase)
    ));
    let c = options().open_at(&at, "second").unwrap();
    assert_eq!(c.get_tokens().unwrap(), vec![t]);
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn saves_on_another_handle_during_a_large_rekey_wait_for_it_and_none_is_lost() {
    let at = fresh_location();
    let a = options().create_at(&at, PASSPHRASE).unwrap();
    for n in 0..300 {
        a.save_token(&mut stamped(n, 1)).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (saved, reopened) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut b = options().open_at(&at, PASSPHRASE).unwrap();
            let (mut saved, mut reopened) = (Vec::new(), 0);
            let mut n = 1000;
            while !stop.load(Ordering::SeqCst) {
                let mut t = stamped(n, 7);
                match b.save_token(&mut t) {
                    Ok(()) => {
                        saved.push(t);
                        n += 1;
                    }
                    // Re-keyed elsewhere: the new header's salt is not this handle's, so it
                    // must be opened again (nothing was written).
                    Err(Error::WrongPassphrase) => {
                        b = options().open_at(&at, PASSPHRASE).unwrap();
                        reopened += 1;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            (saved, reopened)
        });
        std::thread::sleep(Duration::from_millis(100));
        a.rekey(PASSPHRASE).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap()
    });
    assert_eq!(reopened, 1);
    assert!(saved.len() > 2, "{}", saved.len());
    let c = options().open_at(&at, PASSPHRASE).unwrap();
    let all = c.get_tokens().unwrap();
    assert_eq!(all.len(), 300 + saved.len());
    for t in &saved {
        assert_eq!(c.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
    }
    assert!(c.verify().unwrap().is_clean());
    assert!(key_names(&at)
        .iter()
        .all(|k| k == "current" || k.starts_with("gen.1/")));
}

#[test]
fn a_freeze_left_by_a_rewriter_that_died_ends_with_its_lease() {
    let at = fresh_location();
    let v = options().create_at(&at, PASSPHRASE).unwrap();
    let frozen = format!("{}frozen", prefix_of(&at));
    // What a process that died in the middle of a rewrite leaves: its freeze, on a lease
    // of two seconds that nobody renews.
    raw::with_client(|mut c| async move {
        let lease = c.lease_grant(2, None).await.unwrap().id();
        let options = etcd_client::PutOptions::new().with_lease(lease);
        c.put(frozen, "a rewriter that died", Some(options))
            .await
            .unwrap();
    });
    let t = Instant::now();
    let mut token = stamped(1, 1);
    v.save_token(&mut token).unwrap();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert_eq!(v.find_token_by_id(token.id().unwrap()).unwrap(), Some(token));
}
