//! `Vault`: the encrypted store on disk, and the state every open vault shares.
//!
//! Invariants:
//! - only ciphertext (records, the wrapped data key) and keyed MACs (slots, index keys)
//!   reach the storage engine;
//! - every index hit is decrypted and compared with the queried value before it is
//!   returned, so a doctored index entry is an error, never another user's token;
//! - every save or delete is one all-or-nothing batch across the trees, flushed before it
//!   returns unless the vault was opened with `durable(false)`;
//! - a vault is open in one place at a time (an OS file lock taken before anything else);
//!   dropping the last handle flushes and releases it before the drop returns.
//!
//! Where each part lives: [`options`] (the options, `create` and `open`), [`records`]
//! (sealing and opening records, the rules' writes, `get_tokens`), [`seals`] (the seal
//! counter and key rotation), [`keys`] (passphrase change and re-key), [`compaction`],
//! [`generations`] (the pointer to the live storage), [`quarantine`] and [`verify`]
//! (damaged records, `verify` and `repair`), [`fs`] (the OS lock and file permissions).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

mod compaction;
mod fs;
mod generations;
mod keys;
mod options;
mod quarantine;
mod records;
mod seals;
#[cfg(test)]
mod stale_tests;
#[cfg(test)]
mod tests;
mod verify;

pub use options::VaultOptions;
pub use verify::{Problem, QuarantinedRecord, VerifyReport};

use crate::backend::{Engine, Expect, Op, Outcome, Storage};
use crate::crypto::header::Header;
use crate::crypto::kdf::{KdfParams, PassphraseKey};
use crate::crypto::keys::{DataKey, VaultKeys, MAC_LEN, VAULT_ID_LEN};
use crate::store::{self, Index, Records, Saved};
use crate::{Error, OAuthToken, TokenStore};
use fs::VaultLock;
use generations::Generation;
use records::View;

/// The key of the header in the `meta` tree.
pub(crate) const HEADER_KEY: &[u8] = b"header";
/// `get_tokens` opens records on up to this many threads (at most one per core) ...
pub(super) const OPEN_THREADS: usize = 4;
/// ... and reads them [`MIN_OPEN_CHUNK`] per thread at a time: a batch gives each thread
/// one chunk, and a smaller batch is opened on the calling thread. The batch bounds what
/// `get_tokens` holds beyond its result (sealed records read but not yet opened): at
/// 100,000 tokens on redb, batches of 8,192 records took about 4 MiB more at the peak
/// than batches of 2,048; on sled `get_tokens` ran at 142k-158k tokens/s with 8,192 and
/// 163k-164k with 2,048.
pub(super) const MIN_OPEN_CHUNK: usize = 1024;

/// Entry points for `crate::fuzzing` (compiled only under `cfg(fuzzing)`): the parsers
/// of the pointer file and of quarantine entries.
#[cfg(fuzzing)]
pub(crate) mod fuzz_hooks {
    use super::{generations, quarantine, Error, VaultKeys};
    use crate::crypto::keys::MAC_LEN;

    pub(crate) fn parse_pointer(bytes: &[u8]) -> Result<u64, Error> {
        generations::parse_pointer(bytes)
    }

    pub(crate) fn encode_pointer(n: u64) -> Vec<u8> {
        generations::encode_pointer(n)
    }

    /// Parses an entry and opens its label; an entry that parses must re-encode to its
    /// bytes.
    pub(crate) fn parse_quarantine(keys: &VaultKeys, key: &[u8], value: &[u8]) -> Option<Option<String>> {
        let entry = quarantine::Entry::parse(key, value)?;
        assert_eq!(
            quarantine::key(entry.slot, entry.number),
            key,
            "a parsed key re-encodes"
        );
        assert_eq!(
            4 + entry.label.len() + entry.record.len(),
            value.len(),
            "a parsed value is all used"
        );
        Some(entry.id(keys))
    }

    pub(crate) fn quarantine_entry(
        keys: &VaultKeys,
        slot: &[u8; MAC_LEN],
        id: Option<&str>,
        record: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        Ok((
            quarantine::key(slot, 0),
            quarantine::value(keys, 1, slot, id, record)?,
        ))
    }
}

/// An encrypted token vault: a directory holding sealed records and blind indexes.
///
/// `Vault` is a cheap handle (`Clone + Send + Sync`); all clones share one open vault.
///
/// ```
/// use tokenvault::{KdfParams, OAuthToken, TokenStore, Vault, VaultOptions};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("vault");
/// let options = VaultOptions::new().kdf(KdfParams::FLOOR);
/// let vault = options.create(&path, "passphrase")?;
/// let mut t = OAuthToken::default()
///     .with_user_name("alice@example.com")
///     .with_refresh_token("1000.refresh");
/// vault.save_token(&mut t)?;
/// drop(vault);
///
/// let vault = options.open(&path, "passphrase")?;
/// let q = OAuthToken::default().with_user_name("alice@example.com");
/// assert_eq!(vault.find_token(&q)?, Some(t));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

/// The open vault. Field order matters: storage is dropped before the lock is released.
///
/// Lock order, for every path that takes more than one: `writer`, then `key_state`, then
/// `keys`, then `commit_gate`; `storage` and `generation` are held only for the instant of
/// a read or a swap, never across another lock. Saves, deletes, key changes, verify,
/// repair and compaction hold `writer` throughout; lookups take only `keys` (read) and
/// `commit_gate` (read).
struct Inner {
    /// The live generation's storage. Compaction swaps it (under `writer`); readers clone
    /// the `Arc` and never hold the lock while they read.
    storage: RwLock<Arc<dyn Storage>>,
    /// Which generation `storage` is.
    generation: Mutex<Generation>,
    /// The engine that writes the vault's files.
    engine: Engine,
    keys: RwLock<VaultKeys>,
    /// The storage generation `keys` were read for (see [`Inner::keys_current`]).
    keys_generation: std::sync::atomic::AtomicU64,
    key_state: Mutex<KeyState>,
    /// Lookups that read an index entry and then its record hold this shared; commits hold
    /// it exclusively, so a lookup sees each commit entirely or not at all.
    commit_gate: RwLock<()>,
    writer: Mutex<()>,
    options: VaultOptions,
    /// The directory (for an etcd vault, its location).
    dir: PathBuf,
    /// What this handle wrote, for the compaction baseline at close.
    growth: compaction::Growth,
    /// The directory's lock; none for a vault that many processes share (etcd).
    _lock: Option<VaultLock>,
}

/// What writing a new header needs (the current header and passphrase key), the number
/// of seals under the current record key, and the bound on it the stored counter holds
/// (`seals <= reserved` always). Held across every commit.
struct KeyState {
    header: Header,
    kek: PassphraseKey,
    seals: u64,
    reserved: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; an explicit `flush` reports them.
        let _ = self.settle_growth();
        let _ = self.storage().flush();
    }
}

impl Inner {
    /// The live storage.
    fn storage(&self) -> Arc<dyn Storage> {
        self.storage.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its state consistent before it can fail, so a lock
    // poisoned by a panicking thread is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Vault {
    /// Creates a vault with the default options (see [`VaultOptions::create`]).
    ///
    /// # Errors
    /// As [`VaultOptions::create`].
    pub fn create(dir: impl AsRef<Path>, passphrase: &str) -> Result<Vault, Error> {
        VaultOptions::new().create(dir, passphrase)
    }

    /// Opens a vault with the default options (see [`VaultOptions::open`]).
    ///
    /// # Errors
    /// As [`VaultOptions::open`].
    pub fn open(dir: impl AsRef<Path>, passphrase: &str) -> Result<Vault, Error> {
        VaultOptions::new().open(dir, passphrase)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        dir: &Path,
        options: VaultOptions,
        storage: impl Storage + 'static,
        engine: Engine,
        lock: Option<VaultLock>,
        generation: Generation,
        header: Header,
        kek: PassphraseKey,
        keys: VaultKeys,
        seals: u64,
    ) -> Vault {
        // Shared storage has no files of ours to measure (and never compacts).
        let since = match engine {
            Engine::Etcd => None,
            _ => storage.size_on_disk().ok(),
        };
        Vault {
            inner: Arc::new(Inner {
                growth: compaction::Growth::new(since),
                storage: RwLock::new(Arc::new(storage)),
                generation: Mutex::new(generation),
                engine,
                keys: RwLock::new(keys),
                keys_generation: std::sync::atomic::AtomicU64::new(0),
                key_state: Mutex::new(KeyState {
                    header,
                    kek,
                    seals,
                    reserved: seals,
                }),
                commit_gate: RwLock::new(()),
                writer: Mutex::new(()),
                options,
                dir: dir.to_path_buf(),
                _lock: lock,
            }),
        }
    }

    /// [`save_token`](TokenStore::save_token), saying whether it inserted a token or
    /// updated a stored one (by the rules of `save_token`: the same id, else what
    /// `find_token` returns), so a caller need not work that out again.
    ///
    /// ```
    /// # use tokenvault::{KdfParams, OAuthToken, Saved, VaultOptions};
    /// # let tmp = tempfile::tempdir()?;
    /// let vault = VaultOptions::new().kdf(KdfParams::FLOOR).create(tmp.path().join("v"), "pass")?;
    /// let mut t = OAuthToken::default().with_user_name("a").with_access_token("one");
    /// assert_eq!(vault.upsert_token(&mut t)?, Saved::Inserted);
    /// let mut t = OAuthToken::default().with_user_name("a").with_access_token("two");
    /// assert_eq!(vault.upsert_token(&mut t)?, Saved::Updated);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`TokenStore::save_token`].
    pub fn upsert_token(&self, token: &mut OAuthToken) -> Result<Saved, Error> {
        let _writer = lock(&self.inner.writer);
        self.inner.write(|view| store::save(view, token))
    }

    /// The vault's directory (for an etcd vault, its `etcd://` location as a path).
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The storage engine that writes the vault's files.
    pub fn engine(&self) -> Engine {
        self.inner.engine
    }

    /// The Argon2id parameters the vault's header holds now (what a passphrase guess
    /// against a copy of the vault costs).
    pub fn kdf_params(&self) -> KdfParams {
        lock(&self.inner.key_state).header.kdf
    }

    /// Writes every buffered change to disk.
    ///
    /// sled writes with `sync_file_range`, not `fsync`: a flushed write survives a crash of
    /// the process; surviving a power loss depends on the file system and the disk.
    ///
    /// # Errors
    /// `Io`, `Storage`.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.storage().flush()
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.inner.dir)
            .field("engine", &self.inner.engine)
            .field("durable", &self.inner.options.durable)
            .finish_non_exhaustive()
    }
}

/// How many times a write is decided again after losing a race (see [`Inner::write`]).
const WRITE_ATTEMPTS: u32 = 16;

/// The pause after the `n`th lost race: up to 2^n ms (at most 256 ms), a random part of it,
/// so that writers that collided do not collide again in step.
fn back_off(n: u32) -> Result<(), Error> {
    if n == 0 {
        return Ok(());
    }
    let cap_us = 1000u64 << n.min(8);
    let mut r = [0u8; 8];
    crate::crypto::random_bytes(&mut r)?;
    let pause = u64::from_le_bytes(r) % cap_us;
    std::thread::sleep(Duration::from_micros(pause));
    Ok(())
}

/// Every key of a vault: the crypto's key hierarchy, with one index key per index.
fn derive_keys(data_key: DataKey, vault_id: [u8; VAULT_ID_LEN], epoch: u32) -> VaultKeys {
    VaultKeys::derive(data_key, vault_id, epoch, Index::ALL.map(Index::key_label))
}

/// The key of the `index` entry for `value`: MAC(that index's key, value).
fn entry_key(keys: &VaultKeys, index: Index, value: &str) -> Result<[u8; MAC_LEN], Error> {
    keys.index_key(index.position(), value.as_bytes())
}

impl Inner {
    fn keys(&self) -> RwLockReadGuard<'_, VaultKeys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one all-or-nothing batch if its expectations hold, with no lookup in
    /// between its reads.
    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        let _gate = self.commit_gate.write().unwrap_or_else(|e| e.into_inner());
        let outcome = self.storage().apply_if(expects, ops);
        self.growth.counted(&outcome, ops);
        outcome
    }

    /// [`apply_if`](Inner::apply_if), only while the storage is at `generation`.
    fn apply_if_at(&self, generation: u64, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        let _gate = self.commit_gate.write().unwrap_or_else(|e| e.into_inner());
        let outcome = self.storage().apply_if_at(generation, expects, ops);
        self.growth.counted(&outcome, ops);
        outcome
    }

    /// Makes sure the keys are those of the storage's generation: on shared storage
    /// another process may have rewritten the vault under new keys (a re-key), and this
    /// handle then reads the header again before it reads or writes anything. Until that
    /// succeeds (a re-key under another passphrase: `WrongPassphrase`), nothing is read or
    /// written under the old keys.
    /// Returns the generation the keys are for: a view begun now reads and writes in that
    /// one (a switch another thread follows meanwhile then shows as a moved generation,
    /// never as reads under keys of the generation before).
    fn keys_current(&self) -> Result<u64, Error> {
        use std::sync::atomic::Ordering;
        if self.storage().generation() != self.keys_generation.load(Ordering::SeqCst) {
            self.reload_seals()?;
        }
        Ok(self.keys_generation.load(Ordering::SeqCst))
    }

    /// [`keys_current`](Inner::keys_current) for a caller that holds the key-state lock.
    fn keys_current_locked(&self, state: &mut KeyState) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.storage().generation() != self.keys_generation.load(Ordering::SeqCst) {
            self.reload_into(state)?;
        }
        Ok(())
    }

    /// Runs a read-only operation, again if the storage moved to another generation while
    /// it read (another process rewrote a shared vault): the header is read again first, so
    /// the next attempt reads with the keys the new generation is under (a re-key elsewhere
    /// with another passphrase is then `WrongPassphrase`, never a miss).
    fn reading<T>(&self, mut read: impl FnMut(&View<'_>) -> Result<T, Error>) -> Result<T, Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let generation = self.keys_current()?;
            let view = View::reading_at(self, generation);
            let result = read(&view);
            if self.storage().generation() == view.generation() {
                return result;
            }
        }
        Err(Error::Storage {
            message: format!("gave up after {WRITE_ATTEMPTS} attempts: the vault kept being rewritten"),
        })
    }

    /// Decides and applies a write that no other writer may interleave with (see
    /// [`Storage::exclusive`]), and returns with the keys' write lock held (readers wait
    /// from the moment the batch starts to apply until the caller has installed the keys it
    /// wrote under, if new). Lookups of this process see the batch whole or not at all.
    fn exclusive(
        &self,
        decide: &mut crate::backend::Decide<'_>,
    ) -> Result<(Outcome, RwLockWriteGuard<'_, VaultKeys>), Error> {
        let mut held: Option<(RwLockWriteGuard<'_, VaultKeys>, RwLockWriteGuard<'_, ()>)> = None;
        // A re-key or repair rewrites and removes stored data.
        self.growth.uncounted();
        let storage = self.storage();
        let outcome = storage.exclusive(&mut || {
            let decided = decide()?;
            if held.is_none() {
                let keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
                let gate = self.commit_gate.write().unwrap_or_else(|e| e.into_inner());
                held = Some((keys, gate));
            }
            Ok(decided)
        });
        let keys = match held {
            Some((keys, _gate)) => keys,
            None => self.keys.write().unwrap_or_else(|e| e.into_inner()),
        };
        if outcome.is_err() {
            // An error may hide a batch that applied (a transaction whose answer was
            // lost): the next call reads the header again before it reads or writes, so
            // this handle never goes on under keys that may no longer be the vault's.
            self.keys_generation
                .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        }
        Ok((outcome?, keys))
    }

    /// Runs a read-decide-write until its commit applies: a commit that finds a value it
    /// read changed meanwhile (another writer of the same storage won the race) writes
    /// nothing, and the write is decided again from fresh reads, at most
    /// [`WRITE_ATTEMPTS`] times, with a short randomised pause between attempts.
    fn write<T>(&self, mut attempt: impl FnMut(&View<'_>) -> Result<T, Error>) -> Result<T, Error> {
        for n in 0..WRITE_ATTEMPTS {
            let generation = self.keys_current()?;
            let view = View::writing_at(self, generation);
            match attempt(&view) {
                Err(_) if view.conflicted() => {
                    self.reload_seals()?;
                    back_off(n)?;
                }
                // A refusal decided from reads that another writer of shared storage
                // changed in between (say the record by id deleted, then its user name
                // taken by a new one) mixes two states: it is decided again. One whose
                // reads all still hold was right in the state there is now.
                Err(_) if !view.reads_still_hold()? => {
                    self.reload_seals()?;
                    back_off(n)?;
                }
                done => return done,
            }
        }
        Err(Error::Storage {
            message: format!(
                "gave up after {WRITE_ATTEMPTS} attempts: other writers kept changing the same tokens"
            ),
        })
    }

    fn after_write(&self) -> Result<(), Error> {
        if self.options.durable {
            self.storage().flush()?;
        }
        Ok(())
    }
}

impl TokenStore for Vault {
    fn find_token(&self, token: &OAuthToken) -> Result<Option<OAuthToken>, Error> {
        self.inner.reading(|view| store::find(view, token))
    }

    fn save_token(&self, token: &mut OAuthToken) -> Result<(), Error> {
        self.upsert_token(token).map(|_| ())
    }

    fn delete_token(&self, id: &str) -> Result<(), Error> {
        let _writer = lock(&self.inner.writer);
        self.inner.write(|view| store::delete(view, id))
    }

    fn get_tokens(&self) -> Result<Vec<OAuthToken>, Error> {
        self.inner.reading(|_| self.inner.all_tokens())
    }

    fn delete_tokens(&self) -> Result<(), Error> {
        let _writer = lock(&self.inner.writer);
        let inner = &*self.inner;
        inner.write(|view| {
            match inner.apply_if_at(view.generation(), &[], &inner.clear_every_token())? {
                Outcome::Applied => Ok(()),
                Outcome::Conflict => Err(view.conflict()),
            }
        })?;
        inner.after_write()
    }

    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>, Error> {
        self.inner.reading(|view| view.record(id))
    }
}
