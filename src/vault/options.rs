//! `VaultOptions`, and what `create` and `open` do with them.
//!
//! Invariants: `open` takes the vault's lock before it reads anything, refuses a header
//! asking more KDF work than the options allow before Argon2 runs, and creates nothing in
//! a directory that holds no vault.

use std::fs;
use std::path::Path;

use super::compaction::{compaction_op, read_compaction, COMPACT_GROWTH, COMPACT_MIN_GROWTH};
use super::fs::{create_private_dir, lock_vault, restrict_dir, restrict_files, LOCK_FILE};
use super::generations::{self, Generation};
use super::seals::{read_seals, seals_op};
use super::{derive_keys, Vault, HEADER_KEY};
use crate::backend::{Engine, LocalConfig, LocalStorage, Op, Storage, TreeName};
use crate::crypto::header::Header;
use crate::crypto::kdf::{KdfParams, PassphraseKey};
use crate::crypto::keys::{DataKey, VaultKeys, VAULT_ID_LEN};
use crate::crypto::random_bytes;
use crate::Error;

/// How to create or open a [`Vault`].
///
/// ```
/// use tokenvault::{KdfParams, VaultOptions};
///
/// let dir = tempfile::tempdir()?;
/// let vault = VaultOptions::new()
///     .kdf(KdfParams::FLOOR)   // fast, for this example; the default is stronger
///     .durable(false)          // buffered writes: faster, a crash may lose the last ones
///     .create(dir.path().join("vault"), "correct horse battery staple")?;
/// # drop(vault);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct VaultOptions {
    pub(super) kdf: KdfParams,
    pub(super) max_kdf: KdfParams,
    pub(super) allow_weaker_kdf: bool,
    pub(super) durable: bool,
    pub(super) cache_capacity: u64,
    pub(super) seals_per_key: u64,
    pub(super) auto_compact: bool,
    pub(super) engine: Engine,
    pub(super) timeout: std::time::Duration,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            kdf: KdfParams::RECOMMENDED,
            max_kdf: Self::DEFAULT_MAX_KDF,
            allow_weaker_kdf: false,
            durable: true,
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
            seals_per_key: Self::DEFAULT_SEALS_PER_KEY,
            auto_compact: true,
            engine: Engine::Sled,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl VaultOptions {
    /// Seals under one record key before the vault moves to a new key epoch: 2^31. Random
    /// 96-bit nonces stay below a 2^-32 collision chance up to 2^32 seals per key.
    pub const DEFAULT_SEALS_PER_KEY: u64 = 1 << 31;

    /// The most KDF work `open` accepts from a vault by default: 256 MiB, 4 passes, 8 lanes
    /// (see [`VaultOptions::max_kdf`]). Four times [`KdfParams::RECOMMENDED`]'s memory, one
    /// pass more and twice its lanes: room for a vault made stronger on purpose, while a
    /// doctored header costs at most about five ordinary unlocks (about a second here)
    /// instead of the ceiling's 1 GiB and 8 passes (tens of seconds, or an exhausted small
    /// device).
    pub const DEFAULT_MAX_KDF: KdfParams = KdfParams {
        memory_kib: 256 * 1024,
        iterations: 4,
        parallelism: 8,
    };

    /// The cache budget by default: 32 MiB (24 MiB of the engine's pages, 8 MiB of values
    /// read). A vault of 100,000 tokens peaked at 97-120 MiB of RSS with the whole 32 MiB
    /// given to the engine in `docs/performance.md`; see [`VaultOptions::cache_capacity`]
    /// for the trade.
    pub const DEFAULT_CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

    /// The defaults: [`KdfParams::RECOMMENDED`], durable writes, a 32 MiB page cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Argon2id parameters that `create` writes. `open` unlocks with the parameters
    /// stored in the vault, then upgrades a vault whose parameters are all weaker than
    /// these. `change_passphrase` and `rekey` write, in each parameter, the larger of these
    /// and the vault's stored ones, so they never weaken the vault (unless
    /// [`allow_weaker_kdf`](VaultOptions::allow_weaker_kdf) says so).
    ///
    /// # Security
    /// Lower parameters make every passphrase guess cheaper for whoever holds a copy of the
    /// vault. Parameters outside [`KdfParams::FLOOR`]..=[`KdfParams::CEILING`] are refused
    /// with `InvalidKdfParams`.
    #[must_use]
    pub fn kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// The most Argon2id work `open` accepts from a vault's header, in each parameter
    /// (default [`DEFAULT_MAX_KDF`](VaultOptions::DEFAULT_MAX_KDF): 256 MiB, t=4, p=8). The
    /// parameters given to [`kdf`](VaultOptions::kdf) are always accepted too, so a vault
    /// written with these options opens with them.
    ///
    /// # Security
    /// The header's parameters are authenticated only by the key they derive, so a doctored
    /// header can ask for any cost up to [`KdfParams::CEILING`] (1 GiB, t=8) and have the
    /// opener pay it before the wrong key shows. A header asking more than this bound is
    /// refused with `InvalidKdfParams` before Argon2 runs. Raise it to open vaults made
    /// stronger elsewhere.
    #[must_use]
    pub fn max_kdf(mut self, max: KdfParams) -> Self {
        self.max_kdf = max;
        self
    }

    /// `false` (the default): `change_passphrase` and `rekey` keep, in each parameter, the
    /// larger of the vault's stored KDF parameters and [`kdf`](VaultOptions::kdf)'s. `true`:
    /// they write `kdf`'s parameters as they are, even if weaker than the stored ones.
    ///
    /// # Security
    /// Weaker parameters make every passphrase guess cheaper for whoever copies the vault
    /// from then on; ask for them only on purpose (a small device that must open faster).
    #[must_use]
    pub fn allow_weaker_kdf(mut self, allow: bool) -> Self {
        self.allow_weaker_kdf = allow;
        self
    }

    /// The parameters a new header of a vault whose header holds `stored` gets.
    pub(super) fn kdf_to_write(&self, stored: &KdfParams) -> KdfParams {
        if self.allow_weaker_kdf {
            self.kdf
        } else {
            self.kdf.strongest_of(stored)
        }
    }

    /// `true` (the default): every save and delete is flushed to disk before it returns.
    /// `false`: writes are buffered and flushed in the background about every 500 ms and
    /// on [`Vault::flush`] and drop (on redb also at every 512th write); a crash or power
    /// loss may lose the last writes (never tear one).
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The memory a local vault caches its files in, in bytes (default
    /// [`DEFAULT_CACHE_CAPACITY`](VaultOptions::DEFAULT_CACHE_CAPACITY), 32 MiB): part of
    /// it (a quarter on sled, seven eighths on redb; at most 64 MiB) keeps the index
    /// entries and sealed records lookups read, as the files hold them (never decrypted),
    /// so a repeated lookup skips the engine's tree; the storage engine's page cache gets
    /// the rest. An etcd vault caches nothing.
    ///
    /// It bounds memory use, not correctness. A vault larger than the cache reads its
    /// pages back from disk: at 100,000 tokens (~200 MB of files) lookups run about 4x
    /// faster with the cache at 1 GiB than at 32 MiB, for 2-3x the peak memory (see
    /// `docs/performance.md`). Small vaults fit whatever the setting.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// How many records may be sealed under one record key before the vault starts a new
    /// key epoch by itself (default [`VaultOptions::DEFAULT_SEALS_PER_KEY`], 2^31; at least 1).
    ///
    /// # Security
    /// Records use random 96-bit nonces; the budget keeps the chance of a repeated nonce
    /// under one key negligible. Raising it above 2^32 weakens that guarantee.
    #[must_use]
    pub fn seals_per_key(mut self, seals: u64) -> Self {
        self.seals_per_key = seals.max(1);
        self
    }

    /// `true` (the default): `open` compacts the vault when its files have grown to more
    /// than twice (and at least 4 MiB more than) their size right after the last
    /// compaction, so dead data never outweighs live data for long. Growth that is live
    /// data does not count: a handle adds to that size, when it closes, its growth times
    /// the tokens it added and kept over every token it wrote, so a vault just filled is
    /// not rewritten at its next open (`docs/format.md` has the rule). `false`: only
    /// [`Vault::compact`] does, for callers that schedule it themselves.
    ///
    /// Either way, `open` compacts a vault in the layout from before compaction existed,
    /// and one whose last passphrase change, re-key or KDF upgrade was interrupted before
    /// its compaction: those compactions remove secrets that an old passphrase or key
    /// still opens.
    #[must_use]
    pub fn auto_compact(mut self, auto: bool) -> Self {
        self.auto_compact = auto;
        self
    }

    /// The storage engine `create` writes the vault with (default [`Engine::Sled`]). `open`
    /// ignores it: a vault is opened with the engine that wrote it, recognised from its
    /// files. [`Engine::Redb`] needs the feature `redb`.
    ///
    /// ```
    /// # #[cfg(feature = "redb")] {
    /// use tokenvault::{Engine, KdfParams, VaultOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let options = VaultOptions::new().kdf(KdfParams::FLOOR);
    /// let vault = options.clone().engine(Engine::Redb).create(dir.path().join("v"), "pass")?;
    /// assert_eq!(vault.engine(), Engine::Redb);
    /// drop(vault);
    /// // Opened with the default options (which name sled), it is still a redb vault.
    /// assert_eq!(options.open(dir.path().join("v"), "pass")?.engine(), Engine::Redb);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The deadline of every call to a remote engine by default: 5 s.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

    /// The deadline of every call to a remote engine (an etcd cluster), default
    /// [`DEFAULT_TIMEOUT`](VaultOptions::DEFAULT_TIMEOUT): a cluster without a quorum, or
    /// out of reach, makes a call fail with `Storage` after it, never hang. Local engines
    /// ignore it.
    #[must_use]
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates a vault at `location`: a directory path (as [`create`](VaultOptions::create)),
    /// or, with the feature `etcd`, `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`: a vault in an
    /// etcd cluster under that key prefix, which any number of processes may then open at
    /// once ([`open_at`](VaultOptions::open_at)).
    ///
    /// # Errors
    /// As `create`; for an etcd location also `Storage` (a malformed location, an
    /// unreachable cluster, a build without the feature) and `VaultExists` (the prefix
    /// holds a vault).
    pub fn create_at(&self, location: &str, passphrase: &str) -> Result<Vault, Error> {
        if location.starts_with("etcd://") {
            return self.create_remote(location, passphrase);
        }
        self.create(location, passphrase)
    }

    /// Opens the vault at `location`: a directory path (as [`open`](VaultOptions::open)) or
    /// an `etcd://` location (see [`create_at`](VaultOptions::create_at)).
    ///
    /// # Errors
    /// As `open`; for an etcd location also `Storage` (a malformed location, an
    /// unreachable cluster, a build without the feature).
    pub fn open_at(&self, location: &str, passphrase: &str) -> Result<Vault, Error> {
        if location.starts_with("etcd://") {
            return self.open_remote(location, passphrase);
        }
        self.open(location, passphrase)
    }

    #[cfg(not(feature = "etcd"))]
    fn create_remote(&self, _location: &str, _passphrase: &str) -> Result<Vault, Error> {
        Err(no_etcd())
    }

    #[cfg(not(feature = "etcd"))]
    fn open_remote(&self, _location: &str, _passphrase: &str) -> Result<Vault, Error> {
        Err(no_etcd())
    }

    #[cfg(feature = "etcd")]
    fn create_remote(&self, location: &str, passphrase: &str) -> Result<Vault, Error> {
        use crate::backend::{EtcdLocation, EtcdStorage, Expect, Outcome};
        self.kdf.validate()?;
        let parsed = EtcdLocation::parse(location)?;
        let storage = EtcdStorage::connect(&parsed, self.timeout)?;
        if !storage.is_empty()? {
            return Err(Error::VaultExists);
        }
        let mut vault_id = [0u8; VAULT_ID_LEN];
        random_bytes(&mut vault_id)?;
        let data_key = DataKey::generate()?;
        let (header, kek) = Header::for_passphrase(vault_id, self.kdf, 0, passphrase.as_bytes(), &data_key)?;
        let keys = derive_keys(data_key, vault_id, 0);
        // Two creators at once: the one whose header lands first wins; the other finds
        // the header there.
        let absent = |key: &[u8]| Expect {
            tree: TreeName::Meta,
            key: key.to_vec(),
            value: None,
        };
        let outcome = storage.apply_if(
            &[absent(HEADER_KEY), absent(super::seals::SEALS_KEY)],
            &[
                Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), header.encode()),
                seals_op(&keys, 0, 0),
            ],
        )?;
        if outcome == Outcome::Conflict {
            return Err(Error::VaultExists);
        }
        Ok(Vault::assemble(
            Path::new(location),
            self.clone(),
            storage,
            Engine::Etcd,
            None,
            Generation::Numbered(1),
            header,
            kek,
            keys,
            0,
        ))
    }

    #[cfg(feature = "etcd")]
    fn open_remote(&self, location: &str, passphrase: &str) -> Result<Vault, Error> {
        use crate::backend::{EtcdLocation, EtcdStorage, Expect, Outcome};
        self.kdf.validate()?;
        let parsed = EtcdLocation::parse(location)?;
        let storage = EtcdStorage::connect(&parsed, self.timeout)?;
        let Some(bytes) = storage.get(TreeName::Meta, HEADER_KEY)? else {
            return Err(Error::VaultNotFound);
        };
        let (mut header, mut kek, keys) = self.unlock(&bytes, passphrase)?;
        if let Some((upgraded, new_kek)) = self.kdf_upgrade(&header, &keys, passphrase)? {
            // Only over the header this open read: another process's change wins.
            let expect = Expect {
                tree: TreeName::Meta,
                key: HEADER_KEY.to_vec(),
                value: Some(bytes.clone()),
            };
            let put = Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), upgraded.encode());
            if storage.apply_if(&[expect], &[put])? == Outcome::Applied {
                header = upgraded;
                kek = new_kek;
            }
        }
        let vault = Vault::assemble(
            Path::new(location),
            self.clone(),
            storage,
            Engine::Etcd,
            None,
            Generation::Numbered(1),
            header,
            kek,
            keys,
            0,
        );
        // The seal counter, read as the header's: another process may rotate the key
        // epoch between the two reads (the reload reads both again until they match).
        vault.inner.reload_seals()?;
        vault.inner.check_records_open()?;
        Ok(vault)
    }

    /// Parses a stored header, refuses one asking more KDF work than these options allow
    /// (before Argon2 runs), and unlocks it: the header, its passphrase key, the vault's keys.
    fn unlock(&self, bytes: &[u8], passphrase: &str) -> Result<(Header, PassphraseKey, VaultKeys), Error> {
        let header = Header::parse(bytes)?;
        header.kdf.check_within(&self.max_kdf.strongest_of(&self.kdf))?;
        let (data_key, kek) = header.unlock(passphrase.as_bytes())?;
        let keys = derive_keys(data_key, header.vault_id, header.epoch);
        Ok((header, kek, keys))
    }

    /// The header to write instead of `header` when its KDF parameters are all weaker than
    /// these options', with its passphrase key; `None` when it needs no upgrade.
    fn kdf_upgrade(
        &self,
        header: &Header,
        keys: &VaultKeys,
        passphrase: &str,
    ) -> Result<Option<(Header, PassphraseKey)>, Error> {
        if !header.kdf.is_weaker_than(&self.kdf) {
            return Ok(None);
        }
        Header::for_passphrase(
            header.vault_id,
            self.kdf,
            header.epoch,
            passphrase.as_bytes(),
            keys.data_key(),
        )
        .map(Some)
    }

    /// How the local engine is opened.
    pub(super) fn local_config(&self) -> LocalConfig {
        LocalConfig {
            cache_capacity: self.cache_capacity,
            durable: self.durable,
        }
    }

    /// Creates a new vault at `dir` (missing parents are created).
    ///
    /// # Errors
    /// `VaultExists` if `dir` holds a vault or any other file; `InvalidKdfParams`;
    /// `VaultLocked`; `Io`/`Storage`.
    pub fn create(&self, dir: impl AsRef<Path>, passphrase: &str) -> Result<Vault, Error> {
        let dir = dir.as_ref();
        self.kdf.validate()?;
        if dir.exists() {
            if !dir.is_dir() || fs::read_dir(dir)?.next().is_some() {
                return Err(Error::VaultExists);
            }
        } else {
            create_private_dir(dir)?;
        }
        restrict_dir(dir)?;
        let lock = lock_vault(dir)?;
        let generation = Generation::Numbered(1);
        let gen_dir = generation.dir(dir);
        create_private_dir(&gen_dir)?;
        lock.watch(&gen_dir);
        let storage = LocalStorage::create(self.engine, &gen_dir, self.local_config())?;
        if storage.get(TreeName::Meta, HEADER_KEY)?.is_some() {
            return Err(Error::VaultExists);
        }
        let mut vault_id = [0u8; VAULT_ID_LEN];
        random_bytes(&mut vault_id)?;
        let data_key = DataKey::generate()?;
        let (header, kek) = Header::for_passphrase(vault_id, self.kdf, 0, passphrase.as_bytes(), &data_key)?;
        let keys = derive_keys(data_key, vault_id, 0);
        storage.apply(&[
            Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), header.encode()),
            seals_op(&keys, 0, 0),
        ])?;
        storage.flush()?;
        let baseline = storage.size_on_disk()?;
        storage.apply(&[compaction_op(&keys, baseline, false)])?;
        storage.flush()?;
        restrict_files(dir)?;
        generations::sync_tree(&gen_dir)?;
        let Generation::Numbered(n) = generation else {
            return Err(Error::corrupted("a new vault starts at generation 1"));
        };
        generations::switch(dir, n)?;
        let engine = storage.engine();
        Ok(Vault::assemble(
            dir,
            self.clone(),
            storage,
            engine,
            Some(lock),
            generation,
            header,
            kek,
            keys,
            0,
        ))
    }

    /// Opens the vault at `dir` with its passphrase. On Unix the directory is made 0700 and
    /// its files 0600 again.
    ///
    /// # Errors
    /// `VaultNotFound` if `dir` holds no vault (nothing is created there); `VaultLocked` if
    /// it is open elsewhere; `Io` if its lock file is a symbolic link (never followed);
    /// `Corrupted` if its header fails its checks; `InvalidKdfParams` if the header asks for
    /// more KDF work than [`max_kdf`](VaultOptions::max_kdf) (and [`kdf`](VaultOptions::kdf))
    /// allow; `WrongPassphrase`; `Io`/`Storage`.
    pub fn open(&self, dir: impl AsRef<Path>, passphrase: &str) -> Result<Vault, Error> {
        self.open_with(dir.as_ref(), passphrase, |storage| storage)
    }

    /// `open`, with the storage wrapped by `wrap` (fault-injection tests wrap it).
    pub(crate) fn open_with<S: Storage + 'static>(
        &self,
        dir: &Path,
        passphrase: &str,
        wrap: impl FnOnce(LocalStorage) -> S,
    ) -> Result<Vault, Error> {
        self.kdf.validate()?;
        if !dir.is_dir() || generations::live(dir).ok() == Some(None) {
            return Err(Error::VaultNotFound);
        }
        // Every vault has had a lock file since it was created; a sled database without
        // one is not a vault of ours.
        let was_vault = dir.join(LOCK_FILE).is_file();
        let lock = lock_vault(dir)?;
        // Checked again under the lock: a compaction may have switched generations.
        let generation = generations::live(dir)?.ok_or(Error::VaultNotFound)?;
        lock.watch(&generation.dir(dir));
        let gen_dir = generation.dir(dir);
        let storage = match Engine::in_dir(&gen_dir) {
            Some(engine) => Some(LocalStorage::open(engine, &gen_dir, self.local_config())?),
            None => None,
        };
        let header = match &storage {
            Some(storage) => storage.get(TreeName::Meta, HEADER_KEY)?,
            None => None,
        };
        let (Some(storage), Some(bytes)) = (storage, header) else {
            drop(lock);
            if was_vault {
                return Err(Error::corrupted(
                    "the vault header is missing: the storage files are damaged",
                ));
            }
            let _ = fs::remove_file(dir.join(LOCK_FILE));
            return Err(Error::VaultNotFound);
        };
        let (mut header, mut kek, keys) = self.unlock(&bytes, passphrase)?;
        let seals = read_seals(&storage, &keys, header.epoch)?;
        let compaction = read_compaction(&storage, &keys)?;
        let mut compact = generation == Generation::Legacy || compaction.is_none_or(|c| c.pending);
        if let (true, Some(c)) = (self.auto_compact, compaction) {
            let size = storage.size_on_disk()?;
            compact |=
                size > c.baseline.saturating_mul(COMPACT_GROWTH) && size - c.baseline >= COMPACT_MIN_GROWTH;
        }
        if let Some((upgraded, new_kek)) = self.kdf_upgrade(&header, &keys, passphrase)? {
            // The old header stays in the files until the compaction below (or, after a
            // crash, the one the pending flag asks for at the next open).
            let baseline = compaction.map_or(0, |c| c.baseline);
            storage.apply(&[
                Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), upgraded.encode()),
                compaction_op(&keys, baseline, true),
            ])?;
            storage.flush()?;
            header = upgraded;
            kek = new_kek;
            compact = true;
        }
        restrict_dir(dir)?;
        restrict_files(dir)?;
        let engine = storage.engine();
        let vault = Vault::assemble(
            dir,
            self.clone(),
            wrap(storage),
            engine,
            Some(lock),
            generation,
            header,
            kek,
            keys,
            seals,
        );
        vault.inner.check_records_open()?;
        if compact {
            vault.compact()?;
        } else {
            generations::remove_stale(dir, generation)?;
        }
        Ok(vault)
    }
}

/// The error of an `etcd://` location in a build without the feature.
#[cfg(not(feature = "etcd"))]
fn no_etcd() -> Error {
    Error::Storage {
        message: "an etcd:// location needs tokenvault built with its feature `etcd`".into(),
    }
}
