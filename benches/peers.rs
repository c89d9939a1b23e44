//! The vault against its peers, one store and one N per process:
//!
//! - `vault`: tokenvault's `Vault` (default options except the KDF: `KdfParams::FLOOR`,
//!   whose cost is measured on its own and excluded from the open time);
//! - `vault-default`: `VaultOptions::new()` unchanged (the recommended KDF): peak RSS;
//! - `vault-large-cache`: `vault` with sled's own default cache (1 GiB) instead of 32 MiB;
//! - `vault-redb`: `vault` on the redb engine (`Engine::Redb`), the same 32 MiB cache;
//! - `sled-plain` (a): raw sled (the vault's default cache), plaintext records and
//!   plaintext index trees, each write one transaction: the storage limit;
//! - `sled-crypto` (b): (a) plus the minimal crypto, one HMAC-SHA256 per lookup key and one
//!   AES-256-GCM seal/open per record: the crypto limit;
//! - `redb-crypto`: (b) on raw redb (one table, tree number || key, as the vault lays
//!   out its trees there): the bound of the sealed design on redb;
//! - `sqlite` (c): the SDK's `oauthtoken` table with indexes, prepared statements, WAL.
//!
//! SQLCipher (d) cannot link beside SQLite: it is the separate package `benches/sqlcipher`.
//!
//! Usage: `cargo bench --features peers` runs the whole comparison (every store at N = 10,000
//! and 100,000, SQLCipher built and run from its package; `SCALE=1` adds the vault at
//! 1,000,000, and `vault-redb` there too); `... --bench peers -- all N...`, `... -- run STORE --n N`, `... -- kdf`,
//! `... -- report RESULTS_FILE` run the parts.
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
#[path = "common/sql.rs"]
mod sql;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use tokenvault::{Engine, KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};

use harness::{fresh_id, Peer, Plan, R};

const PASSPHRASE: &str = "correct horse battery staple";
/// sled's own default page cache (1 GiB), for `vault-large-cache`.
const LARGE_CACHE: u64 = 1 << 30;

// ---------------------------------------------------------------- the vault

fn kdf_time(p: KdfParams) -> Duration {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32)).expect("params");
    let blocks = params.block_count();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            // Reserved as the vault reserves it (33 MiB or more), so that the allocator
            // returns it after each run and the RSS figures below hold only the store's;
            // timed with the run, as the vault's open pays for it too.
            let t = Instant::now();
            let mut memory = Vec::with_capacity(blocks.max(33 * 1024));
            memory.resize(blocks, Block::default());
            argon
                .hash_password_into_with_memory(PASSPHRASE.as_bytes(), &[7u8; 16], &mut out, &mut memory)
                .expect("argon2");
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

struct VaultPeer {
    vault: Option<Vault>,
    path: PathBuf,
    params: KdfParams,
    cache: u64,
    /// What one Argon2 run at `params` takes, measured at the first reopen (so that its
    /// memory does not count in the peak RSS of the phases before it).
    kdf: Option<Duration>,
}

impl VaultPeer {
    /// `FLOOR`: the KDF set low, the rest default. `RECOMMENDED`: `VaultOptions::new()`.
    fn create(path: PathBuf, params: KdfParams, cache: u64, engine: Engine) -> R<VaultPeer> {
        let vault = VaultOptions::new()
            .kdf(params)
            .cache_capacity(cache)
            .durable(false)
            .engine(engine)
            .create(&path, PASSPHRASE)?;
        Ok(VaultPeer {
            vault: Some(vault),
            path,
            params,
            cache,
            kdf: None,
        })
    }
    fn v(&self) -> &Vault {
        self.vault.as_ref().expect("open")
    }
}

impl Peer for VaultPeer {
    fn insert(&mut self, t: &OAuthToken) -> R<String> {
        let mut t = t.clone();
        self.v().save_token(&mut t)?;
        Ok(t.id().ok_or("no id")?.to_owned())
    }
    fn update(&mut self, id: &str, access: &str, expiry: i64) -> R<()> {
        let mut t = OAuthToken::default()
            .with_id(id)
            .with_access_token(access)
            .with_expiry_time(expiry);
        self.v().save_token(&mut t)?;
        Ok(())
    }
    fn by_user(&mut self, user: &str) -> R<Option<OAuthToken>> {
        Ok(self.v().find_token(&OAuthToken::default().with_user_name(user))?)
    }
    fn by_access(&mut self, access: &str) -> R<Option<OAuthToken>> {
        Ok(self
            .v()
            .find_token(&OAuthToken::default().with_access_token(access))?)
    }
    fn by_refresh(&mut self, c: &str, s: &str, refresh: &str) -> R<Option<OAuthToken>> {
        let q = OAuthToken::default()
            .with_client_id(c)
            .with_client_secret(s)
            .with_refresh_token(refresh);
        Ok(self.v().find_token(&q)?)
    }
    fn by_grant(&mut self, c: &str, s: &str, grant: &str) -> R<Option<OAuthToken>> {
        let q = OAuthToken::default()
            .with_client_id(c)
            .with_client_secret(s)
            .with_grant_token(grant);
        Ok(self.v().find_token(&q)?)
    }
    fn by_id(&mut self, id: &str) -> R<Option<OAuthToken>> {
        Ok(self.v().find_token_by_id(id)?)
    }
    fn all(&mut self) -> R<usize> {
        Ok(self.v().get_tokens()?.len())
    }
    fn delete(&mut self, id: &str) -> R<()> {
        Ok(self.v().delete_token(id)?)
    }
    fn reopen(&mut self, durable: bool) -> R<Duration> {
        drop(self.vault.take());
        let kdf = self.kdf_part();
        let t = Instant::now();
        let v = VaultOptions::new()
            .kdf(self.params)
            .cache_capacity(self.cache)
            .durable(durable)
            .open(&self.path, PASSPHRASE)?;
        let total = t.elapsed();
        self.vault = Some(v);
        Ok(total.saturating_sub(kdf))
    }
    fn kdf_part(&mut self) -> Duration {
        *self.kdf.get_or_insert_with(|| kdf_time(self.params))
    }
    fn flush(&mut self) -> R<()> {
        Ok(self.v().flush()?)
    }
    fn dir(&self) -> PathBuf {
        self.path.clone()
    }
}

// ---------------------------------------------------------------- raw sled, (a) and (b)

type HmacSha256 = Hmac<Sha256>;

/// Peer (b)'s keys: one MAC key per index, one for record slots, one AES-256-GCM key.
struct Crypto {
    index: [HmacSha256; 4],
    slot: HmacSha256,
    aead: Aes256Gcm,
}

impl Crypto {
    /// Fixed keys: the bounds measure the work, not the key management.
    fn fixed() -> Crypto {
        let mac = |label: u8| <HmacSha256 as KeyInit>::new_from_slice(&[label; 32]).expect("key");
        Crypto {
            index: [mac(1), mac(2), mac(3), mac(4)],
            slot: mac(5),
            aead: Aes256Gcm::new_from_slice(&[6u8; 32]).expect("key"),
        }
    }

    /// One AES-256-GCM seal of the encoded token under a random nonce, bound to `rkey`.
    fn seal(&self, rkey: &[u8], t: &OAuthToken) -> R<Vec<u8>> {
        let plain = bincode::serde::encode_to_vec(t, bincode::config::standard())?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let ct = self
            .aead
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: rkey,
                },
            )
            .map_err(|_| "seal")?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open(&self, rkey: &[u8], bytes: &[u8]) -> R<OAuthToken> {
        let (nonce, ct) = bytes.split_at_checked(12).ok_or("short record")?;
        let nonce: [u8; 12] = nonce.try_into()?;
        let plain = self
            .aead
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad: rkey })
            .map_err(|_| "open")?;
        decode(&plain)
    }
}

fn decode(bytes: &[u8]) -> R<OAuthToken> {
    Ok(bincode::serde::decode_from_slice(bytes, bincode::config::standard())?.0)
}

const USER: usize = 0;
const ACCESS: usize = 1;
const REFRESH: usize = 2;
const GRANT: usize = 3;

struct SledPeer {
    db: Option<sled::Db>,
    trees: Vec<sled::Tree>, // tokens, idx.user, idx.access, idx.refresh, idx.grant
    crypto: Option<Crypto>,
    durable: bool,
    dir: PathBuf,
}

fn open_sled(dir: &Path) -> R<(sled::Db, Vec<sled::Tree>)> {
    // The vault's default cache: the same memory budget.
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(VaultOptions::DEFAULT_CACHE_CAPACITY);
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match config.open() {
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(2))
            }
            other => break other?,
        }
    };
    let trees = ["tokens", "idx.user", "idx.access", "idx.refresh", "idx.grant"]
        .iter()
        .map(|n| db.open_tree(n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((db, trees))
}

fn field(t: &OAuthToken, index: usize) -> Option<&str> {
    match index {
        USER => t.user_name(),
        ACCESS => t.access_token(),
        REFRESH => t.refresh_token(),
        _ => t.grant_token(),
    }
}

fn txn_error(e: sled::transaction::TransactionError<()>) -> Box<dyn std::error::Error> {
    format!("sled transaction: {e:?}").into()
}

impl SledPeer {
    fn create(dir: PathBuf, with_crypto: bool) -> R<SledPeer> {
        let (db, trees) = open_sled(&dir)?;
        let crypto = with_crypto.then(Crypto::fixed);
        Ok(SledPeer {
            db: Some(db),
            trees,
            crypto,
            durable: false,
            dir,
        })
    }

    fn db(&self) -> &sled::Db {
        self.db.as_ref().expect("open")
    }

    /// The key of `value` in index tree `index`: plaintext (a) or one keyed MAC (b).
    fn ikey(&self, index: usize, value: &str) -> Vec<u8> {
        match &self.crypto {
            None => value.as_bytes().to_vec(),
            Some(c) => mac(&c.index[index], value.as_bytes()),
        }
    }

    /// The record key of `id`.
    fn rkey(&self, id: &str) -> Vec<u8> {
        match &self.crypto {
            None => id.as_bytes().to_vec(),
            Some(c) => mac(&c.slot, id.as_bytes()),
        }
    }

    fn seal(&self, rkey: &[u8], t: &OAuthToken) -> R<Vec<u8>> {
        match &self.crypto {
            None => Ok(bincode::serde::encode_to_vec(t, bincode::config::standard())?),
            Some(c) => c.seal(rkey, t),
        }
    }

    fn open(&self, rkey: &[u8], bytes: &[u8]) -> R<OAuthToken> {
        match &self.crypto {
            None => decode(bytes),
            Some(c) => c.open(rkey, bytes),
        }
    }

    fn record(&self, rkey: &[u8]) -> R<Option<OAuthToken>> {
        match self.trees[0].get(rkey)? {
            None => Ok(None),
            Some(b) => Ok(Some(self.open(rkey, &b)?)),
        }
    }

    fn indexed(&self, index: usize, value: &str) -> R<Option<OAuthToken>> {
        let Some(rkey) = self.trees[1 + index].get(self.ikey(index, value))? else {
            return Ok(None);
        };
        let t = self.record(&rkey)?.ok_or("dangling index entry")?;
        Ok((field(&t, index) == Some(value)).then_some(t))
    }

    fn after_write(&self) -> R<()> {
        if self.durable {
            self.db().flush()?;
        }
        Ok(())
    }
}

fn mac(key: &HmacSha256, msg: &[u8]) -> Vec<u8> {
    let mut m = key.clone();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

impl Peer for SledPeer {
    fn insert(&mut self, t: &OAuthToken) -> R<String> {
        let user = t.user_name().ok_or("no user")?;
        let ukey = self.ikey(USER, user);
        if self.trees[1].get(&ukey)?.is_some() {
            return Err("insert: user exists".into());
        }
        let id = fresh_id();
        let mut t = t.clone();
        t.set_id(Some(id.clone()));
        let rkey = self.rkey(&id);
        let sealed = self.seal(&rkey, &t)?;
        let mut entries: Vec<(usize, Vec<u8>)> = vec![(USER, ukey)];
        for index in [ACCESS, REFRESH, GRANT] {
            if let Some(v) = field(&t, index) {
                entries.push((index, self.ikey(index, v)));
            }
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        trees
            .as_slice()
            .transaction(|v| {
                v[0].insert(rkey.as_slice(), sealed.as_slice())?;
                for (index, key) in &entries {
                    v[1 + index].insert(key.as_slice(), rkey.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(txn_error)?;
        self.after_write()?;
        Ok(id)
    }

    fn update(&mut self, id: &str, access: &str, expiry: i64) -> R<()> {
        let rkey = self.rkey(id);
        let old = self.record(&rkey)?.ok_or("update: no record")?;
        let old_key = match old.access_token() {
            Some(a) if a != access => {
                let k = self.ikey(ACCESS, a);
                // The entry goes only if it still points here (the vault's ownership rule).
                (self.trees[2].get(&k)?.as_deref() == Some(rkey.as_slice())).then_some(k)
            }
            _ => None,
        };
        let new = old.with_access_token(access).with_expiry_time(expiry);
        let sealed = self.seal(&rkey, &new)?;
        let new_key = self.ikey(ACCESS, access);
        let trees = [&self.trees[0], &self.trees[2]];
        trees
            .as_slice()
            .transaction(|v| {
                v[0].insert(rkey.as_slice(), sealed.as_slice())?;
                if let Some(k) = &old_key {
                    v[1].remove(k.as_slice())?;
                }
                v[1].insert(new_key.as_slice(), rkey.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(txn_error)?;
        self.after_write()
    }

    fn by_user(&mut self, user: &str) -> R<Option<OAuthToken>> {
        self.indexed(USER, user)
    }
    fn by_access(&mut self, access: &str) -> R<Option<OAuthToken>> {
        self.indexed(ACCESS, access)
    }
    fn by_refresh(&mut self, c: &str, _s: &str, refresh: &str) -> R<Option<OAuthToken>> {
        Ok(self
            .indexed(REFRESH, refresh)?
            .filter(|t| t.client_id() == Some(c)))
    }
    fn by_grant(&mut self, c: &str, _s: &str, grant: &str) -> R<Option<OAuthToken>> {
        Ok(self.indexed(GRANT, grant)?.filter(|t| t.client_id() == Some(c)))
    }
    fn by_id(&mut self, id: &str) -> R<Option<OAuthToken>> {
        self.record(&self.rkey(id))
    }
    fn all(&mut self) -> R<usize> {
        // Every token decoded into one Vec, as get_tokens and the SQL peers return them.
        let mut all = Vec::new();
        for e in self.trees[0].iter() {
            let (k, v) = e?;
            all.push(self.open(&k, &v)?);
        }
        Ok(all.len())
    }
    fn delete(&mut self, id: &str) -> R<()> {
        let rkey = self.rkey(id);
        let Some(old) = self.record(&rkey)? else {
            return Ok(());
        };
        let mut gone = Vec::new();
        for index in [USER, ACCESS, REFRESH, GRANT] {
            if let Some(v) = field(&old, index) {
                let k = self.ikey(index, v);
                if self.trees[1 + index].get(&k)?.as_deref() == Some(rkey.as_slice()) {
                    gone.push((index, k));
                }
            }
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        trees
            .as_slice()
            .transaction(|v| {
                v[0].remove(rkey.as_slice())?;
                for (index, key) in &gone {
                    v[1 + index].remove(key.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(txn_error)?;
        self.after_write()
    }
    fn reopen(&mut self, durable: bool) -> R<Duration> {
        self.trees.clear();
        if let Some(db) = self.db.take() {
            db.flush()?;
        }
        let t = Instant::now();
        let (db, trees) = open_sled(&self.dir)?;
        let took = t.elapsed();
        self.db = Some(db);
        self.trees = trees;
        self.durable = durable;
        Ok(took)
    }
    fn flush(&mut self) -> R<()> {
        self.db().flush()?;
        Ok(())
    }
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }
}

// ---------------------------------------------------------------- raw redb, sealed

/// The one table of `redb-crypto`: `tree number || key` -> value, as the vault lays out
/// its trees on redb (0 = records, 1 + index = that index).
const REDB_TABLE: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
    redb::TableDefinition::new("vault");

/// `redb-crypto`: raw redb 4.6 at the vault's default cache with the minimal crypto of
/// `sled-crypto` (one HMAC per lookup key, one AES-256-GCM seal or open per record), each
/// write one transaction (`fdatasync` when durable): the bound of the sealed design on
/// redb, without the vault's checks, id index or seal counter.
struct RedbPeer {
    db: Option<redb::Database>,
    crypto: Crypto,
    durable: bool,
    dir: PathBuf,
    /// When a buffered write last committed with `fdatasync`: like the vault, a buffered
    /// peer makes its writes durable about every 500 ms (redb frees pages only then).
    synced: Instant,
}

fn tagged(tree: u8, key: &[u8]) -> Vec<u8> {
    let mut k = vec![tree];
    k.extend_from_slice(key);
    k
}

impl RedbPeer {
    fn create(dir: PathBuf) -> R<RedbPeer> {
        std::fs::create_dir_all(&dir)?;
        let db = Self::open_db(&dir)?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?;
        txn.commit()?;
        Ok(RedbPeer {
            db: Some(db),
            crypto: Crypto::fixed(),
            durable: false,
            dir,
            synced: Instant::now(),
        })
    }

    fn open_db(dir: &Path) -> R<redb::Database> {
        let cache = usize::try_from(VaultOptions::DEFAULT_CACHE_CAPACITY)?;
        Ok(redb::Builder::new()
            .set_cache_size(cache)
            .create(dir.join("bound.redb"))?)
    }

    fn db(&self) -> &redb::Database {
        self.db.as_ref().expect("open")
    }

    fn get(&self, tree: u8, key: &[u8]) -> R<Option<Vec<u8>>> {
        use redb::ReadableDatabase;
        let txn = self.db().begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let v = table.get(tagged(tree, key).as_slice())?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    fn record(&self, rkey: &[u8]) -> R<Option<OAuthToken>> {
        match self.get(0, rkey)? {
            None => Ok(None),
            Some(b) => Ok(Some(self.crypto.open(rkey, &b)?)),
        }
    }

    fn indexed(&self, index: usize, value: &str) -> R<Option<OAuthToken>> {
        let ikey = mac(&self.crypto.index[index], value.as_bytes());
        let Some(rkey) = self.get(1 + index as u8, &ikey)? else {
            return Ok(None);
        };
        let t = self.record(&rkey)?.ok_or("dangling index entry")?;
        Ok((field(&t, index) == Some(value)).then_some(t))
    }

    /// One write transaction: `puts` then `removes`, (tree, key[, value]).
    fn write(&mut self, puts: &[(u8, &[u8], &[u8])], removes: &[(u8, &[u8])]) -> R<()> {
        let sync = self.durable || self.synced.elapsed() >= Duration::from_millis(500);
        if sync {
            self.synced = Instant::now();
        }
        let mut txn = self.db().begin_write()?;
        txn.set_durability(if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            for (tree, k, v) in puts {
                table.insert(tagged(*tree, k).as_slice(), *v)?;
            }
            for (tree, k) in removes {
                table.remove(tagged(*tree, k).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Peer for RedbPeer {
    fn insert(&mut self, t: &OAuthToken) -> R<String> {
        let user = t.user_name().ok_or("no user")?;
        let ukey = mac(&self.crypto.index[USER], user.as_bytes());
        if self.get(1 + USER as u8, &ukey)?.is_some() {
            return Err("insert: user exists".into());
        }
        let id = fresh_id();
        let mut t = t.clone();
        t.set_id(Some(id.clone()));
        let rkey = mac(&self.crypto.slot, id.as_bytes());
        let sealed = self.crypto.seal(&rkey, &t)?;
        let mut keys: Vec<(u8, Vec<u8>)> = vec![(1 + USER as u8, ukey)];
        for index in [ACCESS, REFRESH, GRANT] {
            if let Some(v) = field(&t, index) {
                keys.push((1 + index as u8, mac(&self.crypto.index[index], v.as_bytes())));
            }
        }
        let mut puts: Vec<(u8, &[u8], &[u8])> = vec![(0, &rkey, &sealed)];
        puts.extend(
            keys.iter()
                .map(|(tree, k)| (*tree, k.as_slice(), rkey.as_slice())),
        );
        self.write(&puts, &[])?;
        Ok(id)
    }

    fn update(&mut self, id: &str, access: &str, expiry: i64) -> R<()> {
        let rkey = mac(&self.crypto.slot, id.as_bytes());
        let old = self.record(&rkey)?.ok_or("update: no record")?;
        let access_tree = 1 + ACCESS as u8;
        let old_key = match old.access_token() {
            Some(a) if a != access => {
                let k = mac(&self.crypto.index[ACCESS], a.as_bytes());
                (self.get(access_tree, &k)?.as_deref() == Some(rkey.as_slice())).then_some(k)
            }
            _ => None,
        };
        let new = old.with_access_token(access).with_expiry_time(expiry);
        let sealed = self.crypto.seal(&rkey, &new)?;
        let new_key = mac(&self.crypto.index[ACCESS], access.as_bytes());
        let removes: Vec<(u8, &[u8])> = old_key.iter().map(|k| (access_tree, k.as_slice())).collect();
        self.write(&[(0, &rkey, &sealed), (access_tree, &new_key, &rkey)], &removes)
    }

    fn by_user(&mut self, user: &str) -> R<Option<OAuthToken>> {
        self.indexed(USER, user)
    }
    fn by_access(&mut self, access: &str) -> R<Option<OAuthToken>> {
        self.indexed(ACCESS, access)
    }
    fn by_refresh(&mut self, c: &str, _s: &str, refresh: &str) -> R<Option<OAuthToken>> {
        Ok(self
            .indexed(REFRESH, refresh)?
            .filter(|t| t.client_id() == Some(c)))
    }
    fn by_grant(&mut self, c: &str, _s: &str, grant: &str) -> R<Option<OAuthToken>> {
        Ok(self.indexed(GRANT, grant)?.filter(|t| t.client_id() == Some(c)))
    }
    fn by_id(&mut self, id: &str) -> R<Option<OAuthToken>> {
        self.record(&mac(&self.crypto.slot, id.as_bytes()))
    }
    fn all(&mut self) -> R<usize> {
        use redb::ReadableDatabase;
        let txn = self.db().begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let mut all = Vec::new();
        for e in table.range::<&[u8]>([0u8].as_slice()..[1u8].as_slice())? {
            let (k, v) = e?;
            all.push(self.crypto.open(&k.value()[1..], v.value())?);
        }
        Ok(all.len())
    }
    fn delete(&mut self, id: &str) -> R<()> {
        let rkey = mac(&self.crypto.slot, id.as_bytes());
        let Some(old) = self.record(&rkey)? else {
            return Ok(());
        };
        let mut gone: Vec<(u8, Vec<u8>)> = vec![(0, rkey.clone())];
        for index in [USER, ACCESS, REFRESH, GRANT] {
            if let Some(v) = field(&old, index) {
                let k = mac(&self.crypto.index[index], v.as_bytes());
                if self.get(1 + index as u8, &k)?.as_deref() == Some(rkey.as_slice()) {
                    gone.push((1 + index as u8, k));
                }
            }
        }
        let removes: Vec<(u8, &[u8])> = gone.iter().map(|(t, k)| (*t, k.as_slice())).collect();
        self.write(&[], &removes)
    }
    fn reopen(&mut self, durable: bool) -> R<Duration> {
        self.flush()?;
        drop(self.db.take());
        let t = Instant::now();
        let db = Self::open_db(&self.dir)?;
        let took = t.elapsed();
        self.db = Some(db);
        self.durable = durable;
        Ok(took)
    }
    fn flush(&mut self) -> R<()> {
        let mut txn = self.db().begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }
}

// ---------------------------------------------------------------- main

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("report") => {
            let path = args.get(1).ok_or("report FILE")?;
            print!("{}", harness::report(&std::fs::read_to_string(path)?));
        }
        Some("kdf") => {
            for (name, p) in [
                ("kdf_floor", KdfParams::FLOOR),
                ("kdf_recommended", KdfParams::RECOMMENDED),
            ] {
                harness::emit("vault", 0, "open", name, kdf_time(p).as_secs_f64() * 1e3, "ms");
            }
        }
        Some("run") => {
            let store = args.get(1).ok_or("run STORE")?.clone();
            let n = harness::arg_n(&args);
            let tmp = harness::work_dir()?;
            let dir = tmp.path().join(&store);
            let default_cache = VaultOptions::DEFAULT_CACHE_CAPACITY;
            let mut peer: Box<dyn Peer> = match store.as_str() {
                "vault" => Box::new(VaultPeer::create(
                    dir,
                    KdfParams::FLOOR,
                    default_cache,
                    Engine::Sled,
                )?),
                "vault-default" => Box::new(VaultPeer::create(
                    dir,
                    KdfParams::RECOMMENDED,
                    default_cache,
                    Engine::Sled,
                )?),
                "vault-large-cache" => Box::new(VaultPeer::create(
                    dir,
                    KdfParams::FLOOR,
                    LARGE_CACHE,
                    Engine::Sled,
                )?),
                "vault-redb" => Box::new(VaultPeer::create(
                    dir,
                    KdfParams::FLOOR,
                    default_cache,
                    Engine::Redb,
                )?),
                "sled-plain" => Box::new(SledPeer::create(dir, false)?),
                "sled-crypto" => Box::new(SledPeer::create(dir, true)?),
                "redb-crypto" => Box::new(RedbPeer::create(dir)?),
                "sqlite" => Box::new(sql::SqlPeer::create(dir, None)?),
                other => return Err(format!("unknown store {other}").into()),
            };
            harness::run(peer.as_mut(), &store, &Plan::for_n(n))?;
        }
        Some("help" | "--help" | "-h") => {
            eprintln!(
                "usage: peers [all [N ...]] | run STORE --n N | kdf | report FILE\n\
                 (no arguments: all, N = 10000 and 100000; SCALE=1 adds the vault at 1,000,000)"
            );
        }
        Some("all") => all(&args[1..])?,
        None => all(&[])?,
        Some(other) => return Err(format!("unknown command {other}; try help").into()),
    }
    Ok(())
}

/// The whole comparison in one sitting: the KDF alone, then for each N every store in its
/// own process (so peak RSS is that store's), interleaved; SQLCipher from its own package.
/// Writes `target/bench/results.tsv` and `target/bench/report.md`, prints the report.
fn all(ns: &[String]) -> R<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::var_os("OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench"));
    let work = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| out.join("tmp"));
    std::fs::create_dir_all(&work)?;
    let mut ns: Vec<usize> = ns
        .iter()
        .map(|n| n.replace('_', "").parse())
        .collect::<Result<_, _>>()?;
    if ns.is_empty() {
        ns = vec![10_000, 100_000];
    }

    eprintln!("== building the SQLCipher peer (benches/sqlcipher, release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-q", "--manifest-path"])
        .arg(root.join("benches/sqlcipher/Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/sqlcipher"))
        .status()?;
    if !status.success() {
        return Err("building benches/sqlcipher failed (SQLCipher needs libssl-dev)".into());
    }
    let me = std::env::current_exe()?;
    let cipher = root.join("target/sqlcipher/release/sqlcipher-bench");

    let results_path = out.join("results.tsv");
    let mut results = std::fs::File::create(&results_path)?;
    writeln!(results, "{}", sitting())?;
    let mut collect = |cmd: &mut Command, what: &str| -> R<()> {
        eprintln!("== {what}");
        let output = cmd.env("BENCH_DIR", &work).stderr(Stdio::inherit()).output()?;
        if !output.status.success() {
            return Err(format!("{what} failed ({})", output.status).into());
        }
        results.write_all(&output.stdout)?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if ["\tinsert\t", "\tfind_user\t", "\tget_tokens\t"]
                .iter()
                .any(|k| line.contains(k))
            {
                eprintln!("{line}");
            }
        }
        Ok(())
    };
    collect(Command::new(&me).arg("kdf"), "kdf")?;
    let mut runs: Vec<(String, usize)> = Vec::new();
    for &n in &ns {
        for store in [
            "vault",
            "vault-redb",
            "sled-plain",
            "sled-crypto",
            "redb-crypto",
            "sqlite",
            "sqlcipher",
        ] {
            runs.push((store.into(), n));
        }
        // Default options (the recommended KDF too): the peak-RSS figure; and the vault
        // given sled's own default cache (1 GiB), where the files fit in memory.
        if n >= 100_000 {
            runs.push(("vault-default".into(), n));
            runs.push(("vault-large-cache".into(), n));
        }
    }
    if std::env::var("SCALE").is_ok_and(|v| v == "1") {
        runs.push(("vault".into(), 1_000_000));
        runs.push(("vault-redb".into(), 1_000_000));
    }
    for (store, n) in runs {
        let mut cmd = if store == "sqlcipher" {
            Command::new(&cipher)
        } else {
            Command::new(&me)
        };
        cmd.args(["run", &store, "--n", &n.to_string()]);
        collect(&mut cmd, &format!("{store} N={n}"))?;
    }
    drop(results);
    let report = harness::report(&std::fs::read_to_string(&results_path)?);
    std::fs::write(out.join("report.md"), &report)?;
    print!("{report}");
    eprintln!(
        "raw: {}; table: {}",
        results_path.display(),
        out.join("report.md").display()
    );
    Ok(())
}

/// Where and when: the UTC time, the cores and the CPU, for the top of `results.tsv`.
fn sitting() -> String {
    let now = std::process::Command::new("date")
        .args(["-u", "+%FT%TZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("# {now} nproc={cores} cpu={cpu}")
}
