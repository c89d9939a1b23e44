//! The seal counter: how many records the current key epoch has sealed, kept in `meta`
//! as an authenticated upper bound written in blocks, and the rotation it triggers.
//!
//! Invariant: the stored bound never falls below the seals done, even after a crash: a
//! batch that seals past the reservation carries the new bound in the same transaction.

use super::{Inner, KeyState, HEADER_KEY};
use crate::backend::{Expect, Op, Outcome, Storage, TreeName};
use crate::crypto::header::Header;
use crate::crypto::keys::{VaultKeys, MAC_LEN};
use crate::Error;

/// The key of the seal counter in the `meta` tree.
pub(super) const SEALS_KEY: &[u8] = b"seals";

/// Seals reserved by one write of the seal counter. The stored counter is an upper bound
/// on the seals under the epoch's key, so most saves leave it alone; a reopen resumes from
/// the bound and forgoes at most this many seals of the budget.
pub(super) const SEAL_RESERVE: u64 = 1024;

/// How many times the header and seal counter are read again when they do not match (see
/// [`Inner::reload_into`]).
const RELOAD_TRIES: u32 = 8;

/// The seal counter as stored: `epoch(4) || seals(8) || MAC(meta key, "seals", both)`.
pub(super) fn seals_op(keys: &VaultKeys, epoch: u32, seals: u64) -> Op {
    Op::Put(
        TreeName::Meta,
        SEALS_KEY.to_vec(),
        seals_value(keys, epoch, seals),
    )
}

fn seals_value(keys: &VaultKeys, epoch: u32, seals: u64) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + 8 + MAC_LEN);
    value.extend_from_slice(&epoch.to_be_bytes());
    value.extend_from_slice(&seals.to_be_bytes());
    let tag = keys.meta_mac(SEALS_KEY, &value);
    value.extend_from_slice(&tag);
    value
}

/// What a batch that writes the seal counter expects of it: the value this process last
/// knew (the counter's MAC is deterministic, so the value is rebuilt from epoch and
/// bound). Another writer that reserved seals meanwhile makes the batch conflict, so no
/// two writers ever count the same seals.
pub(super) fn seals_expect(keys: &VaultKeys, epoch: u32, seals: u64) -> Expect {
    Expect {
        tree: TreeName::Meta,
        key: SEALS_KEY.to_vec(),
        value: Some(seals_value(keys, epoch, seals)),
    }
}

/// Reads and authenticates the seal counter of the header's epoch.
pub(super) fn read_seals(
    storage: &(impl Storage + ?Sized),
    keys: &VaultKeys,
    epoch: u32,
) -> Result<u64, Error> {
    let bad = || Error::corrupted("seal counter");
    let value = storage.get(TreeName::Meta, SEALS_KEY)?.ok_or_else(bad)?;
    let Some((body, tag)) = value.split_at_checked(12) else {
        return Err(bad());
    };
    if tag.len() != MAC_LEN || !keys.verify_meta_mac(SEALS_KEY, body, tag) {
        return Err(bad());
    }
    let (e, n) = body.split_at(4);
    let e = u32::from_be_bytes(e.try_into().map_err(|_| bad())?);
    let n = u64::from_be_bytes(n.try_into().map_err(|_| bad())?);
    if e != epoch {
        return Err(bad());
    }
    Ok(n)
}

/// The seal counter after a batch: see [`Inner::count_seals`].
pub(super) struct SealCount {
    total: u64,
    reserved: u64,
}

impl SealCount {
    pub(super) fn record(self, state: &mut KeyState) {
        state.seals = self.total;
        state.reserved = self.reserved;
    }
}

impl Inner {
    /// Moves to a new key epoch first if `seals` more would exceed the current key's budget.
    /// The caller holds the writer and key-state locks and seals only after this.
    pub(super) fn make_room_for_seals(&self, state: &mut KeyState, seals: u64) -> Result<Outcome, Error> {
        if seals > 0 && state.seals.saturating_add(seals) > self.options.seals_per_key {
            return self.rotate_locked(state);
        }
        Ok(Outcome::Applied)
    }

    /// After a batch conflicted: takes up the key state as stored, since another writer
    /// of the same storage (another process on an etcd vault) may have moved it: a new
    /// header (another key epoch, or a re-key) and the seal counter. This writer's next
    /// seals count from the stored counter, so no two writers count the same seals.
    ///
    /// # Errors
    /// `WrongPassphrase` if the passphrase was changed elsewhere (open the vault again);
    /// `Corrupted`, `Io`, `Storage`.
    pub(super) fn reload_seals(&self) -> Result<(), Error> {
        let mut state = super::lock(&self.key_state);
        self.reload_into(&mut state)
    }

    /// [`reload_seals`](Inner::reload_seals) for a caller that holds the key-state lock.
    pub(super) fn reload_into(&self, state: &mut KeyState) -> Result<(), Error> {
        let storage = self.storage();
        // The header and the counter are two reads: another process may move both in
        // between (a rotation, a re-key). A counter that is not the header's is read again
        // with the header, a few times, before it counts as damage.
        let mut last_err = None;
        for _ in 0..RELOAD_TRIES {
            // Read before the header: a switch after this is seen by the next check.
            let generation = storage.generation();
            let bytes = storage
                .get(TreeName::Meta, HEADER_KEY)?
                .ok_or_else(|| Error::corrupted("header: missing"))?;
            let moved = bytes != state.header.encode();
            let (header, keys) = if moved {
                let header = Header::parse(&bytes)?;
                let data_key = header.unwrap_with(&state.kek)?;
                let keys = super::derive_keys(data_key, header.vault_id, header.epoch);
                (header, Some(keys))
            } else {
                (state.header.clone(), None)
            };
            let stored = {
                let current = self.keys();
                read_seals(&*storage, keys.as_ref().unwrap_or(&current), header.epoch)
            };
            let stored = match stored {
                Ok(n) if storage.generation() == generation => n,
                Ok(_) => continue,
                Err(e @ Error::Corrupted { .. }) => {
                    last_err = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(keys) = keys {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                state.header = header;
                state.seals = 0;
                state.reserved = 0;
            }
            if stored > state.reserved {
                state.seals = stored;
                state.reserved = stored;
            }
            self.keys_generation
                .store(generation, std::sync::atomic::Ordering::SeqCst);
            return Ok(());
        }
        Err(last_err.unwrap_or_else(|| Error::Storage {
            message: "the vault's keys kept changing while they were read".into(),
        }))
    }

    /// Accounts for `seals` made under the current epoch by a batch: the counter on disk
    /// must never fall below the seals done, so a batch past the reservation carries a new
    /// one (pushed onto `ops`). Record the result once the batch is applied.
    pub(super) fn count_seals(
        &self,
        state: &KeyState,
        keys: &VaultKeys,
        seals: u64,
        ops: &mut Vec<Op>,
        expects: &mut Vec<Expect>,
    ) -> SealCount {
        let total = state.seals + seals;
        let reserved = if total > state.reserved {
            let bound = total
                .saturating_add(SEAL_RESERVE)
                .min(self.options.seals_per_key)
                .max(total);
            expects.push(seals_expect(keys, state.header.epoch, state.reserved));
            ops.push(seals_op(keys, state.header.epoch, bound));
            bound
        } else {
            state.reserved
        };
        SealCount { total, reserved }
    }

    /// Moves to the next record-key epoch. The caller holds the writer and key-state locks.
    /// `Conflict` (nothing changed) when another writer moved the seal counter meanwhile.
    pub(super) fn rotate_locked(&self, state: &mut KeyState) -> Result<Outcome, Error> {
        let epoch = state
            .header
            .epoch
            .checked_add(1)
            .ok_or_else(|| Error::internal("key epochs exhausted"))?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let header = Header::build(
            keys.vault_id,
            state.header.kdf,
            state.header.salt.clone(),
            epoch,
            &state.kek,
            keys.data_key(),
        )?;
        let ops = [
            Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), header.encode()),
            seals_op(&keys, epoch, 0),
        ];
        let expects = [seals_expect(&keys, state.header.epoch, state.reserved)];
        if self.apply_if(&expects, &ops)? == Outcome::Conflict {
            return Ok(Outcome::Conflict);
        }
        // Applied is committed (a later flush persists it): the state follows the storage
        // even if this flush fails, and the new key exists only once its header does.
        keys.extend_epochs(epoch);
        state.header = header;
        state.seals = 0;
        state.reserved = 0;
        drop(keys);
        self.storage().flush()?;
        Ok(Outcome::Applied)
    }
}
