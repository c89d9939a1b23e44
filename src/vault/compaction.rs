//! Compaction: the vault's live content rewritten into a fresh storage generation, the old
//! one removed, and the state in `meta` that says when the next is due.
//!
//! Invariants: the new generation is complete and synced before `CURRENT` names it; the
//! old one is removed only after; an error leaves the old generation live and complete.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::{create_private_dir, restrict_files};
use super::generations::{self, Generation};
use super::{lock, Inner, Vault};
use crate::backend::{Engine, Entry, LocalStorage, Op, Storage, TreeName};
use crate::crypto::keys::{VaultKeys, MAC_LEN};
use crate::Error;

/// The key of the compaction state in the `meta` tree.
pub(super) const COMPACTION_KEY: &[u8] = b"compaction";

/// Compaction at open when the files have grown past twice their size right after the
/// last compaction ...
pub(super) const COMPACT_GROWTH: u64 = 2;

/// ... and by at least this much (so small vaults are not rewritten at every open).
pub(super) const COMPACT_MIN_GROWTH: u64 = 4 * 1024 * 1024;

/// Entries copied into a new generation per write.
pub(super) const COPY_BATCH: usize = 4096;

/// What the vault knows about its last compaction.
#[derive(Clone, Copy, Debug)]
pub(super) struct CompactionState {
    /// The size of the storage files right after it.
    pub(super) baseline: u64,
    /// Whether a change that must end in a compaction (a new passphrase, a re-key, a KDF
    /// upgrade) was written but not yet compacted: the next open compacts.
    pub(super) pending: bool,
}

/// The compaction state as stored: `baseline(8) || pending(1) || MAC(meta key,
/// "compaction", both)`.
pub(super) fn compaction_op(keys: &VaultKeys, baseline: u64, pending: bool) -> Op {
    let mut value = Vec::with_capacity(9 + MAC_LEN);
    value.extend_from_slice(&baseline.to_be_bytes());
    value.push(u8::from(pending));
    let tag = keys.meta_mac(COMPACTION_KEY, &value);
    value.extend_from_slice(&tag);
    Op::Put(TreeName::Meta, COMPACTION_KEY.to_vec(), value)
}

/// Reads and authenticates the compaction state; `None` in vaults written before it.
pub(super) fn read_compaction(
    storage: &(impl Storage + ?Sized),
    keys: &VaultKeys,
) -> Result<Option<CompactionState>, Error> {
    let bad = || Error::corrupted("compaction state");
    let Some(value) = storage.get(TreeName::Meta, COMPACTION_KEY)? else {
        return Ok(None);
    };
    let Some((body, tag)) = value.split_at_checked(9) else {
        return Err(bad());
    };
    if tag.len() != MAC_LEN || !keys.verify_meta_mac(COMPACTION_KEY, body, tag) {
        return Err(bad());
    }
    let (baseline, pending) = body.split_at(8);
    let baseline = u64::from_be_bytes(baseline.try_into().map_err(|_| bad())?);
    let pending = match pending {
        [0] => false,
        [1] => true,
        _ => return Err(bad()),
    };
    Ok(Some(CompactionState { baseline, pending }))
}

impl Vault {
    /// Rewrites the vault's live content into fresh storage and removes the old storage,
    /// so that afterwards no deleted token, no earlier version of an updated token and no
    /// earlier header can be decrypted from the vault's files, even with the current
    /// passphrase. Crash-safe: the new storage is written and synced beside the old one,
    /// then a pointer file is replaced by an atomic rename; killed at any instant, the
    /// vault opens with every token, and a leftover generation is removed at the next open.
    ///
    /// The vault also compacts by itself at open when its files have grown to more than
    /// twice (and at least 4 MiB more than) their size after the last compaction, and
    /// whenever a passphrase change, re-key or KDF upgrade was written. The cost is one
    /// read and one write of every live value (see `docs/performance.md`); lookups keep
    /// working meanwhile, writes wait.
    ///
    /// Blocks freed by the old files may survive on the disk itself (SSDs, journals,
    /// snapshots, backups): this removes them from the vault, not from the device.
    ///
    /// ```
    /// # use tokenvault::{KdfParams, OAuthToken, TokenStore, VaultOptions};
    /// # let tmp = tempfile::tempdir()?;
    /// let vault = VaultOptions::new().kdf(KdfParams::FLOOR).create(tmp.path().join("v"), "pass")?;
    /// let mut t = OAuthToken::default().with_user_name("a").with_access_token("t");
    /// vault.save_token(&mut t)?;
    /// vault.delete_token(t.id().ok_or("save_token sets the id")?)?;
    /// vault.compact()?;   // the deleted record is gone from the files
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Io`, `Storage`; on an error the old storage stays live and complete.
    pub fn compact(&self) -> Result<(), Error> {
        let _writer = lock(&self.inner.writer);
        self.inner.compact_locked()
    }
}

impl Inner {
    /// Compacts (see [`Vault::compact`]). The caller holds the writer lock, so nothing
    /// changes the storage meanwhile.
    pub(super) fn compact_locked(&self) -> Result<(), Error> {
        if self.engine == Engine::Etcd {
            // etcd keeps earlier values in its own history until the cluster compacts it
            // (SECURITY.md says which settings to run); there are no files of ours to rewrite.
            return Ok(());
        }
        let live = *lock(&self.generation);
        let next = live.next()?;
        let Generation::Numbered(n) = next else {
            return Err(Error::corrupted("a compaction writes a numbered generation"));
        };
        let new_dir = next.dir(&self.dir);
        if new_dir.exists() {
            fs::remove_dir_all(&new_dir)?;
        }
        create_private_dir(&new_dir)?;
        // The engine of the live generation; the copy is loaded buffered and flushed below.
        let fresh = LocalStorage::create(self.engine, &new_dir, self.options.local_config())?;
        let old = self.storage();
        for tree in TreeName::ALL {
            old.for_each_batch(tree, COPY_BATCH, &mut |batch| {
                if tree == TreeName::Meta {
                    let kept: Vec<Entry> = batch
                        .iter()
                        .filter(|(k, _)| k.as_slice() != COMPACTION_KEY)
                        .cloned()
                        .collect();
                    return fresh.load(tree, &kept);
                }
                fresh.load(tree, batch)
            })?;
        }
        {
            let keys = self.keys();
            fresh.flush()?;
            let baseline = fresh.size_on_disk()?;
            fresh.apply(&[compaction_op(&keys, baseline, false)])?;
        }
        fresh.flush()?;
        restrict_files(&new_dir)?;
        generations::sync_tree(&new_dir)?;
        generations::switch(&self.dir, n)?;
        // The new generation is live: swap it in, then let the old one go.
        *self.storage.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        *lock(&self.generation) = next;
        if let Some(vault_lock) = &self._lock {
            vault_lock.watch(&new_dir);
        }
        // Lookups that started before the swap may still read the old storage: wait for
        // them (briefly) before removing its files; what is left is removed at the next open.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Arc::strong_count(&old) == 1 {
            drop(old);
            generations::remove_stale(&self.dir, next)?;
        }
        Ok(())
    }
}
