//! The workload, the driver and the report shared by every bench binary.
//!
//! One process runs one store at one N; it prints `RESULT` lines (tab-separated) that
//! `peers all` (what `cargo bench --features peers` runs) collects and `peers report` turns
//! into the table with ratios.

#![allow(dead_code)]

use std::error::Error;
use std::time::{Duration, Instant};

use tokenvault::OAuthToken;

pub(crate) type R<T> = Result<T, Box<dyn Error>>;

/// A store under test: the SDK's operations, in the shape each peer does them best.
pub(crate) trait Peer {
    /// Inserts a new token (no id); returns the id the store assigned.
    fn insert(&mut self, t: &OAuthToken) -> R<String>;
    /// The SDK's refresh: a new access token and expiry for the token with this id.
    fn update(&mut self, id: &str, access: &str, expiry: i64) -> R<()>;
    fn by_user(&mut self, user: &str) -> R<Option<OAuthToken>>;
    fn by_access(&mut self, access: &str) -> R<Option<OAuthToken>>;
    fn by_refresh(&mut self, client_id: &str, client_secret: &str, refresh: &str) -> R<Option<OAuthToken>>;
    fn by_grant(&mut self, client_id: &str, client_secret: &str, grant: &str) -> R<Option<OAuthToken>>;
    fn by_id(&mut self, id: &str) -> R<Option<OAuthToken>>;
    /// get_tokens: every token, decoded; returns how many.
    fn all(&mut self) -> R<usize>;
    fn delete(&mut self, id: &str) -> R<()>;
    /// Closes and reopens the store in the given durability mode; returns the time the
    /// open took *excluding* key derivation (see `kdf_excluded`).
    fn reopen(&mut self, durable: bool) -> R<Duration>;
    /// The key-derivation time `reopen` subtracted (the vault's Argon2 run).
    fn kdf_part(&mut self) -> Duration {
        Duration::ZERO
    }
    /// Flushes buffered writes (before measuring the disk).
    fn flush(&mut self) -> R<()>;
    /// The directory holding the store's files.
    fn dir(&self) -> std::path::PathBuf;
}

// ---------------------------------------------------------------- the workload

/// splitmix64: deterministic, so every store sees the same tokens and the same queries.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ALPHABET: &[u8] = b"abcdef0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz-_";

/// A secret like Zoho's: `1000.` then hex-ish characters, 70..=100 long in all.
fn secret(kind: u64, i: usize, version: u32) -> String {
    let mut rng = Rng(kind << 56 ^ (i as u64) << 8 ^ u64::from(version));
    let len = 70 + rng.below(31);
    let mut s = String::with_capacity(len);
    s.push_str("1000.");
    while s.len() < len {
        s.push(ALPHABET[rng.below(ALPHABET.len())] as char);
    }
    s
}

pub(crate) fn user(i: usize) -> String {
    format!("user{i}@example.com")
}
pub(crate) fn client_id(i: usize) -> String {
    // A handful of apps, as in real deployments.
    format!("1000.CLIENT{:022}", i % 8)
}
pub(crate) fn client_secret(i: usize) -> String {
    format!("{:042x}", (i % 8) as u64 * 0x1234_5678_9abc)
}
pub(crate) fn grant(i: usize) -> String {
    secret(1, i, 0)
}
pub(crate) fn refresh(i: usize) -> String {
    secret(2, i, 0)
}
pub(crate) fn access(i: usize, version: u32) -> String {
    secret(3, i, version)
}
pub(crate) fn expiry(i: usize, version: u32) -> i64 {
    1_764_000_000_000 + i as i64 * 1000 + i64::from(version) * 3_600_000
}

/// Token `i` as the SDK hands it to the store on first save: ten fields, id left empty.
pub(crate) fn token(i: usize) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(user(i))
        .with_client_id(client_id(i))
        .with_client_secret(client_secret(i))
        .with_grant_token(grant(i))
        .with_refresh_token(refresh(i))
        .with_access_token(access(i, 0))
        .with_expiry_time(expiry(i, 0))
        .with_redirect_url("https://example.com/oauth/callback")
        .with_api_domain("https://www.zohoapis.com")
}

/// A fresh random id (128 bits, hex), as the vault assigns.
pub(crate) fn fresh_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("getrandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------- the driver

pub(crate) fn emit(store: &str, n: usize, mode: &str, op: &str, value: f64, unit: &str) {
    println!("RESULT\t{store}\t{n}\t{mode}\t{op}\t{value:.3}\t{unit}");
}

/// The bytes written to storage per operation since `before` (see [`written_bytes`]).
fn emit_written(store: &str, n: usize, op: &str, before: u64, count: usize) {
    let per_op = written_bytes().saturating_sub(before) as f64 / count as f64;
    emit(store, n, "durable", op, per_op, "bytes");
}

fn rate(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64()
}

pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                // Allocated bytes, not the apparent size (sled preallocates sparsely).
                use std::os::unix::fs::MetadataExt;
                total += md.blocks() * 512;
            }
        }
    }
    total
}

/// Bytes this process has handed to `write`-like system calls so far (`wchar` of
/// `/proc/self/io`): what a durable operation has the files written, whatever the disk's
/// speed at the moment. (Not `write_bytes`, which counts the page cache's pages as they
/// are dirtied: with large folios, one 4 KiB write into a file read earlier counts the
/// whole folio, up to 1.2 MB per operation measured on ext4.) 0 where the kernel does not
/// say.
pub(crate) fn written_bytes() -> u64 {
    proc_self_field("io", "wchar:")
}

/// The peak resident set of this process so far, KiB (`VmHWM` of `/proc/self/status`).
pub(crate) fn peak_rss_kib() -> u64 {
    proc_self_field("status", "VmHWM:")
}

/// The number after `key` in `/proc/self/FILE`; 0 where the kernel does not say.
fn proc_self_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Operation counts: every lookup kind runs `lookups` times on random tokens.
pub(crate) struct Plan {
    pub n: usize,
    pub lookups: usize,
    pub updates: usize,
    pub deletes: usize,
    pub durable_writes: usize,
}

impl Plan {
    pub(crate) fn for_n(n: usize) -> Plan {
        Plan {
            n,
            lookups: n.min(20_000),
            updates: n.min(20_000),
            deletes: n.min(5_000),
            // Three times the redb journal's checkpoint interval (1,024 frames), so that
            // each durable phase pays its share of checkpoints (SQLite's WAL checkpoints
            // every 1,000 pages, well inside any phase).
            durable_writes: 3 * 1024,
        }
    }
}

/// Runs `f` (one timed pass of `count` operations) `rounds` times; the best rate. Lookups are
/// read-only, so repeating them changes nothing, and the best of three filters out the
/// moments the (shared) machine was busy elsewhere.
fn best_rate(count: usize, rounds: usize, mut f: impl FnMut() -> R<()>) -> R<f64> {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed());
    }
    Ok(rate(count, best))
}

fn lookups(p: &mut dyn Peer, name: &str, mode: &str, plan: &Plan, ids: &[String], versions: &[u32]) -> R<()> {
    let n = plan.n;
    let k = plan.lookups;
    let picks: Vec<usize> = {
        let mut rng = Rng(0xC0FFEE);
        (0..k).map(|_| rng.below(n)).collect()
    };
    // Query strings are built before the clock starts: only the store is timed.
    let users: Vec<String> = picks.iter().map(|&i| user(i)).collect();
    let r = best_rate(k, 3, || {
        for (q, &i) in users.iter().zip(&picks) {
            let hit = p.by_user(q)?.ok_or("by_user: miss")?;
            if hit.id() != Some(ids[i].as_str()) {
                return Err("by_user: wrong token".into());
            }
        }
        Ok(())
    })?;
    emit(name, n, mode, "find_user", r, "ops/s");

    let qs: Vec<String> = picks.iter().map(|&i| access(i, versions[i])).collect();
    let r = best_rate(k, 3, || {
        for q in &qs {
            p.by_access(q)?.ok_or("by_access: miss")?;
        }
        Ok(())
    })?;
    emit(name, n, mode, "find_access", r, "ops/s");

    let qs: Vec<(String, String, String)> = picks
        .iter()
        .map(|&i| (client_id(i), client_secret(i), refresh(i)))
        .collect();
    let r = best_rate(k, 3, || {
        for (c, s, q) in &qs {
            p.by_refresh(c, s, q)?.ok_or("by_refresh: miss")?;
        }
        Ok(())
    })?;
    emit(name, n, mode, "find_refresh", r, "ops/s");

    let qs: Vec<(String, String, String)> = picks
        .iter()
        .map(|&i| (client_id(i), client_secret(i), grant(i)))
        .collect();
    let r = best_rate(k, 3, || {
        for (c, s, q) in &qs {
            p.by_grant(c, s, q)?.ok_or("by_grant: miss")?;
        }
        Ok(())
    })?;
    emit(name, n, mode, "find_grant", r, "ops/s");

    let r = best_rate(k, 3, || {
        for &i in &picks {
            p.by_id(&ids[i])?.ok_or("by_id: miss")?;
        }
        Ok(())
    })?;
    emit(name, n, mode, "find_id", r, "ops/s");
    Ok(())
}

/// The whole run for one store at one N. `open_kdf` is what the store's open spends in
/// key derivation (subtracted from the reopen time by the store itself).
pub(crate) fn run(p: &mut dyn Peer, name: &str, plan: &Plan) -> R<()> {
    let n = plan.n;
    let mut versions = vec![0u32; n];
    let mut ids = Vec::with_capacity(n);
    emit(
        name,
        n,
        "buffered",
        "rss_created",
        peak_rss_kib() as f64 / 1024.0,
        "MiB",
    );

    // 1. Buffered: insert N, in one timed pass (it is also the population).
    let t = Instant::now();
    for i in 0..n {
        ids.push(p.insert(&token(i))?);
    }
    emit(name, n, "buffered", "insert", rate(n, t.elapsed()), "ops/s");
    p.flush()?;
    let disk = dir_bytes(&p.dir());
    emit(
        name,
        n,
        "buffered",
        "disk_per_token",
        disk as f64 / n as f64,
        "bytes",
    );

    // 2. Buffered updates, lookups, get_tokens.
    let mut rng = Rng(0xBEEF);
    let picks: Vec<usize> = (0..plan.updates).map(|_| rng.below(n)).collect();
    let news: Vec<(String, i64)> = picks
        .iter()
        .map(|&i| {
            versions[i] += 1;
            (access(i, versions[i]), expiry(i, versions[i]))
        })
        .collect();
    let t = Instant::now();
    for (&i, (a, e)) in picks.iter().zip(&news) {
        p.update(&ids[i], a, *e)?;
    }
    emit(
        name,
        n,
        "buffered",
        "update",
        rate(plan.updates, t.elapsed()),
        "ops/s",
    );
    lookups(p, name, "buffered", plan, &ids, &versions)?;
    emit(
        name,
        n,
        "buffered",
        "rss_before_get_tokens",
        peak_rss_kib() as f64 / 1024.0,
        "MiB",
    );
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let got = p.all()?;
        best = best.min(t.elapsed());
        if got != n {
            return Err(format!("get_tokens: {got} of {n}").into());
        }
    }
    emit(name, n, "buffered", "get_tokens", rate(n, best), "tokens/s");
    emit(
        name,
        n,
        "buffered",
        "rss_after_get_tokens",
        peak_rss_kib() as f64 / 1024.0,
        "MiB",
    );

    // 3. Reopen (durable from here on); the open time excludes the KDF.
    p.flush()?;
    let open = p.reopen(true)?;
    let kdf = p.kdf_part();
    emit(name, n, "durable", "reopen", open.as_secs_f64() * 1e3, "ms");
    emit(
        name,
        n,
        "durable",
        "reopen_total",
        (open + kdf).as_secs_f64() * 1e3,
        "ms",
    );
    // sled writes its snapshot at open, replaying the log written since the last one: a
    // second open right after shows the cost of the open itself.
    let again = p.reopen(true)?;
    emit(
        name,
        n,
        "durable",
        "reopen_again",
        again.as_secs_f64() * 1e3,
        "ms",
    );

    // 4. Durable: inserts of new tokens, updates, lookups, deletes of the new tokens.
    let w = plan.durable_writes;
    let written = written_bytes();
    let t = Instant::now();
    let mut new_ids = Vec::with_capacity(w);
    for i in n..n + w {
        new_ids.push(p.insert(&token(i))?);
    }
    emit(name, n, "durable", "insert", rate(w, t.elapsed()), "ops/s");
    emit_written(name, n, "insert_written", written, w);
    let mut rng = Rng(0xFACE);
    let picks: Vec<usize> = (0..w).map(|_| rng.below(n)).collect();
    let news: Vec<(String, i64)> = picks
        .iter()
        .map(|&i| {
            versions[i] += 1;
            (access(i, versions[i]), expiry(i, versions[i]))
        })
        .collect();
    let written = written_bytes();
    let t = Instant::now();
    for (&i, (a, e)) in picks.iter().zip(&news) {
        p.update(&ids[i], a, *e)?;
    }
    emit(name, n, "durable", "update", rate(w, t.elapsed()), "ops/s");
    emit_written(name, n, "update_written", written, w);
    lookups(p, name, "durable", plan, &ids, &versions)?;
    let written = written_bytes();
    let t = Instant::now();
    for id in &new_ids {
        p.delete(id)?;
    }
    emit(name, n, "durable", "delete", rate(w, t.elapsed()), "ops/s");
    emit_written(name, n, "delete_written", written, w);

    // 5. Back to buffered: deletes.
    p.reopen(false)?;
    let t = Instant::now();
    for id in ids.iter().take(plan.deletes) {
        p.delete(id)?;
    }
    emit(
        name,
        n,
        "buffered",
        "delete",
        rate(plan.deletes, t.elapsed()),
        "ops/s",
    );
    p.flush()?;
    emit(
        name,
        n,
        "buffered",
        "peak_rss",
        peak_rss_kib() as f64 / 1024.0,
        "MiB",
    );
    Ok(())
}

// ---------------------------------------------------------------- the report

/// Reads `RESULT` lines and prints the markdown table (ops/s and ratios).
pub(crate) fn report(text: &str) -> String {
    use std::collections::BTreeMap;
    let mut v: BTreeMap<(usize, String, String, String), f64> = BTreeMap::new();
    let mut stores: Vec<String> = Vec::new();
    let mut ns: Vec<usize> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 7 || f[0] != "RESULT" {
            continue;
        }
        let (Ok(n), Ok(x)) = (f[2].parse::<usize>(), f[5].parse::<f64>()) else {
            continue;
        };
        if !stores.iter().any(|s| s == f[1]) {
            stores.push(f[1].to_string());
        }
        if !ns.contains(&n) {
            ns.push(n);
        }
        v.insert((n, f[1].to_string(), f[3].to_string(), f[4].to_string()), x);
    }
    ns.sort_unstable();
    let order = [
        "vault",
        "vault-default",
        "vault-large-cache",
        "sled-plain",
        "sled-crypto",
        "sqlite",
        "sqlcipher",
    ];
    stores.sort_by_key(|s| order.iter().position(|o| o == s).unwrap_or(99));
    let ops = [
        ("buffered", "insert"),
        ("buffered", "update"),
        ("buffered", "find_user"),
        ("buffered", "find_access"),
        ("buffered", "find_refresh"),
        ("buffered", "find_grant"),
        ("buffered", "find_id"),
        ("buffered", "get_tokens"),
        ("buffered", "delete"),
        ("durable", "insert"),
        ("durable", "update"),
        ("durable", "find_user"),
        ("durable", "find_access"),
        ("durable", "find_refresh"),
        ("durable", "find_grant"),
        ("durable", "find_id"),
        ("durable", "delete"),
        ("durable", "insert_written"),
        ("durable", "update_written"),
        ("durable", "delete_written"),
        ("durable", "reopen"),
        ("durable", "reopen_total"),
        ("durable", "reopen_again"),
        ("buffered", "disk_per_token"),
        ("buffered", "rss_created"),
        ("buffered", "rss_before_get_tokens"),
        ("buffered", "rss_after_get_tokens"),
        ("buffered", "peak_rss"),
        ("open", "kdf_floor"),
        ("open", "kdf_recommended"),
    ];
    let mut out = String::new();
    for &n in &ns {
        if n == 0 {
            out.push_str(
                "\n### Key derivation alone (Argon2id, one run, median of 5)\n\n| mode | op | unit |",
            );
        } else {
            out.push_str(&format!("\n### N = {n}\n\n| mode | op | unit |"));
        }
        for s in &stores {
            out.push_str(&format!(" {s} |"));
        }
        // vault / each peer; and the vault with a large cache against the SQL peers.
        let here = |s: &str| v.keys().any(|(vn, vs, ..)| *vn == n && vs == s);
        let mut ratios: Vec<(&str, &str)> = stores
            .iter()
            .filter(|s| !s.starts_with("vault"))
            .map(|s| ("vault", s.as_str()))
            .collect();
        if here("vault-large-cache") {
            for peer in ["sqlite", "sqlcipher"] {
                if here(peer) {
                    ratios.push(("vault-large-cache", peer));
                }
            }
        }
        for (a, b) in &ratios {
            let a = if *a == "vault" { "vault" } else { "large-cache" };
            out.push_str(&format!(" {a}/{b} |"));
        }
        out.push_str("\n|---|---|---|");
        for _ in 0..stores.len() + ratios.len() {
            out.push_str("---:|");
        }
        out.push('\n');
        for (mode, op) in ops {
            let unit = match op {
                "reopen" | "reopen_total" | "reopen_again" | "kdf_floor" | "kdf_recommended" => "ms",
                "disk_per_token" => "bytes/token",
                "insert_written" | "update_written" | "delete_written" => "bytes/op",
                "peak_rss" | "rss_created" | "rss_before_get_tokens" | "rss_after_get_tokens" => "MiB",
                "get_tokens" => "tokens/s",
                _ => "ops/s",
            };
            let get = |s: &str| {
                v.get(&(n, s.to_string(), mode.to_string(), op.to_string()))
                    .copied()
            };
            if stores.iter().all(|s| get(s).is_none()) {
                continue;
            }
            out.push_str(&format!("| {mode} | {op} | {unit} |"));
            for s in &stores {
                match get(s) {
                    Some(x) if x >= 100.0 => out.push_str(&format!(" {x:.0} |")),
                    Some(x) => out.push_str(&format!(" {x:.1} |")),
                    None => out.push_str(" - |"),
                }
            }
            for (a, b) in &ratios {
                match (get(a), get(b)) {
                    (Some(a), Some(b)) if b > 0.0 => out.push_str(&format!(" {:.2}x |", a / b)),
                    _ => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
    }
    out.push_str(
        "\nRatios are vault / peer: for ops/s higher is better for the vault; for ms, \
         bytes and MiB lower is better for the vault.\n",
    );
    out
}

/// A fresh temporary directory for one store's files, under `$BENCH_DIR` if set.
pub(crate) fn work_dir() -> R<tempfile::TempDir> {
    let base = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    Ok(tempfile::tempdir_in(&base)?)
}

/// Parses `--n N` (default 10000) from the arguments, ignoring cargo's `--bench`.
pub(crate) fn arg_n(args: &[String]) -> usize {
    args.windows(2)
        .find(|w| w[0] == "--n")
        .and_then(|w| w[1].replace('_', "").parse().ok())
        .unwrap_or(10_000)
}
