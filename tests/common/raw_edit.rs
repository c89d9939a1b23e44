//! A closed vault's storage, read and changed behind its back with its engine directly
//! (sled or redb, whichever wrote it): how the tests play a damaged disk or an attacker
//! with write access to the files. Trees are named as in docs/format.md; on redb a tree
//! is the keys of the one table that start with the tree's number.
//!
//! A test file takes it with `mod common { pub mod raw_edit; }`. A helper that some of
//! the files including it do not call carries its own `allow(dead_code)` (see
//! `vaults.rs`).

use std::path::{Path, PathBuf};

/// The directory of a vault's live database: the generation that `CURRENT` names, or
/// the vault directory itself in the layout from before generations.
pub(crate) fn db_dir(vault: impl AsRef<Path>) -> PathBuf {
    let vault = vault.as_ref();
    match std::fs::read_to_string(vault.join("CURRENT")) {
        Ok(pointer) => {
            let n = pointer
                .strip_prefix("tokenvault generation ")
                .and_then(|p| p.strip_suffix('\n'))
                .expect("a generation pointer");
            vault.join(format!("gen-{n}"))
        }
        Err(_) => vault.to_path_buf(),
    }
}

/// The files of the live database that a damaged disk or an editor would change: sled's
/// log (`db`) and configuration (`conf`), or redb's one file.
#[allow(
    dead_code,
    reason = "not every test file that edits a vault damages its files"
)]
pub(crate) fn db_files(vault: impl AsRef<Path>) -> Vec<PathBuf> {
    let dir = db_dir(vault);
    let redb = dir.join("vault.redb");
    if redb.is_file() {
        vec![redb]
    } else {
        vec![dir.join("db"), dir.join("conf")]
    }
}

/// The trees of a vault, by name, with their numbers in redb's one table.
#[cfg(feature = "redb")]
const TREES: [(&str, u8); 8] = [
    ("meta", 0),
    ("tokens", 1),
    ("idx.user", 2),
    ("idx.access", 3),
    ("idx.refresh", 4),
    ("idx.grant", 5),
    ("idx.id", 6),
    ("quarantine", 7),
];

#[cfg(feature = "redb")]
const REDB_TABLE: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
    redb::TableDefinition::new("vault");

#[cfg(feature = "redb")]
fn tag(name: &[u8]) -> u8 {
    TREES
        .iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no tree named {}", String::from_utf8_lossy(name)))
}

/// The live database of a closed vault (its lock is not taken: the vault must not be
/// open). [`edit`] flushes it when done; a test that opens it by hand calls
/// [`LiveDb::flush`] before the vault is opened again.
pub(crate) enum LiveDb {
    Sled(sled::Db),
    #[cfg(feature = "redb")]
    Redb(redb::Database),
}

impl LiveDb {
    /// Opens the live database of the closed vault at `vault`.
    pub(crate) fn open(vault: impl AsRef<Path>) -> LiveDb {
        let dir = db_dir(vault);
        let redb = dir.join("vault.redb");
        if redb.is_file() {
            #[cfg(feature = "redb")]
            return LiveDb::Redb(redb::Database::open(&redb).expect("open the vault's redb database"));
            #[cfg(not(feature = "redb"))]
            panic!("a redb vault, in a build without the feature redb");
        }
        // A vault's drop waits up to 5 s for sled's threads to let go of the files; on a
        // loaded machine they may take longer: wait for them here too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match sled::open(&dir) {
                Ok(db) => return LiveDb::Sled(db),
                Err(e)
                    if std::time::Instant::now() < deadline
                        && e.to_string().contains("could not acquire lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open the vault's sled database: {e:?}"),
            }
        }
    }

    /// Every entry of tree `name`, in key order.
    #[allow(dead_code, reason = "not every test file that edits a vault lists a tree")]
    pub(crate) fn entries(&self, name: impl AsRef<[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            LiveDb::Sled(db) => db
                .open_tree(name)
                .expect("open a tree")
                .iter()
                .map(|e| {
                    let (k, v) = e.expect("read an entry");
                    (k.to_vec(), v.to_vec())
                })
                .collect(),
            #[cfg(feature = "redb")]
            LiveDb::Redb(db) => {
                use redb::ReadableDatabase;
                let t = tag(name.as_ref());
                let txn = db.begin_read().expect("read");
                let table = txn.open_table(REDB_TABLE).expect("the table");
                table
                    .range::<&[u8]>([t].as_slice()..[t + 1].as_slice())
                    .expect("a range")
                    .map(|e| {
                        let (k, v) = e.expect("read an entry");
                        (k.value()[1..].to_vec(), v.value().to_vec())
                    })
                    .collect()
            }
        }
    }

    /// The value of `key` in tree `name`, if any.
    #[allow(dead_code, reason = "not every test file that edits a vault reads one entry")]
    pub(crate) fn get(&self, name: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        match self {
            LiveDb::Sled(db) => db
                .open_tree(name)
                .expect("open a tree")
                .get(key)
                .expect("read an entry")
                .map(|v| v.to_vec()),
            #[cfg(feature = "redb")]
            LiveDb::Redb(db) => {
                use redb::ReadableDatabase;
                let txn = db.begin_read().expect("read");
                let table = txn.open_table(REDB_TABLE).expect("the table");
                let k = prefixed(name.as_ref(), key.as_ref());
                table
                    .get(k.as_slice())
                    .expect("read an entry")
                    .map(|v| v.value().to_vec())
            }
        }
    }

    /// Sets `key` of tree `name` to `value`.
    #[allow(dead_code, reason = "not every test file that edits a vault writes an entry")]
    pub(crate) fn insert(&self, name: impl AsRef<[u8]>, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        match self {
            LiveDb::Sled(db) => {
                db.open_tree(name)
                    .expect("open a tree")
                    .insert(key.as_ref(), value.as_ref())
                    .expect("write an entry");
            }
            #[cfg(feature = "redb")]
            LiveDb::Redb(db) => {
                let k = prefixed(name.as_ref(), key.as_ref());
                redb_write(db, |table| {
                    table
                        .insert(k.as_slice(), value.as_ref())
                        .expect("write an entry");
                });
            }
        }
    }

    /// Removes `key` from tree `name`.
    #[allow(dead_code, reason = "not every test file that edits a vault removes an entry")]
    pub(crate) fn remove(&self, name: impl AsRef<[u8]>, key: impl AsRef<[u8]>) {
        match self {
            LiveDb::Sled(db) => {
                db.open_tree(name)
                    .expect("open a tree")
                    .remove(key)
                    .expect("remove an entry");
            }
            #[cfg(feature = "redb")]
            LiveDb::Redb(db) => {
                let k = prefixed(name.as_ref(), key.as_ref());
                redb_write(db, |table| {
                    table.remove(k.as_slice()).expect("remove an entry");
                });
            }
        }
    }

    /// Removes tree `name` and all it holds.
    #[allow(dead_code, reason = "not every test file that edits a vault drops a tree")]
    pub(crate) fn drop_tree(&self, name: impl AsRef<[u8]>) {
        match self {
            LiveDb::Sled(db) => {
                db.drop_tree(name.as_ref()).expect("drop a tree");
            }
            #[cfg(feature = "redb")]
            LiveDb::Redb(_) => {
                for (k, _) in self.entries(name.as_ref()) {
                    self.remove(name.as_ref(), k);
                }
            }
        }
    }

    /// The names of every tree that the engine holds (sled's default tree included).
    #[allow(dead_code, reason = "not every test file that edits a vault lists its trees")]
    pub(crate) fn tree_names(&self) -> Vec<Vec<u8>> {
        match self {
            LiveDb::Sled(db) => db.tree_names().into_iter().map(|n| n.to_vec()).collect(),
            #[cfg(feature = "redb")]
            LiveDb::Redb(_) => TREES.iter().map(|(n, _)| n.as_bytes().to_vec()).collect(),
        }
    }

    /// Writes every change to the files.
    pub(crate) fn flush(&self) {
        match self {
            LiveDb::Sled(db) => {
                db.flush().expect("flush the sled database");
            }
            // Every redb write above commits durably.
            #[cfg(feature = "redb")]
            LiveDb::Redb(_) => {}
        }
    }
}

#[cfg(feature = "redb")]
fn prefixed(name: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = vec![tag(name)];
    k.extend_from_slice(key);
    k
}

#[cfg(feature = "redb")]
fn redb_write(db: &redb::Database, f: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>)) {
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(REDB_TABLE).expect("the table");
        f(&mut table);
    }
    txn.commit().expect("commit");
}

/// Makes `dir` a database of `engine` that never was a vault: one entry, in a tree (sled)
/// or table (redb) named "not a vault".
#[allow(
    dead_code,
    reason = "not every test file that edits a vault makes a foreign database"
)]
pub(crate) fn foreign_database(dir: impl AsRef<Path>, engine: tokenvault::Engine) {
    let dir = dir.as_ref();
    match engine {
        #[cfg(feature = "redb")]
        tokenvault::Engine::Redb => {
            std::fs::create_dir_all(dir).expect("create the directory");
            let db = redb::Database::create(dir.join("vault.redb")).expect("create a redb database");
            let other: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
                redb::TableDefinition::new("not a vault");
            let txn = db.begin_write().expect("write");
            txn.open_table(other)
                .expect("the table")
                .insert(b"k".as_slice(), b"v".as_slice())
                .expect("write an entry");
            txn.commit().expect("commit");
        }
        tokenvault::Engine::Sled => {
            let db = sled::open(dir).expect("create a sled database");
            db.open_tree("not a vault")
                .expect("open a tree")
                .insert("k", "v")
                .expect("write an entry");
            db.flush().expect("flush the sled database");
        }
        other => panic!("no {other} engine in this build"),
    }
}

/// Runs `f` on the live database of the closed vault at `vault`, then flushes and closes
/// it; returns what `f` returned.
#[allow(
    dead_code,
    reason = "not every test file that edits a vault does it in one call"
)]
pub(crate) fn edit<R>(vault: impl AsRef<Path>, f: impl FnOnce(&LiveDb) -> R) -> R {
    let db = LiveDb::open(vault);
    let out = f(&db);
    db.flush();
    out
}
