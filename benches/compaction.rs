//! Compaction, measured: a vault of N tokens with a history (every token updated twice, a
//! tenth deleted) before and after `Vault::compact`: disk per token, the first reopen
//! (KDF excluded), lookups by user name at the default cache, and the compaction itself.
//!
//! `cargo bench --bench compaction` (N = 10,000 and 100,000); `-- N...` for other sizes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "benchmark code: a panic ends a run that cannot be measured"
)]

#[path = "common/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::R;
use tokenvault::{KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

const PASS: &str = "bench passphrase";

fn options() -> VaultOptions {
    VaultOptions::new().kdf(KdfParams::FLOOR).auto_compact(false)
}

/// Opens the vault and returns the time the open took beyond the KDF alone.
fn reopen(path: &std::path::Path) -> R<(Vault, Duration)> {
    let started = Instant::now();
    let v = options().open(path, PASS)?;
    let total = started.elapsed();
    Ok((v, total.saturating_sub(kdf_time())))
}

/// The KDF alone at the floor (the best of three).
fn kdf_time() -> Duration {
    static KDF: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *KDF.get_or_init(|| {
        (0..3)
            .map(|_| {
                let tmp = tempfile::tempdir().unwrap();
                let path = tmp.path().join("v");
                drop(options().create(&path, PASS).unwrap());
                let started = Instant::now();
                drop(options().open(&path, PASS).unwrap());
                started.elapsed()
            })
            .min()
            .unwrap()
    })
}

fn lookups(v: &Vault, n: usize, live: &dyn Fn(usize) -> bool) -> R<f64> {
    let mut rng = harness::Rng(0x5eed);
    let count = 20_000;
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..count {
        let i = (rng.next() % n as u64) as usize;
        let q = OAuthToken::default().with_user_name(harness::user(i));
        let hit = v.find_token(&q)?.is_some();
        assert_eq!(hit, live(i), "user {i}");
        found += usize::from(hit);
    }
    assert!(found > 0);
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn run(n: usize) -> R<()> {
    let tmp = harness::work_dir()?;
    let path = tmp.path().join("vault");
    {
        let v = options().durable(false).create(&path, PASS)?;
        for i in 0..n {
            v.save_token(&mut harness::token(i))?;
        }
        for version in 1..=2 {
            for i in 0..n {
                let mut t = OAuthToken::default()
                    .with_user_name(harness::user(i))
                    .with_access_token(harness::access(i, version));
                v.save_token(&mut t)?;
            }
        }
        for i in (0..n).step_by(10) {
            let q = OAuthToken::default().with_user_name(harness::user(i));
            if let Some(t) = v.find_token(&q)? {
                v.delete_token(t.id().unwrap_or_default())?;
            }
        }
        v.flush()?;
    }
    let live = |i: usize| !i.is_multiple_of(10);
    let tokens = n - n.div_ceil(10);
    let disk_before = harness::dir_bytes(&path);
    let (v, reopen_before) = reopen(&path)?;
    let lookups_before = lookups(&v, n, &live)?;
    let started = Instant::now();
    v.compact()?;
    let compaction = started.elapsed();
    drop(v);
    let disk_after = harness::dir_bytes(&path);
    let (v, reopen_after) = reopen(&path)?;
    let lookups_after = lookups(&v, n, &live)?;
    drop(v);
    println!(
        "N = {n} ({tokens} live tokens after {} writes): compaction {:.2} s",
        3 * n + n.div_ceil(10),
        compaction.as_secs_f64()
    );
    println!("| | before compaction | after |");
    println!("|---|---:|---:|");
    println!(
        "| disk per live token (B) | {} | {} |",
        disk_before / tokens as u64,
        disk_after / tokens as u64
    );
    println!(
        "| first reopen, KDF excluded (ms) | {:.0} | {:.0} |",
        reopen_before.as_secs_f64() * 1e3,
        reopen_after.as_secs_f64() * 1e3
    );
    println!(
        "| lookups by user name, 32 MiB cache (ops/s) | {:.0} | {:.0} |",
        lookups_before, lookups_after
    );
    Ok(())
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let sizes: Vec<usize> = if args.is_empty() {
        vec![10_000, 100_000]
    } else {
        args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?
    };
    for n in sizes {
        run(n)?;
    }
    Ok(())
}
