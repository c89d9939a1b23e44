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
    pub(crate) mod sled_log;
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

/// redb's one file damaged page by page, and as a whole. redb trusts its file: on many of
/// these it panics (an index out of range, an `unwrap`) where it could return an error, so
/// the vault catches the panic at its storage seam and answers `Corrupted`. These cases
/// are the ones that made redb 4.6 panic when first run.
#[cfg(feature = "redb")]
mod redb_file {
    use super::*;
    use tokenvault::Engine;

    const PAGE: usize = 4096;

    /// A closed redb vault of 20 tokens, and its file's bytes.
    fn template() -> (tempfile::TempDir, PathBuf, Vec<OAuthToken>, Vec<u8>) {
        let (tmp, path, tokens) = make(20);
        let file = raw_edit::db_files(&path).remove(0);
        let bytes = std::fs::read(file).unwrap();
        (tmp, path, tokens, bytes)
    }

    /// Runs [`open_survives`] on a copy of the template whose file is `bytes`; whether the
    /// open succeeded.
    fn survives(template: &Path, scratch: &Path, bytes: &[u8], case: &str) -> bool {
        let path = scratch.join("vault");
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        for entry in std::fs::read_dir(template).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                let dir = path.join(entry.file_name());
                std::fs::create_dir_all(&dir).unwrap();
                for file in std::fs::read_dir(entry.path()).unwrap() {
                    let file = file.unwrap();
                    std::fs::copy(file.path(), dir.join(file.file_name())).unwrap();
                }
            } else {
                std::fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
            }
        }
        std::fs::write(raw_edit::db_files(&path).remove(0), bytes).unwrap();
        let tokens: Vec<OAuthToken> = (0..20).map(token).collect();
        match open_survives(&path, &tokens, case) {
            Ok(_) => true,
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{case}");
                false
            }
        }
    }

    #[test]
    fn a_damaged_redb_page_gives_an_error_not_a_panic() {
        common::vaults::on(Engine::Redb, || {
            let (_tmp, template, _, original) = template();
            let scratch = tempfile::tempdir().unwrap();
            let (mut opened, mut refused) = (0, 0);
            for page in 0..original.len() / PAGE {
                // A page's first bytes say what it is and how many entries it holds
                // (redb's page type, then counts and offsets): each flipped in turn.
                for at in 0..8 {
                    if page == ABORT_PAGE && ABORT_OFFSETS.contains(&at) {
                        continue;
                    }
                    let mut bytes = original.clone();
                    bytes[page * PAGE + at] ^= 0x80;
                    let case = format!("page {page}, byte {at} flipped");
                    if survives(&template, scratch.path(), &bytes, &case) {
                        opened += 1;
                    } else {
                        refused += 1;
                    }
                }
                if page == ABORT_PAGE {
                    continue;
                }
                for (what, fill) in [("zeroed", 0x00), ("set to 0xff", 0xff)] {
                    let mut bytes = original.clone();
                    bytes[page * PAGE..(page + 1) * PAGE].fill(fill);
                    let case = format!("page {page} {what}");
                    if survives(&template, scratch.path(), &bytes, &case) {
                        opened += 1;
                    } else {
                        refused += 1;
                    }
                }
            }
            eprintln!("{opened} damaged files opened (and returned no wrong data), {refused} refused");
        });
    }

    #[test]
    fn a_redb_file_of_garbage_or_cut_short_gives_an_error_not_a_panic() {
        common::vaults::on(Engine::Redb, || {
            let (_tmp, template, _, original) = template();
            let scratch = tempfile::tempdir().unwrap();
            let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
            let len = original.len();
            for cut in [1, 319, PAGE, len / 2, len - PAGE, len - 1] {
                cases.push((format!("cut to {cut} bytes"), original[..cut].to_vec()));
            }
            let mut longer = original.clone();
            longer.extend_from_slice(&[0xa5; PAGE]);
            cases.push(("a page longer".into(), longer));
            for seed in 1..=4u32 {
                let mut x = seed.wrapping_mul(0x9e37_79b9);
                let garbage: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                cases.push((format!("garbage {seed}"), garbage.clone()));
                // redb's own header intact, every page after it garbage.
                let mut body = garbage;
                body[..PAGE].copy_from_slice(&original[..PAGE]);
                cases.push((format!("garbage {seed} under the original header"), body));
            }
            for (case, bytes) in cases {
                survives(&template, scratch.path(), &bytes, &case);
            }
        });
    }

    /// The page of the template whose damage [`a_damaged_free_page_list_aborts_the_process`]
    /// shows, and the bytes of it that abort.
    const ABORT_PAGE: usize = 2;
    const ABORT_OFFSETS: [usize; 5] = [2, 3, 5, 6, 7];

    /// redb 4.6, built with optimisations: a flipped count or offset byte in the page that
    /// lists freed pages (page 2 of this template) makes the next commit panic in
    /// `BtreeExtractIf::next` (tree_store/btree_cursor.rs:463, a slice index out of
    /// range), and the iterator's destructor panics again while that panic unwinds
    /// (`RangeMut::park`, tree_store/btree_base.rs:691): Rust aborts the process, which no
    /// `catch_unwind` can prevent. The open succeeds; the first save aborts. (With debug
    /// assertions, redb panics at the open instead, "Truncated free page list" in
    /// transactions.rs:92, and the vault answers `Corrupted`, as it should everywhere.)
    #[test]
    #[ignore = "redb 4.6 aborts an optimised build's process (a panic while unwinding a panic); fix pending upstream"]
    fn a_damaged_free_page_list_aborts_the_process() {
        common::vaults::on(Engine::Redb, || {
            let (_tmp, path, _, mut bytes) = template();
            bytes[ABORT_PAGE * PAGE + 2] ^= 0x80;
            std::fs::write(raw_edit::db_files(&path).remove(0), &bytes).unwrap();
            let got = options()
                .open(&path, "p")
                .and_then(|v| v.save_token(&mut token(1000)));
            assert!(matches!(got, Err(Error::Corrupted { .. })), "{got:?}");
        });
    }

    /// A panic in redb breaks the vault's handle on the file: the call that panicked and
    /// every later one is `Corrupted`, and nothing reaches redb again. Restored, the file
    /// opens as before.
    #[test]
    fn a_panic_in_redb_is_corrupted_and_the_handle_stays_broken() {
        common::vaults::on(Engine::Redb, || {
            let (_tmp, path, tokens, original) = template();
            let file = raw_edit::db_files(&path).remove(0);
            // The page holding the last record: its entry count (bytes 2 and 3, little
            // endian) raised by 0x8000 puts every entry's offset past the page's end.
            // Every page that holds it: pages an earlier commit freed may hold a copy.
            let record = raw_edit::edit(&path, |db| db.entries("tokens").pop().unwrap().1);
            let mut pages: Vec<usize> = memchr::memmem::find_iter(&original, &record)
                .map(|at| at / PAGE)
                .collect();
            pages.dedup();
            assert!(!pages.is_empty());
            let mut bytes = original.clone();
            for page in pages {
                bytes[page * PAGE + 3] ^= 0x80;
            }
            std::fs::write(&file, &bytes).unwrap();
            let outcome = options().open(&path, "p");
            let v = match outcome {
                // The open reads a record in that page only if it sorts first.
                Ok(v) => v,
                Err(e) => {
                    assert!(matches!(e, Error::Corrupted { .. }), "{e:?}");
                    std::fs::write(&file, &original).unwrap();
                    options().open(&path, "p").unwrap()
                }
            };
            drop(v);
            std::fs::write(&file, &bytes).unwrap();
            let opened = options().open(&path, "p");
            if let Ok(v) = &opened {
                // Sooner or later a read reaches the damaged page: from then on, every call
                // is Corrupted.
                let all = v.get_tokens();
                assert!(
                    matches!(all, Err(Error::Corrupted { .. })),
                    "{:?}",
                    all.map(|a| a.len())
                );
                for t in &tokens {
                    let got = v.find_token_by_id(t.id().unwrap());
                    assert!(matches!(got, Err(Error::Corrupted { .. })), "{got:?}");
                }
                let saved = v.save_token(&mut token(1000));
                assert!(matches!(saved, Err(Error::Corrupted { .. })), "{saved:?}");
            } else {
                assert!(
                    matches!(opened, Err(Error::Corrupted { .. })),
                    "{:?}",
                    opened.err()
                );
            }
            drop(opened);
            std::fs::write(&file, &original).unwrap();
            let v = options().open(&path, "p").unwrap();
            for t in &tokens {
                assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
            }
        });
    }
}

/// sled's own files, forged: a message of the log changed and its CRC32 recomputed, as
/// anyone who can write the file can do (a CRC is no protection against an editor). sled
/// then parses the changed bytes as a node or a fragment of one; every such vault must
/// give errors, never a panic and never wrong data.
mod sled_file {
    use super::*;
    use common::sled_log::{forge, message_at, messages, Message, INLINE_NODE};
    use tokenvault::Engine;

    /// The message of the log whose body holds the byte at `at`, found by its header
    /// (CRC, kind, length, segment number, page id) and checked by its CRC.
    fn message_around(b: &[u8], at: usize) -> Option<Message> {
        (at.saturating_sub(64 * 1024)..at)
            .rev()
            .find_map(|header| message_at(b, header).filter(|m| m.body <= at && at < m.end))
    }

    /// The forgeries, each given the file, the message holding a record and where the
    /// record's value starts.
    type Forgery = fn(&mut Vec<u8>, &Message, usize);
    const FORGERIES: [(&str, Forgery); 6] = [
        // The value's length (two bytes before it, for a record of 241-2287 bytes) made
        // the largest two bytes can say: longer than the message.
        ("a value longer than its message", |b, _, value| {
            b[value - 2] = 248;
            b[value - 1] = 255;
        }),
        ("a value of length zero", |b, _, value| {
            b[value - 2] = 0;
            b[value - 1] = 0;
        }),
        ("the body's first byte 0xff", |b, m, _| b[m.body] = 0xff),
        ("the body's first byte 0xf9", |b, m, _| b[m.body] = 0xf9),
        ("the body cut to its first 3 bytes", |b, m, _| {
            for x in &mut b[m.body + 3..m.end] {
                *x = 0xff;
            }
        }),
        ("another page's id in the header", |b, m, _| {
            // The page id is the header's last varint, one byte for a small vault.
            b[m.body - 1] ^= 0x01;
        }),
    ];

    #[test]
    fn a_forged_sled_message_gives_an_error_not_a_panic() {
        common::vaults::on(Engine::Sled, || {
            let (_tmp, template, tokens) = make(3);
            let records = raw_edit::edit(&template, |db| db.entries("tokens"));
            let original = std::fs::read(&raw_edit::db_files(&template)[0]).unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let mut forged_any = 0;
            for (r, (_, record)) in records.iter().enumerate() {
                let copies: Vec<usize> = memchr::memmem::find_iter(&original, record).collect();
                assert!(!copies.is_empty(), "record {r} is in sled's log");
                for (what, forgery) in FORGERIES {
                    let mut bytes = original.clone();
                    for &at in &copies {
                        let m = message_around(&bytes, at)
                            .unwrap_or_else(|| panic!("the message around record {r}"));
                        forgery(&mut bytes, &m, at);
                        forge(&mut bytes, &m);
                    }
                    let path = scratch.path().join(format!("vault-{r}-{forged_any}"));
                    copy_vault(&template, &path);
                    std::fs::write(&raw_edit::db_files(&path)[0], &bytes).unwrap();
                    let case = format!("record {r}: {what}");
                    match open_survives(&path, &tokens, &case) {
                        Ok(intact) => eprintln!("{case}: opened, {intact} of 3 tokens intact"),
                        Err(e) => eprintln!("{case}: {e}"),
                    }
                    forged_any += 1;
                }
            }
            assert_eq!(forged_any, records.len() * FORGERIES.len());
        });
    }

    fn copy_vault(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_vault(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// Runs [`open_survives`] on a copy of `template` whose log is `bytes`: the error, if
    /// the open failed.
    fn forged_copy_survives(
        template: &Path,
        scratch: &Path,
        bytes: &[u8],
        tokens: &[OAuthToken],
        case: &str,
    ) -> Option<Error> {
        let path = scratch.join("vault");
        let _ = std::fs::remove_dir_all(&path);
        copy_vault(template, &path);
        std::fs::write(&raw_edit::db_files(&path)[0], bytes).unwrap();
        open_survives(&path, tokens, case).err()
    }

    /// Random forgeries: one to three bytes of a message changed (header after its CRC, or
    /// body) and the CRC recomputed, 300 times over every message of a 3-token vault's log.
    #[test]
    fn forged_sled_messages_at_random_give_errors_never_wrong_data() {
        common::vaults::on(Engine::Sled, || {
            let (_tmp, template, tokens) = make(3);
            let original = std::fs::read(&raw_edit::db_files(&template)[0]).unwrap();
            let all = messages(&original);
            assert!(all.len() > 20, "sled's log parses into messages: {}", all.len());
            let scratch = tempfile::tempdir().unwrap();
            let mut x = 0x9E37_79B9u32;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as usize
            };
            let (mut opened, mut refused) = (0, 0);
            for round in 0..300 {
                let m = &all[next() % all.len()];
                let mut bytes = original.clone();
                let mut changed = Vec::new();
                for _ in 0..1 + next() % 3 {
                    let at = m.header + 4 + next() % (m.end - m.header - 4);
                    bytes[at] = next() as u8;
                    changed.push(at);
                }
                forge(&mut bytes, m);
                let case = format!("round {round}: bytes {changed:?} of the message at {}", m.header);
                match forged_copy_survives(&template, scratch.path(), &bytes, &tokens, &case) {
                    None => opened += 1,
                    Some(e) => {
                        assert!(matches!(e, Error::Corrupted { .. }), "{case}: {e:?}");
                        refused += 1;
                    }
                }
            }
            eprintln!("{opened} forged vaults opened (no wrong data), {refused} refused at open");
            assert!(opened > 0 && refused > 0);
        });
    }

    /// Bytes changed as a hex editor would, the CRC left as it was: one to three bits
    /// flipped in up to three bytes of a message, 300 times over every message of a
    /// 3-token vault's log. sled's recovery read any message whose CRC fails as the torn
    /// end of the log; the vendored sled reads one whose CRC fails only by one byte
    /// changed in one value, followed by an intact message, as changed (see
    /// `changed_in_one_value` and `damaged_not_torn` in vendor/sled). Every round must end
    /// in an error or a vault that returns no wrong data; the counts it prints are in
    /// SECURITY.md.
    #[test]
    fn bytes_changed_at_random_without_their_crc_give_errors_never_wrong_data() {
        common::vaults::on(Engine::Sled, || {
            let (_tmp, template, tokens) = make(3);
            let original = std::fs::read(&raw_edit::db_files(&template)[0]).unwrap();
            let all = messages(&original);
            let scratch = tempfile::tempdir().unwrap();
            let mut x = 0x2545_F491u32;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as usize
            };
            let (mut whole, mut partly, mut refused, mut missing) = (0, 0, 0, 0);
            for round in 0..300 {
                let m = &all[next() % all.len()];
                let mut bytes = original.clone();
                let mut changed = Vec::new();
                for _ in 0..1 + next() % 3 {
                    let at = m.header + 4 + next() % (m.end - m.header - 4);
                    bytes[at] ^= 1 << (next() % 8);
                    changed.push(at);
                }
                let case = format!("round {round}: bytes {changed:?} of the message at {}", m.header);
                let path = scratch.path().join("vault");
                let _ = std::fs::remove_dir_all(&path);
                copy_vault(&template, &path);
                std::fs::write(&raw_edit::db_files(&path)[0], &bytes).unwrap();
                // Tokens a lookup by id no longer finds (`Ok(None)`): lost without an error.
                if let Ok(v) = options().open(&path, "p") {
                    missing += tokens
                        .iter()
                        .filter(|t| matches!(v.find_token_by_id(t.id().unwrap()), Ok(None)))
                        .count();
                }
                match open_survives(&path, &tokens, &case) {
                    Ok(3) => whole += 1,
                    Ok(_) => partly += 1,
                    Err(e) => {
                        assert!(matches!(e, Error::Corrupted { .. }), "{case}: {e:?}");
                        refused += 1;
                    }
                }
            }
            eprintln!(
                "{whole} changed vaults read every token back, {partly} refused or lost some \
                 (no wrong data; {missing} tokens in all not found, without an error), \
                 {refused} were refused at open"
            );
            assert!(whole + partly > 0);
        });
    }

    /// The state a crash leaves after a fourth save on a vault of three tokens (its files
    /// copied while it is still open: nothing written at close).
    struct Crashed {
        _template: tempfile::TempDir,
        _scratch: tempfile::TempDir,
        /// The copy.
        path: PathBuf,
        /// The four tokens, the fourth last.
        tokens: Vec<OAuthToken>,
        /// The copy's sled log.
        log: Vec<u8>,
        /// Where the fourth token's record starts in `log`.
        record_at: usize,
    }

    impl Crashed {
        fn after_a_fourth_save() -> Crashed {
            let (template_dir, template, mut tokens) = make(3);
            let before = raw_edit::edit(&template, |db| db.entries("tokens"));
            let scratch = tempfile::tempdir().unwrap();
            let path = scratch.path().join("vault");
            let v = options().open(&template, "p").unwrap();
            let mut fourth = token(3);
            v.save_token(&mut fourth).unwrap();
            copy_vault(&template, &path);
            drop(v);
            tokens.push(fourth);
            let record = raw_edit::edit(&template, |db| db.entries("tokens"))
                .into_iter()
                .find(|entry| !before.contains(entry))
                .unwrap()
                .1;
            let log = std::fs::read(&raw_edit::db_files(&path)[0]).unwrap();
            let record_at = memchr::memmem::rfind(&log, &record).unwrap();
            Crashed {
                _template: template_dir,
                _scratch: scratch,
                path,
                tokens,
                log,
                record_at,
            }
        }

        /// Writes `log` as the copy's log, opens it and checks that the first three tokens
        /// read back, the fourth is absent (its save rolled back) and nothing is
        /// `Corrupted` (`else_` says what a failure would mean).
        fn reads_back_the_first_three(&self, log: &[u8], else_: &str) {
            std::fs::write(&raw_edit::db_files(&self.path)[0], log).unwrap();
            let v = options().open(&self.path, "p").unwrap();
            for (n, t) in self.tokens.iter().enumerate() {
                match v.find_token_by_id(t.id().unwrap()) {
                    Ok(found) => assert_eq!(found.as_ref(), (n < 3).then_some(t), "token {n}"),
                    Err(e) => panic!("token {n}: {else_}: {e}"),
                }
            }
            assert!(v.verify().unwrap().is_clean());
        }
    }

    /// The other side of reading a changed message: a write torn by a crash (its message
    /// cut short, nothing intact after it) is still the end of the log, as in sled. A
    /// fourth token is saved and the files copied while the vault is still open (the
    /// state a crash leaves: nothing written at close); in the copy the log's last message
    /// (the end of that save's batch) is cut in its middle and everything after zeroed.
    /// The copy opens, the first three tokens read back, the fourth is absent (its batch
    /// was torn, as if the save had never been made), and nothing is `Corrupted`. Shown to
    /// fail when every message whose CRC fails is read as changed: the cut message is then
    /// recovered and reading it is `Corrupted`.
    #[test]
    fn a_write_torn_at_the_end_of_the_log_is_still_dropped_whole() {
        common::vaults::on(Engine::Sled, || {
            let crash = Crashed::after_a_fourth_save();
            let (mut bytes, at) = (crash.log.clone(), crash.record_at);
            let all = messages(&bytes);
            let last = all.last().unwrap();
            assert!(
                last.body > at,
                "the record is in the save's batch, before its end"
            );
            let cut = (last.body + last.end) / 2;
            bytes[cut..].iter_mut().for_each(|b| *b = 0);
            crash.reads_back_the_first_three(&bytes, "a torn write read as a damaged record");
        });
    }

    /// A write cut short by a crash inside the log, with a later write whole after it (a
    /// kill can stop one write part-way while a later one has landed): the cut message is
    /// still a tear, not a changed one. In the state a crash leaves after a fourth save
    /// (files copied while the vault is open), the last 40 bytes of that token's record
    /// message are zeroed and the messages after it are left intact. The copy opens, the
    /// save is rolled back (its batch was torn), the first three tokens read back and
    /// nothing is `Corrupted`. Shown to fail when any message whose body still parses,
    /// with an intact one after it, is taken as changed: the fourth token was then
    /// `Corrupted`.
    #[test]
    fn a_write_cut_short_before_an_intact_one_is_still_a_tear() {
        common::vaults::on(Engine::Sled, || {
            let crash = Crashed::after_a_fourth_save();
            let (mut bytes, at) = (crash.log.clone(), crash.record_at);
            let all = messages(&bytes);
            let cut = all.iter().position(|m| m.body <= at && at < m.end).unwrap();
            assert!(cut + 1 < all.len(), "intact messages follow the record's");
            let m = all[cut];
            bytes[m.end - 40..m.end].iter_mut().for_each(|b| *b = 0);
            assert!(messages(&bytes).len() == all.len() - 1);
            crash.reads_back_the_first_three(&bytes, "a cut write read as a changed record");
        });
    }

    /// A node forged to say it is being merged makes sled retry its traversal until it
    /// gives up with a panic: the call is `Corrupted`, and every later call on the handle
    /// is refused without touching sled again.
    #[test]
    fn a_panic_in_sled_is_corrupted_and_the_handle_stays_broken() {
        common::vaults::on(Engine::Sled, || {
            let (_tmp, template, tokens) = make(3);
            let original = std::fs::read(&raw_edit::db_files(&template)[0]).unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let mut panicked = 0;
            for m in messages(&original)
                .iter()
                .filter(|m| original[m.header + 4] == INLINE_NODE)
            {
                // A node's body: next, merging child (one byte each while small), then the
                // merging flag.
                let mut bytes = original.clone();
                bytes[m.body + 2] = 1;
                forge(&mut bytes, m);
                let path = scratch.path().join(format!("vault-{}", m.header));
                copy_vault(&template, &path);
                std::fs::write(&raw_edit::db_files(&path)[0], &bytes).unwrap();
                let Ok(v) = options().open(&path, "p") else {
                    continue;
                };
                // Open reads `meta` and `tokens`; a lookup by user name reads `idx.user` too.
                let by_user = |v: &tokenvault::Vault, t: &OAuthToken| {
                    v.find_token(&OAuthToken::default().with_user_name(t.user_name().unwrap()))
                };
                let first = tokens.iter().find_map(|t| by_user(&v, t).err());
                let Some(first) = first else { continue };
                if !first.to_string().contains("sled panicked") {
                    continue;
                }
                panicked += 1;
                let later = v.get_tokens().unwrap_err();
                assert!(later.to_string().contains("earlier"), "{later}");
                let later = v.save_token(&mut token(100)).unwrap_err();
                assert!(later.to_string().contains("earlier"), "{later}");
                drop(v);
                // Opened again, the same damage is found again, not hidden.
                let v = options().open(&path, "p").unwrap();
                assert!(tokens.iter().any(|t| by_user(&v, t).is_err()));
            }
            assert!(panicked > 0, "a forged merge flag made sled panic on some node");
        });
    }

    /// The checks the vendored sled makes of what it reads back must hold for everything
    /// sled itself writes: a vault large enough that every tree's index node splits (more
    /// than 256 leaves), most of it then deleted (leaves merge), reopened with a cache of
    /// 256 KiB so that nearly every node is read back from the log, reads back whole.
    #[test]
    fn a_vault_split_and_merged_by_sled_reads_back_whole_through_the_checks() {
        common::vaults::on(Engine::Sled, || {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("vault");
            let opts = || options().durable(false).cache_capacity(256 << 10);
            let v = opts().create(&path, "p").unwrap();
            let mut kept = Vec::new();
            for n in 0..5_000 {
                let mut t = token(n);
                v.save_token(&mut t).unwrap();
                if n % 10 == 0 {
                    kept.push(t);
                }
            }
            for n in (0..5_000).filter(|n| n % 10 != 0) {
                v.delete_token(&format!("id-{n}")).unwrap();
            }
            drop(v);
            let v = opts().open(&path, "p").unwrap();
            let mut all = v.get_tokens().unwrap();
            all.sort_by(|a, b| a.id().cmp(&b.id()));
            kept.sort_by(|a, b| a.id().cmp(&b.id()));
            assert_eq!(all, kept);
            for t in &kept {
                let q = OAuthToken::default().with_user_name(t.user_name().unwrap());
                assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t));
            }
            assert!(v.verify().unwrap().is_clean());
        });
    }
}
