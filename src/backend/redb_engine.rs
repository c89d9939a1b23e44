//! The redb 4.6 engine: every tree in one table, `vault`, each key prefixed by its tree's
//! number ([`TreeName::tag`]); a batch is one redb write transaction, its expectations
//! checked inside it. A batch is committed without `fdatasync` (`Durability::None`; the
//! exceptions are below). A durable vault then writes the batch's writes to its journal
//! and `fdatasync`s that
//! (see [`super::redb_journal`]): one small frame, written in place, instead of the twenty
//! pages a durable redb commit writes. A buffered one does not, and `flush` makes everything committed so
//! far durable, as does a background thread about every 500 ms (the promise of
//! `VaultOptions::durable(false)`) and every 512th commit (which bounds the pages held by
//! buffered commits, see [`DURABLE_EVERY`]). A durable vault commits a batch too large for
//! a frame with `Durability::Immediate`. Opening replays a journal a crash left.
//!
//! redb trusts its file: on a damaged or hostile one, many of its reads and writes panic
//! (an index out of range, an `unwrap`, `unreachable!`) instead of returning an error. So
//! every call into redb runs under [`std::panic::catch_unwind`] here, and a panic becomes
//! `Corrupted`. After one, the handle is broken: every later call is `Corrupted` without
//! touching redb, whose state the panic may have left half-changed, and the database is
//! dropped (closed) under `catch_unwind` too. Limits: the panic is still reported to the
//! process's panic hook (printed, by default); an application built with `panic = "abort"`
//! is aborted; and a panic that redb raises while it unwinds another (a destructor that
//! panics) aborts the process, which no caller can prevent.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::redb_journal::{self, Journal, JOURNAL_FILE};
use super::{
    BatchVisitor, Batcher, Bytes, Entry, EntryVisitor, Expect, LocalConfig, Op, Outcome, Storage, TreeName,
};
use crate::Error;

/// The one table: `tag(tree) || key` → value.
const TABLE: TableDefinition<'static, &'static [u8], &'static [u8]> = TableDefinition::new("vault");

fn redb_error(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        // redb reports a file that is not a database of its own (a wrong magic number, a
        // header that does not parse) as invalid data.
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Error::corrupted(format!("the storage engine's file is damaged ({io})"))
        }
        redb::Error::Io(io) => Error::Io(io),
        redb::Error::DatabaseAlreadyOpen => Error::VaultLocked,
        redb::Error::Corrupted(what) => {
            Error::corrupted(format!("the storage engine found its file damaged ({what})"))
        }
        other => Error::Storage {
            message: other.to_string(),
        },
    }
}

/// What a panic of redb becomes.
fn panicked() -> Error {
    Error::corrupted("the storage engine failed on its file (redb panicked): the file is damaged")
}

/// What every call on a handle whose redb panicked becomes.
fn broken() -> Error {
    Error::corrupted(
        "the storage engine failed on its file earlier (redb panicked): the file is damaged, and this \
         handle no longer reads or writes it",
    )
}

/// Runs `f`, a call into redb, turning a panic into `Corrupted`; whether it panicked.
fn unwound<T>(f: impl FnOnce() -> Result<T, Error>) -> (Result<T, Error>, bool) {
    // A panic leaves redb's state unknown: the caller marks the handle broken and never
    // calls into it again, so nothing observes what the unwinding interrupted.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => (result, false),
        Err(_) => (Err(panicked()), true),
    }
}

/// Runs `f` on the database unless `broken` says redb panicked on it before; a panic now
/// sets `broken`.
fn call<T>(
    db: &Guarded,
    broken: &AtomicBool,
    f: impl FnOnce(&Database) -> Result<T, Error>,
) -> Result<T, Error> {
    if broken.load(Ordering::SeqCst) {
        return Err(self::broken());
    }
    let db = db.db()?;
    let (result, panicked) = unwound(|| f(db));
    if panicked {
        broken.store(true, Ordering::SeqCst);
    }
    result
}

/// The database, with the journal of a durable handle; closed under `catch_unwind` when
/// the last handle goes (closing writes to the file, and redb may panic on a damaged one
/// there too), after a checkpoint that empties the journal.
struct Guarded {
    db: Option<Database>,
    /// A durable handle's journal; `None` for a buffered one.
    journal: Option<Mutex<Journal>>,
    /// Whether redb panicked on this database: then nothing calls into it again.
    broken: Arc<AtomicBool>,
}

impl Guarded {
    fn db(&self) -> Result<&Database, Error> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::internal("the redb database is already closed"))
    }

    /// The journal, locked; `None` for a buffered handle.
    fn journal(&self) -> Option<std::sync::MutexGuard<'_, Journal>> {
        self.journal
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Errors cannot be reported here: a journal left as it is replays at the next open.
        if let Some(journal) = self.journal.take() {
            let mut journal = journal.into_inner().unwrap_or_else(|e| e.into_inner());
            if journal.holds_frames() {
                let _ = checkpoint(self, &mut journal);
            }
        }
        if let Some(db) = self.db.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// Makes every commit so far durable (one durable redb commit) and then empties the
/// journal, whose frames that commit covers.
fn checkpoint(db: &Guarded, journal: &mut Journal) -> Result<(), Error> {
    call(db, &db.broken, durable_commit)?;
    journal.empty()
}

/// The table's key of `key` in `tree`.
fn prefixed(tree: TreeName, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(tree.tag());
    k.extend_from_slice(key);
    k
}

/// A callback over the entries of a tree: key, value; `Ok(false)` stops.
type ScanVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, Error> + 'a;

/// How often a buffered vault's commits are made durable in the background.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// A buffered vault also makes every this many-th commit durable. redb frees the pages a
/// commit replaced only at the next durable commit: until then every page a buffered commit
/// copies stays allocated, and a fast fill (thousands of commits between two background
/// flushes) grew the file to twice its live size. Measured at 100,000 tokens: about 2,200
/// bytes per token after a buffered fill without this bound, about 1,600 with it.
const DURABLE_EVERY: usize = 512;

/// [`Storage`] on a redb 4.6 database file. A clone is another handle on the same database.
#[derive(Clone)]
pub(crate) struct RedbStorage {
    db: Arc<Guarded>,
    path: PathBuf,
    /// Whether a batch was committed without `fdatasync` since the last durable commit.
    unflushed: Arc<AtomicBool>,
    /// Batches committed without `fdatasync` since the last one made durable in line
    /// (see [`DURABLE_EVERY`]).
    buffered_commits: Arc<AtomicUsize>,
    /// Stops the background flusher when the last handle goes.
    _flusher: Option<Arc<Flusher>>,
}

/// The background flusher of a buffered database: wakes every [`FLUSH_EVERY`], or at once
/// when dropped (with the last handle), and holds the database only while it flushes.
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
    }
}

impl Flusher {
    fn start(
        db: Weak<Guarded>,
        unflushed: Arc<AtomicBool>,
        broken: Arc<AtomicBool>,
    ) -> Result<Flusher, Error> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        std::thread::Builder::new()
            .name("tokenvault-redb-flush".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let deadline = Instant::now() + FLUSH_EVERY;
                    while !*guard {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        guard = wake
                            .wait_timeout(guard, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    if *guard {
                        return;
                    }
                    // Flushed outside the lock, so that dropping the last handle never waits
                    // for a flush; the last handle's own flush runs in `Vault`'s drop.
                    drop(guard);
                    if let Some(db) = db.upgrade() {
                        if unflushed.swap(false, Ordering::SeqCst)
                            && call(&db, &broken, durable_commit).is_err()
                        {
                            unflushed.store(true, Ordering::SeqCst);
                        }
                    }
                    guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                }
            })?;
        Ok(Flusher { stop })
    }
}

/// The table opened for reading.
type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The table, for reading; `None` in a database that does not have it (one that never
/// was a vault: `open` writes nothing to it).
fn read_table(txn: &redb::ReadTransaction) -> Result<Option<ReadTable>, Error> {
    match txn.open_table(TABLE) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(redb_error(e)),
    }
}

/// An empty commit with `fdatasync`: every earlier commit is durable after it.
fn durable_commit(db: &Database) -> Result<(), Error> {
    let mut txn = db.begin_write().map_err(redb_error)?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| Error::Storage {
            message: e.to_string(),
        })?;
    txn.commit().map_err(redb_error)
}

impl RedbStorage {
    /// Opens the redb database file at `path`, or creates it (`create`).
    pub(crate) fn open(path: &Path, config: LocalConfig, create: bool) -> Result<Self, Error> {
        let broken = Arc::new(AtomicBool::new(false));
        let mut db = Guarded {
            db: Some(unwound(|| Self::open_database(path, config, create)).0?),
            journal: None,
            broken: broken.clone(),
        };
        let journal = path.with_file_name(JOURNAL_FILE);
        if !create {
            replay(&db, &journal)?;
        }
        if config.durable {
            db.journal = Some(Mutex::new(Journal::open(&journal)?));
        }
        let db = Arc::new(db);
        let unflushed = Arc::new(AtomicBool::new(false));
        let flusher = if config.durable {
            None
        } else {
            Some(Arc::new(Flusher::start(
                Arc::downgrade(&db),
                unflushed.clone(),
                broken,
            )?))
        };
        Ok(RedbStorage {
            db,
            path: path.to_path_buf(),
            unflushed,
            buffered_commits: Arc::new(AtomicUsize::new(0)),
            _flusher: flusher,
        })
    }

    /// Opens the database, or creates it with its table (`create`). An opened database
    /// is not written to: one without the table reads as empty.
    fn open_database(path: &Path, config: LocalConfig, create: bool) -> Result<Database, Error> {
        let cache = usize::try_from(config.cache_capacity).unwrap_or(usize::MAX);
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache);
        // The caller holds the vault's own lock, so redb's lock on its file can only be held
        // by a handle of this process just dropped (its flusher may hold it an instant
        // longer): wait briefly.
        let deadline = Instant::now() + Duration::from_secs(2);
        let db = loop {
            let opened = if create {
                builder.create(path)
            } else {
                builder.open(path)
            };
            match opened {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => break other.map_err(redb_error)?,
            }
        };
        if create {
            let txn = db.begin_write().map_err(redb_error)?;
            txn.open_table(TABLE).map_err(redb_error)?;
            txn.commit().map_err(redb_error)?;
        }
        Ok(db)
    }

    /// Runs `f` on the database unless the handle is broken, and breaks it if redb panics.
    fn call<T>(&self, f: impl FnOnce(&Database) -> Result<T, Error>) -> Result<T, Error> {
        call(&self.db, &self.db.broken, f)
    }

    /// Calls `f` with the entries of `tree`, in key order, until it returns `Ok(false)` or
    /// an error; whether it stopped early.
    fn scan(&self, tree: TreeName, f: &mut ScanVisitor<'_>) -> Result<bool, Error> {
        self.call(|db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let Some(table) = read_table(&txn)? else {
                return Ok(false);
            };
            let tag = tree.tag();
            let range = match tag.checked_add(1) {
                Some(next) => table.range::<&[u8]>([tag].as_slice()..[next].as_slice()),
                None => table.range::<&[u8]>([tag].as_slice()..),
            }
            .map_err(redb_error)?;
            for entry in range {
                let (k, v) = entry.map_err(redb_error)?;
                let key = k.value();
                let Some(key) = key.get(1..) else {
                    return Err(Error::corrupted("storage: a key without its tree"));
                };
                if !f(key, v.value())? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Writes `entries` into `tree` of a database that nothing reads yet (a compaction's
    /// new generation): one commit without `fdatasync` (the caller flushes).
    pub(crate) fn load(&self, tree: TreeName, entries: &[Entry]) -> Result<(), Error> {
        self.call(|db| {
            let mut txn = db.begin_write().map_err(redb_error)?;
            txn.set_durability(Durability::None).map_err(|e| Error::Storage {
                message: e.to_string(),
            })?;
            {
                let mut table = txn.open_table(TABLE).map_err(redb_error)?;
                for (k, v) in entries {
                    table
                        .insert(prefixed(tree, k).as_slice(), v.as_slice())
                        .map_err(redb_error)?;
                }
            }
            txn.commit().map_err(redb_error)?;
            self.unflushed.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    /// Commits `ops` in one write transaction with `durability` if every expectation holds.
    fn commit(&self, expects: &[Expect], ops: &[Op], durability: Durability) -> Result<Outcome, Error> {
        self.call(|db| {
            let mut txn = db.begin_write().map_err(redb_error)?;
            txn.set_durability(durability).map_err(|e| Error::Storage {
                message: e.to_string(),
            })?;
            let held = {
                let mut table = txn.open_table(TABLE).map_err(redb_error)?;
                let mut held = true;
                for expect in expects {
                    let now = table
                        .get(prefixed(expect.tree, &expect.key).as_slice())
                        .map_err(redb_error)?;
                    if now.as_ref().map(|v| v.value()) != expect.value.as_deref() {
                        held = false;
                        break;
                    }
                }
                if held {
                    write_ops(&mut table, ops)?;
                }
                held
            };
            if !held {
                txn.abort().map_err(redb_error)?;
                return Ok(Outcome::Conflict);
            }
            txn.commit().map_err(redb_error)?;
            Ok(Outcome::Applied)
        })
    }
}

/// Writes `ops` into the open table.
fn write_ops(table: &mut redb::Table<'_, &'static [u8], &'static [u8]>, ops: &[Op]) -> Result<(), Error> {
    for op in ops {
        match op {
            Op::Put(t, k, v) => {
                table
                    .insert(prefixed(*t, k).as_slice(), v.as_slice())
                    .map_err(redb_error)?;
            }
            Op::Remove(t, k) => {
                table.remove(prefixed(*t, k).as_slice()).map_err(redb_error)?;
            }
            Op::Clear(t) => {
                let tag = t.tag();
                let start = [tag];
                let cleared = match tag.checked_add(1) {
                    Some(next) => {
                        let end = [next];
                        table.retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)
                    }
                    None => table.retain_in::<&[u8], _>(start.as_slice().., |_, _| false),
                };
                cleared.map_err(redb_error)?;
            }
        }
    }
    Ok(())
}

/// Replays the journal at `path` (a durable handle's, left by a crash) into the database:
/// every batch it holds, in order, in one durable commit; then empties it.
fn replay(db: &Guarded, path: &Path) -> Result<(), Error> {
    let decoded = redb_journal::read(path)?;
    let batches = &decoded.batches;
    if !batches.is_empty() {
        call(db, &db.broken, |db| {
            let mut txn = db.begin_write().map_err(redb_error)?;
            {
                let mut table = txn.open_table(TABLE).map_err(redb_error)?;
                for ops in batches {
                    write_ops(&mut table, ops)?;
                }
            }
            txn.set_durability(Durability::Immediate)
                .map_err(|e| Error::Storage {
                    message: e.to_string(),
                })?;
            txn.commit().map_err(redb_error)
        })?;
    }
    redb_journal::empty_file(path, &decoded)
}

impl Storage for RedbStorage {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.call(|db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let Some(table) = read_table(&txn)? else {
                return Ok(None);
            };
            let value = table.get(prefixed(tree, key).as_slice()).map_err(redb_error)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
        self.scan(tree, &mut |k, v| Ok(!f(k, v)))
    }

    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
        self.scan(tree, &mut |k, v| f(k, v).map(|()| true)).map(|_| ())
    }

    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error> {
        let mut batcher = Batcher::new(batch, f);
        self.scan(tree, &mut |k, v| batcher.push(k, v).map(|()| true))?;
        batcher.finish()
    }

    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        if ops.is_empty() && expects.is_empty() {
            return Ok(Outcome::Applied);
        }
        let Some(mut journal) = self.db.journal() else {
            // Buffered: every 512th commit durable (see `DURABLE_EVERY`), the rest not.
            let in_line = self.buffered_commits.fetch_add(1, Ordering::SeqCst) + 1 >= DURABLE_EVERY;
            let durability = if in_line {
                Durability::Immediate
            } else {
                Durability::None
            };
            let outcome = self.commit(expects, ops, durability)?;
            if in_line {
                self.buffered_commits.store(0, Ordering::SeqCst);
            }
            self.unflushed.store(true, Ordering::SeqCst);
            return Ok(outcome);
        };
        // Durable: the journal's lock is held from the commit until its frame is on disk,
        // so frames are in commit order and only the last one can be cut by a crash.
        if journal.full() {
            checkpoint(&self.db, &mut journal)?;
        }
        let Some(frame) = journal.frame(ops) else {
            // Too large for a frame: a durable redb commit, after a checkpoint (replaying
            // older frames after it would undo it).
            if journal.holds_frames() {
                checkpoint(&self.db, &mut journal)?;
            }
            return self.commit(expects, ops, Durability::Immediate);
        };
        let outcome = self.commit(expects, ops, Durability::None)?;
        if outcome == Outcome::Applied {
            if let Err(e) = journal.append(&frame) {
                // Committed but not durable: make it durable the slow way if the disk
                // lets us, and report the failure either way.
                let _ = checkpoint(&self.db, &mut journal);
                return Err(e);
            }
        }
        Ok(outcome)
    }

    fn flush(&self) -> Result<(), Error> {
        if !self.unflushed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let result = match self.db.journal() {
            Some(mut journal) => checkpoint(&self.db, &mut journal),
            None => self.call(durable_commit),
        };
        if result.is_err() {
            self.unflushed.store(true, Ordering::SeqCst);
        }
        result
    }

    /// The redb file's size. Not the journal's: it is at most 8 KiB + 4 MiB + 64 KiB, of
    /// zeros after a checkpoint, and counted here it would read as growth of the vault (the
    /// compaction baseline, `Inner::settle_growth`).
    fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(std::fs::metadata(&self.path)?.len())
    }
}
