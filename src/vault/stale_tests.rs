//! Nothing removed stays readable: a scan of every byte of every file in a vault directory
//! for headers that an old passphrase unwraps and for sealed records of deleted tokens (or
//! earlier versions of updated ones) that the current keys open.
//!
//! Each scan is first run where it must find something (before the compaction), so a scan
//! that could not see what it looks for fails the test.

use std::fs;
use std::path::{Path, PathBuf};

use super::generations;
use super::{derive_keys, VaultOptions, HEADER_KEY};
use crate::backend::{Engine, LocalConfig, LocalStorage, Storage, TreeName};
use crate::crypto::header::Header;
use crate::crypto::keys::VaultKeys;
use crate::crypto::seal::{self, RECORD_VERSION};
use crate::{KdfParams, OAuthToken, TokenStore};

/// Every file below `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = fs::read(&path).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

/// How many headers in the files `passphrase` unwraps.
fn headers_unwrapped_by(dir: &Path, passphrase: &str) -> usize {
    let mut found = 0;
    for (_, bytes) in files(dir) {
        for at in memchr_all(&bytes, b"TKNVAULT") {
            // A header is 168 + S bytes, S (its salt length) at offset 39.
            let Some(&salt_len) = bytes.get(at + 39) else {
                continue;
            };
            let Some(candidate) = bytes.get(at..at + 168 + usize::from(salt_len)) else {
                continue;
            };
            if let Ok(header) = Header::parse(candidate) {
                if header.unlock(passphrase.as_bytes()).is_ok() {
                    found += 1;
                }
            }
        }
    }
    found
}

fn memchr_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// How many sealed copies of `token` (at its id's slot, any epoch up to `epochs`) the
/// files hold that `keys` open.
fn sealed_copies(dir: &Path, keys: &VaultKeys, token: &OAuthToken) -> usize {
    let slot = keys.slot(token.id().unwrap());
    let len = 1 + 4 + 12 + crate::token::encoding::encode_token(token).unwrap().len() + 16;
    let mut found = 0;
    for (_, bytes) in files(dir) {
        for at in 0..bytes.len().saturating_sub(len - 1) {
            if bytes[at] != RECORD_VERSION || bytes[at + 1] != 0 || bytes[at + 2] != 0 {
                continue;
            }
            let candidate = &bytes[at..at + len];
            if let Ok(plain) = seal::open_record(keys, TreeName::Tokens.name(), &slot, candidate) {
                assert_eq!(crate::token::encoding::decode_token(&plain).unwrap(), *token);
                found += 1;
            }
        }
    }
    found
}

fn token(n: u32) -> OAuthToken {
    OAuthToken::default()
        .with_id(format!("stale-{n}"))
        .with_user_name(format!("user{n}@example.com"))
        .with_client_id("1000.STALE")
        .with_client_secret(format!("secret-{n}"))
        .with_refresh_token(format!("1000.refresh.{n}"))
        .with_access_token(format!("1000.access.{n}"))
}

/// The keys of the vault at `dir` (closed), from its live header.
fn keys_of(dir: &Path, passphrase: &str) -> VaultKeys {
    let gen = generations::live(dir).unwrap().unwrap();
    let config = LocalConfig {
        cache_capacity: 1 << 20,
        durable: false,
    };
    let engine = Engine::in_dir(&gen.dir(dir)).unwrap();
    let storage = LocalStorage::open(engine, &gen.dir(dir), config).unwrap();
    let header = Header::parse(&storage.get(TreeName::Meta, HEADER_KEY).unwrap().unwrap()).unwrap();
    let (data_key, _) = header.unlock(passphrase.as_bytes()).unwrap();
    derive_keys(data_key, header.vault_id, header.epoch)
}

#[test]
fn after_a_passphrase_change_and_a_compaction_no_old_header_or_deleted_record_is_readable() {
    no_old_header_or_deleted_record_is_readable(Engine::Sled);
}

#[cfg(feature = "redb")]
#[test]
fn on_redb_after_a_passphrase_change_and_a_compaction_no_old_header_or_deleted_record_is_readable() {
    no_old_header_or_deleted_record_is_readable(Engine::Redb);
}

fn no_old_header_or_deleted_record_is_readable(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let options = VaultOptions::new().kdf(KdfParams::FLOOR).engine(engine);
    let vault = options.create(&dir, "old passphrase").unwrap();
    for n in 0..40 {
        vault.save_token(&mut token(n)).unwrap();
    }
    drop(vault);
    let deleted = [token(3), token(17), token(31)];
    let earlier = [token(5), token(6)];
    // The scan sees each of them while it is live, so a zero below means it is gone.
    let keys = keys_of(&dir, "old passphrase");
    for t in deleted.iter().chain(&earlier) {
        assert!(sealed_copies(&dir, &keys, t) > 0, "the scan misses {:?}", t.id());
    }
    let vault = options.open(&dir, "old passphrase").unwrap();
    for t in &deleted {
        vault.delete_token(t.id().unwrap()).unwrap();
    }
    // Two updates: their earlier versions must go too.
    for t in &earlier {
        let mut update = t.clone().with_access_token("1000.access.updated");
        vault.save_token(&mut update).unwrap();
    }
    drop(vault);

    // Before the compaction, sled's log still holds what removal left behind (redb may
    // have reused the freed pages already, or may not: nothing promises it).
    if engine == Engine::Sled {
        for t in deleted.iter().chain(&earlier) {
            assert!(
                sealed_copies(&dir, &keys, t) > 0,
                "{:?} should still be in the files",
                t.id()
            );
        }
    }
    assert!(headers_unwrapped_by(&dir, "old passphrase") > 0);

    let vault = options.open(&dir, "old passphrase").unwrap();
    vault.change_passphrase("new passphrase").unwrap();
    // The passphrase change compacted: no header the old passphrase unwraps is left, and
    // neither is any removed record.
    assert_eq!(headers_unwrapped_by(&dir, "old passphrase"), 0);
    assert!(headers_unwrapped_by(&dir, "new passphrase") > 0);
    vault.compact().unwrap();
    drop(vault);
    assert_eq!(headers_unwrapped_by(&dir, "old passphrase"), 0);
    let keys = keys_of(&dir, "new passphrase");
    for t in deleted.iter().chain(&earlier) {
        assert_eq!(sealed_copies(&dir, &keys, t), 0, "{:?} is still readable", t.id());
    }
    // The scan does find live records.
    assert!(sealed_copies(&dir, &keys, &token(0)) > 0);
    let vault = options.open(&dir, "new passphrase").unwrap();
    assert_eq!(vault.get_tokens().unwrap().len(), 37);
}

#[test]
fn the_v1_fixture_loses_its_stale_headers_when_it_is_opened() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/vault");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let old = "tokenvault v1 fixture (old)";
    assert!(
        headers_unwrapped_by(&dir, old) > 0,
        "the fixture keeps old headers"
    );
    let keys = keys_of(&dir, "tokenvault v1 fixture");
    let gone = OAuthToken::default()
        .with_id("deleted")
        .with_access_token("1000.fixture-deleted");
    assert!(
        sealed_copies(&dir, &keys, &gone) > 0,
        "the fixture keeps a deleted record"
    );

    let options = VaultOptions::new().kdf(KdfParams::FLOOR);
    drop(options.open(&dir, "tokenvault v1 fixture").unwrap());
    assert_eq!(headers_unwrapped_by(&dir, old), 0);
    assert_eq!(sealed_copies(&dir, &keys, &gone), 0);
}
