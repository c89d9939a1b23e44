//! The frozen v1 vault under `tests/fixtures/v1/`: every later version must open it with
//! the same contents.
//!
//! Protects against: a format change (header layout, key derivation labels, record AAD,
//! token encoding, index keys) that silently strands existing vaults.
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
}

use std::path::Path;

use common::raw_edit;
use tokenvault::{Error, KdfParams, OAuthToken, TokenStore, VaultOptions};

const PASSPHRASE: &str = "tokenvault v1 fixture";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn fixture_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/vault");
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("vault");
    copy_dir(&src, &dst);
    (tmp, dst)
}

fn expected() -> Vec<OAuthToken> {
    let json = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/expected.json"),
    )
    .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[test]
fn the_frozen_v1_vault_opens_with_the_same_contents() {
    let (_tmp, path) = fixture_copy();
    let want = expected();
    assert_eq!(want.len(), 5);
    let v = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .open(&path, PASSPHRASE)
        .unwrap();
    let mut got = v.get_tokens().unwrap();
    got.sort_by(|a, b| a.id().cmp(&b.id()));
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| a.id().cmp(&b.id()));
    assert_eq!(got, sorted);
    for t in &want {
        assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
        if let Some(user) = t.user_name() {
            let q = OAuthToken::default().with_user_name(user);
            assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t));
        }
        if let Some(refresh) = t.refresh_token() {
            let q = OAuthToken::default().with_refresh_token(refresh);
            let q = match t.client_id() {
                Some(c) => q.with_client_id(c).with_client_secret("x"),
                None => q,
            };
            let found = v.find_token(&q).unwrap();
            assert_eq!(found.as_ref(), t.client_id().map(|_| t));
        }
    }
    // The shared access value belongs to the token saved last (the fourth).
    let q = OAuthToken::default().with_access_token("1000.fixture-access-0");
    assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(&want[3]));
    // The deleted token is gone, the updated one carries its new value only.
    assert_eq!(v.find_token_by_id("deleted").unwrap(), None);
    let q = OAuthToken::default().with_access_token("1000.fixture-access-1");
    assert_eq!(v.find_token(&q).unwrap(), None);
    assert!(v.verify().unwrap().is_clean());
}

#[test]
fn the_frozen_v1_vault_refuses_its_old_passphrase() {
    let (_tmp, path) = fixture_copy();
    let got = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .open(&path, "tokenvault v1 fixture (old)");
    assert!(matches!(got, Err(Error::WrongPassphrase)));
}

#[test]
fn opening_the_fixture_with_stronger_defaults_upgrades_its_kdf() {
    let (_tmp, path) = fixture_copy();
    let stronger = KdfParams {
        memory_kib: 32 * 1024,
        iterations: 3,
        parallelism: 2,
    };
    drop(VaultOptions::new().kdf(stronger).open(&path, PASSPHRASE).unwrap());
    // The header now carries the stronger parameters: read them from meta/header.
    let header = raw_edit::edit(&path, |db| db.get("meta", "header").unwrap());
    let m = u32::from_be_bytes(header[27..31].try_into().unwrap());
    let t = u32::from_be_bytes(header[31..35].try_into().unwrap());
    let p = u32::from_be_bytes(header[35..39].try_into().unwrap());
    assert_eq!((m, t, p), (32 * 1024, 3, 2));
    let v = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .open(&path, PASSPHRASE)
        .unwrap();
    assert_eq!(v.get_tokens().unwrap().len(), 5);
}
