//! Compaction: the vault's live content rewritten into a fresh storage generation, the old
//! one removed, and the state in `meta` that says when the next is due.
//!
//! Invariants: the new generation is complete and synced before `CURRENT` names it; the
//! old one is removed only after; an error leaves the old generation live and complete.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fs::{create_private_dir, restrict_files};
use super::generations::{self, Generation};
use super::{lock, Inner, Vault, HEADER_KEY};
use crate::backend::{Engine, Entry, LocalStorage, Op, Outcome, Storage, TreeName};
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

/// What a handle wrote since it opened the live generation (or compacted it), so that
/// closing it can tell growth of live data from dead data (see [`Inner::settle_growth`]).
pub(super) struct Growth {
    /// The size of the storage files at open or at the last compaction; `None` on shared
    /// storage (etcd), which has no files of ours and never compacts.
    since: Mutex<Option<u64>>,
    /// Records added (a new id: its sealed id is put in `ids`).
    added: AtomicU64,
    /// Records written over a stored one (the one replaced is dead data).
    rewritten: AtomicU64,
    /// Records removed (dead data).
    removed: AtomicU64,
    /// Whether a batch changed what these counts do not describe: the header (a new
    /// passphrase or key), a cleared tree, a re-key or repair, a batch whose outcome is
    /// unknown. Then none of the growth is taken for live data.
    uncounted: AtomicBool,
}

impl Growth {
    pub(super) fn new(since: Option<u64>) -> Self {
        Growth {
            since: Mutex::new(since),
            added: AtomicU64::new(0),
            rewritten: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            uncounted: AtomicBool::new(false),
        }
    }

    /// Counts a batch that applied. A new record is the only write that puts into `ids`;
    /// any other put into `tokens` rewrites a stored record.
    pub(super) fn applied(&self, ops: &[Op]) {
        let (mut ids, mut records, mut removed) = (0u64, 0u64, 0u64);
        for op in ops {
            match op {
                Op::Put(TreeName::Ids, ..) => ids += 1,
                Op::Put(TreeName::Tokens, ..) => records += 1,
                Op::Put(TreeName::Meta, key, _) if key.as_slice() == HEADER_KEY => self.uncounted(),
                Op::Remove(TreeName::Tokens, _) => removed += 1,
                Op::Clear(_) => self.uncounted(),
                _ => {}
            }
        }
        self.added.fetch_add(ids, Ordering::SeqCst);
        self.rewritten
            .fetch_add(records.saturating_sub(ids), Ordering::SeqCst);
        self.removed.fetch_add(removed, Ordering::SeqCst);
    }

    /// Counts a batch by its outcome: applied, it is counted; an error may hide one that
    /// applied, so it is not counted at all.
    pub(super) fn counted(&self, outcome: &Result<Outcome, Error>, ops: &[Op]) {
        match outcome {
            Ok(Outcome::Applied) => self.applied(ops),
            Ok(Outcome::Conflict) => {}
            Err(_) => self.uncounted(),
        }
    }

    /// Notes a change the counts cannot describe.
    pub(super) fn uncounted(&self) {
        self.uncounted.store(true, Ordering::SeqCst);
    }

    /// Starts over from a compaction that left the files at `size`.
    fn restart(&self, size: u64) {
        *lock(&self.since) = Some(size);
        for count in [&self.added, &self.rewritten, &self.removed] {
            count.store(0, Ordering::SeqCst);
        }
        self.uncounted.store(false, Ordering::SeqCst);
    }

    /// The part of `grown` bytes of growth taken for live data: records added and still
    /// there, out of every record written (each write grows the files about alike; a
    /// removal writes nothing but leaves a record dead).
    fn live_part(&self, grown: u64) -> u64 {
        if self.uncounted.load(Ordering::SeqCst) {
            return 0;
        }
        let added = self.added.load(Ordering::SeqCst);
        let live = added.saturating_sub(self.removed.load(Ordering::SeqCst));
        let written = added.saturating_add(self.rewritten.load(Ordering::SeqCst));
        if written == 0 {
            return 0;
        }
        let part = u128::from(grown) * u128::from(live) / u128::from(written);
        u64::try_from(part).unwrap_or(grown).min(grown)
    }
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
    /// twice (and at least 4 MiB more than) their size after the last compaction, not
    /// counting growth that is live data (a handle raises that size when it closes by its
    /// growth times the tokens it added and kept over every token it wrote), and
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
        let baseline = fresh.size_on_disk()?;
        *self.storage.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        *lock(&self.generation) = next;
        self.growth.restart(baseline);
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

impl Inner {
    /// At close: the growth of the files while this handle had them open, in the part
    /// that is live data (see [`Growth::live_part`]), is added to the compaction baseline,
    /// so the next open does not take a vault that was filled for one full of dead data.
    /// A re-key, passphrase change or repair, or a close that never comes (a crash), leaves
    /// the baseline where it was, and the next open judges all the growth as possibly dead.
    pub(super) fn settle_growth(&self) -> Result<(), Error> {
        let Some(since) = *lock(&self.growth.since) else {
            return Ok(());
        };
        // Nothing of any growth would count as live (no token added and kept, or an
        // uncounted change): leave the files alone, without even a flush.
        if self.growth.live_part(u64::MAX) == 0 {
            return Ok(());
        }
        let storage = self.storage();
        // The smaller of the sizes before and after the flush: redb's flush may extend its
        // file for an instant (it gives the space back at close), sled's may write more.
        let unflushed = storage.size_on_disk()?;
        storage.flush()?;
        let size = unflushed.min(storage.size_on_disk()?);
        let grown = self.growth.live_part(size.saturating_sub(since));
        if grown == 0 {
            return Ok(());
        }
        let keys = self.keys();
        let Some(state) = read_compaction(&*storage, &keys)? else {
            return Ok(());
        };
        if state.pending {
            return Ok(());
        }
        storage.apply(&[compaction_op(&keys, state.baseline.saturating_add(grown), false)])
    }
}
