//! The vault on a 3-member etcd cluster beside the local vault (sled and redb), each
//! durable: N saves, then lookups by user, access token and id, then updates; ops/s and
//! the latency of each call (p50, p99).
//!
//! Needs a cluster: `scripts/etcd-cluster.sh run target/etcd-bench -- cargo bench
//! --features etcd,redb --bench etcd` (N = 2,000; `N=...` to change it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "benchmark code: a panic ends a run that cannot be measured"
)]

use std::time::{Duration, Instant};

use tokenvault::{Engine, KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

fn token(i: usize, version: usize) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(format!("user{i}@example.com"))
        .with_client_id("1000.BENCH")
        .with_client_secret(format!("secret-{i}"))
        .with_refresh_token(format!("1000.refresh.{i}"))
        .with_access_token(format!("1000.access.{i}.{version}"))
        .with_expiry_time(1_764_000_000_000 + version as i64)
}

/// ops/s, p50 and p99 of one call, in µs.
fn measure(name: &str, store: &str, n: usize, mut call: impl FnMut(usize)) {
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        call(i);
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1e6;
    println!(
        "| {store} | {name} | {:.0} | {:.0} | {:.0} |",
        n as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}

fn run(store: &str, vault: &Vault, n: usize) {
    let mut ids = Vec::with_capacity(n);
    measure("save (insert)", store, n, |i| {
        let mut t = token(i, 0);
        vault.save_token(&mut t).unwrap();
        ids.push(t.id().unwrap().to_owned());
    });
    measure("find by user", store, n, |i| {
        let q = OAuthToken::default().with_user_name(format!("user{}@example.com", (i * 7) % n));
        assert!(vault.find_token(&q).unwrap().is_some());
    });
    measure("find by access token", store, n, |i| {
        let j = (i * 13) % n;
        let q = OAuthToken::default().with_access_token(format!("1000.access.{j}.0"));
        assert!(vault.find_token(&q).unwrap().is_some());
    });
    measure("find by id", store, n, |i| {
        assert!(vault.find_token_by_id(&ids[(i * 11) % n]).unwrap().is_some());
    });
    measure("save (update)", store, n, |i| {
        let mut t = OAuthToken::default()
            .with_id(ids[i].as_str())
            .with_access_token(format!("1000.access.{i}.1"));
        vault.save_token(&mut t).unwrap();
    });
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let options = VaultOptions::new().kdf(KdfParams::FLOOR);
    println!("N = {n}, durable writes\n");
    println!("| store | op | ops/s | p50 (µs) | p99 (µs) |");
    println!("|---|---|---:|---:|---:|");
    let tmp = tempfile::tempdir().unwrap();
    for engine in [Engine::Sled, Engine::Redb] {
        let vault = options
            .clone()
            .engine(engine)
            .create(tmp.path().join(engine.name()), "bench")
            .unwrap();
        run(&format!("local {engine}"), &vault, n);
    }
    let endpoints = std::env::var("TOKENVAULT_ETCD_ENDPOINTS")
        .expect("TOKENVAULT_ETCD_ENDPOINTS: run under scripts/etcd-cluster.sh run DIR -- ...");
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).unwrap();
    let at = format!("etcd://{endpoints}/tokenvault-bench/{:x}", u64::from_le_bytes(r));
    let vault = options
        .timeout(Duration::from_secs(10))
        .create_at(&at, "bench")
        .unwrap();
    run("etcd, 3 members", &vault, n);
}
