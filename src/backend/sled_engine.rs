//! The sled 0.34 engine: one sled tree per vault tree; a batch is one sled transaction
//! across the trees it touches, its expectations checked inside it.

use std::path::Path;
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{BatchVisitor, Batcher, Bytes, Entry, EntryVisitor, Expect, Op, Outcome, Storage, TreeName};
use crate::Error;

fn storage_error(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::Io(io),
        sled::Error::Corruption { .. } => Error::corrupted("the storage engine found its files damaged"),
        other => Error::Storage {
            message: other.to_string(),
        },
    }
}

/// [`Storage`] on a sled 0.34 database. A clone is another handle on the same database.
#[derive(Clone)]
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
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(storage_error)?
            .map(|v| v.to_vec()))
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
        let mut batcher = Batcher::new(batch, f);
        for entry in self.tree(tree).iter() {
            let (k, v) = entry.map_err(storage_error)?;
            batcher.push(&k, &v)?;
        }
        batcher.finish()
    }

    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
        for entry in self.tree(tree).iter() {
            let (k, v) = entry.map_err(storage_error)?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        // sled 0.34 panics on a transaction over no trees.
        if ops.is_empty() && expects.is_empty() {
            return Ok(Outcome::Applied);
        }
        // One sled batch per touched tree, all applied in one transaction that first checks
        // the expectations in it.
        let mut batches: Vec<(TreeName, sled::Batch)> = Vec::new();
        let touched = ops.iter().map(Op::tree).chain(expects.iter().map(|e| e.tree));
        for t in touched {
            if !batches.iter().any(|(bt, _)| *bt == t) {
                batches.push((t, sled::Batch::default()));
            }
        }
        for op in ops {
            let t = op.tree();
            let Some((_, batch)) = batches.iter_mut().find(|(bt, _)| *bt == t) else {
                continue;
            };
            match op {
                Op::Put(_, k, v) => batch.insert(k.as_slice(), v.as_slice()),
                Op::Remove(_, k) => batch.remove(k.as_slice()),
                // sled has no range delete: every key the tree holds now (the vault's writer
                // lock keeps other writers of this process out meanwhile).
                Op::Clear(_) => {
                    for entry in self.tree(t).iter().keys() {
                        batch.remove(entry.map_err(storage_error)?);
                    }
                }
            }
        }
        let trees: Vec<&sled::Tree> = batches.iter().map(|(t, _)| self.tree(*t)).collect();
        let result = trees.as_slice().transaction(|views| {
            for expect in expects {
                let Some(view) = batches
                    .iter()
                    .position(|(t, _)| *t == expect.tree)
                    .and_then(|i| views.get(i))
                else {
                    return Err(ConflictableTransactionError::Abort(()));
                };
                let now = view.get(expect.key.as_slice())?;
                if now.as_deref() != expect.value.as_deref() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            for (view, (_, batch)) in views.iter().zip(&batches) {
                view.apply_batch(batch)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(Outcome::Applied),
            Err(TransactionError::Abort(())) => Ok(Outcome::Conflict),
            Err(TransactionError::Storage(e)) => Err(storage_error(e)),
        }
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
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.tree(tree).apply_batch(batch).map_err(storage_error)
    }
}
