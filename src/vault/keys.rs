//! Key changes on an open vault: a new passphrase, a new record-key epoch, a new data key.
//!
//! Invariants: each is one atomic write, flushed before it returns; a passphrase change
//! and a re-key end with a compaction, so nothing the old passphrase or key opens is left
//! in the files; the KDF is never weakened unless the options allow it.

use super::compaction::{compaction_op, read_compaction};
use super::records::{id_op, seal_op, View};
use super::seals::seals_op;
use super::HEADER_KEY;
use super::{back_off, derive_keys, entry_key, lock, quarantine, KeyState, Vault, WRITE_ATTEMPTS};
use crate::backend::{Expect, Op, Outcome, TreeName};
use crate::crypto::header::Header;
use crate::crypto::kdf::PassphraseKey;
use crate::crypto::keys::{DataKey, VaultKeys, VAULT_ID_LEN};
use crate::crypto::random_bytes;
use crate::store::{Index, Owner, Records};
use crate::Error;

impl Vault {
    /// Replaces the passphrase: the data key is wrapped again under the new passphrase
    /// (new salt) in one atomic write, flushed before this returns. Records are not touched.
    /// The vault is then compacted (see [`Vault::compact`]), so that when this returns no
    /// copy of the old header, which the old passphrase unwraps, is left in the vault's
    /// files.
    ///
    /// # Security
    /// The new header's KDF parameters are, in each parameter, the larger of the vault's
    /// and the options' [`kdf`](super::VaultOptions::kdf): a change of passphrase never makes
    /// guessing cheaper, unless the options say
    /// [`allow_weaker_kdf`](super::VaultOptions::allow_weaker_kdf).
    ///
    /// # Errors
    /// `InvalidKdfParams`, `Io`, `Storage`. An error from the compaction leaves the new
    /// passphrase in force; the next open compacts.
    pub fn change_passphrase(&self, new_passphrase: &str) -> Result<(), Error> {
        let _writer = lock(&self.inner.writer);
        let inner = &*self.inner;
        let mut state = lock(&inner.key_state);
        for n in 0..WRITE_ATTEMPTS {
            let keys = inner.keys();
            let (header, kek) = Header::for_passphrase(
                keys.vault_id,
                inner.options.kdf_to_write(&state.header.kdf),
                state.header.epoch,
                new_passphrase.as_bytes(),
                keys.data_key(),
            )?;
            let baseline = read_compaction(&*inner.storage(), &keys)?.map_or(0, |c| c.baseline);
            // Only over the header this handle knows: on shared storage another process
            // may have moved it (a new epoch, a re-key); then take that up and do it again.
            let outcome = inner.apply_if(
                &[header_as(&state)],
                &[
                    Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), header.encode()),
                    compaction_op(&keys, baseline, true),
                ],
            )?;
            drop(keys);
            if outcome == Outcome::Applied {
                state.header = header;
                state.kek = kek;
                inner.storage().flush()?;
                return inner.compact_locked();
            }
            inner.reload_into(&mut state)?;
            back_off(n)?;
        }
        Err(gave_up())
    }

    /// Starts a new record-key epoch: records saved from now on are sealed under a fresh
    /// key derived from the data key; existing records keep opening under theirs. The
    /// vault also does this by itself when a key's seal budget
    /// ([`VaultOptions::seals_per_key`](super::VaultOptions::seals_per_key)) runs out. On disk when it returns.
    ///
    /// # Errors
    /// `Io`, `Storage`.
    pub fn rotate_key(&self) -> Result<(), Error> {
        let _writer = lock(&self.inner.writer);
        // Another writer of shared storage may move the seal counter first: take up
        // what it wrote and try again, as a save does.
        self.inner.write(|view| {
            let mut state = lock(&self.inner.key_state);
            match self.inner.rotate_locked(&mut state)? {
                Outcome::Applied => Ok(()),
                Outcome::Conflict => Err(view.conflict()),
            }
        })
    }

    /// Re-encrypts every token under a fresh data key and vault id, wrapped under
    /// `new_passphrase`: for a suspected leak of the data key. Every record, index entry
    /// and the header are replaced in one atomic write, flushed before this returns: after
    /// a crash the vault opens with exactly one of the old and new passphrases, with every
    /// token. The KDF parameters are chosen as by
    /// [`change_passphrase`](Vault::change_passphrase): never weaker unless allowed. The
    /// vault is then compacted, so no record or header under the old keys is left in its
    /// files.
    ///
    /// # Errors
    /// `Corrupted` if a record or index entry fails its checks (nothing is changed);
    /// `InvalidKdfParams`, `Io`, `Storage`.
    pub fn rekey(&self, new_passphrase: &str) -> Result<(), Error> {
        let _writer = lock(&self.inner.writer);
        let inner = &*self.inner;
        let mut state = lock(&inner.key_state);
        for n in 0..WRITE_ATTEMPTS {
            let mut built = None;
            let current = header_as(&state);
            let (outcome, mut keys) = inner.exclusive(&mut || {
                // On shared storage another process may have moved the header meanwhile:
                // the expectation then fails, and this re-key starts again from it.
                if inner.storage().get(TreeName::Meta, HEADER_KEY)? != current.value {
                    return Ok((vec![current.clone()], Vec::new()));
                }
                let (ops, rekeyed) = self.rekey_batch(&state, new_passphrase)?;
                built = Some(rekeyed);
                Ok((vec![current.clone()], ops))
            })?;
            match (outcome, built) {
                (Outcome::Applied, Some((header, kek, new_keys, seals))) => {
                    *keys = new_keys;
                    *state = KeyState {
                        header,
                        kek,
                        seals,
                        reserved: seals,
                    };
                    drop(keys);
                    inner.storage().flush()?;
                    return inner.compact_locked();
                }
                _ => {
                    drop(keys);
                    inner.reload_into(&mut state)?;
                    back_off(n)?;
                }
            }
        }
        Err(gave_up())
    }

    /// What a re-key writes, as one batch: every record and index entry under the new
    /// keys, the records set aside relabelled, the new header and seal counter; and the
    /// key state it leaves.
    fn rekey_batch(&self, state: &KeyState, new_passphrase: &str) -> Result<(Vec<Op>, Rekeyed), Error> {
        let inner = &*self.inner;
        let tokens = inner.all_tokens()?;
        let mut vault_id = [0u8; VAULT_ID_LEN];
        random_bytes(&mut vault_id)?;
        let data_key = DataKey::generate()?;
        let (header, kek) = Header::for_passphrase(
            vault_id,
            inner.options.kdf_to_write(&state.header.kdf),
            0,
            new_passphrase.as_bytes(),
            &data_key,
        )?;
        let new_keys = derive_keys(data_key, vault_id, 0);
        let view = View::reading(inner);
        let mut ops = inner.remove_every_token(false)?;
        let mut seals = 0u64;
        for token in &tokens {
            let id = token.id().ok_or_else(|| Error::corrupted("record without id"))?;
            ops.push(seal_op(&new_keys, 0, token)?);
            ops.push(id_op(&new_keys, 0, id)?);
            seals += 2;
            for index in Index::ALL {
                if let Some(value) = index.field(token) {
                    // Keep exactly the entries that exist: the owner of a shared value stays.
                    if view.owner(index, value, id)? == Owner::This {
                        ops.push(Op::Put(
                            index.tree(),
                            entry_key(&new_keys, index, value)?.to_vec(),
                            new_keys.slot(id).to_vec(),
                        ));
                    }
                }
            }
        }
        seals += quarantine::relabel(&*inner.storage(), &inner.keys(), &new_keys, &mut ops)?;
        ops.push(Op::Put(TreeName::Meta, HEADER_KEY.to_vec(), header.encode()));
        ops.push(seals_op(&new_keys, 0, seals));
        ops.push(compaction_op(&new_keys, 0, true));
        Ok((ops, (header, kek, new_keys, seals)))
    }
}

/// What a re-key leaves: the header, its passphrase key, the vault's keys, the seals done.
type Rekeyed = (Header, PassphraseKey, VaultKeys, u64);

/// What a key change expects: the header this handle knows, unchanged.
pub(super) fn header_as(state: &KeyState) -> Expect {
    Expect {
        tree: TreeName::Meta,
        key: HEADER_KEY.to_vec(),
        value: Some(state.header.encode()),
    }
}

/// A key change that kept losing to other writers of shared storage: nothing changed.
fn gave_up() -> Error {
    Error::Storage {
        message: format!(
            "gave up after {WRITE_ATTEMPTS} attempts: other processes kept changing the vault's keys"
        ),
    }
}
