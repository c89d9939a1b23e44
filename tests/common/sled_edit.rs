//! A closed vault's storage, read and changed behind its back with sled directly: how the
//! tests play a damaged disk or an attacker with write access to the files.
//!
//! A test file takes it with `mod common { pub mod sled_edit; }`. A helper that some of
//! the files including it do not call carries its own `allow(dead_code)` (see
//! `vaults.rs`).

use std::path::{Path, PathBuf};

/// The directory of a vault's live sled database: the generation that `CURRENT` names, or
/// the vault directory itself in the layout from before generations.
pub(crate) fn sled_dir(vault: impl AsRef<Path>) -> PathBuf {
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

/// The live database of a closed vault (its lock is not taken: the vault must not be
/// open). [`edit`] flushes it when done; a test that opens it by hand calls
/// [`LiveDb::flush`] before the vault is opened again.
pub(crate) struct LiveDb {
    db: sled::Db,
}

impl LiveDb {
    /// Opens the live database of the closed vault at `vault`.
    pub(crate) fn open(vault: impl AsRef<Path>) -> LiveDb {
        LiveDb {
            db: sled::open(sled_dir(vault)).expect("open the vault's sled database"),
        }
    }

    /// The tree `name` (created if absent, as sled does).
    pub(crate) fn tree(&self, name: impl AsRef<[u8]>) -> sled::Tree {
        self.db.open_tree(name).expect("open a tree")
    }

    /// Every entry of tree `name`, in key order.
    #[allow(dead_code, reason = "not every test file that edits a vault lists a tree")]
    pub(crate) fn entries(&self, name: impl AsRef<[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.tree(name)
            .iter()
            .map(|e| {
                let (k, v) = e.expect("read an entry");
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    /// The value of `key` in tree `name`, if any.
    #[allow(dead_code, reason = "not every test file that edits a vault reads one entry")]
    pub(crate) fn get(&self, name: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        self.tree(name)
            .get(key)
            .expect("read an entry")
            .map(|v| v.to_vec())
    }

    /// Sets `key` of tree `name` to `value`.
    #[allow(dead_code, reason = "not every test file that edits a vault writes an entry")]
    pub(crate) fn insert(&self, name: impl AsRef<[u8]>, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.tree(name)
            .insert(key.as_ref(), value.as_ref())
            .expect("write an entry");
    }

    /// Removes `key` from tree `name`.
    #[allow(dead_code, reason = "not every test file that edits a vault removes an entry")]
    pub(crate) fn remove(&self, name: impl AsRef<[u8]>, key: impl AsRef<[u8]>) {
        self.tree(name).remove(key).expect("remove an entry");
    }

    /// Removes tree `name` and all it holds.
    #[allow(dead_code, reason = "not every test file that edits a vault drops a tree")]
    pub(crate) fn drop_tree(&self, name: impl AsRef<[u8]>) {
        self.db.drop_tree(name.as_ref()).expect("drop a tree");
    }

    /// The names of every tree, the default one included.
    #[allow(dead_code, reason = "not every test file that edits a vault lists its trees")]
    pub(crate) fn tree_names(&self) -> Vec<Vec<u8>> {
        self.db.tree_names().into_iter().map(|n| n.to_vec()).collect()
    }

    /// Writes every change to the files.
    pub(crate) fn flush(&self) {
        self.db.flush().expect("flush the sled database");
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
