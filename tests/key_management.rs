//! Key epochs, the seal budget, re-keying, and the KDF cost of the header.
//!
//! Protects against: records sealed before a rotation becoming unreadable; a key used past
//! its seal budget; a `rekey` that loses a token, an index entry, or leaves the old
//! passphrase (or old ciphertext) working; a passphrase change or `rekey` that silently
//! writes weaker KDF parameters than the vault had; a vault made stronger on purpose that
//! no options can open.
//!
//! Every test runs on each engine (`sled::NAME`, `redb::NAME`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

mod common {
    pub(crate) mod raw_edit;
    pub(crate) mod vaults;
}

use std::collections::BTreeSet;
use std::path::Path;

use common::raw_edit;
use common::vaults::{options, token};
use tokenvault::{Error, KdfParams, OAuthToken, TokenStore, Vault};

/// Every token is found by id and by each of its keys.
fn assert_all_findable(v: &Vault, tokens: &[OAuthToken]) {
    for t in tokens {
        assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
        let client = |q: OAuthToken| q.with_client_id("1000.CLIENT").with_client_secret("x");
        for q in [
            OAuthToken::default().with_user_name(t.user_name().unwrap()),
            OAuthToken::default().with_access_token(t.access_token().unwrap()),
            client(OAuthToken::default().with_refresh_token(t.refresh_token().unwrap())),
            client(OAuthToken::default().with_grant_token(t.grant_token().unwrap())),
        ] {
            assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t), "{q:?}");
        }
    }
}

/// The record epochs present in the vault's `tokens` tree (byte 1..5 of each record).
fn record_epochs(path: &Path) -> BTreeSet<u32> {
    records(path)
        .iter()
        .map(|v| u32::from_be_bytes(v[1..5].try_into().unwrap()))
        .collect()
}

/// The records of the vault's `tokens` tree.
fn records(path: &Path) -> BTreeSet<Vec<u8>> {
    raw_edit::edit(path, |db| {
        db.entries("tokens").into_iter().map(|(_, v)| v).collect()
    })
}

fn save_all(v: &Vault, range: std::ops::Range<usize>) -> Vec<OAuthToken> {
    range
        .map(|n| {
            let mut t = token(n);
            v.save_token(&mut t).unwrap();
            t
        })
        .collect()
}

/// The stored seal counter: (epoch, count).
fn stored_seals(path: &Path) -> (u32, u64) {
    let v = raw_edit::edit(path, |db| db.get("meta", "seals").unwrap());
    (
        u32::from_be_bytes(v[0..4].try_into().unwrap()),
        u64::from_be_bytes(v[4..12].try_into().unwrap()),
    )
}

/// Stronger than the floor in every parameter, and cheap enough for tests.
const STRONG: KdfParams = KdfParams {
    memory_kib: 24 * 1024,
    iterations: 3,
    parallelism: 2,
};

common::vaults::engine_suite! {
    fn rotate_key_keeps_old_records_readable_and_seals_new_ones_under_the_new_epoch() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let mut tokens;
        {
            let v = options().create(&path, "p").unwrap();
            tokens = save_all(&v, 0..5);
            v.rotate_key().unwrap();
            tokens.extend(save_all(&v, 5..10));
            v.rotate_key().unwrap();
            assert_all_findable(&v, &tokens);
        }
        assert_eq!(record_epochs(&path), BTreeSet::from([0, 1]));
        let v = options().open(&path, "p").unwrap();
        assert_all_findable(&v, &tokens);
        tokens.extend(save_all(&v, 10..12));
        drop(v);
        assert_eq!(record_epochs(&path), BTreeSet::from([0, 1, 2]));
        let v = options().open(&path, "p").unwrap();
        assert_all_findable(&v, &tokens);
    }
    fn the_seal_budget_rotates_the_key_by_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens;
        {
            let v = options().seals_per_key(4).create(&path, "p").unwrap();
            tokens = save_all(&v, 0..10);
        }
        // A new token is sealed twice (its record and its id): 20 seals with a budget of 4,
        // two new tokens per epoch: epochs 0 to 4.
        assert_eq!(record_epochs(&path), BTreeSet::from([0, 1, 2, 3, 4]));
        // The counter survives a reopen as the bound reserved on disk (here the whole budget):
        // the next seal starts epoch 5, never a fifth seal under epoch 4's key.
        let v = options().seals_per_key(4).open(&path, "p").unwrap();
        let mut all = tokens.clone();
        all.extend(save_all(&v, 10..13));
        drop(v);
        // Three more new tokens: epochs 5 (two) and 6 (one).
        assert_eq!(record_epochs(&path), BTreeSet::from([0, 1, 2, 3, 4, 5, 6]));
        let v = options().open(&path, "p").unwrap();
        assert_all_findable(&v, &all);
    }
    fn the_stored_seal_counter_never_falls_below_the_seals_done() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        drop(options().create(&path, "p").unwrap());
        assert_eq!(stored_seals(&path), (0, 0));
        let mut sealed = 0u64;
        let mut previous = 0u64;
        for round in 0..3 {
            let v = options().open(&path, "p").unwrap();
            // A new token seals its record and its id; an update seals its record.
            let mut tokens = save_all(&v, round * 1000..round * 1000 + 600);
            for t in tokens.iter_mut().take(100) {
                t.set_access_token(Some(format!("{}.next", t.access_token().unwrap())));
                v.save_token(t).unwrap();
            }
            sealed += 2 * 600 + 100;
            drop(v);
            let (epoch, count) = stored_seals(&path);
            assert_eq!(epoch, 0);
            // An upper bound on the seals done, written in blocks: not once per save.
            assert!(count > sealed, "round {round}: counter {count}, {sealed} seals");
            assert!(
                count > previous && count <= sealed + 1024 * (round as u64 + 1),
                "{count}"
            );
            previous = count;
        }
    }
    fn a_tampered_seal_counter_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().create(&path, "p").unwrap();
            save_all(&v, 0..3);
        }
        raw_edit::edit(&path, |db| {
            let mut seals = db.get("meta", "seals").unwrap();
            seals[11] = 0; // lower the count
            db.insert("meta", "seals", seals);
        });
        assert!(matches!(options().open(&path, "p"), Err(Error::Corrupted { .. })));
    }
    fn rekey_replaces_every_key_and_keeps_every_token_findable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let old_records;
        let mut tokens;
        {
            let v = options().create(&path, "old").unwrap();
            tokens = save_all(&v, 0..20);
            // A value shared by two tokens: the last saved owns the index entry.
            let shared_access = token(3).access_token().unwrap().to_owned();
            let mut shared = token(99).with_access_token(&shared_access);
            v.save_token(&mut shared).unwrap();
            tokens[3] = v.find_token_by_id(tokens[3].id().unwrap()).unwrap().unwrap();
            v.rotate_key().unwrap();
            drop(v);
            old_records = records(&path);
            let v = options().open(&path, "old").unwrap();
            v.rekey("new").unwrap();
            // Still usable in place.
            let q = OAuthToken::default().with_access_token(shared_access);
            assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(&shared));
            let others: Vec<_> = tokens
                .iter()
                .filter(|t| t.id() != tokens[3].id())
                .cloned()
                .collect();
            assert_all_findable(&v, &others);
            assert_eq!(v.get_tokens().unwrap().len(), 21);
            tokens.push(shared);
        }
        assert!(matches!(
            options().open(&path, "old"),
            Err(Error::WrongPassphrase)
        ));
        let v = options().open(&path, "new").unwrap();
        assert_eq!(v.get_tokens().unwrap().len(), tokens.len());
        for t in &tokens {
            assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
        }
        drop(v);
        let new_records = records(&path);
        assert!(
            old_records.is_disjoint(&new_records),
            "every record must be re-encrypted"
        );
        assert_eq!(record_epochs(&path), BTreeSet::from([0]));
    }
    fn changing_the_passphrase_never_weakens_the_kdf_unless_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        drop(options().kdf(STRONG).create(&path, "a").unwrap());
        // Options asking for the floor: weaker than the vault in every parameter.
        let weak = options();
        let v = weak.open(&path, "a").unwrap();
        assert_eq!(v.kdf_params(), STRONG);
        v.change_passphrase("b").unwrap();
        assert_eq!(v.kdf_params(), STRONG);
        v.rekey("c").unwrap();
        assert_eq!(v.kdf_params(), STRONG);
        drop(v);
        assert_eq!(weak.open(&path, "c").unwrap().kdf_params(), STRONG);
        // More memory asked, fewer passes and lanes: each parameter keeps the larger.
        let mixed = KdfParams {
            memory_kib: 32 * 1024,
            iterations: 2,
            parallelism: 1,
        };
        let v = options().kdf(mixed).open(&path, "c").unwrap();
        v.change_passphrase("d").unwrap();
        let both = KdfParams {
            memory_kib: 32 * 1024,
            ..STRONG
        };
        assert_eq!(v.kdf_params(), both);
        drop(v);
        assert_eq!(weak.open(&path, "d").unwrap().kdf_params(), both);
        // Asked for explicitly, the weaker parameters are written, by either operation.
        let v = weak.clone().allow_weaker_kdf(true).open(&path, "d").unwrap();
        v.change_passphrase("e").unwrap();
        assert_eq!(v.kdf_params(), KdfParams::FLOOR);
        drop(v);
        assert_eq!(weak.open(&path, "e").unwrap().kdf_params(), KdfParams::FLOOR);
        let v = options().kdf(STRONG).open(&path, "e").unwrap();
        assert_eq!(v.kdf_params(), STRONG, "open upgrades a weaker vault");
        drop(v);
        let v = weak.clone().allow_weaker_kdf(true).open(&path, "e").unwrap();
        v.rekey("f").unwrap();
        assert_eq!(v.kdf_params(), KdfParams::FLOOR);
    }
    fn a_vault_stronger_than_the_bound_opens_once_the_options_allow_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        drop(options().kdf(STRONG).create(&path, "p").unwrap());
        let bounded = options().max_kdf(KdfParams::FLOOR);
        match bounded.open(&path, "p") {
            Err(Error::InvalidKdfParams { reason }) => {
                assert!(reason.contains("memory_kib 24576"), "{reason}");
                assert!(reason.contains("max_kdf"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Raising the bound, or asking for these parameters, lets it open.
        drop(bounded.clone().max_kdf(STRONG).open(&path, "p").unwrap());
        drop(
            options()
                .kdf(STRONG)
                .max_kdf(KdfParams::FLOOR)
                .open(&path, "p")
                .unwrap(),
        );
        // The default bound is well above the recommended parameters.
        drop(options().open(&path, "p").unwrap());
    }
}
