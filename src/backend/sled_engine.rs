//! The sled 0.34 engine: one sled tree per vault tree; a batch is one sled transaction
//! across the trees it touches, its expectations checked inside it.
//!
//! sled checks a CRC32 on every message it reads back, but anyone who can write the files
//! can recompute one, so what sled parses from them is untrusted too. The vendored sled
//! (`vendor/sled`, the package `tokenvault-sled`) returns a corruption error for a message
//! that does not parse whole, a node that breaks its invariants, or a fragment its node
//! cannot take; and, as with redb, every call into sled runs under
//! [`std::panic::catch_unwind`]: a panic left in sled's deeper code becomes `Corrupted`,
//! and the handle then refuses every later call (sled's state may be half-changed) until
//! the vault is opened again. Limits: the panic is still reported to the panic hook; an
//! application built with `panic = "abort"` is not protected; sled's background flusher
//! thread and its destructor are not covered; and the visitors the vault passes to a scan
//! run inside the guard too, so a panic of the vault's own would be reported as sled's
//! (its lints deny `unwrap`, `expect`, `panic!` and indexing in the library's code).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// What a panic of sled becomes.
fn panicked() -> Error {
    Error::corrupted("the storage engine failed on its files (sled panicked): the files are damaged")
}

/// What every call on a handle whose sled panicked becomes.
fn broken() -> Error {
    Error::corrupted(
        "the storage engine failed on its files earlier (sled panicked): the files are damaged, and \
         this handle no longer reads or writes them",
    )
}

/// Runs `f`, a call into sled, turning a panic into `Corrupted`; whether it panicked.
fn unwound<T>(f: impl FnOnce() -> Result<T, Error>) -> (Result<T, Error>, bool) {
    // A panic leaves sled's state unknown: the caller marks the handle broken and never
    // calls into it again, so nothing observes what the unwinding interrupted.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => (result, false),
        Err(_) => (Err(panicked()), true),
    }
}

/// [`Storage`] on a sled 0.34 database. A clone is another handle on the same database.
#[derive(Clone)]
pub(crate) struct SledStorage {
    db: sled::Db,
    trees: [sled::Tree; 8],
    /// Set when sled panicked on a call through any clone: every later call is refused.
    broken: Arc<AtomicBool>,
}

impl SledStorage {
    /// Runs `f` unless sled panicked on this database before; a panic now marks it broken.
    fn call<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(broken());
        }
        let (result, panicked) = unwound(f);
        if panicked {
            self.broken.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Opens (or creates) the sled database in `dir`. A panic of sled while it recovers
    /// its files is `Corrupted`.
    pub(crate) fn open(dir: &Path, cache_capacity: u64) -> Result<Self, Error> {
        unwound(|| Self::open_unguarded(dir, cache_capacity)).0
    }

    fn open_unguarded(dir: &Path, cache_capacity: u64) -> Result<Self, Error> {
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
        Ok(SledStorage {
            db,
            trees,
            broken: Arc::new(AtomicBool::new(false)),
        })
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
        self.call(|| {
            Ok(self
                .tree(tree)
                .get(key)
                .map_err(storage_error)?
                .map(|v| v.to_vec()))
        })
    }

    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
        self.call(|| {
            for entry in self.tree(tree).iter() {
                let (k, v) = entry.map_err(storage_error)?;
                if f(&k, &v) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error> {
        self.call(|| {
            let mut batcher = Batcher::new(batch, f);
            for entry in self.tree(tree).iter() {
                let (k, v) = entry.map_err(storage_error)?;
                batcher.push(&k, &v)?;
            }
            batcher.finish()
        })
    }

    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
        self.call(|| {
            for entry in self.tree(tree).iter() {
                let (k, v) = entry.map_err(storage_error)?;
                f(&k, &v)?;
            }
            Ok(())
        })
    }

    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        self.call(|| self.apply_if_unguarded(expects, ops))
    }

    fn flush(&self) -> Result<(), Error> {
        self.call(|| self.db.flush().map(|_| ()).map_err(storage_error))
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        self.call(|| self.db.size_on_disk().map_err(storage_error))
    }
}

impl SledStorage {
    fn apply_if_unguarded(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
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
        self.call(|| self.tree(tree).apply_batch(batch).map_err(storage_error))
    }
}
