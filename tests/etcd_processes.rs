//! Two processes on one etcd vault (feature `etcd`), as two app servers would share it:
//! each runs 8 threads that save, update by id and delete the same user names, and says
//! which of its operations were acknowledged; the vault at the end must be what some order
//! of those operations leaves.
//!
//! The test binary runs itself twice as the workers ([`worker_of_two_processes`]), so the
//! two share nothing but the cluster: no handle, no lock, no key cache.
//!
//! Needs a running cluster: `scripts/test.sh` starts a 3-member cluster on loopback and
//! sets `TOKENVAULT_ETCD_ENDPOINTS` (`HOST:PORT,...`); without it this test fails and says
//! so (it never passes silently).
#![cfg(feature = "etcd")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]
mod common {
    pub(crate) mod etcd;
    pub(crate) mod stamped;
    pub(crate) mod vaults;
}

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::etcd::fresh_location;
use common::stamped::{assert_untorn, stamped};
use common::vaults::{options, PASSPHRASE};
use tokenvault::{Engine, OAuthToken, Saved, TokenStore, VaultOptions};

/// The worker processes.
const PROCESSES: u64 = 2;
/// Threads in each worker.
const THREADS: u64 = 8;
/// Operations each thread makes.
const OPS: u64 = 80;
/// Users `0..USERS` are saved and updated, never deleted.
const USERS: u64 = 8;
/// Users `USERS..USERS + CHURN` are also deleted.
const CHURN: u64 = 6;
/// Worker `n`'s stamps are `(n + 1) * STAMPS + 1...`: distinct across the workers.
const STAMPS: u64 = 1_000_000;
/// How long the workers may take, together, before they are killed and the test fails.
const WORKER_DEADLINE: Duration = Duration::from_secs(50);
/// How far apart the two workers' clocks may be (see [`Clock`]): an operation of one
/// worker counts as surely after one of the other only if it started this much later.
const CLOCK_MARGIN_NS: u128 = 1_000_000;

/// The worker's test name, its number, the vault's location, and the directory of the
/// start barrier, as the parent passes them.
const WORKER: &str = "worker_of_two_processes";
const WORKER_ENV: &str = "TOKENVAULT_TEST_PROCS_WORKER";
const LOCATION_ENV: &str = "TOKENVAULT_TEST_PROCS_LOCATION";
const BARRIER_ENV: &str = "TOKENVAULT_TEST_PROCS_BARRIER";

/// The options both the parent and the workers use. A small seal budget: the workers also
/// race to rotate the key epoch.
fn vault_options() -> VaultOptions {
    options().seals_per_key(64)
}

fn user_name(user: u64) -> String {
    format!("user{user}@example.com")
}

/// Time as both workers can compare it: nanoseconds since the Unix epoch, read once from
/// the system clock at the start, then advanced by the monotonic clock. Both clocks are the
/// kernel's and slew together, so two processes' readings differ only by a step of the
/// system clock between their two starts (a few milliseconds apart) and by the
/// microseconds between the two reads at each start; [`CLOCK_MARGIN_NS`] covers the
/// latter. Within one worker the readings are exactly ordered.
struct Clock {
    epoch_ns: u128,
    start: Instant,
}

impl Clock {
    fn start() -> Clock {
        let epoch_ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        Clock {
            epoch_ns,
            start: Instant::now(),
        }
    }

    fn now(&self) -> u128 {
        self.epoch_ns + self.start.elapsed().as_nanos()
    }
}

/// Prints one line to stdout at once, flushed: the parent reads it even if this process
/// dies right after.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Not a test by itself: one of the two processes that
/// `two_processes_and_eight_threads_each_saving_updating_and_deleting_the_same_users_keep_one_record_per_user`
/// starts. Opens the vault, waits for the other worker, then runs [`THREADS`] threads of
/// [`OPS`] operations each and prints a line per acknowledged one:
///
/// - `ack save USER STAMP ID inserted|updated INVOKED RETURNED`: a save of `stamped(USER,
///   STAMP)` returned `Ok`, and the vault said the token's id is `ID`;
/// - `ack delete USER ID INVOKED RETURNED`: a delete of `ID`, found as `USER`'s record just
///   before, returned `Ok`;
///
/// with `INVOKED` and `RETURNED` read from its [`Clock`] just before the call and just after
/// it returned; then `done SAVES DELETES`.
#[test]
#[ignore = "run as a child process by another test"]
fn worker_of_two_processes() {
    let Ok(worker) = std::env::var(WORKER_ENV) else {
        return;
    };
    let worker: u64 = worker.parse().unwrap();
    let at = std::env::var(LOCATION_ENV).unwrap();
    let barrier_dir = PathBuf::from(std::env::var(BARRIER_ENV).unwrap());
    let vault = vault_options().open_at(&at, PASSPHRASE).unwrap();
    assert_eq!(vault.engine(), Engine::Etcd);
    wait_for_every_worker(&barrier_dir, worker);
    // The test harness has printed the test's name without ending the line.
    say("");
    let clock = Clock::start();
    let stamp = AtomicU64::new(1);
    let saves = AtomicU64::new(0);
    let deletes = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (vault, clock, stamp, saves, deletes, barrier) =
                (&vault, &clock, &stamp, &saves, &deletes, &barrier);
            s.spawn(move || {
                barrier.wait();
                // A sequence of its own per worker and thread; the users are the same.
                let mut x = (worker * THREADS + t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = (worker + 1) * STAMPS + stamp.fetch_add(1, Ordering::SeqCst);
                    let user = x % (USERS + CHURN);
                    let mut token = stamped(user, n);
                    // Saves by user name, updates by id and (of the churned users) deletes.
                    let kind = (x >> 32) % if user < USERS { 2 } else { 3 };
                    if kind > 0 {
                        let q = OAuthToken::default().with_user_name(user_name(user));
                        if let Some(found) = vault.find_token(&q).unwrap() {
                            let id = found.id().unwrap().to_owned();
                            if kind == 2 {
                                let invoked = clock.now();
                                vault.delete_token(&id).unwrap();
                                let returned = clock.now();
                                say(&format!("ack delete {user} {id} {invoked} {returned}"));
                                deletes.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            token = token.with_id(id);
                        }
                    }
                    let invoked = clock.now();
                    let saved = vault.upsert_token(&mut token).unwrap();
                    let returned = clock.now();
                    assert_untorn(&token);
                    let how = match saved {
                        Saved::Inserted => "inserted",
                        Saved::Updated => "updated",
                    };
                    say(&format!(
                        "ack save {user} {n} {} {how} {invoked} {returned}",
                        token.id().unwrap()
                    ));
                    saves.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    say(&format!(
        "done {} {}",
        saves.load(Ordering::SeqCst),
        deletes.load(Ordering::SeqCst)
    ));
}

/// Says this worker is ready (a file in `dir`) and waits until every worker is.
fn wait_for_every_worker(dir: &Path, worker: u64) {
    std::fs::write(dir.join(format!("ready-{worker}")), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..PROCESSES).all(|w| dir.join(format!("ready-{w}")).exists()) {
        assert!(Instant::now() < deadline, "the other worker never got ready");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An acknowledged operation, as a worker printed it.
#[derive(Clone, Debug)]
struct Acked {
    worker: usize,
    user: u64,
    /// The save's stamp; `None` for a delete.
    stamp: Option<u64>,
    /// Whether the save inserted the user's record (rather than updating it).
    inserted: bool,
    id: String,
    invoked: u128,
    returned: u128,
}

impl Acked {
    /// Whether this operation surely took effect after `other`: it was invoked after
    /// `other` returned (by more than the clocks' margin if the two are of different
    /// workers). Each save or delete is one etcd transaction that applies only if what it
    /// read still holds, so it takes effect at one moment between its invocation and its
    /// return.
    fn surely_after(&self, other: &Acked) -> bool {
        let margin = if self.worker == other.worker {
            0
        } else {
            CLOCK_MARGIN_NS
        };
        self.invoked > other.returned + margin
    }
}

/// A worker's output: its acknowledged operations, and whether it said `done`.
fn parse(worker: usize, out: &str) -> (Vec<Acked>, bool) {
    let mut acked = Vec::new();
    let mut done = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["ack", "save", user, stamp, id, how, invoked, returned] => acked.push(Acked {
                worker,
                user: user.parse().unwrap(),
                stamp: Some(stamp.parse().unwrap()),
                inserted: *how == "inserted",
                id: (*id).to_owned(),
                invoked: invoked.parse().unwrap(),
                returned: returned.parse().unwrap(),
            }),
            ["ack", "delete", user, id, invoked, returned] => acked.push(Acked {
                worker,
                user: user.parse().unwrap(),
                stamp: None,
                inserted: false,
                id: (*id).to_owned(),
                invoked: invoked.parse().unwrap(),
                returned: returned.parse().unwrap(),
            }),
            ["done", saves, deletes] => {
                done = Some(saves.parse::<usize>().unwrap() + deletes.parse::<usize>().unwrap());
            }
            _ => {}
        }
    }
    let complete = done == Some(acked.len());
    (acked, complete)
}

/// Starts worker `n` on the vault at `at`.
fn spawn_worker(n: u64, at: &str, barrier: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", WORKER, "--ignored", "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, n.to_string())
        .env(LOCATION_ENV, at)
        .env(BARRIER_ENV, barrier)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads all of `pipe` on a thread of its own (a full pipe would stall the worker).
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        BufReader::new(&mut pipe).read_to_string(&mut s).unwrap();
        s
    })
}

/// Two processes, each with 8 threads saving, updating by id and deleting the same user
/// names on one etcd vault, leave exactly one record per user name, every acknowledged
/// save accounted for, no torn token, and a vault that `verify` finds clean.
///
/// Every save writes a whole stamped token (every field carries its stamp, distinct across
/// both workers), and each save or delete takes effect at one moment between its
/// invocation and its return ([`Acked::surely_after`]). What the end state may be follows
/// from that, user by user, from the acknowledged operations of both workers:
///
/// - at most one record has the user's name, and no token is torn;
/// - a record present holds the stamp of an acknowledged save of that user, under the id
///   that save returned (nothing was stored that no one saved, nor moved to another id);
/// - that save is not superseded: no acknowledged save of the user was invoked after it
///   returned (that one took effect later and overwrote it: every save of a user replaces
///   the user's one record, or makes it anew), and no acknowledged delete of its id was
///   invoked after it returned (that one removed it, or it was gone already);
/// - a user is absent only if some acknowledged delete of it is not followed by an
///   acknowledged save invoked after the delete returned (such a save would have come
///   last and left a record). So a user never deleted (users `0..USERS` are never) that was
///   saved is present;
/// - every record is found by its user name, id and access token, and `verify` is clean.
///
/// Which of several overlapping saves (or of a save and a delete) came last is the
/// cluster's choice: the rules above accept any of them and nothing else.
#[test]
fn two_processes_and_eight_threads_each_saving_updating_and_deleting_the_same_users_keep_one_record_per_user()
{
    let started = Instant::now();
    let at = fresh_location();
    drop(vault_options().create_at(&at, PASSPHRASE).unwrap());
    let barrier = tempfile::tempdir().unwrap();
    let mut workers: Vec<Child> = (0..PROCESSES)
        .map(|n| spawn_worker(n, &at, barrier.path()))
        .collect();
    let outputs: Vec<_> = workers
        .iter_mut()
        .map(|w| (drain(w.stdout.take().unwrap()), drain(w.stderr.take().unwrap())))
        .collect();
    let deadline = Instant::now() + WORKER_DEADLINE;
    let mut statuses = vec![None; workers.len()];
    while statuses.iter().any(Option::is_none) && Instant::now() < deadline {
        for (w, status) in workers.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                *status = w.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let timed_out = statuses.iter().any(Option::is_none);
    for (w, status) in workers.iter_mut().zip(&statuses) {
        if status.is_none() {
            w.kill().unwrap();
            w.wait().unwrap();
        }
    }
    let outputs: Vec<(String, String)> = outputs
        .into_iter()
        .map(|(o, e)| (o.join().unwrap(), e.join().unwrap()))
        .collect();
    let workers_took = started.elapsed();
    for (n, ((out, err), status)) in outputs.iter().zip(&statuses).enumerate() {
        assert!(
            !timed_out && status.is_some_and(|s| s.success()),
            "worker {n} {}: {status:?}\n--- stdout\n{out}\n--- stderr\n{err}",
            if timed_out {
                "killed after the deadline"
            } else {
                "failed"
            }
        );
    }

    let mut acked: BTreeMap<u64, Vec<Acked>> = BTreeMap::new();
    let mut spans = Vec::new();
    for (n, (out, err)) in outputs.iter().enumerate() {
        let (ops, complete) = parse(n, out);
        spans.push((
            ops.iter().map(|a| a.invoked).min().unwrap_or(u128::MAX),
            ops.iter().map(|a| a.returned).max().unwrap_or(0),
        ));
        assert!(
            complete,
            "worker {n}: its acknowledgements do not add up to what it says it did\n{out}\n{err}"
        );
        // The test tests something: each worker inserted, updated and deleted, the same users.
        assert!(ops.iter().any(|a| a.stamp.is_none()), "worker {n} never deleted");
        assert!(ops.iter().any(|a| a.inserted), "worker {n} never inserted");
        assert!(
            ops.iter().any(|a| a.stamp.is_some() && !a.inserted),
            "worker {n} never updated"
        );
        for user in 0..USERS + CHURN {
            assert!(
                ops.iter().any(|a| a.user == user && a.stamp.is_some()),
                "worker {n} never saved user {user}"
            );
        }
        for a in ops {
            acked.entry(a.user).or_default().push(a);
        }
    }

    // ... and at the same time: each began before the other finished.
    assert!(
        spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1,
        "the workers did not overlap: {spans:?}"
    );

    let vault = vault_options().open_at(&at, PASSPHRASE).unwrap();
    let all = vault.get_tokens().unwrap();
    let mut stored: HashMap<u64, Vec<OAuthToken>> = HashMap::new();
    for t in &all {
        assert_untorn(t);
        let user: u64 = t
            .user_name()
            .unwrap()
            .trim_start_matches("user")
            .trim_end_matches("@example.com")
            .parse()
            .unwrap();
        stored.entry(user).or_default().push(t.clone());
    }
    let mut problems = Vec::new();
    for (user, tokens) in &stored {
        if tokens.len() > 1 {
            problems.push(format!("user {user}: {} records", tokens.len()));
        }
        if !acked.contains_key(user) {
            problems.push(format!("user {user}: stored, never saved"));
        }
    }
    for (&user, ops) in &acked {
        let saves = || ops.iter().filter(|a| a.stamp.is_some());
        let deletes = || ops.iter().filter(|a| a.stamp.is_none());
        let Some(tokens) = stored.get(&user) else {
            let q = OAuthToken::default().with_user_name(user_name(user));
            if let Some(found) = vault.find_token(&q).unwrap() {
                problems.push(format!("user {user}: in no record, found by name: {found:?}"));
            }
            // Absent: some acknowledged delete may have come after every acknowledged save.
            let may_be_last = deletes().any(|d| !saves().any(|s| s.surely_after(d)));
            if !may_be_last {
                problems.push(format!(
                    "user {user}: absent, but every acknowledged delete of it (of {}) is followed by an acknowledged save",
                    deletes().count()
                ));
            }
            continue;
        };
        let token = &tokens[0];
        let stamp = token.expiry_time().unwrap() as u64;
        let id = token.id().unwrap();
        let Some(save) = saves().find(|s| s.stamp == Some(stamp)) else {
            problems.push(format!("user {user}: holds stamp {stamp}, never acknowledged"));
            continue;
        };
        if save.id != id {
            problems.push(format!(
                "user {user}: stamp {stamp} is under id {id}, its save said {}",
                save.id
            ));
        }
        if let Some(later) = saves().find(|s| s.surely_after(save)) {
            problems.push(format!(
                "user {user}: holds stamp {stamp}, but the acknowledged save {later:?} came after it ({save:?})"
            ));
        }
        if let Some(later) = deletes().find(|d| d.id == id && d.surely_after(save)) {
            problems.push(format!(
                "user {user}: holds stamp {stamp}, but the acknowledged delete {later:?} of its id came after it ({save:?})"
            ));
        }
        // Every way in finds this record.
        let by_name = vault
            .find_token(&OAuthToken::default().with_user_name(user_name(user)))
            .unwrap();
        let by_access = vault
            .find_token(&OAuthToken::default().with_access_token(token.access_token().unwrap()))
            .unwrap();
        let by_id = vault.find_token_by_id(id).unwrap();
        for (how, found) in [("name", by_name), ("access token", by_access), ("id", by_id)] {
            if found.as_ref() != Some(token) {
                problems.push(format!("user {user}: by {how}, {found:?}, not {token:?}"));
            }
        }
    }
    for user in 0..USERS {
        if !stored.contains_key(&user) {
            problems.push(format!("user {user}: never deleted, absent"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let report = vault.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let count = |f: &dyn Fn(&Acked) -> bool| acked.values().flatten().filter(|a| f(a)).count();
    eprintln!(
        "{PROCESSES} workers: {} saves ({} inserts) and {} deletes acknowledged in {workers_took:?}; {} of {} users stored at the end",
        count(&|a| a.stamp.is_some()),
        count(&|a| a.inserted),
        count(&|a| a.stamp.is_none()),
        stored.len(),
        USERS + CHURN
    );
}
