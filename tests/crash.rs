//! Crash durability: a child process writes in a loop and acknowledges each call after it
//! returns; the test kills it with SIGKILL at random moments, reopens the vault, and checks
//! every acknowledgement.
//!
//! Protects against: an acknowledged save or delete lost, a torn save (half the fields, or
//! the record without its index entries), a dangling index entry, and a vault that no
//! passphrase (or both) opens after a crash during `change_passphrase` or `rekey`.
//!
//! Both tests run on each engine (`sled::NAME`, `redb::NAME`): the child writes on the
//! engine of the test that started it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

mod common {
    pub(crate) mod vaults;
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::vaults::{engine, options};
use tokenvault::{Engine, Error, OAuthToken, TokenStore, Vault};

const CHILD_ENV: &str = "TOKENVAULT_TEST_CRASH_CHILD";
const USERS: u64 = 40;
const PASSPHRASES: [&str; 2] = ["first passphrase", "second passphrase"];

/// What operation `k` does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Save { user: u64 },
    Delete { user: u64 },
    ChangePassphrase,
    Rekey,
    Compact,
}

fn step(k: u64, keys_only: bool) -> Step {
    if keys_only {
        return match k % 3 {
            0 => Step::ChangePassphrase,
            1 => Step::Rekey,
            _ => Step::Compact,
        };
    }
    if k % 53 == 29 {
        Step::Rekey
    } else if k % 23 == 11 {
        Step::ChangePassphrase
    } else if k % 7 == 3 {
        Step::Delete {
            user: (k * 13) % USERS,
        }
    } else {
        Step::Save { user: k % USERS }
    }
}

/// The token operation `k` saves for `user`: every field depends on `k`, so a torn save
/// (fields from two saves) shows.
fn saved_token(user: u64, k: u64) -> OAuthToken {
    OAuthToken::default()
        .with_id(format!("id-{user}"))
        .with_user_name(format!("user{user}@example.com"))
        .with_client_id("1000.CRASH")
        .with_client_secret(format!("secret-{k}"))
        .with_refresh_token(format!("refresh-{user}-{k}"))
        .with_access_token(format!("access-{user}-{k}"))
        .with_grant_token(format!("grant-{user}-{k}"))
        .with_expiry_time(k as i64)
}

/// Not a test by itself: the writer that `killed_writers_lose_no_acknowledged_operation`
/// starts and kills.
#[test]
#[ignore = "run as a child process by another test"]
fn crash_child_writes_until_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    // `MODE|ENGINE|START|PASS|PATH`.
    let mut parts = spec.splitn(5, '|');
    let (mode, engine, start, pass, path) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let engine: Engine = engine.parse().unwrap();
    let keys_only = mode == "keys";
    let mut k: u64 = start.parse().unwrap();
    let mut pass: usize = pass.parse().unwrap();
    // The parent's engine: this thread does not inherit it.
    let vault = common::vaults::on(engine, || options().open(path, PASSPHRASES[pass]).unwrap());
    assert_eq!(vault.engine(), engine);
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nopened").unwrap();
    loop {
        match step(k, keys_only) {
            Step::Save { user } => vault.save_token(&mut saved_token(user, k)).unwrap(),
            Step::Delete { user } => vault.delete_token(&format!("id-{user}")).unwrap(),
            Step::ChangePassphrase => {
                pass = 1 - pass;
                vault.change_passphrase(PASSPHRASES[pass]).unwrap();
            }
            Step::Rekey => {
                pass = 1 - pass;
                vault.rekey(PASSPHRASES[pass]).unwrap();
            }
            Step::Compact => vault.compact().unwrap(),
        }
        writeln!(out, "ack {k}").unwrap();
        out.flush().unwrap();
        k += 1;
    }
}

/// A small deterministic generator for kill delays (seeded from the clock, printed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Opens with whichever passphrase works; exactly one must.
fn open_with_one_of_two(path: &Path) -> (Vault, usize) {
    let mut opens = Vec::new();
    for (i, p) in PASSPHRASES.iter().enumerate() {
        match options().open(path, p) {
            Ok(_) => opens.push(i),
            Err(Error::WrongPassphrase) => {}
            Err(e) => panic!("reopen after a crash failed: {e}"),
        }
    }
    assert_eq!(
        opens.len(),
        1,
        "exactly one passphrase must open the vault, not {opens:?}"
    );
    (options().open(path, PASSPHRASES[opens[0]]).unwrap(), opens[0])
}

common::vaults::engine_suite! {
    fn killed_writers_lose_no_acknowledged_operation() {
        crash_rounds(false);
    }

    fn killed_passphrase_changes_rekeys_and_compactions_leave_one_passphrase_and_every_token() {
        crash_rounds(true);
    }
}

fn crash_rounds(keys_only: bool) {
    let rounds: u64 = std::env::var("TOKENVAULT_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(24);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}, {rounds} rounds");
    let mut rng = XorShift(seed);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    let mut model: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    {
        let v = options().create(&path, PASSPHRASES[0]).unwrap();
        assert_eq!(v.engine(), engine());
        if keys_only {
            // Tokens for the re-keys to carry; the writer itself never saves.
            for user in 0..USERS {
                v.save_token(&mut saved_token(user, 1000 + user)).unwrap();
                model.insert(user, Some(1000 + user));
            }
        }
    }

    // The expected state (above): user -> the k of the save that holds, or None if deleted.
    let mut pass = 0usize;
    let mut next_k = 0u64;
    let mut acked_total = 0u64;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writes_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{}|{}|{next_k}|{pass}|{}",
                    if keys_only { "keys" } else { "all" },
                    engine(),
                    path.display()
                ),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Key operations each run the KDF: give them longer between kills.
        let delay = if keys_only {
            Duration::from_millis(150 + rng.next() % 600)
        } else {
            Duration::from_millis(20 + rng.next() % 180)
        };
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim_end().ends_with("opened") {
                    let _ = opened_tx.send(());
                } else if let Some(k) = line.trim().strip_prefix("ack ") {
                    acks.push(k.parse::<u64>().unwrap());
                }
            }
            acks
        });
        // Kill at a random moment after the child has started writing: the delay runs from
        // its open (which a loaded machine can hold up for longer than the delay), not from
        // its start. A child that never opens (it failed: its round's checks will say) is
        // killed after a minute.
        let _ = opened_rx.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        // Apply the acknowledged steps to the model.
        for (i, &k) in acks.iter().enumerate() {
            assert_eq!(k, next_k + i as u64, "acks must be consecutive");
            match step(k, keys_only) {
                Step::Save { user } => {
                    model.insert(user, Some(k));
                }
                Step::Delete { user } => {
                    model.insert(user, None);
                }
                Step::ChangePassphrase | Step::Rekey => pass = 1 - pass,
                Step::Compact => {}
            }
        }
        acked_total += acks.len() as u64;
        let in_flight = next_k + acks.len() as u64;

        let (vault, opened_with) = open_with_one_of_two(&path);
        // The open removed whatever an interrupted compaction left: one generation.
        let generations = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("gen-")
            })
            .count();
        assert_eq!(generations, 1, "round {round}: stale generations after reopen");
        assert!(!path.join("CURRENT.tmp").exists(), "round {round}");
        match step(in_flight, keys_only) {
            Step::ChangePassphrase | Step::Rekey => pass = opened_with,
            _ => assert_eq!(
                opened_with, pass,
                "round {round}: an acknowledged passphrase change was lost"
            ),
        }
        // The in-flight step may or may not have happened, but entirely or not at all.
        if let Step::Save { user } | Step::Delete { user } = step(in_flight, keys_only) {
            let stored = vault.find_token_by_id(&format!("id-{user}")).unwrap();
            let before = model.get(&user).copied().flatten();
            let after = match step(in_flight, keys_only) {
                Step::Save { .. } => Some(in_flight),
                _ => None,
            };
            let actual = stored.as_ref().map(|t| t.expiry_time().unwrap() as u64);
            assert!(
                actual == before || actual == after,
                "round {round}: in-flight step {in_flight} left user {user} at {actual:?}"
            );
            model.insert(user, actual);
        }
        // Every user is exactly as the model says, by id and by every index.
        for user in 0..USERS {
            let stored = vault.find_token_by_id(&format!("id-{user}")).unwrap();
            match model.get(&user).copied().flatten() {
                Some(k) => {
                    let want = saved_token(user, k);
                    assert_eq!(stored.as_ref(), Some(&want), "round {round}: user {user}");
                    let q = OAuthToken::default().with_access_token(want.access_token().unwrap());
                    assert_eq!(vault.find_token(&q).unwrap().as_ref(), Some(&want));
                    let q = OAuthToken::default().with_user_name(want.user_name().unwrap());
                    assert_eq!(vault.find_token(&q).unwrap().as_ref(), Some(&want));
                }
                None => assert_eq!(stored, None, "round {round}: user {user} should be absent"),
            }
        }
        let report = vault.verify().unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        drop(vault);
        next_k = in_flight + 1;
        // The in-flight step is settled; later rounds continue after it.
    }
    eprintln!("{acked_total} acknowledged operations over {rounds} rounds");
    assert!(acked_total > rounds, "the child must make progress between kills");
}

/// The child of [`a_killed_buffered_redb_vault_keeps_all_but_its_last_commits`]: saves
/// [`BUFFERED_SAVES`] tokens as fast as it can into a buffered redb vault, then aborts (no
/// destructor runs: nothing is flushed at close).
#[cfg(feature = "redb")]
#[test]
#[ignore = "run as a child process by another test"]
fn buffered_child_saves_then_aborts() {
    let Ok(path) = std::env::var(BUFFERED_CHILD_ENV) else {
        return;
    };
    let vault = common::vaults::on(Engine::Redb, || {
        options().durable(false).open(&path, "p").unwrap()
    });
    for n in 0..BUFFERED_SAVES {
        vault
            .save_token(
                &mut OAuthToken::default()
                    .with_id(format!("id-{n}"))
                    .with_user_name(format!("u{n}"))
                    .with_access_token(format!("a{n}")),
            )
            .unwrap();
    }
    std::process::abort();
}

#[cfg(feature = "redb")]
const BUFFERED_CHILD_ENV: &str = "TOKENVAULT_TEST_BUFFERED_CHILD";
#[cfg(feature = "redb")]
const BUFFERED_SAVES: usize = 1100;

/// A buffered redb vault makes every 512th commit durable, besides its flush every 500 ms:
/// a process killed right after 1,100 quick saves (well within 500 ms) keeps at least the
/// first 1,024, and what it keeps is a prefix of what it saved.
#[cfg(all(feature = "redb", unix))]
#[test]
fn a_killed_buffered_redb_vault_keeps_all_but_its_last_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    common::vaults::on(Engine::Redb, || drop(options().create(&path, "p").unwrap()));
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "buffered_child_saves_then_aborts",
            "--ignored",
            "--test-threads=1",
        ])
        .env(BUFFERED_CHILD_ENV, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    // Aborted (SIGABRT) after its saves; a panic would exit with 101.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "the child saves, then aborts: {status:?}"
    );
    let v = options().open(&path, "p").unwrap();
    let kept = v.get_tokens().unwrap().len();
    assert!(
        (1024..=BUFFERED_SAVES).contains(&kept),
        "{kept} of {BUFFERED_SAVES} kept"
    );
    for n in 0..kept {
        assert!(
            v.find_token_by_id(&format!("id-{n}")).unwrap().is_some(),
            "id-{n} of {kept}"
        );
    }
}
