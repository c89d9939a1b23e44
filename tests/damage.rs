//! Damaged storage: truncated, zeroed or garbage engine files (sled's `db` and `conf`,
//! redb's `vault.redb`), missing trees, a damaged record among good ones, a read-only
//! directory. Every test runs on each engine; the redb file's own hostile cases follow.
//!
//! Protects against: a panic (or a hang) on damaged files, an error that does not say what
//! is wrong, wrong data returned from a damaged file, and intact tokens becoming unreachable
//! because one record is damaged.
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
use common::vaults::{engine, options};
use tokenvault::{Error, OAuthToken, Problem, TokenStore};

/// A token with three lookup keys and no client: the counts of index entries below are
/// those of this shape.
fn token(n: usize) -> OAuthToken {
    OAuthToken::default()
        .with_id(format!("id-{n}"))
        .with_user_name(format!("user{n}@example.com"))
        .with_refresh_token(format!("refresh-{n}"))
        .with_access_token(format!("access-{n}"))
}

fn make(n: usize) -> (tempfile::TempDir, PathBuf, Vec<OAuthToken>) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    let v = options().create(&path, "p").unwrap();
    let tokens = (0..n)
        .map(|i| {
            let mut t = token(i);
            v.save_token(&mut t).unwrap();
            t
        })
        .collect();
    drop(v);
    (tmp, path, tokens)
}

/// Opens the vault at `path` and runs every operation on it: the open must end in an
/// error or a vault that returns no wrong data (a token lost or refused is allowed) and
/// whose every call returns, never a panic. Returns how many tokens read back intact.
fn open_survives(path: &Path, tokens: &[OAuthToken], case: &str) -> Result<usize, Error> {
    let v = options().open(path, "p")?;
    let mut intact = 0;
    for t in tokens {
        if let Ok(Some(found)) = v.find_token_by_id(t.id().unwrap()) {
            assert_eq!(&found, t, "{case}: by id");
            intact += 1;
        }
        let by_user = v.find_token(&OAuthToken::default().with_user_name(t.user_name().unwrap()));
        if let Ok(Some(found)) = by_user {
            assert_eq!(&found, t, "{case}: by user");
        }
    }
    if let Ok(all) = v.get_tokens() {
        for found in &all {
            assert!(tokens.contains(found), "{case}: get_tokens gave {found:?}");
        }
    }
    let _ = v.verify();
    // Every write, on whatever the damage left.
    let _ = v.save_token(&mut token(1000));
    let _ = v.delete_token(tokens[1].id().unwrap());
    let _ = v.repair();
    let _ = v.rotate_key();
    let _ = v.compact();
    let _ = v.flush();
    let _ = v.delete_tokens();
    Ok(intact)
}

type Damage = fn(&mut Vec<u8>);

/// The damages done to each engine file, whole.
const DAMAGES: [(&str, Damage); 5] = [
    ("emptied", |b| b.clear()),
    ("truncated to half", |b| b.truncate(b.len() / 2)),
    ("zeroed", |b| b.iter_mut().for_each(|x| *x = 0)),
    ("garbage", |b| {
        let mut x = 0x1234_5678u32;
        for byte in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
    }),
    ("one byte flipped in every 64", |b| {
        b.iter_mut().step_by(64).for_each(|x| *x ^= 0x40)
    }),
];

common::vaults::engine_suite! {
    fn damaged_engine_files_give_an_error_not_a_panic() {
        let files = {
            let (_tmp, path, _) = make(1);
            raw_edit::db_files(&path).len()
        };
        for file in 0..files {
            for (what, damage) in DAMAGES {
                let (_tmp, path, tokens) = make(20);
                let f = &raw_edit::db_files(&path)[file];
                let case = format!("{} {what}", f.file_name().unwrap().to_string_lossy());
                let mut bytes = std::fs::read(f).unwrap();
                damage(&mut bytes);
                std::fs::write(f, &bytes).unwrap();
                // The engine may recover from the damage (sled keeps a log); then nothing
                // may be wrong with what it returns.
                match open_survives(&path, &tokens, &case) {
                    Ok(intact) => eprintln!("{case}: opened, {intact} of 20 tokens intact"),
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        eprintln!("{case}: {e}");
                    }
                }
            }
        }
    }

    fn a_vault_without_its_header_is_corrupted() {
        let (_tmp, path, _) = make(3);
        raw_edit::edit(&path, |db| db.drop_tree("meta"));
        assert!(matches!(options().open(&path, "p"), Err(Error::Corrupted { .. })));
    }

    fn a_database_that_never_was_a_vault_is_not_found_and_left_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("other");
        raw_edit::foreign_database(&path, engine());
        assert!(matches!(options().open(&path, "p"), Err(Error::VaultNotFound)));
        assert!(matches!(options().open(&path, "p"), Err(Error::VaultNotFound)));
        assert!(!path.join("tokenvault.lock").exists());
    }

    fn a_missing_tokens_tree_is_reported_and_repair_clears_the_dangling_entries() {
        let (_tmp, path, tokens) = make(3);
        raw_edit::edit(&path, |db| db.drop_tree("tokens"));
        let v = options().open(&path, "p").unwrap();
        let q = OAuthToken::default().with_user_name(tokens[0].user_name().unwrap());
        assert!(matches!(v.find_token(&q), Err(Error::Corrupted { .. })));
        let report = v.verify().unwrap();
        assert_eq!(report.records, 0);
        // Three user, access and refresh entries each, and the three records' id entries.
        assert_eq!(report.problems.len(), 12, "{:?}", report.problems);
        assert!(report.problems.iter().all(|p| matches!(
            p,
            Problem::DanglingIndexEntry {
                reason: "points at no record",
                ..
            }
        )));
        let after = v.repair().unwrap();
        assert!(after.is_clean(), "{:?}", after.problems);
        assert_eq!(v.find_token(&q).unwrap(), None);
    }

    fn one_damaged_record_leaves_the_others_readable_and_is_reported() {
        let (_tmp, path, tokens) = make(10);
        raw_edit::edit(&path, |db| {
            let (k, mut v) = db.entries("tokens").swap_remove(4);
            v[30] ^= 0x01;
            db.insert("tokens", k, v);
        });
        // Opening checks the first record only; the damaged one is the fifth.
        let v = options().open(&path, "p").unwrap();
        let mut readable = 0;
        for t in &tokens {
            match v.find_token_by_id(t.id().unwrap()) {
                Ok(Some(found)) => {
                    assert_eq!(&found, t);
                    let q = OAuthToken::default().with_access_token(t.access_token().unwrap());
                    assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t));
                    readable += 1;
                }
                Err(Error::Corrupted { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(readable, 9);
        assert!(matches!(v.get_tokens(), Err(Error::Corrupted { .. })));
        let report = v.verify().unwrap();
        assert_eq!(report.records, 9);
        let unreadable = report
            .problems
            .iter()
            .filter(|p| matches!(p, Problem::UnreadableRecord { .. }))
            .count();
        assert_eq!(unreadable, 1, "{:?}", report.problems);
        // Its three index entries point at an unreadable record.
        assert_eq!(report.problems.len(), 4, "{:?}", report.problems);
        assert!(report.problems.iter().all(|p| !p.to_string().contains("access-")));
    }

    fn deleted_or_extra_index_entries_are_found_and_repaired() {
        let (_tmp, path, tokens) = make(5);
        raw_edit::edit(&path, |db| {
            let (k, _) = db.entries("idx.user").swap_remove(0);
            db.remove("idx.user", k);
            db.insert("idx.access", [7u8; 32], [1u8; 32]);
            db.insert("idx.access", [8u8; 32], [1u8; 3]);
        });
        let v = options().open(&path, "p").unwrap();
        let report = v.verify().unwrap();
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert!(report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::MissingIndexEntry { index: "user", .. })));
        let after = v.repair().unwrap();
        assert!(after.is_clean(), "{:?}", after.problems);
        for t in &tokens {
            let q = OAuthToken::default().with_user_name(t.user_name().unwrap());
            assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t));
        }
    }
}

/// Permissions, where the OS has them.
#[cfg(unix)]
mod unix {
    use super::*;

    crate::common::vaults::engine_suite! {
        fn a_read_only_vault_directory_gives_an_error() {
            use std::os::unix::fs::PermissionsExt;
            let (_tmp, path, _) = make(2);
            let set = |mode| {
                for e in std::fs::read_dir(&path).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_file() {
                        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o666)).unwrap();
                    }
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            };
            set(0o500);
            // Permission bits do not bind root: then there is nothing to test here.
            if std::fs::write(path.join("probe"), b"x").is_ok() {
                eprintln!("running as root: read-only permissions are not enforced; skipped");
                set(0o700);
                return;
            }
            let got = options().open(&path, "p");
            set(0o700);
            assert!(
                matches!(got, Err(Error::Io(_)) | Err(Error::Storage { .. })),
                "{got:?}"
            );
        }
    }
}
