//! Create, open, reopen, passphrases and locking: the vault's life on disk.
//!
//! Protects against: data lost across reopen, a wrong passphrase that opens or changes
//! anything, `change_passphrase` that leaves the old passphrase working, a second opener
//! that hangs or succeeds, `create` over existing data, `open` that creates files, a vault
//! directory left readable by others after open, a lock file planted as a symbolic link
//! that has the vault create, lock or write a file elsewhere.
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

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw_edit;
use common::vaults::{engine, options, token};
use tokenvault::{Engine, Error, KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

/// Every entry of every tree, read with the engine directly (sled rewrites its files on
/// every open, so the bytes of the files are not comparable; the stored data is).
fn stored_entries(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    raw_edit::edit(dir, |db| {
        let mut out = Vec::new();
        for name in db.tree_names() {
            for (k, v) in db.entries(&name) {
                out.push((name.clone(), k, v));
            }
        }
        out
    })
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

common::vaults::engine_suite! {
    fn data_survives_close_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let mut saved = Vec::new();
        {
            let v = options().create(&path, "pass phrase").unwrap();
            for n in 0..20 {
                let mut t = token(n);
                v.save_token(&mut t).unwrap();
                saved.push(t);
            }
        }
        for _ in 0..3 {
            let v = options().open(&path, "pass phrase").unwrap();
            let mut got = v.get_tokens().unwrap();
            got.sort_by(|a, b| a.user_name().cmp(&b.user_name()));
            let mut want = saved.clone();
            want.sort_by(|a, b| a.user_name().cmp(&b.user_name()));
            assert_eq!(got, want);
            for t in &saved {
                assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap().as_ref(), Some(t));
                let q = OAuthToken::default()
                    .with_grant_token(t.grant_token().unwrap())
                    .with_client_id("1000.CLIENT")
                    .with_client_secret("x");
                assert_eq!(v.find_token(&q).unwrap().as_ref(), Some(t));
            }
        }
    }

    fn wrong_passphrase_is_refused_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        {
            let v = options().create(&path, "correct horse").unwrap();
            v.save_token(&mut token(1)).unwrap();
        }
        let before = stored_entries(&path);
        assert!(before.len() >= 5);
        for wrong in [
            "correct hors",
            "correct horsE",
            "",
            "correct horse ",
            "Correct horse",
        ] {
            assert!(
                matches!(options().open(&path, wrong), Err(Error::WrongPassphrase)),
                "{wrong:?} must be refused"
            );
        }
        let after = stored_entries(&path);
        assert_eq!(before, after, "a refused open must not change any stored entry");
        let v = options().open(&path, "correct horse").unwrap();
        assert_eq!(v.get_tokens().unwrap().len(), 1);
    }

    fn change_passphrase_retires_the_old_one_and_keeps_data() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let mut t = token(7);
        {
            let v = options().create(&path, "old").unwrap();
            v.save_token(&mut t).unwrap();
            v.change_passphrase("new").unwrap();
            // Still usable after the change.
            assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap(), Some(t.clone()));
        }
        assert!(matches!(
            options().open(&path, "old"),
            Err(Error::WrongPassphrase)
        ));
        let v = options().open(&path, "new").unwrap();
        assert_eq!(v.find_token_by_id(t.id().unwrap()).unwrap(), Some(t));
    }

    fn create_refuses_existing_vaults_and_non_empty_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        drop(options().create(&path, "p").unwrap());
        assert!(matches!(options().create(&path, "p"), Err(Error::VaultExists)));
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"hello").unwrap();
        assert!(matches!(options().create(&other, "p"), Err(Error::VaultExists)));
        assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"hello");
        // An empty directory and missing parents are fine.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        drop(options().create(&empty, "p").unwrap());
        drop(options().create(tmp.path().join("a/b/c"), "p").unwrap());
    }

    fn open_without_a_vault_is_not_found_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        assert!(matches!(options().open(&missing, "p"), Err(Error::VaultNotFound)));
        assert!(!missing.exists());
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(options().open(&empty, "p"), Err(Error::VaultNotFound)));
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("db"), b"not sled").unwrap();
        assert!(matches!(options().open(&other, "p"), Err(Error::VaultNotFound)));
    }

    fn kdf_options_outside_the_bounds_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let weak = options().kdf(KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        });
        assert!(matches!(
            weak.create(tmp.path().join("v"), "p"),
            Err(Error::InvalidKdfParams { .. })
        ));
        assert!(!tmp.path().join("v").exists());
    }

    fn weaker_header_is_upgraded_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        drop(options().create(&path, "p").unwrap());
        let stronger = KdfParams {
            memory_kib: 20 * 1024,
            iterations: 3,
            parallelism: 1,
        };
        drop(options().kdf(stronger).open(&path, "p").unwrap());
        // Opened with the floor now: it must unlock with the stored (stronger) parameters and
        // must not downgrade them, and the passphrase still works.
        drop(options().open(&path, "p").unwrap());
        assert!(matches!(options().open(&path, "q"), Err(Error::WrongPassphrase)));
    }

    fn second_open_in_the_same_process_is_locked_and_drop_releases() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let v = options().create(&path, "p").unwrap();
        let clone = v.clone();
        let started = Instant::now();
        assert!(matches!(options().open(&path, "p"), Err(Error::VaultLocked)));
        assert!(matches!(options().open(&path, "wrong"), Err(Error::VaultLocked)));
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(v);
        // A clone keeps it open.
        assert!(matches!(options().open(&path, "p"), Err(Error::VaultLocked)));
        drop(clone);
        drop(options().open(&path, "p").unwrap());
    }

    fn second_process_gets_vault_locked_at_once_and_a_killed_holder_releases() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        drop(options().create(&path, "p").unwrap());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_holds_the_vault_open",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{}|{}", engine(), path.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "child exited before holding the vault"
            );
            // libtest prints the test's name on the same line before our output.
            if line.trim_end().ends_with("ready") {
                break;
            }
        }
        let started = Instant::now();
        assert!(matches!(options().open(&path, "p"), Err(Error::VaultLocked)));
        assert!(started.elapsed() < Duration::from_secs(1));
        child.kill().unwrap();
        child.wait().unwrap();
        let v = options().open(&path, "p").unwrap();
        assert!(v.get_tokens().unwrap().is_empty());
    }

    fn default_constructors_use_the_recommended_kdf() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        // `Vault::create` is the default options, sled among them; on another engine, the
        // default options with only the engine named.
        let v = match engine() {
            Engine::Sled => Vault::create(&path, "p").unwrap(),
            other => VaultOptions::new().engine(other).create(&path, "p").unwrap(),
        };
        assert_eq!(v.kdf_params(), KdfParams::RECOMMENDED);
        drop(v);
        let v = Vault::open(&path, "p").unwrap();
        assert_eq!(v.engine(), engine());
        assert_eq!(v.kdf_params(), KdfParams::RECOMMENDED);
        assert!(format!("{v:?}").contains("Vault"));
    }
}

const CHILD_ENV: &str = "TOKENVAULT_TEST_HOLD_VAULT";

/// Not a test by itself: the child process of `second_process_gets_vault_locked_at_once`.
#[test]
#[ignore = "run as a child process by another test"]
fn child_holds_the_vault_open() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    // `ENGINE|PATH`: the parent's engine, which this thread does not inherit.
    let (engine, path) = spec.split_once('|').unwrap();
    let engine: Engine = engine.parse().unwrap();
    common::vaults::on(engine, || {
        let v = options().open(path, "p").unwrap();
        assert_eq!(v.engine(), engine);
        println!("ready");
        std::io::stdout().flush().unwrap();
        // Hold the vault until the parent closes our stdin (or kills us).
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
}

/// The tests that need Unix file modes and symbolic links.
#[cfg(unix)]
mod unix {
    use super::*;

    common::vaults::engine_suite! {
        fn vault_directory_is_private_and_its_files_owner_only() {
            use std::os::unix::fs::PermissionsExt;
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("vault");
            {
                let v = options().create(&path, "p").unwrap();
                v.save_token(&mut token(1)).unwrap();
            }
            drop(options().open(&path, "p").unwrap());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
            for f in walk(&path) {
                let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", f.display());
            }
        }

        fn open_makes_a_loosened_vault_directory_private_again() {
            use std::os::unix::fs::PermissionsExt;
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("vault");
            drop(options().create(&path, "p").unwrap());
            // A vault restored from a backup, or copied, with the umask's modes.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            drop(options().open(&path, "p").unwrap());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }

        fn a_symlinked_lock_file_is_refused_and_never_followed() {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("vault");
            drop(options().create(&path, "p").unwrap());
            let lock = path.join("tokenvault.lock");
            let refused = |what: &str| match options().open(&path, "p") {
                Err(Error::Io(e)) => assert!(e.to_string().contains("symbolic link"), "{what}: {e}"),
                other => panic!("{what}: {other:?}"),
            };
            // A link to a file outside the vault: not opened, locked or written through.
            let outside = tmp.path().join("outside.txt");
            std::fs::write(&outside, "precious").unwrap();
            std::fs::remove_file(&lock).unwrap();
            std::os::unix::fs::symlink(&outside, &lock).unwrap();
            refused("a link to a file");
            assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
            let file = std::fs::File::open(&outside).unwrap();
            file.try_lock().unwrap();
            drop(file);
            // A dangling link: nothing is created where it points.
            let missing = tmp.path().join("created-through-the-link");
            std::fs::remove_file(&lock).unwrap();
            std::os::unix::fs::symlink(&missing, &lock).unwrap();
            refused("a dangling link");
            assert!(!missing.exists());
            assert!(std::fs::symlink_metadata(&lock).unwrap().file_type().is_symlink());
            // Once the link is gone, the vault opens (and makes its lock file again).
            std::fs::remove_file(&lock).unwrap();
            drop(options().open(&path, "p").unwrap());
            assert!(std::fs::symlink_metadata(&lock).unwrap().file_type().is_file());
        }
    }
}
