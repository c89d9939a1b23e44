//! A hostile vault directory: bytes changed behind the vault's back, with its engine (sled
//! or redb) directly. Every test runs on each engine.
//!
//! Protects against: a flipped bit, truncation or extension of any record or header byte
//! going unnoticed; a record moved to another slot; an index entry repointed at another
//! user's record returning that user's token; a header transplanted from another vault;
//! a header doctored to ask for minutes of KDF work; any of these panicking. Every case
//! must be an `Error`, never wrong data.
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

use std::path::Path;

use common::raw_edit::{self, LiveDb};
use common::vaults::{create_with_tokens, options, token, PASSPHRASE};
use sha2::{Digest, Sha256};
use tokenvault::{Error, KdfParams, OAuthToken, TokenStore, Vault};

/// A token whose record is longer than every [`token`]'s, so that [`records`] can leave
/// it out: the record that no test damages, which keeps the vault openable.
fn bystander() -> OAuthToken {
    token(9999)
        .with_user_name("bystander@example.com")
        .with_api_domain("https://bystander.example.com/a/long/enough/path/to/make/its/record/the/longest")
}

/// [`create_with_tokens`], plus the [`bystander`].
fn create_with_bystander(path: &Path, n: usize) -> Vec<OAuthToken> {
    let tokens = create_with_tokens(path, n);
    let v = options().open(path, PASSPHRASE).unwrap();
    v.save_token(&mut bystander()).unwrap();
    tokens
}

/// The records of the `tokens` tree, less the bystander's (the longest).
fn records(db: &LiveDb) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all = db.entries("tokens");
    if let Some(longest) = all.iter().map(|(_, v)| v.len()).max() {
        let before = all.len();
        all.retain(|(_, v)| v.len() != longest);
        assert_eq!(all.len() + 1, before, "exactly one bystander record");
    }
    all
}

/// Every lookup of every token must fail; none may return data.
fn assert_every_lookup_fails(v: &Vault, tokens: &[OAuthToken]) {
    for t in tokens {
        let by_id = v.find_token_by_id(t.id().unwrap());
        assert!(matches!(by_id, Err(Error::Corrupted { .. })), "by id: {by_id:?}");
        let by_user = v.find_token(&OAuthToken::default().with_user_name(t.user_name().unwrap()));
        assert!(
            matches!(by_user, Err(Error::Corrupted { .. })),
            "by user: {by_user:?}"
        );
        let by_access = v.find_token(&OAuthToken::default().with_access_token(t.access_token().unwrap()));
        assert!(
            matches!(by_access, Err(Error::Corrupted { .. })),
            "by access: {by_access:?}"
        );
    }
    assert!(matches!(v.get_tokens(), Err(Error::Corrupted { .. })));
}

/// The vault opens (the bystander's record is intact), every lookup of a damaged token
/// fails, and the bystander still reads.
fn open_and_check(path: &Path, tokens: &[OAuthToken]) {
    let v = options().open(path, PASSPHRASE).unwrap();
    assert_every_lookup_fails(&v, tokens);
    let mut b = bystander();
    let q = OAuthToken::default().with_user_name("bystander@example.com");
    let found = v.find_token(&q).unwrap().expect("the bystander");
    b.set_id(found.id());
    assert_eq!(found, b);
}

fn header(path: &Path) -> Vec<u8> {
    raw_edit::edit(path, |db| db.get("meta", "header").expect("a header"))
}

fn set_header(path: &Path, bytes: &[u8]) {
    raw_edit::edit(path, |db| db.insert("meta", "header", bytes));
}

fn with_checksum(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&Sha256::digest(body));
    out
}

/// The header with the 4-byte big-endian value at `offset` (of its body) set to `value`,
/// and its checksum recomputed. The KDF parameters memory_kib, iterations, parallelism sit
/// at offsets 27, 31, 35 (magic 8, version 2, vault id 16, KDF id 1).
fn with_kdf_value(header: &[u8], offset: usize, value: u32) -> Vec<u8> {
    let mut body = header[..header.len() - 32].to_vec();
    body[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    with_checksum(&body)
}

/// Enough records that `get_tokens` opens them in several batches on several threads.
const MANY: usize = 20_000;

fn make_large_vault(path: &Path) -> Vec<OAuthToken> {
    let v = options().durable(false).create(path, PASSPHRASE).unwrap();
    let tokens = (0..MANY)
        .map(|i| {
            let mut t = token(i);
            v.save_token(&mut t).unwrap();
            t
        })
        .collect();
    v.flush().unwrap();
    tokens
}

common::vaults::engine_suite! {
    fn a_flipped_bit_at_any_record_byte_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        create_with_tokens(&path, 1);
        let record_len = raw_edit::edit(&path, |db| db.entries("tokens")[0].1.len());
        std::fs::remove_dir_all(&path).unwrap();
        // One token per record byte; record k gets byte k flipped (bit k % 8).
        let tokens = create_with_bystander(&path, record_len);
        raw_edit::edit(&path, |db| {
            let all = records(db);
            assert_eq!(all.len(), record_len);
            for (k, (slot, mut value)) in all.into_iter().enumerate() {
                assert_eq!(value.len(), record_len, "records must have equal length");
                value[k] ^= 1 << (k % 8);
                db.insert("tokens", slot, value);
            }
        });
        open_and_check(&path, &tokens);
    }

    fn truncated_or_extended_records_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens = create_with_bystander(&path, 40);
        raw_edit::edit(&path, |db| {
            for (k, (slot, mut value)) in records(db).into_iter().enumerate() {
                match k % 4 {
                    0 => value.truncate(value.len() - 1),
                    1 => value.truncate(k % 20),
                    2 => value.push(0),
                    _ => value.extend_from_slice(&[0xff; 64]),
                }
                db.insert("tokens", slot, value);
            }
        });
        open_and_check(&path, &tokens);
    }

    fn a_record_moved_to_another_slot_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens = create_with_bystander(&path, 2);
        raw_edit::edit(&path, |db| {
            let all = records(db);
            // Swap the two records' slots.
            db.insert("tokens", &all[0].0, &all[1].1);
            db.insert("tokens", &all[1].0, &all[0].1);
        });
        open_and_check(&path, &tokens);
    }

    fn a_record_copied_over_another_never_returns_the_wrong_token() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens = create_with_bystander(&path, 2);
        raw_edit::edit(&path, |db| {
            let all = records(db);
            db.insert("tokens", &all[1].0, &all[0].1);
        });
        // One of the two records is intact; the other must fail, and nothing may return the
        // intact token for the other's id or user name.
        let v = options().open(&path, PASSPHRASE).unwrap();
        let mut failures = 0;
        for t in &tokens {
            match v.find_token_by_id(t.id().unwrap()) {
                Ok(Some(found)) => assert_eq!(&found, t),
                Err(Error::Corrupted { .. }) => failures += 1,
                other => panic!("{other:?}"),
            }
            match v.find_token(&OAuthToken::default().with_user_name(t.user_name().unwrap())) {
                Ok(Some(found)) => assert_eq!(&found, t),
                Err(Error::Corrupted { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(failures, 1);
    }

    fn an_index_entry_repointed_at_another_record_never_returns_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens = create_with_tokens(&path, 2);
        raw_edit::edit(&path, |db| {
            for name in ["idx.user", "idx.access", "idx.refresh", "idx.grant"] {
                let all = db.entries(name);
                assert_eq!(all.len(), 2);
                db.insert(name, &all[0].0, &all[1].1);
                db.insert(name, &all[1].0, &all[0].1);
            }
        });
        let v = options().open(&path, PASSPHRASE).unwrap();
        for t in &tokens {
            let client = |q: OAuthToken| q.with_client_id("1000.CLIENT").with_client_secret("s");
            for q in [
                OAuthToken::default().with_user_name(t.user_name().unwrap()),
                OAuthToken::default().with_access_token(t.access_token().unwrap()),
                client(OAuthToken::default().with_refresh_token(t.refresh_token().unwrap())),
                client(OAuthToken::default().with_grant_token(t.grant_token().unwrap())),
            ] {
                let got = v.find_token(&q);
                assert!(matches!(got, Err(Error::Corrupted { .. })), "{q:?} gave {got:?}");
            }
            // The records themselves are intact.
            assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
        }
    }

    fn every_bit_flip_of_the_header_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        create_with_tokens(&path, 1);
        let original = header(&path);
        let mut variants = Vec::new();
        for i in 0..original.len() {
            for bit in 0..8 {
                let mut h = original.clone();
                h[i] ^= 1 << bit;
                variants.push(h);
            }
        }
        // The checksum alone catches these; open must never succeed.
        for (n, h) in variants.iter().enumerate() {
            set_header(&path, h);
            let got = options().open(&path, PASSPHRASE);
            assert!(
                matches!(got, Err(Error::Corrupted { .. }) | Err(Error::WrongPassphrase)),
                "variant {n}: {got:?}"
            );
        }
        set_header(&path, &original);
        drop(options().open(&path, PASSPHRASE).unwrap());
    }

    fn a_changed_header_byte_with_a_recomputed_checksum_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        create_with_tokens(&path, 1);
        let original = header(&path);
        let body = &original[..original.len() - 32];
        for i in 0..body.len() {
            let mut b = body.to_vec();
            b[i] ^= 0x01 << (i % 8);
            set_header(&path, &with_checksum(&b));
            let got = options().open(&path, PASSPHRASE);
            // A KDF parameter raised above the opener's bound is refused as such.
            assert!(
                matches!(
                    got,
                    Err(Error::Corrupted { .. } | Error::WrongPassphrase | Error::InvalidKdfParams { .. })
                ),
                "byte {i}: {got:?}"
            );
        }
    }

    fn truncated_or_extended_headers_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        create_with_tokens(&path, 1);
        let original = header(&path);
        for n in [0, 1, 8, 40, original.len() - 33, original.len() - 1] {
            set_header(&path, &original[..n]);
            assert!(matches!(
                options().open(&path, PASSPHRASE),
                Err(Error::Corrupted { .. })
            ));
        }
        let mut longer = original[..original.len() - 32].to_vec();
        longer.push(0);
        set_header(&path, &with_checksum(&longer));
        assert!(matches!(
            options().open(&path, PASSPHRASE),
            Err(Error::Corrupted { .. })
        ));
    }

    fn a_header_transplanted_from_another_vault_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        create_with_tokens(&a, 3);
        create_with_tokens(&b, 3);
        let hb = header(&b);
        set_header(&a, &hb);
        assert!(matches!(
            options().open(&a, PASSPHRASE),
            Err(Error::Corrupted { .. })
        ));
    }

    fn a_record_transplanted_from_another_vault_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        // The same ids in both vaults, so the slots differ only by key.
        let v = options().create(&a, PASSPHRASE).unwrap();
        let mut ta = token(1).with_id("same-id");
        v.save_token(&mut ta).unwrap();
        v.save_token(&mut bystander()).unwrap();
        drop(v);
        let v = options().create(&b, PASSPHRASE).unwrap();
        let mut tb = token(2).with_id("same-id");
        v.save_token(&mut tb).unwrap();
        drop(v);
        let rec_b = raw_edit::edit(&b, |db| db.entries("tokens")[0].1.clone());
        raw_edit::edit(&a, |db| {
            let (slot, _) = records(db)[0].clone();
            db.insert("tokens", slot, &rec_b);
        });
        open_and_check(&a, &[ta]);
    }

    fn absurd_kdf_parameters_are_refused_before_any_work() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        create_with_tokens(&path, 1);
        let original = header(&path);
        // Each variant is beyond the ceiling, and would cost seconds to forever if Argon2 ran.
        let variants: [(usize, u32); 5] = [
            (27, u32::MAX),        // 4 TiB: more memory than the machine has
            (27, 2 * 1024 * 1024), // 2 GiB: allocatable here, seconds of work
            (31, 10_000),          // ten thousand passes
            (31, u32::MAX),
            (35, 1_000), // a thousand lanes
        ];
        for (offset, value) in variants {
            set_header(&path, &with_kdf_value(&original, offset, value));
            // Refused as a header out of bounds: only the header's parse says that, and it
            // runs before the key derivation. Had Argon2 been reached, the open would have
            // ended otherwise: `Io` (4 TiB cannot be allocated) or `WrongPassphrase` (the key
            // the doctored parameters derive does not unwrap the data key); and the opener's
            // own bound, next in line, says `InvalidKdfParams`.
            let got = options().open(&path, PASSPHRASE);
            assert!(
                matches!(&got, Err(Error::Corrupted { what }) if what.contains("KDF parameters out of bounds")),
                "offset {offset} = {value}: {got:?}"
            );
        }
    }

    fn a_header_asking_more_kdf_work_than_the_opener_allows_is_refused_before_argon2() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        create_with_tokens(&path, 1);
        let original = header(&path);
        // Within the ceiling, so the header parses; above the default bound (256 MiB, t=4,
        // p=8). Argon2 would run (1 GiB: seconds) and only then report a wrong passphrase.
        let variants: [(usize, &str, u32); 3] = [
            (27, "memory_kib", KdfParams::CEILING.memory_kib),
            (31, "iterations", KdfParams::CEILING.iterations),
            (35, "parallelism", KdfParams::CEILING.parallelism),
        ];
        for (offset, name, value) in variants {
            set_header(&path, &with_kdf_value(&original, offset, value));
            // Refused by the opener's bound, which names the parameter and says Argon2 did not
            // run; a derivation with these parameters ends in `WrongPassphrase` instead (the
            // loop below shows it).
            match options().open(&path, PASSPHRASE) {
                Err(Error::InvalidKdfParams { reason }) => {
                    assert!(reason.contains(&format!("{name} {value}")), "{reason}");
                    assert!(reason.contains("refused before running Argon2"), "{reason}");
                }
                other => panic!("{name} = {value}: {other:?}"),
            }
        }
        // What refused them is the bound: raised to the ceiling, the cheap ones reach the key
        // unwrap, which their doctored parameters fail.
        for (offset, value) in [
            (31, KdfParams::CEILING.iterations),
            (35, KdfParams::CEILING.parallelism),
        ] {
            set_header(&path, &with_kdf_value(&original, offset, value));
            let got = options().max_kdf(KdfParams::CEILING).open(&path, PASSPHRASE);
            assert!(matches!(got, Err(Error::WrongPassphrase)), "{got:?}");
        }
        set_header(&path, &original);
        drop(options().open(&path, PASSPHRASE).unwrap());
    }

    fn lowered_kdf_parameters_with_a_recomputed_checksum_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let strong = KdfParams {
            memory_kib: 24 * 1024,
            iterations: 3,
            parallelism: 2,
        };
        drop(options().kdf(strong).create(&path, PASSPHRASE).unwrap());
        let original = header(&path);
        let mut lowered = original.clone();
        // Lower each of memory_kib, iterations, parallelism to the floor, one after another.
        for (offset, floor) in [(27, 19 * 1024u32), (31, 2), (35, 1)] {
            lowered = with_kdf_value(&lowered, offset, floor);
            set_header(&path, &lowered);
            let got = options().kdf(strong).open(&path, PASSPHRASE);
            assert!(
                matches!(got, Err(Error::WrongPassphrase) | Err(Error::Corrupted { .. })),
                "offset {offset}: {got:?}"
            );
        }
        set_header(&path, &original);
        drop(options().kdf(strong).open(&path, PASSPHRASE).unwrap());
    }

    fn a_changed_record_version_or_epoch_byte_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens = {
            let v = options().create(&path, PASSPHRASE).unwrap();
            let mut first = token(0);
            v.save_token(&mut first).unwrap();
            v.rotate_key().unwrap();
            let mut second = token(1);
            v.save_token(&mut second).unwrap();
            v.save_token(&mut bystander()).unwrap();
            vec![first, second]
        };
        raw_edit::edit(&path, |db| {
            for (slot, mut value) in records(db) {
                if value[4] == 0 {
                    // Epoch 0 -> 1: a key that exists, but not the one that sealed it.
                    value[4] = 1;
                } else {
                    // Version 1 -> 2.
                    value[0] = 2;
                }
                db.insert("tokens", slot, value);
            }
        });
        open_and_check(&path, &tokens);
    }

    fn a_record_copied_into_an_index_tree_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let tokens = create_with_tokens(&path, 1);
        raw_edit::edit(&path, |db| {
            let record = db.entries("tokens")[0].1.clone();
            let (key, _) = db.entries("idx.user")[0].clone();
            db.insert("idx.user", key, record);
        });
        let v = options().open(&path, PASSPHRASE).unwrap();
        let q = OAuthToken::default().with_user_name(tokens[0].user_name().unwrap());
        assert!(matches!(v.find_token(&q), Err(Error::Corrupted { .. })));
    }

    fn get_tokens_on_a_large_vault_returns_every_token_once_and_one_damaged_record_fails_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let mut tokens = make_large_vault(&path);
        {
            let v = options().open(&path, PASSPHRASE).unwrap();
            let mut all = v.get_tokens().unwrap();
            let by_id = |a: &OAuthToken, b: &OAuthToken| a.id().cmp(&b.id());
            all.sort_by(by_id);
            tokens.sort_by(by_id);
            assert_eq!(all.len(), MANY);
            assert!(all == tokens, "get_tokens differs from what was saved");
        }
        // Damage one record near the end of the key order, far from the first batch (and from
        // the record the open checks).
        raw_edit::edit(&path, |db| {
            let all = db.entries("tokens");
            let (slot, mut sealed) = all[all.len() - 3].clone();
            let last = sealed.len() - 1;
            sealed[last] ^= 1;
            db.insert("tokens", slot, sealed);
        });
        let v = options().open(&path, PASSPHRASE).unwrap();
        let got = v.get_tokens();
        assert!(
            matches!(got, Err(Error::Corrupted { .. })),
            "{:?}",
            got.map(|t| t.len())
        );
    }
}
