//! Per-operation latency of the vault with divan: the KDF alone at the floor and default
//! parameters, and each `TokenStore` operation on a cached 10,000-token vault. The peers,
//! the 100,000 and 1,000,000-token runs, RSS, disk and reopen are `benches/peers.rs`
//! (`cargo bench --features peers`); this bench runs with or without that feature.
//!
//! `cargo bench --bench ops` (add `-- find` to filter by name).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "benchmark code: a panic ends a run that cannot be measured"
)]

use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, Version};
use divan::Bencher;
use tokenvault::{KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

const N: usize = 10_000;

fn main() {
    divan::main();
}

/// One Argon2id run, as opening a vault does.
fn kdf(bencher: Bencher, p: KdfParams) {
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32)).expect("params");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    bencher.bench_local(|| {
        argon
            .hash_password_into(b"correct horse battery staple", &[7u8; 16], &mut out)
            .expect("argon2");
        out[0]
    });
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn kdf_floor(bencher: Bencher) {
    kdf(bencher, KdfParams::FLOOR);
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn kdf_recommended(bencher: Bencher) {
    kdf(bencher, KdfParams::RECOMMENDED);
}

fn secret(kind: u64, i: usize) -> String {
    format!(
        "1000.{kind:04x}{:076x}",
        (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

fn token(i: usize) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(format!("user{i}@example.com"))
        .with_client_id(format!("1000.CLIENT{:022}", i % 8))
        .with_client_secret(format!("{:042x}", i % 8))
        .with_grant_token(secret(1, i))
        .with_refresh_token(secret(2, i))
        .with_access_token(secret(3, i))
        .with_expiry_time(1_764_000_000_000 + i as i64)
        .with_redirect_url("https://example.com/oauth/callback")
        .with_api_domain("https://www.zohoapis.com")
}

/// A buffered vault of N tokens (default cache, floor KDF), built once; its directory lives
/// as long as the process.
struct Fixture {
    vault: Vault,
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .durable(false)
        .create(dir.path().join("vault"), "passphrase")
        .expect("create");
    let ids = (0..N)
        .map(|i| {
            let mut t = token(i);
            vault.save_token(&mut t).expect("save");
            t.id().expect("id").to_owned()
        })
        .collect();
    Fixture {
        vault,
        ids,
        _dir: dir,
    }
});

/// A different token each call, in a fixed pseudo-random order.
fn picks() -> impl FnMut() -> usize {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % N as u64) as usize
    }
}

fn find(bencher: Bencher, query: fn(usize) -> OAuthToken) {
    let f = &*FIXTURE;
    let mut next = picks();
    bencher
        .with_inputs(|| query(next()))
        .bench_local_refs(|q| f.vault.find_token(q).expect("find").expect("hit"));
}

#[divan::bench]
fn find_by_user(bencher: Bencher) {
    find(bencher, |i| {
        OAuthToken::default().with_user_name(format!("user{i}@example.com"))
    });
}

/// Tokens below N / 2 keep their access tokens (the update bench changes the others).
#[divan::bench]
fn find_by_access(bencher: Bencher) {
    find(bencher, |i| {
        OAuthToken::default().with_access_token(secret(3, i % (N / 2)))
    });
}

#[divan::bench]
fn find_by_refresh(bencher: Bencher) {
    find(bencher, |i| {
        OAuthToken::default()
            .with_client_id(format!("1000.CLIENT{:022}", i % 8))
            .with_client_secret("any")
            .with_refresh_token(secret(2, i))
    });
}

#[divan::bench]
fn find_by_grant(bencher: Bencher) {
    find(bencher, |i| {
        OAuthToken::default()
            .with_client_id(format!("1000.CLIENT{:022}", i % 8))
            .with_client_secret("any")
            .with_grant_token(secret(1, i))
    });
}

#[divan::bench]
fn find_by_id(bencher: Bencher) {
    let f = &*FIXTURE;
    let mut next = picks();
    bencher
        .with_inputs(|| f.ids[next()].clone())
        .bench_local_refs(|id| f.vault.find_token_by_id(id).expect("find").expect("hit"));
}

/// The SDK's refresh: a new access token and expiry for a stored token (buffered).
#[divan::bench]
fn update_access_token(bencher: Bencher) {
    let f = &*FIXTURE;
    let mut next = picks();
    let mut round = 0u64;
    bencher
        .with_inputs(|| {
            round += 1;
            let i = N / 2 + next() % (N / 2);
            OAuthToken::default()
                .with_id(f.ids[i].clone())
                .with_access_token(secret(1000 + round, i))
                .with_expiry_time(round as i64)
        })
        .bench_local_refs(|t| f.vault.save_token(t).expect("save"));
}

/// Insert then delete a new token (buffered): the pair leaves the vault as it was.
#[divan::bench]
fn insert_and_delete(bencher: Bencher) {
    let f = &*FIXTURE;
    let mut i = N;
    bencher
        .with_inputs(|| {
            i += 1;
            token(i)
        })
        .bench_local_refs(|t| {
            f.vault.save_token(t).expect("save");
            f.vault.delete_token(t.id().expect("id")).expect("delete");
        });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn get_tokens(bencher: Bencher) {
    let f = &*FIXTURE;
    bencher.bench_local(|| f.vault.get_tokens().expect("get_tokens").len());
}
