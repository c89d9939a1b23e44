//! Nothing secret on disk: every byte of every file of a used vault is scanned.
//!
//! Protects against: a token field, user name or id written in the clear, hex- or
//! base64-encoded, or under an unkeyed hash (SHA-256), in any file of the vault (sled's
//! log and snapshots, redb's one file), even after the value was updated away or deleted.
//!
//! The scan runs on each engine (`sled::NAME`, `redb::NAME`).
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

use std::path::{Path, PathBuf};

use common::raw_edit;
use common::vaults::options;
use sha2::{Digest, Sha256};
use tokenvault::{OAuthToken, TokenStore};

/// Every file below `dir`, with its contents.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            let contents = std::fs::read(&p).unwrap();
            out.push((p, contents));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}

fn base64(bytes: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

common::vaults::engine_suite! {
    fn no_secret_user_name_or_id_appears_on_disk_in_any_encoding() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let mut values: Vec<String> = Vec::new();
        {
            let v = options().create(&path, "pass").unwrap();
            assert_eq!(v.engine(), common::vaults::engine());
            let mut ids = Vec::new();
            for n in 0..300 {
                let mut t = OAuthToken::default()
                    .with_id(format!("Zid{n:04}QXJ"))
                    .with_user_name(format!("Zuser{n:04}@mail.example"))
                    .with_client_id(format!("Zclient{n:04}KQV"))
                    .with_client_secret(format!("Zsecret{n:04}WPX"))
                    .with_refresh_token(format!("Zrefresh{n:04}JTQ"))
                    .with_access_token(format!("Zaccess{n:04}VVB"))
                    .with_grant_token(format!("Zgrant{n:04}MMK"))
                    .with_redirect_url(format!("Zredirect{n:04}QQP"))
                    .with_api_domain(format!("Zdomain{n:04}XXL"));
                v.save_token(&mut t).unwrap();
                ids.push(t.id().unwrap().to_owned());
                for s in [
                    t.id(),
                    t.user_name(),
                    t.client_id(),
                    t.client_secret(),
                    t.refresh_token(),
                    t.access_token(),
                    t.grant_token(),
                    t.redirect_url(),
                    t.api_domain(),
                ] {
                    values.push(s.unwrap().to_owned());
                }
            }
            // Update a third with new access tokens, delete another third.
            for (n, id) in ids.iter().enumerate() {
                match n % 3 {
                    0 => {
                        let mut t = OAuthToken::default()
                            .with_id(id.clone())
                            .with_access_token(format!("Znewaccess{n:04}RRT"));
                        v.save_token(&mut t).unwrap();
                        values.push(t.access_token().unwrap().to_owned());
                    }
                    1 => v.delete_token(id).unwrap(),
                    _ => {}
                }
            }
            v.flush().unwrap();
        }
        let contents = files(&path);
        // The scan covers the engine's own files (sled's log and configuration, redb's one
        // file), and they hold the 300 records.
        let mut engine_bytes = 0;
        for engine_file in raw_edit::db_files(&path) {
            let scanned = contents.iter().find(|(p, _)| *p == engine_file);
            let Some((_, bytes)) = scanned else {
                panic!("{} not scanned", engine_file.display())
            };
            engine_bytes += bytes.len();
        }
        assert!(engine_bytes > 300 * 100, "{engine_bytes} bytes");
        for value in &values {
            let raw = value.as_bytes();
            let forms = [
                raw.to_vec(),
                hex(raw),
                hex(raw).to_ascii_uppercase(),
                base64(raw),
                Sha256::digest(raw).to_vec(),
                hex(&Sha256::digest(raw)),
            ];
            for form in &forms {
                for (file, bytes) in &contents {
                    assert!(
                        !contains(bytes, form),
                        "{value} found on disk in some form, in {}",
                        file.display()
                    );
                }
            }
        }
    }
}

/// Engine-free: the scanner itself.
#[test]
fn the_scan_itself_finds_a_planted_value() {
    // Guards the scanner: if it could not see a value, the test above would prove nothing.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("f"),
        [b"xx".as_slice(), &base64(b"Zplanted0001"), b"yy"].concat(),
    )
    .unwrap();
    let contents = files(tmp.path());
    assert!(contents
        .iter()
        .any(|(_, f)| contains(f, &base64(b"Zplanted0001"))));
    assert_eq!(base64(b"Man"), b"TWFu");
}
