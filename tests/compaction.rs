//! Storage generations and compaction: the pointer file, what an open cleans up, and when
//! the vault compacts by itself.
//!
//! Protects against: dead data piling up forever in a vault that is written a lot, a
//! compaction at every open of a vault that is not, a deleted or overwritten record still
//! in the files after a compaction (sled's log, redb's freed pages), a leftover generation
//! surviving the next open, and a damaged or hostile pointer file being followed (or
//! panicking) instead of refused.
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

use std::path::Path;

use common::raw_edit;
use common::vaults::options;
use tokenvault::{Error, OAuthToken, TokenStore};

/// Token `n` as of its `version`-th save: large, so that dead data grows fast.
fn token(n: u32, version: u32) -> OAuthToken {
    OAuthToken::default()
        .with_id(format!("id-{n}"))
        .with_user_name(format!("user{n}"))
        .with_access_token(format!("access-{n}-{version}"))
        // Large values make dead data grow fast.
        .with_api_domain("x".repeat(8 * 1024))
}

fn pointer(path: &Path) -> String {
    std::fs::read_to_string(path.join("CURRENT")).unwrap()
}

/// The bytes of every file below `dir`.
fn contents(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(contents(&p));
        } else {
            out.push(std::fs::read(&p).unwrap());
        }
    }
    out
}

/// How many of `records` appear whole in some file below `dir`.
fn records_in_files(dir: &Path, records: &[Vec<u8>]) -> usize {
    let files = contents(dir);
    records
        .iter()
        .filter(|r| files.iter().any(|f| memchr::memmem::find(f, r).is_some()))
        .count()
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                size(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

common::vaults::engine_suite! {
    fn a_vault_whose_dead_data_outgrew_its_live_data_compacts_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().durable(false).create(&path, "p").unwrap();
            for version in 0..25 {
                for n in 0..200 {
                    v.save_token(&mut token(n, version)).unwrap();
                }
            }
        }
        assert_eq!(pointer(&path), "tokenvault generation 1\n");
        let before = size(&path);
        let v = options().open(&path, "p").unwrap();
        assert_eq!(pointer(&path), "tokenvault generation 2\n");
        let after = size(&path);
        // redb reuses freed pages once a durable commit has freed them (the background
        // flush does that under load) and sizes its file in steps, so a compacted copy
        // can land on the same step; sled's log only grows until compaction.
        if common::vaults::engine() == tokenvault::Engine::Redb {
            assert!(after <= before, "compaction at open: {before} -> {after} bytes");
        } else {
            assert!(after < before, "compaction at open: {before} -> {after} bytes");
        }
        assert!(!path.join("gen-1").exists());
        let all = v.get_tokens().unwrap();
        assert_eq!(all.len(), 200);
        for n in 0..200 {
            assert_eq!(
                v.find_token_by_id(&format!("id-{n}")).unwrap(),
                Some(token(n, 24))
            );
        }
        assert!(v.verify().unwrap().is_clean());
    }
    fn a_vault_without_much_dead_data_is_not_compacted_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().create(&path, "p").unwrap();
            for n in 0..50 {
                v.save_token(&mut token(n, 0)).unwrap();
            }
            v.delete_token("id-7").unwrap();
        }
        for _ in 0..3 {
            drop(options().open(&path, "p").unwrap());
            assert_eq!(pointer(&path), "tokenvault generation 1\n");
        }
    }
    fn a_vault_filled_with_new_tokens_only_is_not_compacted_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let created;
        {
            let v = options().durable(false).create(&path, "p").unwrap();
            created = size(&path);
            for n in 0..1000 {
                v.save_token(&mut token(n, 0)).unwrap();
            }
        }
        // The files grew past twice their size at creation, by live data alone.
        assert!(size(&path) > 2 * created + 4 * 1024 * 1024, "{created} -> {}", size(&path));
        for _ in 0..2 {
            let v = options().open(&path, "p").unwrap();
            assert_eq!(pointer(&path), "tokenvault generation 1\n");
            assert_eq!(v.get_tokens().unwrap().len(), 1000);
        }
        // Dead data still counts against the grown baseline: rewriting every token three
        // times makes more dead data than live, and the next open compacts (on sled; redb
        // reuses freed pages, see below).
        {
            let v = options().durable(false).open(&path, "p").unwrap();
            for version in 1..4 {
                for n in 0..1000 {
                    v.save_token(&mut token(n, version)).unwrap();
                }
            }
        }
        let v = options().open(&path, "p").unwrap();
        if common::vaults::engine() == tokenvault::Engine::Sled {
            assert_eq!(pointer(&path), "tokenvault generation 2\n");
        }
        assert_eq!(v.find_token_by_id("id-999").unwrap(), Some(token(999, 3)));
    }
    fn a_session_counts_its_rewrites_and_removals_as_dead_data() {
        // Filled, then each token rewritten three times in the same session: a quarter of
        // the growth is live, and the next open compacts. Shown on sled, whose log grows
        // with every write: redb reuses the pages a durable commit freed (its background
        // flush makes one every 500 ms) and gives free space at the end of its file back,
        // so how far its file grows with dead data, and whether an open compacts, depends
        // on timing there.
        let sled = common::vaults::engine() == tokenvault::Engine::Sled;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().durable(false).create(&path, "p").unwrap();
            for version in 0..4 {
                for n in 0..1000 {
                    v.save_token(&mut token(n, version)).unwrap();
                }
            }
        }
        let v = options().open(&path, "p").unwrap();
        if sled {
            assert_eq!(pointer(&path), "tokenvault generation 2\n");
        }
        assert_eq!(v.find_token_by_id("id-0").unwrap(), Some(token(0, 3)));
        drop(v);

        // Filled, then every token removed, one by one or all at once: nothing of the
        // growth is live.
        for (name, one_by_one) in [("emptied", true), ("cleared", false)] {
            let path = tmp.path().join(name);
            {
                let v = options().durable(false).create(&path, "p").unwrap();
                for n in 0..1000 {
                    v.save_token(&mut token(n, 0)).unwrap();
                }
                if one_by_one {
                    for n in 0..1000 {
                        v.delete_token(&format!("id-{n}")).unwrap();
                    }
                } else {
                    v.delete_tokens().unwrap();
                }
            }
            let v = options().open(&path, "p").unwrap();
            if sled {
                assert_eq!(pointer(&path), "tokenvault generation 2\n", "{name}");
            }
            assert!(v.get_tokens().unwrap().is_empty());
        }
    }
    fn a_filling_session_with_a_few_rewrites_is_not_compacted_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().durable(false).create(&path, "p").unwrap();
            for n in 0..1000 {
                v.save_token(&mut token(n, 0)).unwrap();
            }
            for n in 0..100 {
                v.save_token(&mut token(n, 1)).unwrap();
            }
            v.delete_token("id-999").unwrap();
        }
        let v = options().open(&path, "p").unwrap();
        assert_eq!(pointer(&path), "tokenvault generation 1\n");
        assert_eq!(v.get_tokens().unwrap().len(), 999);
    }
    fn an_open_removes_what_an_interrupted_compaction_left() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().create(&path, "p").unwrap();
            v.save_token(&mut token(1, 0)).unwrap();
            v.compact().unwrap();
        }
        assert_eq!(pointer(&path), "tokenvault generation 2\n");
        // A half-written next generation and pointer, as a crash would leave them: the
        // engine's files, begun.
        std::fs::create_dir(path.join("gen-3")).unwrap();
        for file in raw_edit::db_files(&path) {
            std::fs::write(path.join("gen-3").join(file.file_name().unwrap()), b"half written").unwrap();
        }
        std::fs::write(path.join("CURRENT.tmp"), b"tokenvault generation 3\n").unwrap();
        let v = options().open(&path, "p").unwrap();
        assert!(!path.join("gen-3").exists());
        assert!(!path.join("CURRENT.tmp").exists());
        assert_eq!(v.find_token_by_id("id-1").unwrap(), Some(token(1, 0)));
        // The next compaction writes generation 3 afresh.
        v.compact().unwrap();
        assert_eq!(pointer(&path), "tokenvault generation 3\n");
        assert_eq!(v.find_token_by_id("id-1").unwrap(), Some(token(1, 0)));
        assert!(!path.join("gen-2").exists());
    }
    fn a_damaged_or_hostile_pointer_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().create(&path, "p").unwrap();
            v.save_token(&mut token(1, 0)).unwrap();
        }
        let good = pointer(&path);
        let live_files = raw_edit::db_files(&path);
        assert!(live_files.iter().all(|f| f.starts_with(path.join("gen-1"))));
        for bad in [
            "",
            "tokenvault generation 2\n",
            "tokenvault generation 0\n",
            "tokenvault generation 01\n",
            "tokenvault generation 1",
            "tokenvault generation 1\n\n",
            "tokenvault generation ../../etc\n",
            "tokenvault generation 99999999999999999999999\n",
        ] {
            std::fs::write(path.join("CURRENT"), bad).unwrap();
            let got = options().open(&path, "p");
            assert!(matches!(got, Err(Error::Corrupted { .. })), "{bad:?}: {got:?}");
            // Nothing was removed: the live generation is intact.
            for file in &live_files {
                assert!(file.exists(), "{bad:?}: {}", file.display());
            }
        }
        std::fs::write(path.join("CURRENT"), "x".repeat(1 << 20)).unwrap();
        assert!(matches!(options().open(&path, "p"), Err(Error::Corrupted { .. })));
        #[cfg(unix)]
        {
            std::fs::remove_file(path.join("CURRENT")).unwrap();
            let elsewhere = tmp.path().join("elsewhere");
            std::fs::write(&elsewhere, &good).unwrap();
            std::os::unix::fs::symlink(&elsewhere, path.join("CURRENT")).unwrap();
            assert!(matches!(options().open(&path, "p"), Err(Error::Corrupted { .. })));
            std::fs::remove_file(path.join("CURRENT")).unwrap();
        }
        std::fs::write(path.join("CURRENT"), &good).unwrap();
        let v = options().open(&path, "p").unwrap();
        assert_eq!(v.find_token_by_id("id-1").unwrap(), Some(token(1, 0)));
    }
    fn compaction_leaves_no_deleted_or_earlier_record_in_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().create(&path, "p").unwrap();
            for n in 0..20 {
                v.save_token(&mut token(n, 0)).unwrap();
            }
        }
        let first: Vec<Vec<u8>> =
            raw_edit::edit(&path, |db| db.entries("tokens").into_iter().map(|(_, r)| r).collect());
        assert_eq!(first.len(), 20);
        {
            // Half updated, half deleted: every first record is dead.
            let v = options().open(&path, "p").unwrap();
            for n in 0..10 {
                v.save_token(&mut token(n, 1)).unwrap();
            }
            for n in 10..20 {
                v.delete_token(&format!("id-{n}")).unwrap();
            }
        }
        // The control: the engine keeps dead records in its files until a compaction
        // (so the scan below can see them).
        assert!(records_in_files(&path, &first) > 0, "no dead record in the files");
        let v = options().open(&path, "p").unwrap();
        v.compact().unwrap();
        assert_eq!(records_in_files(&path, &first), 0, "a dead record outlived the compaction");
        assert_eq!(v.get_tokens().unwrap().len(), 10);
        for n in 0..10 {
            assert_eq!(v.find_token_by_id(&format!("id-{n}")).unwrap(), Some(token(n, 1)));
        }
        drop(v);
        assert_eq!(records_in_files(&path, &first), 0);
    }

    fn compaction_keeps_every_token_index_and_the_quarantine() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let v = options().create(&path, "p").unwrap();
        for n in 0..30 {
            v.save_token(&mut token(n, 0)).unwrap();
        }
        // Damage one record and set it aside, so the quarantine has something to carry.
        drop(v);
        raw_edit::edit(&path, |db| {
            let (slot, mut damaged) = db.entries("tokens").swap_remove(5);
            damaged[30] ^= 1;
            db.insert("tokens", slot, damaged);
        });
        let v = options().open(&path, "p").unwrap();
        let repaired = v.repair().unwrap();
        assert_eq!(repaired.set_aside.len(), 1);
        let before = {
            let mut t = v.get_tokens().unwrap();
            t.sort_by(|a, b| a.id().cmp(&b.id()));
            t
        };
        v.compact().unwrap();
        let mut after = v.get_tokens().unwrap();
        after.sort_by(|a, b| a.id().cmp(&b.id()));
        assert_eq!(after, before);
        for t in &after {
            let q = OAuthToken::default().with_access_token(t.access_token().unwrap());
            assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t));
        }
        let report = v.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.quarantined, repaired.quarantined);
    }
}
