//! The `tokenvault` command line (feature `cli`), run as a real process: the interface of
//! docs/design.md section 6, its exit codes and exact error messages, secret redaction, and
//! migration from the Zoho SDK's file store (CSV) and SQL store (SQLite).
//!
//! Protects against: a secret printed without `--reveal`; a wrong exit code that a script
//! would trust; a malformed source that imports half of itself; an import that modifies
//! its source or loses a field on the way; a vault left changed by a refused command; a
//! hostile input (too many rows, an oversized value, a SQLite schema that computes values)
//! that exhausts memory before it is refused; a secret `find` key that can only be given
//! where other users see it; a copy of a secret left in memory by a growing buffer.
//! Every vault here uses `TOKENVAULT_KDF=floor`, so the suite stays fast.
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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::raw_edit;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokenvault::{KdfParams, VaultOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tokenvault");
const PASS: &str = "correct horse battery staple";
/// The longest value an import or `find` takes.
const MIB4: usize = 4 * 1024 * 1024;
/// The most rows one import reads, and the most tokens one `save` takes.
const MAX_ROWS: usize = 1_000_000;
/// The address space (MiB) the memory tests allow: several times what the binary needs to
/// refuse their inputs, a fraction of what building every row of them would take.
const CAPPED_MIB: u64 = 96;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success with nothing on stderr; returns stdout.
    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(
            (self.code, self.stderr.as_str()),
            (0, ""),
            "stdout: {}",
            self.stdout
        );
        self.stdout
    }

    /// Asserts this exit code and exactly this one-line error on stderr.
    #[track_caller]
    fn fails(&self, code: i32, message: &str) {
        assert_eq!(
            (self.code, self.stderr.as_str()),
            (code, format!("error: {message}\n").as_str()),
            "stdout: {}",
            self.stdout
        );
    }

    /// Asserts a clap usage error (exit 2, clap's own message).
    #[track_caller]
    fn usage_error(&self, contains: &str) {
        assert_eq!(self.code, 2, "{self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        assert!(self.stderr.contains(contains), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// A scratch directory with a vault path in it.
struct Scratch {
    tmp: TempDir,
    vault: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let vault = tmp.path().join("vault");
        Scratch { tmp, vault }
    }

    /// A scratch directory with an initialized vault.
    fn with_vault() -> Scratch {
        let s = Scratch::new();
        s.run(&["init"]).ok();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The binary on this vault, with the fast KDF and the passphrase in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        self.configure(&mut cmd, args);
        cmd
    }

    /// As [`Scratch::command`], with the process's address space capped at `mib` MiB
    /// (`ulimit -v`, on Linux; elsewhere its meaning varies, and the cap is left out): an
    /// input that makes the binary allocate without bound then aborts it ("memory
    /// allocation failed") instead of passing unseen.
    fn command_capped(&self, mib: u64, args: &[&str]) -> Command {
        let cap = if cfg!(target_os = "linux") {
            format!("ulimit -v {} && ", mib * 1024)
        } else {
            String::new()
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("{cap}exec \"$0\" \"$@\"")).arg(BIN);
        self.configure(&mut cmd, args);
        cmd
    }

    fn configure(&self, cmd: &mut Command, args: &[&str]) {
        cmd.arg("--vault")
            .arg(&self.vault)
            .args(args)
            .env("TOKENVAULT_KDF", "floor")
            .env("TOKENVAULT_PASSPHRASE", PASS)
            .env_remove("TOKENVAULT_NEW_PASSPHRASE");
    }

    fn run(&self, args: &[&str]) -> Run {
        run(&mut self.command(args), None)
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        run(&mut self.command(args), Some(input.as_bytes()))
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .run(&["list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// `find` with these keys, revealed, as JSON.
    fn find(&self, keys: &[&str]) -> Value {
        let mut args = vec!["find", "--json", "--reveal"];
        args.extend_from_slice(keys);
        let run = self.run(&args);
        assert_eq!(run.code, 0, "{run:?}");
        run.json()
    }
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        // A command that fails before reading stdin closes it: ignore the broken pipe.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn alice() -> Value {
    json!({
        "user_name": "alice@example.com",
        "client_id": "1000.ALICE",
        "client_secret": "SECRET-alice-client",
        "refresh_token": "SECRET-alice-refresh",
        "access_token": "SECRET-alice-access",
        "grant_token": "SECRET-alice-grant",
        "expiry_time": 1_764_000_000_000_i64,
        "redirect_url": "https://example.com/cb",
        "api_domain": "https://www.zohoapis.com"
    })
}

fn bob() -> Value {
    json!({ "user_name": "bob@example.com", "access_token": "SECRET-bob-access", "id": null })
}

fn carol() -> Value {
    json!({
        "client_id": "1000.CAROL",
        "client_secret": "SECRET-carol-client",
        "grant_token": "SECRET-carol-grant",
        "refresh_token": "SECRET-carol-refresh"
    })
}

/// `value` with `id` set, as `find --json --reveal` prints it (absent fields omitted).
fn stored(value: Value, id: &str) -> Value {
    let mut map = value.as_object().unwrap().clone();
    map.retain(|_, v| !v.is_null());
    map.insert("id".into(), json!(id));
    Value::Object(map)
}

/// Whether `text` shows any of the secrets used here (all start "SECRET-" or "SECRET,").
fn leaks(text: &str) -> bool {
    text.contains("SECRET-") || text.contains("SECRET,")
}

fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn a_whole_session_from_init_to_delete_all() {
    whole_session(None);
}

#[test]
fn a_whole_session_on_each_engine_chosen_at_init() {
    whole_session(Some("sled"));
    whole_session(Some("redb"));
}

/// Every command in turn, on a vault made by `init` (with `--engine` when given).
fn whole_session(engine: Option<&str>) {
    let s = Scratch::new();
    let vault = s.vault.display().to_string();
    let init = match engine {
        Some(e) => vec!["init", "--engine", e],
        None => vec!["init"],
    };
    let made = engine.unwrap_or("sled");
    assert_eq!(
        s.run(&init).ok(),
        format!("Created an empty vault at {vault} (engine: {made}).\n")
    );
    // The engine's files, and no other's, are in the live generation.
    let redb = s.vault.join("gen-1").join("vault.redb").is_file();
    assert_eq!(redb, made == "redb", "{made}");

    // save: one object, then an array; each prints the ids.
    let out = s.run_stdin(&["save"], &alice().to_string()).ok();
    let alice_id = out.trim_end().to_owned();
    assert!(is_id(&alice_id), "{out}");
    let out = s.run_stdin(&["save"], &json!([bob(), carol()]).to_string()).ok();
    let ids: Vec<&str> = out.lines().collect();
    assert!(ids.len() == 2 && ids.iter().all(|id| is_id(id)), "{out}");
    let (bob_id, carol_id) = (ids[0].to_owned(), ids[1].to_owned());

    // find, by each key of the section 3 rules.
    assert_eq!(
        s.find(&["--user", "alice@example.com"]),
        stored(alice(), &alice_id)
    );
    assert_eq!(
        s.find(&["--access-token", "SECRET-bob-access"]),
        stored(bob(), &bob_id)
    );
    let by_client = ["--client-id", "1000.CAROL", "--client-secret", "rotated"];
    let by_grant = [&["--grant-token", "SECRET-carol-grant"][..], &by_client].concat();
    assert_eq!(s.find(&by_grant), stored(carol(), &carol_id));
    let by_refresh = [&["--refresh-token", "SECRET-carol-refresh"][..], &by_client].concat();
    assert_eq!(s.find(&by_refresh), stored(carol(), &carol_id));
    // A stale grant token falls through to the refresh token.
    let both = [
        &[
            "--grant-token",
            "stale",
            "--refresh-token",
            "SECRET-carol-refresh",
        ][..],
        &by_client,
    ]
    .concat();
    assert_eq!(s.find(&both), stored(carol(), &carol_id));

    // Without --reveal, find shows every secret as [REDACTED].
    let human = s.run(&["find", "--user", "alice@example.com"]).ok();
    assert!(
        human.contains(&alice_id) && human.contains("[REDACTED]"),
        "{human}"
    );
    assert!(!leaks(&human), "{human}");
    let redacted = s
        .run(&["find", "--json", "--access-token", "SECRET-bob-access"])
        .json();
    assert_eq!(redacted["access_token"], "[REDACTED]");

    // get
    let got = s.run(&["get", &alice_id, "--json", "--reveal"]).json();
    assert_eq!(got, stored(alice(), &alice_id));
    let human = s.run(&["get", &carol_id]).ok();
    assert!(human.contains("1000.CAROL") && !leaks(&human), "{human}");

    // list: a table with every token and no secret; --json the same as an array.
    let table = s.run(&["list"]).ok();
    assert!(!leaks(&table), "{table}");
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    for needle in [
        &alice_id,
        &bob_id,
        &carol_id,
        "alice@example.com",
        "bob@example.com",
        "[REDACTED]",
    ] {
        assert!(table.contains(needle), "{needle} missing from {table}");
    }
    let listed = s.run(&["list", "--json"]).ok();
    assert!(!leaks(&listed), "{listed}");
    assert_eq!(s.ids().len(), 3);

    // passwd: the old passphrase stops working, the new one works.
    let out = s
        .command(&["passwd"])
        .env("TOKENVAULT_NEW_PASSPHRASE", "a new passphrase")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Changed the passphrase of the vault at {vault}.\n")
    );
    s.run(&["list"])
        .fails(3, &format!("the passphrase does not unlock the vault at {vault}"));
    let out = s
        .command(&["passwd", "--json"])
        .env("TOKENVAULT_PASSPHRASE", "a new passphrase")
        .env("TOKENVAULT_NEW_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // verify
    assert_eq!(
        s.run(&["verify"]).ok(),
        "Checked 3 records and 8 index entries: no problems.\n"
    );
    assert_eq!(
        s.run(&["verify", "--json"]).json(),
        json!({ "records": 3, "index_entries": 8, "problems": [], "quarantined": [] })
    );

    // export: redacted by default; with --reveal, every secret, re-importable with save.
    let redacted = s.run(&["export"]).ok();
    assert!(!leaks(&redacted), "{redacted}");
    let export = s.run(&["export", "--reveal"]).ok();
    let tokens: Value = serde_json::from_str(&export).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 3);
    assert!(tokens.as_array().unwrap().contains(&stored(alice(), &alice_id)));
    let copy = Scratch::with_vault();
    let out = copy.run_stdin(&["save"], &export).ok();
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(copy.run(&["export", "--reveal"]).ok(), export);
    // A redacted export is refused rather than stored with placeholders.
    let refused = copy.run_stdin(&["save"], &redacted);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused
        .stderr
        .starts_with("error: token 1 of 3 has the placeholder [REDACTED] as its "));
    let redacted_alice = s.run(&["get", &alice_id, "--json"]).ok();
    copy.run_stdin(&["save"], &redacted_alice).fails(
        1,
        "the token has the placeholder [REDACTED] as its client_secret (export with --reveal to \
         copy secrets); nothing was saved",
    );
    assert_eq!(copy.ids().len(), 3);

    // delete ID
    assert_eq!(
        s.run(&["delete", &alice_id]).ok(),
        format!("Deleted the token {alice_id}.\n")
    );
    s.run(&["get", &alice_id])
        .fails(1, &format!("no token has the id \"{alice_id}\""));
    s.run(&["delete", &alice_id])
        .fails(1, &format!("no token has the id \"{alice_id}\""));
    s.run(&["find", "--user", "alice@example.com"])
        .fails(1, "no token is stored for the user \"alice@example.com\"");

    // delete --all --yes
    assert_eq!(
        s.run(&["delete", "--all", "--yes"]).ok(),
        "Deleted all 2 tokens.\n"
    );
    assert_eq!(s.run(&["list"]).ok(), "No tokens.\n");
    assert_eq!(s.run(&["list", "--json"]).json(), json!([]));
}

#[test]
fn a_wrong_passphrase_exits_3_and_changes_nothing() {
    let s = Scratch::with_vault();
    s.run_stdin(&["save"], &alice().to_string()).ok();
    let run = run(s.command(&["list"]).env("TOKENVAULT_PASSPHRASE", "wrong"), None);
    run.fails(
        3,
        &format!(
            "the passphrase does not unlock the vault at {}",
            s.vault.display()
        ),
    );
    assert!(run.stdout.is_empty());
    let run = run_passwd_with(&s, "wrong", "new");
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(s.ids().len(), 1);
}

fn run_passwd_with(s: &Scratch, old: &str, new: &str) -> Run {
    run(
        s.command(&["passwd"])
            .env("TOKENVAULT_PASSPHRASE", old)
            .env("TOKENVAULT_NEW_PASSPHRASE", new),
        None,
    )
}

#[test]
fn passwd_keeps_a_stronger_stored_kdf_unless_told_to_weaken_it() {
    let s = Scratch::new();
    let strong = KdfParams {
        memory_kib: 24 * 1024,
        iterations: 3,
        parallelism: 1,
    };
    drop(VaultOptions::new().kdf(strong).create(&s.vault, PASS).unwrap());
    let stored = |passphrase: &str| {
        VaultOptions::new()
            .kdf(KdfParams::FLOOR)
            .open(&s.vault, passphrase)
            .unwrap()
            .kdf_params()
    };
    // TOKENVAULT_KDF=floor asks for less in every parameter: the vault keeps its own.
    run_passwd_with(&s, PASS, "second").ok();
    assert_eq!(stored("second"), strong);
    let run = run(
        s.command(&["passwd", "--allow-weaker-kdf"])
            .env("TOKENVAULT_PASSPHRASE", "second")
            .env("TOKENVAULT_NEW_PASSPHRASE", "third"),
        None,
    );
    run.ok();
    assert_eq!(stored("third"), KdfParams::FLOOR);
}

#[test]
fn a_vault_open_elsewhere_exits_4() {
    let s = Scratch::with_vault();
    let held = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .open(&s.vault, PASS)
        .unwrap();
    let message = format!("the vault at {} is open in another process", s.vault.display());
    s.run(&["list"]).fails(4, &message);
    s.run_stdin(&["save"], &alice().to_string()).fails(4, &message);
    drop(held);
    assert_eq!(s.run(&["list"]).ok(), "No tokens.\n");
}

#[test]
fn malformed_token_json_is_refused_and_nothing_is_saved() {
    let s = Scratch::with_vault();
    let cases = [
        (
            "{",
            "stdin is not valid JSON: EOF while parsing an object at line 1 column 1",
        ),
        (
            "",
            "stdin is not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            r#"[{"access_token":"a"}] trailing"#,
            "stdin is not valid JSON: trailing characters at line 1 column 24",
        ),
        (
            r#"{"user":"alice","access_token":"a"}"#,
            "stdin does not hold valid tokens: unknown field `user`, expected one of `id`, `user_name`, \
             `client_id`, `client_secret`, `refresh_token`, `access_token`, `grant_token`, \
             `expiry_time`, `redirect_url`, `api_domain` at line 1 column 7",
        ),
        (
            r#"{"access_token":"a","expiry_time":"SECRET-soon"}"#,
            "stdin does not hold valid tokens: a value has the wrong type at line 1 column 47 \
             (expected a token object or an array of them, with a number for expiry_time and a \
             string or null for every other field)",
        ),
        (
            r#"[{"access_token":"a"},{"user_name":"u"}]"#,
            "token 2 of 2 has no grant, refresh or access token; nothing was saved",
        ),
        ("[]", "stdin holds an empty array: there is nothing to save"),
    ];
    for (input, message) in cases {
        s.run_stdin(&["save"], input).fails(1, message);
    }
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn a_save_that_breaks_an_invariant_names_the_token_and_what_was_saved() {
    let s = Scratch::with_vault();
    s.run_stdin(&["save"], &alice().to_string()).ok();
    let clash = json!([
        { "id": "dave-id", "user_name": "dave@example.com", "access_token": "d" },
        { "id": "dave-id", "user_name": "alice@example.com", "access_token": "x" }
    ]);
    let run = s.run_stdin(&["save"], &clash.to_string());
    run.fails(
        1,
        "token 2 of 2 was not saved: invalid token: another stored token has this user name; the \
         one before it was saved",
    );
    assert_eq!(run.stdout, "dave-id\n");
    assert_eq!(s.find(&["--user", "dave@example.com"])["access_token"], "d");
    assert_eq!(s.ids().len(), 2);
}

#[test]
fn lookups_that_match_nothing_exit_1() {
    let s = Scratch::with_vault();
    s.run_stdin(&["save"], &carol().to_string()).ok();
    s.run(&["find", "--user", "nobody"])
        .fails(1, "no token is stored for the user \"nobody\"");
    s.run(&["find", "--access-token", "nothing"])
        .fails(1, "no token has this access token");
    // The right refresh token under another client id does not count.
    let keys = [
        "find",
        "--refresh-token",
        "SECRET-carol-refresh",
        "--client-id",
        "1000.OTHER",
        "--client-secret",
        "s",
    ];
    s.run(&keys).fails(
        1,
        "no token of the client \"1000.OTHER\" has this grant or refresh token",
    );
    s.run(&["get", "no-such-id"])
        .fails(1, "no token has the id \"no-such-id\"");
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::with_vault();
    s.run(&[]).usage_error("Usage:");
    s.run(&["frobnicate"]).usage_error("unrecognized subcommand");
    s.run(&["find"]).usage_error("required");
    s.run(&["find", "--user", "a", "--access-token", "b"])
        .usage_error("cannot be used with");
    s.run(&["find", "--access-token", "a", "--client-id", "c"])
        .usage_error("cannot be used with");
    s.run(&["find", "--grant-token", "g", "--client-id", "c"])
        .usage_error("--client-secret");
    s.run(&["find", "--client-id", "c", "--client-secret", "s"])
        .usage_error("required");
    s.run(&["find", "--user", ""]).usage_error("a value is required");
    s.run(&["delete"]).usage_error("required");
    s.run(&["delete", "x", "--all"])
        .usage_error("cannot be used with");
    s.run(&["delete", "x", "--yes"])
        .usage_error("cannot be used with");
    s.run(&["list", "--kdf", "weak"])
        .usage_error("invalid value 'weak'");
    s.run(&["init", "--engine", "lmdb"])
        .usage_error("invalid value 'lmdb'");
    s.run(&["list", "--passphrase", "x"])
        .usage_error("unexpected argument '--passphrase'");
    let no_vault = run(Command::new(BIN).arg("list"), None);
    no_vault.usage_error("--vault <DIR>");
    // --help is not an error.
    let help = run(Command::new(BIN).arg("--help"), None);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("TOKENVAULT_PASSPHRASE"));
}

#[test]
fn delete_all_without_yes_off_a_terminal_is_refused() {
    let s = Scratch::with_vault();
    s.run_stdin(&["save"], &alice().to_string()).ok();
    s.run(&["delete", "--all"]).fails(
        2,
        "delete --all asks for confirmation on a terminal; add --yes to delete every token without asking",
    );
    assert_eq!(s.ids().len(), 1);
}

#[test]
fn passphrases_come_from_a_file_the_environment_or_nowhere() {
    let s = Scratch::new();
    let file = s.path("pass.txt");
    std::fs::write(&file, "from a file\n").unwrap();
    let file_arg = file.to_str().unwrap();
    let init = s
        .command(&["--passphrase-file", file_arg, "init"])
        .env_remove("TOKENVAULT_PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(init.status.code(), Some(0), "{init:?}");
    // The file's newline is not part of the passphrase.
    let run_with = |pass: &str| run(s.command(&["list"]).env("TOKENVAULT_PASSPHRASE", pass), None);
    assert_eq!(run_with("from a file").code, 0);
    assert_eq!(run_with("from a file\n").code, 3);
    // The file wins over the environment.
    assert_eq!(
        run(
            s.command(&["--passphrase-file", file_arg, "list"])
                .env("TOKENVAULT_PASSPHRASE", "x"),
            None
        )
        .code,
        0
    );
    // No source and no terminal: a usage error, not a hang.
    let none = run(s.command(&["list"]).env_remove("TOKENVAULT_PASSPHRASE"), None);
    none.fails(
        2,
        "no passphrase given: use --passphrase-file, set TOKENVAULT_PASSPHRASE, or run on a terminal",
    );
    let none = run(
        s.command(&["passwd"]).env("TOKENVAULT_PASSPHRASE", "from a file"),
        None,
    );
    none.fails(
        2,
        "no new passphrase given: use --new-passphrase-file, set TOKENVAULT_NEW_PASSPHRASE, or run on a terminal",
    );
    std::fs::write(&file, "").unwrap();
    let empty = run(
        s.command(&["passwd", "--new-passphrase-file", file_arg])
            .env("TOKENVAULT_PASSPHRASE", "from a file"),
        None,
    );
    empty.fails(1, "the new passphrase is empty; choose a long one");
    let missing = s.path("missing.txt");
    let missing_arg = missing.to_str().unwrap();
    run(&mut s.command(&["--passphrase-file", missing_arg, "list"]), None).fails(
        1,
        &format!("cannot read the passphrase file \"{missing_arg}\": No such file or directory (os error 2)"),
    );
}

#[test]
fn init_and_open_report_where_there_is_no_vault_or_already_one() {
    let s = Scratch::with_vault();
    s.run(&["init"]).fails(
        1,
        &format!(
            "{} already holds a vault or other files; init needs a missing or empty directory",
            s.vault.display()
        ),
    );
    let other = s.path("nothing-here");
    let run = run(
        Command::new(BIN)
            .arg("--vault")
            .arg(&other)
            .arg("list")
            .env("TOKENVAULT_PASSPHRASE", PASS)
            .env("TOKENVAULT_KDF", "floor"),
        None,
    );
    let shown = other.display();
    run.fails(
        1,
        &format!("no vault exists at {shown} (create one with `tokenvault --vault {shown} init`)"),
    );
    assert!(!other.exists(), "a failed open created the directory");
}

/// The SDK's columns, as its FileStore writes the header.
const SDK_HEADER: &str =
    "id,user_name,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_uri,api_domain";

/// A file store the way Python's csv writer leaves it: CRLF, minimal quoting (fields with
/// commas, quotes or line breaks quoted, quotes doubled), empty cells for None.
fn sdk_csv() -> String {
    [
        SDK_HEADER,
        "1,alice@example.com,1000.ALICE,\"SECRET,alice \"\"client\"\"\",SECRET-alice-refresh,SECRET-alice-access,,1764000000000,https://example.com/cb,https://www.zohoapis.com",
        "2,,1000.CAROL,SECRET-carol-client,SECRET-carol-refresh,,SECRET-carol-grant,,,",
        "3,\"bob, the \"\"builder\"\"\",,,,\"SECRET-bob\r\naccess\",,1764000000001,,",
        "",
    ]
    .join("\r\n")
}

/// Every token of [`sdk_csv`] (and of the SQLite twin below) is found by each of its keys.
fn assert_sdk_tokens_found(s: &Scratch) {
    let alice = s.find(&["--user", "alice@example.com"]);
    assert_eq!(
        alice,
        json!({
            "id": "1",
            "user_name": "alice@example.com",
            "client_id": "1000.ALICE",
            "client_secret": "SECRET,alice \"client\"",
            "refresh_token": "SECRET-alice-refresh",
            "access_token": "SECRET-alice-access",
            "expiry_time": 1_764_000_000_000_i64,
            "redirect_url": "https://example.com/cb",
            "api_domain": "https://www.zohoapis.com"
        })
    );
    assert_eq!(s.find(&["--access-token", "SECRET-alice-access"])["id"], "1");
    let alice_client = [
        "--client-id",
        "1000.ALICE",
        "--client-secret",
        "SECRET,alice \"client\"",
    ];
    assert_eq!(
        s.find(&[&["--refresh-token", "SECRET-alice-refresh"][..], &alice_client].concat())["id"],
        "1"
    );

    let carol_client = [
        "--client-id",
        "1000.CAROL",
        "--client-secret",
        "SECRET-carol-client",
    ];
    let carol = s.find(&[&["--grant-token", "SECRET-carol-grant"][..], &carol_client].concat());
    assert_eq!(
        carol,
        json!({
            "id": "2",
            "client_id": "1000.CAROL",
            "client_secret": "SECRET-carol-client",
            "refresh_token": "SECRET-carol-refresh",
            "grant_token": "SECRET-carol-grant"
        })
    );
    assert_eq!(
        s.find(&[&["--refresh-token", "SECRET-carol-refresh"][..], &carol_client].concat())["id"],
        "2"
    );

    let bob = s.find(&["--user", "bob, the \"builder\""]);
    assert_eq!(
        bob,
        json!({
            "id": "3",
            "user_name": "bob, the \"builder\"",
            "access_token": "SECRET-bob\r\naccess",
            "expiry_time": 1_764_000_000_001_i64
        })
    );
    assert_eq!(s.find(&["--access-token", "SECRET-bob\r\naccess"])["id"], "3");
    assert_eq!(
        s.run(&["get", "2", "--json"]).json()["client_secret"],
        "[REDACTED]"
    );
    assert_eq!(s.ids(), ["1", "2", "3"]);
}

#[test]
fn importing_the_sdks_csv_keeps_ids_and_every_field() {
    let s = Scratch::with_vault();
    let csv = s.path("sdk_tokens.txt");
    std::fs::write(&csv, sdk_csv()).unwrap();
    let csv_arg = csv.to_str().unwrap();
    let before = std::fs::metadata(&csv).unwrap().modified().unwrap();

    assert_eq!(
        s.run(&["import", csv_arg]).ok(),
        "3 imported, 0 updated, 0 rejected.\n"
    );
    assert_sdk_tokens_found(&s);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), sdk_csv());
    assert_eq!(std::fs::metadata(&csv).unwrap().modified().unwrap(), before);

    // Importing again updates the same tokens (by id) and adds nothing.
    assert_eq!(
        s.run(&["import", csv_arg, "--json"]).json(),
        json!({ "imported": 0, "updated": 3, "rejected": [] })
    );
    assert_sdk_tokens_found(&s);
}

#[test]
fn csv_rows_that_cannot_be_tokens_are_rejected_by_line_and_the_rest_imported() {
    let s = Scratch::with_vault();
    let csv = s.path("sdk_tokens.txt");
    let content = [
        SDK_HEADER,
        "1,alice@example.com,,,,SECRET-a,,1764000000000,,",
        "2,bob@example.com,,,,SECRET-b,,tomorrow,,",
        "\"3\",carol@example.com,\"multi",
        "line\",,,,,,,",
        "4,erin@example.com,,,,SECRET-e,,,,",
        "4,alice@example.com,,,,SECRET-e2,,,,",
        "",
    ]
    .join("\n");
    std::fs::write(&csv, content).unwrap();
    let run = s.run(&["import", csv.to_str().unwrap()]);
    assert_eq!(
        run.stdout,
        "2 imported, 0 updated, 3 rejected.\n\
         line 3: rejected: expiry_time is not a whole number of milliseconds\n\
         line 4: rejected: a token needs a grant, refresh or access token\n\
         line 7: rejected: another stored token has this user name\n"
    );
    run.fails(
        1,
        "3 of 5 rows were rejected (see the report); the others are stored",
    );
    assert_eq!(s.ids(), ["1", "4"]);
    assert_eq!(
        s.find(&["--user", "erin@example.com"])["access_token"],
        "SECRET-e"
    );
    assert!(!leaks(&run.stdout) && !run.stdout.contains("tomorrow"));
    let json = s.run(&["import", csv.to_str().unwrap(), "--json"]).json();
    assert_eq!(
        json["rejected"][0],
        json!({ "line": 3, "reason": "expiry_time is not a whole number of milliseconds" })
    );
}

#[test]
fn a_malformed_csv_imports_nothing() {
    let s = Scratch::with_vault();
    let csv = s.path("bad.csv");
    let shown = csv.display().to_string();
    let cases = [
        (
            format!("{SDK_HEADER}\r\n1,a,,,,t,,,,\r\n2,b,,,,\"t\"x,,,,\r\n"),
            format!("cannot import {shown}: line 3: text after the closing quote of a field; nothing was imported"),
        ),
        (
            format!("{SDK_HEADER}\r\n1,a,,,,t,,,,\r\n2,b\"c,,,,t,,,,\r\n"),
            format!("cannot import {shown}: line 3: a quote inside an unquoted field; nothing was imported"),
        ),
        (
            format!("{SDK_HEADER}\r\n1,a,,,,t,,,,\r\n2,\"open,,,,t,,,,\r\n"),
            format!("cannot import {shown}: line 3: a quoted field is never closed; nothing was imported"),
        ),
        (
            format!("{SDK_HEADER}\r\n1,a,,,,t,,,,\r\n2,b,,,,t\r\n"),
            format!("cannot import {shown}: line 3 has 6 fields where the header has 10; nothing was imported"),
        ),
        (
            format!("{SDK_HEADER}\r\n1,a,,,,t,,,,,,\r\n"),
            format!("cannot import {shown}: line 2: more than 10 fields; nothing was imported"),
        ),
        (
            format!("{SDK_HEADER}\r\n1,a,,,,t,,,,\rx\r\n"),
            format!("cannot import {shown}: line 2: a carriage return that does not end the line; nothing was imported"),
        ),
        (
            format!("{SDK_HEADER},colour\r\n1,a,,,,t,,,,,red\r\n"),
            format!(
                "cannot import {shown}: the CSV header has an unknown column \"colour\"; the SDK's columns are \
                 id, user_name, client_id, client_secret, refresh_token, access_token, grant_token, \
                 expiry_time, redirect_uri, api_domain"
            ),
        ),
        (
            "id,user_name,client_id,client_secret,refresh_token,access_token,grant_token,expiry_time,redirect_uri\r\n".to_owned(),
            format!("cannot import {shown}: the CSV header has no \"api_domain\" column"),
        ),
        (
            "1,alice@example.com,1000.A,SECRET-x,SECRET-r,SECRET-a,,,,\r\n".to_owned(),
            format!(
                "cannot import {shown}: its first line is not the SDK's CSV header (id, user_name, client_id, \
                 client_secret, refresh_token, access_token, grant_token, expiry_time, redirect_uri, api_domain)"
            ),
        ),
        (
            String::new(),
            format!(
                "cannot import {shown}: the file is empty, not the SDK's CSV (its header is id, user_name, \
                 client_id, client_secret, refresh_token, access_token, grant_token, expiry_time, redirect_uri, \
                 api_domain)"
            ),
        ),
    ];
    for (content, message) in cases {
        std::fs::write(&csv, &content).unwrap();
        s.run(&["import", &shown]).fails(1, &message);
        assert_eq!(s.ids(), Vec::<String>::new(), "{content}");
    }
    // An oversized field or line is refused without reading past the limit's worth of it.
    let mut long = format!("{SDK_HEADER}\n1,").into_bytes();
    long.resize(long.len() + MIB4 + 1, b'x');
    std::fs::write(&csv, &long).unwrap();
    s.run(&["import", &shown]).fails(
        1,
        &format!("cannot import {shown}: line 2: a field is longer than 4 MiB; nothing was imported"),
    );
    let mut long = format!("{SDK_HEADER}\n1").into_bytes();
    for _ in 0..4 {
        long.push(b',');
        long.resize(long.len() + MIB4, b'x');
    }
    long.extend_from_slice(b",x,,,,\n");
    std::fs::write(&csv, &long).unwrap();
    s.run(&["import", &shown]).fails(
        1,
        &format!("cannot import {shown}: line 2: the record is longer than 16 MiB; nothing was imported"),
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

/// The seed schema of the SDK's SQL stores, with the rows of [`sdk_csv`] and the kinds of
/// values SQLite may hold in them (NULLs, empty strings, an integer expiry).
fn sdk_sqlite(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "create table oauthtoken(id varchar(10) primary key, user_name varchar(255), \
         client_id varchar(255), client_secret varchar(255), refresh_token varchar(255), \
         access_token varchar(255), grant_token varchar(255), expiry_time varchar(20), \
         redirect_url varchar(255), api_domain varchar(255));",
    )
    .unwrap();
    let insert = "insert into oauthtoken values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    db.execute(
        insert,
        rusqlite::params![
            "1",
            "alice@example.com",
            "1000.ALICE",
            "SECRET,alice \"client\"",
            "SECRET-alice-refresh",
            "SECRET-alice-access",
            None::<String>,
            "1764000000000",
            "https://example.com/cb",
            "https://www.zohoapis.com"
        ],
    )
    .unwrap();
    db.execute(
        insert,
        rusqlite::params![
            "2",
            "",
            "1000.CAROL",
            "SECRET-carol-client",
            "SECRET-carol-refresh",
            "",
            "SECRET-carol-grant",
            None::<String>,
            None::<String>,
            None::<String>
        ],
    )
    .unwrap();
    db.execute(
        "insert into oauthtoken (id, user_name, access_token, expiry_time) values (?1, ?2, ?3, ?4)",
        rusqlite::params![
            "3",
            "bob, the \"builder\"",
            "SECRET-bob\r\naccess",
            1_764_000_000_001_i64
        ],
    )
    .unwrap();
}

#[test]
fn importing_the_sdks_sqlite_store_keeps_ids_and_every_field() {
    let s = Scratch::with_vault();
    let db = s.path("zohooauth.db");
    sdk_sqlite(&db);
    let before = std::fs::read(&db).unwrap();
    let db_arg = db.to_str().unwrap();
    assert_eq!(
        s.run(&["import", db_arg]).ok(),
        "3 imported, 0 updated, 0 rejected.\n"
    );
    assert_sdk_tokens_found(&s);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the import changed its source"
    );
    let entries: Vec<_> = std::fs::read_dir(s.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "the import left files beside its source: {entries:?}"
    );
}

#[test]
fn sqlite_rows_that_cannot_be_tokens_are_rejected_by_row() {
    let s = Scratch::with_vault();
    let db = s.path("zohooauth.db");
    sdk_sqlite(&db);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "insert into oauthtoken (id, user_name, access_token, expiry_time) values ('4', 'dan', 'SECRET-d', 'later')",
            [],
        )
        .unwrap();
    }
    let run = s.run(&["import", db.to_str().unwrap(), "--json"]);
    assert_eq!(
        run.json(),
        json!({
            "imported": 3,
            "updated": 0,
            "rejected": [{ "row": 4, "reason": "expiry_time is not a whole number of milliseconds" }]
        })
    );
    run.fails(
        1,
        "1 of 4 rows was rejected (see the report); the others are stored",
    );
}

#[test]
fn a_sqlite_file_without_the_table_imports_nothing() {
    let s = Scratch::with_vault();
    let db = s.path("other.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("create table tokens(id text);")
        .unwrap();
    let shown = db.display().to_string();
    s.run(&["import", &shown]).fails(
        1,
        &format!("cannot import {shown}: it is a SQLite file without an oauthtoken table"),
    );

    let db = s.path("extra.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "create table oauthtoken(id, user_name, client_id, client_secret, refresh_token, \
             access_token, grant_token, expiry_time, redirect_url, api_domain, colour);",
        )
        .unwrap();
    let shown = db.display().to_string();
    s.run(&["import", &shown]).fails(
        1,
        &format!(
            "cannot import {shown}: the oauthtoken table has an unknown column \"colour\"; the SDK's columns \
             are id, user_name, client_id, client_secret, refresh_token, access_token, grant_token, \
             expiry_time, redirect_url, api_domain"
        ),
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn a_large_import_draws_no_progress_when_stderr_is_not_a_terminal() {
    let s = Scratch::with_vault();
    let csv = s.path("sdk_tokens.txt");
    let mut content = format!("{SDK_HEADER}\r\n");
    for i in 0..2_500 {
        content.push_str(&format!(
            "{i},user{i}@example.com,1000.C,SECRET-c,SECRET-r{i},SECRET-a{i},,,,\r\n"
        ));
    }
    std::fs::write(&csv, content).unwrap();
    let out = s.run(&["import", csv.to_str().unwrap()]).ok();
    assert_eq!(out, "2500 imported, 0 updated, 0 rejected.\n");
    assert_eq!(
        s.find(&["--access-token", "SECRET-a2499"])["user_name"],
        "user2499@example.com"
    );
    assert_eq!(
        s.run(&["verify"]).ok(),
        "Checked 2500 records and 7500 index entries: no problems.\n"
    );
}

#[test]
fn verify_reports_each_problem_and_exits_1() {
    let s = Scratch::with_vault();
    let id = s.run_stdin(&["save"], &alice().to_string()).ok();
    let id = id.trim_end();
    // Damage the vault behind its back: drop the user index entry.
    raw_edit::edit(&s.vault, |db| {
        let users = db.entries("idx.user");
        assert_eq!(users.len(), 1);
        db.remove("idx.user", &users[0].0);
    });
    let run = s.run(&["verify"]);
    assert_eq!(
        run.stdout,
        format!("Checked 1 record and 3 index entries: 1 problem:\n  token {id} has a user value with no index entry\n")
    );
    run.fails(1, &format!("the vault at {} has a problem", s.vault.display()));
    let run = s.run(&["verify", "--json"]);
    assert_eq!(
        run.json(),
        json!({
            "records": 1,
            "index_entries": 3,
            "problems": [format!("token {id} has a user value with no index entry")],
            "quarantined": []
        })
    );
    assert_eq!(run.code, 1);
}

#[test]
fn a_corrupted_vault_exits_1_naming_the_damage() {
    let s = Scratch::with_vault();
    raw_edit::edit(&s.vault, |db| {
        let mut header = db.get("meta", "header").unwrap();
        let last = header.len() - 1;
        header[last] ^= 1;
        db.insert("meta", "header", header);
    });
    let run = s.run(&["list"]);
    assert_eq!(run.code, 1, "{run:?}");
    let prefix = format!("error: the vault at {} is corrupted: ", s.vault.display());
    assert!(run.stderr.starts_with(&prefix), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
}

#[test]
fn one_damaged_record_is_named_set_aside_by_repair_and_the_others_stay_usable() {
    // Damage the first record in key order (one changed byte), whichever token it holds.
    one_damaged_record_named_and_set_aside(|vault| {
        raw_edit::edit(vault, |db| {
            let (slot, mut damaged) = db.entries("tokens").swap_remove(0);
            let middle = damaged.len() / 2;
            damaged[middle] ^= 0x04;
            db.insert("tokens", slot, damaged);
        });
    });
}

/// The same, the byte changed in the storage engine's own file, as a hex editor would:
/// the engine's checksum of that message then fails.
#[test]
fn a_record_damaged_with_a_hex_editor_is_named_set_aside_by_repair_and_the_others_stay_usable() {
    one_damaged_record_named_and_set_aside(|vault| {
        let first = raw_edit::edit(vault, |db| db.entries("tokens").swap_remove(0).1);
        let file = raw_edit::db_files(vault).remove(0);
        let mut bytes = std::fs::read(&file).unwrap();
        // Every copy of it the file holds: an earlier one may still be there.
        let copies: Vec<usize> = memchr::memmem::find_iter(&bytes, &first).collect();
        assert!(!copies.is_empty(), "the record's bytes are in the file");
        for at in copies {
            bytes[at + first.len() / 2] ^= 0x04;
        }
        std::fs::write(&file, &bytes).unwrap();
    });
}

fn one_damaged_record_named_and_set_aside(damage: impl FnOnce(&std::path::Path)) {
    let s = Scratch::with_vault();
    let mut ids = Vec::new();
    for (n, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let token = json!({
            "id": format!("id-{user}"),
            "user_name": format!("{user}@example.com"),
            "client_id": "1000.C",
            "refresh_token": format!("SECRET-refresh-{n}"),
        });
        ids.push(
            s.run_stdin(&["save"], &token.to_string())
                .ok()
                .trim_end()
                .to_owned(),
        );
    }
    damage(&s.vault);
    let failing: Vec<&String> = ids.iter().filter(|id| s.run(&["get", id]).code != 0).collect();
    assert_eq!(failing.len(), 1, "exactly one token is damaged");
    let victim = failing[0].clone();
    // list fails, naming the damaged token.
    let run = s.run(&["list"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("token {victim} is damaged")),
        "{run:?}"
    );
    // find and get work for the others.
    for (n, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let id = format!("id-{user}");
        if id == victim {
            let run = s.run(&["find", "--user", &format!("{user}@example.com")]);
            assert_eq!(run.code, 1, "{run:?}");
            assert!(
                run.stderr.contains(&format!("token {victim} is damaged")),
                "{run:?}"
            );
            continue;
        }
        let found = s.find(&["--user", &format!("{user}@example.com")]);
        assert_eq!(found["refresh_token"], format!("SECRET-refresh-{n}"));
    }
    // verify names it; repair sets it aside and says so.
    let run = s.run(&["verify"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains(&format!("token {victim} (slot ")), "{run:?}");
    let out = s.run(&["repair"]).ok();
    assert!(
        out.starts_with(&format!(
            "Set aside 1 damaged record (kept in the vault's quarantine):\n  token {victim} (slot "
        )),
        "{out}"
    );
    assert!(out.contains("After the repair: checked 2 records"), "{out}");
    assert_eq!(s.ids().len(), 2);
    assert!(!s.ids().contains(&victim));
    // list shows the two and says one record was set aside.
    let out = s.run(&["list"]).ok();
    assert!(
        out.ends_with("1 record set aside by repair (damaged; kept in the vault's quarantine, listed by `tokenvault verify`).\n"),
        "{out}"
    );
    for id in ids.iter().filter(|id| **id != victim) {
        assert!(out.contains(id.as_str()), "{out}");
    }
    let out = s.run(&["verify"]).ok();
    assert!(out.contains("no problems."), "{out}");
    assert!(out.contains("1 record in the quarantine"), "{out}");
    let json = s.run(&["repair", "--json"]).json();
    assert_eq!(json["set_aside"], json!([]));
    assert_eq!(json["quarantined"][0]["id"], json!(victim));
}

/// Every file below `dir`, concatenated (for byte scans).
fn all_file_bytes(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(all_file_bytes(&entry.path()));
        } else {
            out.push(std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    all_file_bytes(dir)
        .iter()
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

/// The values of a tree of the vault's live database.
fn tree_values(s: &Scratch, tree: &str) -> Vec<Vec<u8>> {
    raw_edit::edit(&s.vault, |db| {
        db.entries(tree).into_iter().map(|(_, v)| v).collect()
    })
}

#[test]
fn after_passwd_and_compact_no_old_header_or_deleted_record_is_left_in_the_files() {
    let s = Scratch::with_vault();
    let tokens: Vec<Value> = (0..40)
        .map(|n| json!({ "id": format!("known-{n}"), "user_name": format!("u{n}"), "access_token": format!("SECRET-{n}") }))
        .collect();
    s.run_stdin(&["save"], &Value::Array(tokens).to_string()).ok();
    let records_before = tree_values(&s, "tokens");
    for n in [3, 17, 31] {
        s.run(&["delete", &format!("known-{n}")]).ok();
    }
    let records_after = tree_values(&s, "tokens");
    let deleted: Vec<&Vec<u8>> = records_before
        .iter()
        .filter(|r| !records_after.contains(r))
        .collect();
    assert_eq!(deleted.len(), 3);
    let old_header = tree_values(&s, "meta")
        .into_iter()
        .find(|v| v.starts_with(b"TKNVAULT"))
        .unwrap();
    // Before: the deleted records are still in the files (the scan can see them).
    for record in &deleted {
        assert!(
            files_contain(&s.vault, record),
            "a deleted record should linger before compaction"
        );
    }
    let out = s
        .command(&["passwd"])
        .env("TOKENVAULT_NEW_PASSPHRASE", "a new passphrase")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let run = s
        .command(&["compact"])
        .env("TOKENVAULT_PASSPHRASE", "a new passphrase")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("Compacted the vault at "));
    assert!(
        !files_contain(&s.vault, &old_header),
        "the old header is still in the files"
    );
    for record in &deleted {
        assert!(
            !files_contain(&s.vault, record),
            "a deleted record is still in the files"
        );
    }
    // Every other record is there, exactly.
    for record in &records_after {
        assert!(files_contain(&s.vault, record));
    }
}

/// Asserts a refusal (exit 1, this message), not an abort from exhausted memory.
#[track_caller]
fn refused_within_the_cap(run: &Run, message: &str) {
    assert!(
        !run.stderr.contains("memory allocation"),
        "the binary ran out of its {CAPPED_MIB} MiB: {run:?}"
    );
    run.fails(1, message);
}

#[test]
fn save_refuses_more_than_a_million_tokens_in_bounded_memory() {
    let s = Scratch::with_vault();
    // 3 MB of JSON, a million small objects: every one built at once would take hundreds
    // of MiB before any check.
    let over = format!("[{}{{}}]", "{},".repeat(MAX_ROWS));
    let run = run(
        &mut s.command_capped(CAPPED_MIB, &["save"]),
        Some(over.as_bytes()),
    );
    refused_within_the_cap(
        &run,
        "stdin holds more than 1,000,000 tokens; save at most 1,000,000 at a time; nothing was saved",
    );
    assert!(run.stdout.is_empty());
    // At the cap, the count passes and the tokens are checked one by one, still capped.
    let at_cap = format!("[{}{{}}]", "{},".repeat(MAX_ROWS - 1));
    let run = run_capped_stdin(&s, &["save"], at_cap.as_bytes());
    refused_within_the_cap(
        &run,
        "token 1 of 1000000 has no grant, refresh or access token; nothing was saved",
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

fn run_capped_stdin(s: &Scratch, args: &[&str], input: &[u8]) -> Run {
    run(&mut s.command_capped(CAPPED_MIB, args), Some(input))
}

#[test]
fn a_csv_of_more_than_a_million_rows_is_refused_in_bounded_memory() {
    let s = Scratch::with_vault();
    let csv = s.path("sdk_tokens.txt");
    let shown = csv.display().to_string();
    // 11 MB: a million empty rows (each would be a token to reject) and one more.
    let mut content = format!("{SDK_HEADER}\r\n").into_bytes();
    for _ in 0..=MAX_ROWS {
        content.extend_from_slice(b",,,,,,,,,\r\n");
    }
    std::fs::write(&csv, &content).unwrap();
    let run = run(&mut s.command_capped(CAPPED_MIB, &["import", &shown]), None);
    refused_within_the_cap(
        &run,
        &format!(
            "cannot import {shown}: line 1000002 holds row 1,000,001, past the 1,000,000 rows one \
             import takes; split the file; nothing was imported"
        ),
    );
    assert!(run.stdout.is_empty());
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn a_value_of_4_mib_imports_and_one_byte_more_is_refused() {
    let s = Scratch::with_vault();
    let big = "A".repeat(MIB4 - 6) + "SECRET";
    // CSV: one 4 MiB access token, found again by the whole of it (from a file).
    let csv = s.path("sdk_tokens.txt");
    std::fs::write(
        &csv,
        format!("{SDK_HEADER}\r\n1,big@example.com,,,,{big},,,,\r\n"),
    )
    .unwrap();
    assert_eq!(
        s.run(&["import", csv.to_str().unwrap()]).ok(),
        "1 imported, 0 updated, 0 rejected.\n"
    );
    let file = s.path("access.txt");
    std::fs::write(&file, format!("{big}\n")).unwrap();
    let found = s.find(&["--access-token-file", file.to_str().unwrap()]);
    assert_eq!(found["user_name"], "big@example.com");
    assert_eq!(found["access_token"].as_str().map(str::len), Some(MIB4));

    // SQLite: the same, and a value one byte longer refuses the whole file.
    let s = Scratch::with_vault();
    let db = s.path("zohooauth.db");
    sdk_sqlite(&db);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "insert into oauthtoken (id, user_name, refresh_token) values ('4', 'big', ?1)",
            [&big],
        )
        .unwrap();
    assert_eq!(
        s.run(&["import", db.to_str().unwrap()]).ok(),
        "4 imported, 0 updated, 0 rejected.\n"
    );
    let s = Scratch::with_vault();
    let db = s.path("over.db");
    sdk_sqlite(&db);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "update oauthtoken set refresh_token = ?1 where id = '2'",
            [format!("{big}x")],
        )
        .unwrap();
    let shown = db.display().to_string();
    let run = run(&mut s.command_capped(CAPPED_MIB, &["import", &shown]), None);
    refused_within_the_cap(
        &run,
        &format!("cannot import {shown}: row 2 has a value longer than 4 MiB; nothing was imported"),
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

/// A SQLite file whose `oauthtoken` is created by `schema` and holds one row.
fn hostile_sqlite(path: &Path, schema: &str) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(schema).unwrap();
}

const SDK_COLUMNS: &str =
    "id, user_name, client_id, client_secret, refresh_token, access_token, grant_token, expiry_time, redirect_url, api_domain";

#[test]
fn a_sqlite_column_that_computes_its_value_is_refused_in_bounded_memory() {
    let s = Scratch::with_vault();
    // Each read of this column would build a 1 GB blob.
    let db = s.path("virtual.db");
    hostile_sqlite(
        &db,
        "create table oauthtoken(id, user_name, client_id, client_secret, refresh_token, access_token, \
         grant_token, expiry_time, redirect_url, api_domain as (zeroblob(1000000000)));
         insert into oauthtoken (id, access_token) values ('1', 'SECRET-a');",
    );
    let shown = db.display().to_string();
    let run = run(&mut s.command_capped(CAPPED_MIB, &["import", &shown]), None);
    refused_within_the_cap(
        &run,
        &format!(
            "cannot import {shown}: the oauthtoken table has a generated column \"api_domain\"; only \
             stored values are read; nothing was imported"
        ),
    );
    let db = s.path("stored.db");
    hostile_sqlite(
        &db,
        "create table oauthtoken(id, user_name, client_id, client_secret, refresh_token, access_token, \
         grant_token, expiry_time, redirect_url, api_domain as (upper(user_name)) stored);
         insert into oauthtoken (id, access_token) values ('1', 'SECRET-a');",
    );
    let shown = db.display().to_string();
    s.run(&["import", &shown]).fails(
        1,
        &format!(
            "cannot import {shown}: the oauthtoken table has a generated column \"api_domain\"; only \
             stored values are read; nothing was imported"
        ),
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn a_sqlite_view_or_virtual_table_named_oauthtoken_is_refused() {
    let s = Scratch::with_vault();
    let db = s.path("view.db");
    hostile_sqlite(
        &db,
        &format!(
            "create table t({SDK_COLUMNS});
             insert into t (id, access_token) values ('1', 'SECRET-a');
             create view oauthtoken as select * from t;"
        ),
    );
    let shown = db.display().to_string();
    s.run(&["import", &shown]).fails(
        1,
        &format!("cannot import {shown}: its oauthtoken is a view, not a table; nothing was imported"),
    );
    let db = s.path("fts.db");
    hostile_sqlite(
        &db,
        &format!(
            "create virtual table oauthtoken using fts5({SDK_COLUMNS});
             insert into oauthtoken (id, access_token) values ('1', 'SECRET-a');"
        ),
    );
    let shown = db.display().to_string();
    s.run(&["import", &shown]).fails(
        1,
        &format!(
            "cannot import {shown}: its oauthtoken is a virtual table; only a plain table is read; \
             nothing was imported"
        ),
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn a_sqlite_column_name_that_is_not_utf8_is_refused() {
    // Found by fuzz/fuzz_targets/import_sqlite.rs: SQLite keeps a name's bytes as the
    // schema spells them, and reading such a name through rusqlite panicked.
    let s = Scratch::with_vault();
    for (file, column) in [("user.db", "user_name"), ("hidden.db", "api_domain")] {
        let db = s.path(file);
        let generated = if column == "api_domain" { " as ('x')" } else { "" };
        hostile_sqlite(
            &db,
            &format!(
                "create table oauthtoken(id, user_name, client_id, client_secret, refresh_token, \
                 access_token, grant_token, expiry_time, redirect_url, api_domain{generated});
                 insert into oauthtoken (id, access_token) values ('1', 'SECRET-a');
                 pragma writable_schema = on;
                 update sqlite_schema set sql = replace(sql, '{column}', '{column}' || cast(x'ff' as text))
                 where name = 'oauthtoken';"
            ),
        );
        let shown = db.display().to_string();
        s.run(&["import", &shown]).fails(
            1,
            &format!(
                "cannot import {shown}: the oauthtoken table has a column whose name is not UTF-8; the \
                 SDK's columns are {SDK_COLUMNS}; nothing was imported"
            ),
        );
    }
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn a_sqlite_table_of_more_than_a_million_rows_is_refused_in_bounded_memory() {
    let s = Scratch::with_vault();
    let db = s.path("many.db");
    hostile_sqlite(
        &db,
        &format!(
            "create table oauthtoken({SDK_COLUMNS});
             with recursive n(i) as (select 1 union all select i + 1 from n limit {})
             insert into oauthtoken (id) select i from n;",
            MAX_ROWS + 1
        ),
    );
    let shown = db.display().to_string();
    let run = run(&mut s.command_capped(CAPPED_MIB, &["import", &shown]), None);
    refused_within_the_cap(
        &run,
        &format!(
            "cannot import {shown}: the oauthtoken table has more than 1,000,000 rows, the most one \
             import takes; nothing was imported"
        ),
    );
    assert_eq!(s.ids(), Vec::<String>::new());
}

#[test]
fn find_reads_each_secret_key_from_stdin_or_a_file() {
    let s = Scratch::with_vault();
    let bob_id = s.run_stdin(&["save"], &bob().to_string()).ok();
    let carol_id = s.run_stdin(&["save"], &carol().to_string()).ok();
    let multi = json!({ "user_name": "multi", "access_token": "SECRET-multi\r\nline" });
    let multi_id = s.run_stdin(&["save"], &multi.to_string()).ok();
    let id_of = |run: Run| {
        assert_eq!(run.code, 0, "{run:?}");
        run.json()["id"].as_str().unwrap().to_owned() + "\n"
    };
    let find_stdin = |keys: &[&str], input: &str| {
        let mut args = vec!["find", "--json"];
        args.extend_from_slice(keys);
        s.run_stdin(&args, input)
    };
    let file = |name: &str, content: &str| {
        let path = s.path(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // The argument form still works.
    assert_eq!(
        id_of(s.run(&["find", "--json", "--access-token", "SECRET-bob-access"])),
        bob_id
    );
    // `-`: the value is stdin less one trailing newline (LF or CRLF).
    for input in [
        "SECRET-bob-access",
        "SECRET-bob-access\n",
        "SECRET-bob-access\r\n",
    ] {
        assert_eq!(id_of(find_stdin(&["--access-token", "-"], input)), bob_id);
    }
    // A file: the same rule; a line break inside the value is kept.
    let multi_file = file("multi.txt", "SECRET-multi\r\nline\n");
    assert_eq!(
        id_of(s.run(&["find", "--json", "--access-token-file", &multi_file])),
        multi_id
    );
    // Every secret of a grant or refresh lookup, none of them an argument.
    let secret_file = file("secret.txt", "rotated\n");
    let refresh_file = file("refresh.txt", "SECRET-carol-refresh\n");
    let by_client = ["--client-id", "1000.CAROL"];
    let keys = [
        &[
            "--refresh-token-file",
            &refresh_file,
            "--client-secret-file",
            &secret_file,
        ][..],
        &by_client,
    ]
    .concat();
    assert_eq!(id_of(s.run(&[&["find", "--json"][..], &keys].concat())), carol_id);
    let keys = [
        &["--grant-token", "-", "--client-secret-file", &secret_file][..],
        &by_client,
    ]
    .concat();
    assert_eq!(id_of(find_stdin(&keys, "SECRET-carol-grant\n")), carol_id);
    let keys = [
        &["--refresh-token-file", &refresh_file, "--client-secret", "-"][..],
        &by_client,
    ]
    .concat();
    assert_eq!(id_of(find_stdin(&keys, "rotated")), carol_id);
    // A wrong value read from stdin is a miss like any other.
    find_stdin(&["--access-token", "-"], "SECRET-nobody\n").fails(1, "no token has this access token");

    // Stdin holds one value: two keys cannot both read it (a usage error, before the vault
    // is opened).
    let keys = [&["--grant-token", "-", "--client-secret", "-"][..], &by_client].concat();
    let run = find_stdin(&keys, "SECRET-carol-grant\n");
    run.fails(
        2,
        "--grant-token and --client-secret both read stdin (-), which holds one value; give all but \
         one of them with --grant-token-file or --client-secret-file",
    );
    assert!(run.stdout.is_empty());
    let keys = [
        &[
            "--grant-token",
            "-",
            "--refresh-token",
            "-",
            "--client-secret",
            "-",
        ][..],
        &by_client,
    ]
    .concat();
    find_stdin(&keys, "x").fails(
        2,
        "--grant-token, --refresh-token and --client-secret all read stdin (-), which holds one value; \
         give all but one of them with --grant-token-file, --refresh-token-file or --client-secret-file",
    );
    // An empty value is a usage error, as an empty argument is.
    find_stdin(&["--access-token", "-"], "\n").fails(2, "the access token read from stdin is empty");
    let empty = file("empty.txt", "");
    s.run(&["find", "--access-token-file", &empty]).fails(
        2,
        &format!("the access token read from the file \"{empty}\" is empty"),
    );
    // A missing, oversized or non-UTF-8 file is an error naming it.
    let missing = s.path("missing.txt").display().to_string();
    s.run(&["find", "--access-token-file", &missing]).fails(
        1,
        &format!(
            "cannot read the access token from the file \"{missing}\": No such file or directory (os error 2)"
        ),
    );
    let huge = file("huge.txt", &"x".repeat(MIB4 + 1));
    s.run(&["find", "--access-token-file", &huge]).fails(
        1,
        &format!("the access token read from the file \"{huge}\" is longer than 4 MiB"),
    );
    let latin1 = s.path("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9\n").unwrap();
    let latin1 = latin1.display().to_string();
    s.run(&["find", "--access-token-file", &latin1]).fails(
        1,
        &format!("the access token read from the file \"{latin1}\" is not valid UTF-8"),
    );
    // One form per key.
    s.run(&["find", "--access-token", "a", "--access-token-file", &empty])
        .usage_error("cannot be used with");
    s.run(&["find", "--refresh-token-file", &refresh_file, "--client-id", "c"])
        .usage_error("--client-secret");
}

/// How many times `needle` occurs in the readable memory of process `pid`.
#[cfg(target_os = "linux")]
fn copies_in_memory(pid: u32, needle: &[u8]) -> usize {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut copies = 0;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        if !perms.starts_with('r') || end - start > 1 << 30 {
            continue;
        }
        let mut bytes = vec![0; (end - start) as usize];
        // Some mappings ([vvar], guard pages) cannot be read: they hold no heap data.
        if mem.read_exact_at(&mut bytes, start).is_ok() {
            copies += memchr::memmem::find_iter(&bytes, needle).count();
        }
    }
    copies
}

/// Bytes process `pid` has read so far (`rchar` of `/proc/PID/io`).
#[cfg(target_os = "linux")]
fn bytes_read_by(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_secret_read_from_stdin_is_held_in_one_copy() {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    let s = Scratch::with_vault();
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let marker = format!("SECRET-residue-{nonce:x}-{}", std::process::id());
    // The secret early, then blanks: the buffer grows several times with it inside.
    let mut input = format!(
        r#"[{{"user_name":"{}","access_token":"{marker}"}}"#,
        "u".repeat(100)
    )
    .into_bytes();
    input.resize(3 << 19, b' ');
    let mut child = s
        .command(&["save"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).unwrap();
    // Stdin stays open: the binary waits for the rest with all of this in its buffer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while bytes_read_by(child.id()) < input.len() as u64 {
        assert!(Instant::now() < deadline, "the binary did not read its input");
        std::thread::sleep(Duration::from_millis(20));
    }
    let copies = copies_in_memory(child.id(), marker.as_bytes());
    stdin.write_all(b"]").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        copies, 1,
        "the stdin buffer left copies of the secret behind as it grew"
    );
}
