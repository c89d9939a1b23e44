//! The redb 4.6 engine: every tree in one table, `vault`, each key prefixed by its tree's
//! number ([`TreeName::tag`]). A batch is written into a redb write transaction, its
//! expectations checked inside it, and the transaction stays open for the next batches
//! (see [`Pending`]); it is committed without `fdatasync` (`Durability::None`; the
//! exceptions are below). A durable vault writes each batch's writes to its journal
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

/// What every call on a handle that dropped its pending transaction becomes.
fn lost() -> Error {
    Error::Storage {
        message: "a write to the storage engine failed: this handle no longer reads or writes the vault; \
                  reopen it (its journal holds every durable save)"
            .into(),
    }
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
    if db.lost.load(Ordering::SeqCst) {
        return Err(lost());
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
    broken: AtomicBool,
    /// A durable handle's open write transaction (see [`Pending`]).
    pending: Mutex<Pending>,
    /// Whether a write into the pending transaction failed: the transaction, which held
    /// batches whose frames the journal has, was dropped, and nothing calls into the
    /// database again (the next open replays the journal).
    lost: AtomicBool,
}

/// A durable handle's batches whose frames are in the journal, written into one redb write
/// transaction not yet committed. Committing each batch on its own cost most of a durable
/// save: every commit copies the pages on the paths to each key it changes (about fifteen
/// for a save of six keys) and computes their checksums. Left open, the transaction
/// collects up to [`PENDING_BATCHES`] batches, and pages it already copied are written in
/// place. Writes' own reads (`get_to_decide`) read through it; every other read, scan or
/// write commits it first (`Durability::None`), so a lookup waits at most for that commit.
#[derive(Default)]
struct Pending {
    txn: Option<redb::WriteTransaction>,
    batches: usize,
}

/// A durable handle commits its pending transaction after this many batches.
const PENDING_BATCHES: usize = 64;

impl Guarded {
    fn db(&self) -> Result<&Database, Error> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::internal("the redb database is already closed"))
    }

    /// The pending transaction, locked.
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
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
        } else {
            // A buffered handle's batches are committed, as they would have been one by
            // one (`Vault`'s drop has made them durable already, unless that failed).
            let _ = settle(self);
        }
        // Left only if that checkpoint failed: dropping it rolls it back, and the journal
        // still holds its batches.
        discard(
            self.pending
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .txn
                .take(),
        );
        if let Some(db) = self.db.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// Makes every commit so far durable (one durable redb commit) and then empties the
/// journal, whose frames that commit covers.
fn checkpoint(db: &Guarded, journal: &mut Journal) -> Result<(), Error> {
    make_durable(db)?;
    journal.empty()
}

/// Commits the pending transaction with `fdatasync`, or makes an empty durable commit when
/// there is none: every commit so far is then durable. The pending transaction's lock is
/// held throughout, so that no batch opens a new transaction in between (redb's
/// `begin_write` would wait for it to end).
fn make_durable(db: &Guarded) -> Result<(), Error> {
    commit_pending(db, true)
}

/// Commits the pending transaction, if there is one, without `fdatasync`: every batch in it
/// is then visible to read transactions.
fn settle(db: &Guarded) -> Result<(), Error> {
    commit_pending(db, false)
}

/// Commits the pending transaction (`durable`: with `Durability::Immediate`, and an empty
/// transaction when there is none). A failed commit of the pending transaction loses the
/// handle (see [`Guarded::lost`]).
fn commit_pending(db: &Guarded, durable: bool) -> Result<(), Error> {
    let mut pending = db.pending();
    let mut txn = pending.txn.take();
    pending.batches = 0;
    let had = txn.is_some();
    if !had && !durable {
        return Ok(());
    }
    let result = call(db, &db.broken, |database| {
        let mut txn = match txn.take() {
            Some(txn) => txn,
            None => database.begin_write().map_err(redb_error)?,
        };
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| Error::Storage {
            message: e.to_string(),
        })?;
        txn.commit().map_err(redb_error)
    });
    // Still here if `call` refused to run (the handle broken or lost): rolled back, under
    // `catch_unwind` (redb's state may be what a panic left).
    discard(txn);
    if result.is_err() && had {
        db.lost.store(true, Ordering::SeqCst);
    }
    result
}

/// Drops (rolls back) a write transaction under `catch_unwind`.
fn discard(txn: Option<redb::WriteTransaction>) {
    if let Some(txn) = txn {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(txn)));
    }
}

/// Checks `expects` and writes `ops` in the pending transaction, which it begins if there
/// is none; leaves it open. An error while writing loses the handle (see [`Guarded::lost`]):
/// the transaction may hold part of the batch.
fn write_pending(db: &Guarded, expects: &[Expect], ops: &[Op]) -> Result<(Outcome, usize), Error> {
    let mut pending = db.pending();
    let mut wrote = false;
    let result = call(db, &db.broken, |database| {
        let txn = match pending.txn.take() {
            Some(txn) => txn,
            None => database.begin_write().map_err(redb_error)?,
        };
        let txn = pending.txn.insert(txn);
        let mut table = txn.open_table(TABLE).map_err(redb_error)?;
        for expect in expects {
            let now = table
                .get(prefixed(expect.tree, &expect.key).as_slice())
                .map_err(redb_error)?;
            if now.as_ref().map(|v| v.value()) != expect.value.as_deref() {
                return Ok(Outcome::Conflict);
            }
        }
        wrote = true;
        #[cfg(test)]
        if tests::FAIL_NEXT_WRITE.with(|fail| fail.replace(false)) {
            // After the batch's first write: what a failure halfway through leaves.
            write_ops(&mut table, ops.get(..1).unwrap_or_default())?;
            return Err(Error::Io(std::io::Error::other(
                "a write failed (injected by a test)",
            )));
        }
        write_ops(&mut table, ops)?;
        Ok(Outcome::Applied)
    });
    match result {
        Ok(Outcome::Applied) => {
            pending.batches += 1;
            Ok((Outcome::Applied, pending.batches))
        }
        Ok(outcome) => Ok((outcome, pending.batches)),
        Err(e) => {
            // Dropped if it may hold part of the batch, or if redb panicked in it.
            if wrote || db.broken.load(Ordering::SeqCst) {
                if wrote {
                    db.lost.store(true, Ordering::SeqCst);
                }
                pending.batches = 0;
                discard(pending.txn.take());
            }
            Err(e)
        }
    }
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
    fn start(db: Weak<Guarded>, unflushed: Arc<AtomicBool>) -> Result<Flusher, Error> {
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
                        if unflushed.swap(false, Ordering::SeqCst) && make_durable(&db).is_err() {
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

impl RedbStorage {
    /// Opens the redb database file at `path`, or creates it (`create`).
    pub(crate) fn open(path: &Path, config: LocalConfig, create: bool) -> Result<Self, Error> {
        let mut db = Guarded {
            db: Some(unwound(|| Self::open_database(path, config, create)).0?),
            journal: None,
            broken: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            lost: AtomicBool::new(false),
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
            Some(Arc::new(Flusher::start(Arc::downgrade(&db), unflushed.clone())?))
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
        settle(&self.db)?;
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
        settle(&self.db)?;
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
        settle(&self.db)?;
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
        settle(&self.db)?;
        self.call(|db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let Some(table) = read_table(&txn)? else {
                return Ok(None);
            };
            let value = table.get(prefixed(tree, key).as_slice()).map_err(redb_error)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    /// Reads through the pending transaction while there is one (a write's decision must
    /// see the batches before it), else as [`get`](Storage::get) does.
    fn get_to_decide(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        {
            let pending = self.db.pending();
            if let Some(txn) = &pending.txn {
                return self.call(|_| {
                    let table = txn.open_table(TABLE).map_err(redb_error)?;
                    let value = table.get(prefixed(tree, key).as_slice()).map_err(redb_error)?;
                    Ok(value.map(|v| v.value().to_vec()))
                });
            }
        }
        self.get(tree, key)
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
            // Buffered: into the pending transaction; every 512th batch made durable (see
            // `DURABLE_EVERY`).
            let (outcome, batches) = write_pending(&self.db, expects, ops)?;
            if outcome == Outcome::Applied {
                self.unflushed.store(true, Ordering::SeqCst);
                if self.buffered_commits.fetch_add(1, Ordering::SeqCst) + 1 >= DURABLE_EVERY {
                    make_durable(&self.db)?;
                    self.buffered_commits.store(0, Ordering::SeqCst);
                } else if batches >= PENDING_BATCHES {
                    settle(&self.db)?;
                }
            }
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
        let (outcome, batches) = write_pending(&self.db, expects, ops)?;
        if outcome == Outcome::Applied {
            if let Err(e) = journal.append(&frame) {
                // Written but not durable: make it durable the slow way if the disk lets
                // us, and report the failure either way.
                let _ = checkpoint(&self.db, &mut journal);
                return Err(e);
            }
            if batches >= PENDING_BATCHES {
                // The batch is durable (in the journal) whatever this does; a failure
                // loses the handle, and its next call says so.
                let _ = settle(&self.db);
            }
        }
        Ok(outcome)
    }

    fn flush(&self) -> Result<(), Error> {
        if self.db.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        if !self.unflushed.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let result = match self.db.journal() {
            Some(mut journal) => checkpoint(&self.db, &mut journal),
            None => make_durable(&self.db),
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

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes this thread's next write into the pending transaction fail, after its
        /// expectations held.
        pub(super) static FAIL_NEXT_WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn open(dir: &Path, durable: bool, create: bool) -> RedbStorage {
        let config = LocalConfig {
            cache_capacity: 1 << 20,
            durable,
        };
        RedbStorage::open(&dir.join("vault.redb"), config, create).unwrap()
    }

    /// How many batches wait in the pending transaction (none when there is none).
    fn waiting(s: &RedbStorage) -> usize {
        let pending = s.db.pending();
        assert_eq!(pending.txn.is_some(), pending.batches > 0);
        pending.batches
    }

    fn number(i: usize) -> Vec<u8> {
        u32::try_from(i).unwrap().to_be_bytes().to_vec()
    }

    /// Batch `i` of a chain: it expects `k` to hold what batch `i - 1` wrote.
    fn link(s: &RedbStorage, i: usize) -> Outcome {
        let expects = [Expect {
            tree: TreeName::Tokens,
            key: b"k".to_vec(),
            value: i.checked_sub(1).map(number),
        }];
        let ops = [
            Op::Put(TreeName::Tokens, b"k".to_vec(), number(i)),
            Op::Put(TreeName::User, number(i), b"x".to_vec()),
        ];
        s.apply_if(&expects, &ops).unwrap()
    }

    #[test]
    fn batches_wait_in_one_transaction_that_later_writes_read_and_every_other_call_commits() {
        let chain = 2 * PENDING_BATCHES + 5;
        for durable in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            {
                let s = open(tmp.path(), durable, true);
                for i in 0..chain {
                    // Each batch's expectation reads what the one before it left waiting.
                    assert_eq!(link(&s, i), Outcome::Applied, "{durable} {i}");
                    if durable {
                        assert_eq!(waiting(&s), (i + 1) % PENDING_BATCHES, "{i}");
                    } else {
                        // Fewer when the background flush (every 500 ms) came in between.
                        assert!(waiting(&s) <= (i + 1) % PENDING_BATCHES, "{i}");
                    }
                    assert_eq!(s.get_to_decide(TreeName::Tokens, b"k").unwrap(), Some(number(i)));
                }
                // A batch whose expectation fails leaves the waiting ones as they are.
                let before = waiting(&s);
                assert_eq!(link(&s, 0), Outcome::Conflict);
                assert!(waiting(&s) == before || !durable);
                // A lookup commits them first, and so does a scan.
                assert_eq!(s.get(TreeName::Tokens, b"k").unwrap(), Some(number(chain - 1)));
                assert_eq!(waiting(&s), 0);
                assert_eq!(link(&s, chain), Outcome::Applied);
                assert!(waiting(&s) == 1 || !durable);
                let mut users = Vec::new();
                s.for_each(TreeName::User, &mut |k, _| {
                    users.push(k.to_vec());
                    Ok(())
                })
                .unwrap();
                assert_eq!(users, (0..=chain).map(number).collect::<Vec<_>>());
                assert_eq!(waiting(&s), 0);
                // Closed with a batch waiting: committed at the close (a durable handle's
                // close is a checkpoint, which leaves the journal empty).
                assert_eq!(link(&s, chain + 1), Outcome::Applied);
                assert!(waiting(&s) == 1 || !durable);
            }
            let frames = redb_journal::read(&tmp.path().join(JOURNAL_FILE)).map(|j| j.batches.len());
            assert_eq!(frames.unwrap_or(0), 0, "{durable}");
            let s = open(tmp.path(), false, false);
            assert_eq!(s.get(TreeName::Tokens, b"k").unwrap(), Some(number(chain + 1)));
            assert_eq!(
                s.get(TreeName::User, &number(chain + 1)).unwrap(),
                Some(b"x".to_vec())
            );
        }
    }

    #[test]
    fn a_durable_handle_s_waiting_batches_are_in_its_journal_when_the_process_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(tmp.path(), true, true);
        let batches = PENDING_BATCHES + PENDING_BATCHES / 2;
        for i in 0..batches {
            assert_eq!(link(&s, i), Outcome::Applied);
        }
        assert_eq!(waiting(&s), PENDING_BATCHES / 2);
        // What a process that stops now (killed: no destructor runs) leaves on disk: the
        // files as they are, the transaction never committed.
        let copy = tempfile::tempdir().unwrap();
        for name in ["vault.redb", JOURNAL_FILE] {
            std::fs::copy(tmp.path().join(name), copy.path().join(name)).unwrap();
        }
        let reopened = open(copy.path(), false, false);
        assert_eq!(
            reopened.get(TreeName::Tokens, b"k").unwrap(),
            Some(number(batches - 1))
        );
        for i in 0..batches {
            assert_eq!(
                reopened.get(TreeName::User, &number(i)).unwrap(),
                Some(b"x".to_vec()),
                "{i}"
            );
        }
        drop(s);
    }

    #[test]
    fn a_write_that_fails_in_the_open_transaction_loses_the_handle_and_the_journal_keeps_its_batches() {
        for durable in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            {
                let s = open(tmp.path(), durable, true);
                for i in 0..10 {
                    assert_eq!(link(&s, i), Outcome::Applied);
                }
                FAIL_NEXT_WRITE.with(|fail| fail.set(true));
                let expects = [Expect {
                    tree: TreeName::Tokens,
                    key: b"k".to_vec(),
                    value: Some(number(9)),
                }];
                // Fails after the first of its two writes.
                let failed = s.apply_if(
                    &expects,
                    &[
                        Op::Put(TreeName::Tokens, b"k".to_vec(), number(10)),
                        Op::Put(TreeName::User, number(10), b"x".to_vec()),
                    ],
                );
                assert!(matches!(failed, Err(Error::Io(_))), "{failed:?}");
                // Every later call is refused, reads too: the batches it held are gone
                // from this handle, and answering without them would be wrong data.
                let refused = |r: Result<(), Error>| {
                    assert!(
                        matches!(&r, Err(Error::Storage { message }) if message.contains("reopen")),
                        "{r:?}"
                    );
                };
                refused(s.get(TreeName::Tokens, b"k").map(drop));
                refused(s.get_to_decide(TreeName::Tokens, b"k").map(drop));
                refused(s.for_each(TreeName::User, &mut |_, _| Ok(())));
                refused(
                    s.apply(&[Op::Put(TreeName::Tokens, b"other".to_vec(), b"x".to_vec())])
                        .map(drop),
                );
                refused(s.flush());
            }
            let s = open(tmp.path(), true, false);
            let k = s.get(TreeName::Tokens, b"k").unwrap();
            // Nothing of the failed batch, not its first write either.
            assert_ne!(k, Some(number(10)), "{durable}");
            assert_eq!(s.get(TreeName::User, &number(10)).unwrap(), None, "{durable}");
            if durable {
                // Replayed from the journal, where every batch before the failed one is.
                assert_eq!(k, Some(number(9)));
                assert_eq!(s.get(TreeName::User, &number(9)).unwrap(), Some(b"x".to_vec()));
            } else {
                // A buffered vault loses what waited, as a crash before a flush would
                // (all but what its background flush, every 500 ms, made durable first).
                let kept = k.map(|v| u32::from_be_bytes(v.try_into().unwrap()));
                assert!(kept.is_none_or(|n| n <= 9), "{kept:?}");
            }
            assert_eq!(s.get(TreeName::Tokens, b"other").unwrap(), None);
        }
    }
}
