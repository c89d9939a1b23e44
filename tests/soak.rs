//! The soak run: a million mixed operations with periodic reopen, then `verify()` clean and
//! memory bounded. Ignored by default (minutes); run it with `scripts/soak.sh`.
//!
//! Protects against: slow corruption that only long runs show (index drift, seal-counter
//! or epoch bookkeeping errors, lost tokens across reopen) and unbounded memory growth.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

use std::collections::HashMap;

use tokenvault::{KdfParams, OAuthToken, TokenStore, VaultOptions};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "minutes long: run with scripts/soak.sh"]
fn a_million_mixed_operations_with_reopens_stay_consistent_and_bounded() {
    let total: u64 = std::env::var("TOKENVAULT_SOAK_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let users: u64 = 5_000;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vault");
    // A small seal budget so the soak also crosses many key epochs.
    let options = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .durable(false)
        .seals_per_key(50_000);
    let mut vault = options.create(&path, "soak").unwrap();
    let mut model: HashMap<u64, u64> = HashMap::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rss_after_warmup = 0;
    let mut rss_peak = 0;
    let started = std::time::Instant::now();
    for op in 0..total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let user = x % users;
        let id = format!("soak-{user}");
        match (x >> 20) % 10 {
            0 => {
                vault.delete_token(&id).unwrap();
                model.remove(&user);
            }
            1..=4 => {
                let mut t = OAuthToken::default()
                    .with_id(id.clone())
                    .with_user_name(format!("user{user}@example.com"))
                    .with_client_id("1000.SOAK")
                    .with_client_secret(format!("secret-{user}"))
                    .with_refresh_token(format!("refresh-{user}"))
                    .with_access_token(format!("access-{user}-{op}"))
                    .with_expiry_time(op as i64);
                vault.save_token(&mut t).unwrap();
                model.insert(user, op);
            }
            _ => {
                let q = OAuthToken::default().with_user_name(format!("user{user}@example.com"));
                let found = vault.find_token(&q).unwrap();
                assert_eq!(
                    found.and_then(|t| t.expiry_time()),
                    model.get(&user).map(|&k| k as i64),
                    "op {op}"
                );
            }
        }
        if op % 100_000 == 99_999 {
            drop(vault);
            vault = options.open(&path, "soak").unwrap();
            let rss = rss_kib();
            if rss_after_warmup == 0 {
                rss_after_warmup = rss;
            }
            rss_peak = rss_peak.max(rss);
            eprintln!(
                "{} ops, {:.0} s, RSS {} MiB",
                op + 1,
                started.elapsed().as_secs_f64(),
                rss / 1024
            );
        }
    }
    let report = vault.verify().unwrap();
    assert!(
        report.is_clean(),
        "{:?}",
        &report.problems[..report.problems.len().min(10)]
    );
    assert_eq!(report.records as u64, model.len() as u64);
    assert_eq!(vault.get_tokens().unwrap().len(), model.len());
    eprintln!(
        "soak: {total} ops in {:.0} s; {} tokens; RSS after the first 100k ops {} MiB, peak {} MiB",
        started.elapsed().as_secs_f64(),
        model.len(),
        rss_after_warmup / 1024,
        rss_peak / 1024
    );
    // Memory is bounded by the page cache, not by the number of operations.
    assert!(
        rss_peak < rss_after_warmup + 128 * 1024,
        "RSS grew from {rss_after_warmup} KiB to {rss_peak} KiB"
    );
}
