//! The storage seam: named trees of bytes, with one all-or-nothing batch per write.
//!
//! The vault never talks to sled directly; it talks to [`Storage`]. Only ciphertext and
//! keyed hashes ever cross this seam. Invariant: [`Storage::apply`] applies every operation
//! of a batch or none of them.

use std::path::Path;
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::Error;

/// The trees of a vault, in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TreeName {
    Meta,
    Tokens,
    User,
    Access,
    Refresh,
    Grant,
    /// Each live record's id, sealed, at the record's slot: names a record that no longer
    /// opens.
    Ids,
    /// Records that `repair` set aside because they no longer open, with their ids when known.
    Quarantine,
}

impl TreeName {
    /// Every tree, in the order the storage opens them.
    pub(crate) const ALL: [TreeName; 8] = [
        TreeName::Meta,
        TreeName::Tokens,
        TreeName::User,
        TreeName::Access,
        TreeName::Refresh,
        TreeName::Grant,
        TreeName::Ids,
        TreeName::Quarantine,
    ];

    /// The tree's name on disk (also bound into record AAD).
    pub(crate) fn name(self) -> &'static str {
        match self {
            TreeName::Meta => "meta",
            TreeName::Tokens => "tokens",
            TreeName::User => "idx.user",
            TreeName::Access => "idx.access",
            TreeName::Refresh => "idx.refresh",
            TreeName::Grant => "idx.grant",
            TreeName::Ids => "idx.id",
            TreeName::Quarantine => "quarantine",
        }
    }
}

/// One write of a batch.
pub(crate) enum Op {
    Put(TreeName, Vec<u8>, Vec<u8>),
    Remove(TreeName, Vec<u8>),
}

/// Bytes read from storage: sled's reference-counted buffer, so a read copies nothing.
pub(crate) type Bytes = sled::IVec;

/// A key and its value.
pub(crate) type Entry = (Bytes, Bytes);

/// A callback over the entries of a tree: key, value.
pub(crate) type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// A callback over a batch of entries of a tree.
pub(crate) type BatchVisitor<'a> = dyn FnMut(&[Entry]) -> Result<(), Error> + 'a;

/// Byte storage in named trees.
pub(crate) trait Storage: Send + Sync {
    /// The value at `key` in `tree`.
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error>;
    /// Calls `f` with the entries of `tree` in key order until it returns `true`; whether
    /// it did.
    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error>;
    /// Calls `f` with every entry of `tree`, in key order, until it returns an error.
    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error>;
    /// Calls `f` with the entries of `tree` in key order, `batch` (at least 1) at a time,
    /// until it returns an error.
    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error>;
    /// Applies every operation, or none.
    fn apply(&self, ops: &[Op]) -> Result<(), Error>;
    /// Makes every applied batch durable (as far as the engine can).
    fn flush(&self) -> Result<(), Error>;
    /// The bytes the engine's files take on disk.
    fn size_on_disk(&self) -> Result<u64, Error>;
}

fn storage_error(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::Io(io),
        sled::Error::Corruption { .. } => Error::corrupted("the storage engine found its files damaged"),
        other => Error::Storage {
            message: other.to_string(),
        },
    }
}

/// [`Storage`] on a sled 0.34 database.
pub(crate) struct SledStorage {
    db: sled::Db,
    trees: [sled::Tree; 8],
}

impl SledStorage {
    /// Opens (or creates) the sled database in `dir`.
    pub(crate) fn open(dir: &Path, cache_capacity: u64) -> Result<Self, Error> {
        let config = sled::Config::new().path(dir).cache_capacity(cache_capacity);
        // The caller holds the vault's own lock, so sled's lock on its files can only be
        // held by the lingering background jobs of a handle just dropped: wait briefly.
        let deadline = Instant::now() + Duration::from_secs(2);
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if Instant::now() >= deadline {
                        return Err(Error::VaultLocked);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => break other.map_err(storage_error)?,
            }
        };
        let open = |t: TreeName| db.open_tree(t.name()).map_err(storage_error);
        let [meta, tokens, user, access, refresh, grant, ids, quarantine] = TreeName::ALL;
        let trees = [
            open(meta)?,
            open(tokens)?,
            open(user)?,
            open(access)?,
            open(refresh)?,
            open(grant)?,
            open(ids)?,
            open(quarantine)?,
        ];
        Ok(SledStorage { db, trees })
    }

    fn tree(&self, t: TreeName) -> &sled::Tree {
        let [meta, tokens, user, access, refresh, grant, ids, quarantine] = &self.trees;
        match t {
            TreeName::Meta => meta,
            TreeName::Tokens => tokens,
            TreeName::User => user,
            TreeName::Access => access,
            TreeName::Refresh => refresh,
            TreeName::Grant => grant,
            TreeName::Ids => ids,
            TreeName::Quarantine => quarantine,
        }
    }
}

impl Storage for SledStorage {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.tree(tree).get(key).map_err(storage_error)
    }

    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
        for entry in self.tree(tree).iter() {
            let (k, v) = entry.map_err(storage_error)?;
            if f(&k, &v) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error> {
        // The entries share sled's buffers (no copy); a batch at a time bounds the memory.
        let mut entries = Vec::with_capacity(batch.max(1));
        for entry in self.tree(tree).iter() {
            entries.push(entry.map_err(storage_error)?);
            if entries.len() >= batch {
                f(&entries)?;
                entries.clear();
            }
        }
        if entries.is_empty() {
            Ok(())
        } else {
            f(&entries)
        }
    }

    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
        for entry in self.tree(tree).iter() {
            let (k, v) = entry.map_err(storage_error)?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn apply(&self, ops: &[Op]) -> Result<(), Error> {
        // sled 0.34 panics on a transaction over no trees.
        if ops.is_empty() {
            return Ok(());
        }
        // One sled batch per touched tree, all applied in one transaction.
        let mut batches: Vec<(TreeName, sled::Batch)> = Vec::new();
        for op in ops {
            let (Op::Put(t, ..) | Op::Remove(t, ..)) = op;
            let batch = match batches.iter_mut().position(|(bt, _)| bt == t) {
                Some(i) => batches.get_mut(i),
                None => {
                    batches.push((*t, sled::Batch::default()));
                    batches.last_mut()
                }
            };
            let Some((_, batch)) = batch else { continue };
            match op {
                Op::Put(_, k, v) => batch.insert(k.as_slice(), v.as_slice()),
                Op::Remove(_, k) => batch.remove(k.as_slice()),
            }
        }
        let trees: Vec<&sled::Tree> = batches.iter().map(|(t, _)| self.tree(*t)).collect();
        trees
            .as_slice()
            .transaction(|views| {
                for (view, (_, batch)) in views.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => storage_error(e),
                TransactionError::Abort(()) => Error::Storage {
                    message: "transaction aborted".into(),
                },
            })
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(storage_error)
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.db.size_on_disk().map_err(storage_error)
    }
}

impl SledStorage {
    /// The files and directories of a sled database.
    const FILES: [&'static str; 3] = ["conf", "db", "blobs"];
    /// sled's snapshots are files named `snap.<hex>` (`.generating` while written).
    const SNAPSHOT_PREFIX: &'static str = "snap.";

    /// Whether `dir` holds a sled database (its `conf` and `db` files).
    pub(crate) fn exists_in(dir: &Path) -> bool {
        dir.join("conf").is_file() && dir.join("db").is_file()
    }

    /// Whether `name`, in a database's directory, is one of sled's files.
    pub(crate) fn is_engine_file(name: &str) -> bool {
        Self::FILES.contains(&name) || name.starts_with(Self::SNAPSHOT_PREFIX)
    }

    /// Waits (at most `patience`) until no process holds sled's lock on the database in
    /// `dir`. sled releases it only when the last of its background jobs lets go of the
    /// file, which can be just after the database is dropped.
    pub(crate) fn wait_until_released(dir: &Path, patience: Duration) {
        let deadline = Instant::now() + patience;
        while let Ok(db) = std::fs::File::open(dir.join("db")) {
            match db.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => break,
            }
        }
    }

    /// Writes `entries` into `tree` of a database that nothing reads yet (a compaction's
    /// new generation): one sled batch, no transaction.
    pub(crate) fn load(&self, tree: TreeName, entries: &[Entry]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.clone(), v.clone());
        }
        self.tree(tree).apply_batch(batch).map_err(storage_error)
    }
}
