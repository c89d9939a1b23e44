//! The etcd vault while the cluster loses members (feature `etcd`): the leader killed
//! during a write loop, two of three members down, and two `tokenvault` processes saving
//! the same 200 users while a member is killed. Each scenario kills and restarts members of
//! the cluster that `scripts/test.sh` started (`TOKENVAULT_ETCD_CLUSTER_DIR`), so they run
//! one after another in one test, in a test binary of their own.
#![cfg(all(feature = "etcd", feature = "cli"))]
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::vaults::{options, PASSPHRASE};
use tokenvault::{Error, OAuthToken, TokenStore, Vault};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, which starts an etcd cluster for these tests")
    })
}

/// `scripts/etcd-cluster.sh ARGS` on the test run's cluster; its stdout.
fn cluster(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/etcd-cluster.sh");
    let dir = env("TOKENVAULT_ETCD_CLUSTER_DIR");
    let (verb, rest) = args.split_first().unwrap();
    let out = Command::new(script)
        .arg(verb)
        .arg(&dir)
        .args(rest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcd-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn location(name: &str) -> String {
    format!(
        "etcd://{}/tokenvault-faults/{}-{name}",
        env("TOKENVAULT_ETCD_ENDPOINTS"),
        std::process::id()
    )
}

fn token(user: usize, stamp: usize) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(format!("user{user}@example.com"))
        .with_client_id("1000.FAULTS")
        .with_client_secret(format!("secret-{user}-{stamp}"))
        .with_refresh_token(format!("refresh-{user}-{stamp}"))
        .with_access_token(format!("access-{user}-{stamp}"))
        .with_expiry_time(stamp as i64)
}

/// Every acknowledged save is there, exactly, and nothing is torn.
fn check_acknowledged(v: &Vault, acked: &HashMap<usize, usize>) {
    for (user, stamp) in acked {
        let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
        let got = v.find_token(&q).unwrap().expect("an acknowledged save is there");
        let got_stamp = got.expiry_time().unwrap() as usize;
        // A later save of the same user whose answer was lost may have landed too.
        assert!(
            got_stamp >= *stamp,
            "user {user}: {got_stamp} < acknowledged {stamp}"
        );
        assert_eq!(
            got.access_token(),
            Some(format!("access-{user}-{got_stamp}").as_str()),
            "torn"
        );
    }
    let report = v.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn the_vault_rides_out_a_killed_leader_a_lost_quorum_and_a_killed_member_under_two_processes() {
    leader_killed_during_a_write_loop();
    two_of_three_members_down();
    two_cli_processes_save_the_same_200_users_while_a_member_is_killed();
}

fn leader_killed_during_a_write_loop() {
    let v = options()
        .timeout(Duration::from_secs(2))
        .create_at(&location("leader"), PASSPHRASE)
        .unwrap();
    let mut acked = HashMap::new();
    let mut stamp = 0;
    let mut killed: Option<(String, Instant)> = None;
    let mut resumed_after = None;
    let mut failures = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        stamp += 1;
        let user = stamp % 25;
        if stamp == 40 {
            let leader = cluster(&["leader"]);
            cluster(&["kill", &leader]);
            killed = Some((leader, Instant::now()));
        }
        match v.save_token(&mut token(user, stamp)) {
            Ok(()) => {
                acked.insert(user, stamp);
                if let (Some((_, at)), None) = (&killed, resumed_after) {
                    resumed_after = Some(at.elapsed());
                }
                if resumed_after.is_some() && stamp > 140 {
                    break;
                }
            }
            Err(Error::Storage { .. }) => failures += 1,
            Err(e) => panic!("save during the election: {e:?}"),
        }
    }
    let (leader, _) = killed.expect("the leader was killed");
    let resumed = resumed_after.expect("writes resumed after the leader died");
    assert!(
        resumed < Duration::from_secs(10),
        "writes resumed after {resumed:?}"
    );
    eprintln!("leader {leader} killed: writes resumed after {resumed:?}, {failures} failed saves meanwhile");
    check_acknowledged(&v, &acked);
    cluster(&["restart", &leader]);
    check_acknowledged(&v, &acked);
}

fn two_of_three_members_down() {
    let v = options()
        .timeout(Duration::from_secs(2))
        .create_at(&location("quorum"), PASSPHRASE)
        .unwrap();
    let mut saved = token(1, 1);
    v.save_token(&mut saved).unwrap();
    let leader = cluster(&["leader"]);
    let others: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| **n != leader)
        .map(|n| (*n).to_owned())
        .collect();
    for n in &others {
        cluster(&["kill", n]);
    }
    let t = Instant::now();
    let got = v.save_token(&mut token(1, 2));
    let took = t.elapsed();
    assert!(matches!(got, Err(Error::Storage { .. })), "{got:?}");
    // The deadline is per call; a save makes a few (reads, then the transaction).
    assert!(took < Duration::from_secs(15), "the failed save took {took:?}");
    eprintln!("without a quorum: {got:?} after {took:?}");
    for n in &others {
        cluster(&["restart", n]);
    }
    // Nothing of the failed save landed, the earlier one is whole.
    let q = OAuthToken::default().with_user_name("user1@example.com");
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        match v.find_token(&q) {
            Ok(found) => break found,
            Err(e) if Instant::now() < deadline => {
                eprintln!("after the restart, still: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(found, Some(saved));
    assert!(v.verify().unwrap().is_clean());
}

fn two_cli_processes_save_the_same_200_users_while_a_member_is_killed() {
    let at = location("cli");
    let bin = env!("CARGO_BIN_EXE_tokenvault");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.arg("--vault")
            .arg(&at)
            .args(args)
            .env("TOKENVAULT_KDF", "floor")
            .env("TOKENVAULT_PASSPHRASE", PASSPHRASE);
        cmd
    };
    let out = run(&["init"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let users = |writer: usize| {
        let tokens: Vec<serde_json::Value> = (0..200)
            .map(|u| {
                serde_json::json!({
                    "user_name": format!("user{u}@example.com"),
                    "client_id": "1000.CLI",
                    "client_secret": format!("secret-{u}-{writer}"),
                    "refresh_token": format!("refresh-{u}-{writer}"),
                    "access_token": format!("access-{u}-{writer}"),
                })
            })
            .collect();
        serde_json::Value::Array(tokens).to_string()
    };
    let mut children = Vec::new();
    for writer in 0..2 {
        let mut child = run(&["save"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = users(writer);
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            stdin.write_all(input.as_bytes()).unwrap();
        });
        children.push(child);
    }
    // Meanwhile, one member (not the leader) goes.
    std::thread::sleep(Duration::from_millis(300));
    let leader = cluster(&["leader"]);
    let victim = ["n1", "n2", "n3"].into_iter().find(|n| *n != leader).unwrap();
    cluster(&["kill", victim]);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a save process failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 200);
    }
    let out = run(&["list", "--json", "--reveal"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 200);
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for t in &listed {
        *per_user
            .entry(t["user_name"].as_str().unwrap().to_owned())
            .or_default() += 1;
        // Whole: every field from one writer.
        let secret = t["client_secret"].as_str().unwrap();
        let writer = secret.rsplit('-').next().unwrap();
        assert!(t["access_token"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{writer}")));
    }
    assert_eq!(per_user.len(), 200);
    assert!(per_user.values().all(|&n| n == 1));
    cluster(&["restart", victim]);
    let out = run(&["verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
