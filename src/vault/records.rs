//! Records: sealing and opening a token at its slot, its sealed id, naming a damaged one,
//! reading them all, and turning the rules' decisions into storage writes.
//!
//! Invariants: a record is returned only after it authenticates and its id maps to the
//! slot it was read from; every index hit is decrypted and compared with the queried value
//! in constant time; a commit is one all-or-nothing batch.

use std::cell::{Cell, RefCell};

use subtle::ConstantTimeEq;

use super::{entry_key, lock, Inner, MIN_OPEN_CHUNK, OPEN_THREADS};
use crate::backend::Engine;
use crate::backend::{Bytes, Entry, Expect, Op, Outcome, TreeName};
use crate::crypto::keys::{VaultKeys, MAC_LEN};
use crate::crypto::{fresh_nonce, seal};
use crate::store::{Change, Index, Owner, Records};
use crate::token::encoding;
use crate::{Error, OAuthToken};

/// A record's id sealed into `idx.id` at the record's slot, so that the token can be named
/// when its record no longer opens.
pub(super) fn id_op(keys: &VaultKeys, epoch: u32, id: &str) -> Result<Op, Error> {
    let slot = keys.slot(id);
    let sealed = seal::seal_record(
        keys,
        TreeName::Ids.name(),
        &slot,
        epoch,
        fresh_nonce()?,
        id.as_bytes(),
    )?;
    Ok(Op::Put(TreeName::Ids, slot.to_vec(), sealed))
}

/// The id sealed at `slot` of `tree` (`idx.id`, or a quarantine label), if it opens and
/// is the slot's id.
pub(super) fn open_id(keys: &VaultKeys, tree: TreeName, slot: &[u8], sealed: &[u8]) -> Option<String> {
    let plain = seal::open_record(keys, tree.name(), slot, sealed).ok()?;
    let id = std::str::from_utf8(&plain).ok()?.to_owned();
    bool::from(keys.slot(&id).ct_eq(slot)).then_some(id)
}

/// `err`, from a token's record that does not open, naming the token: by id when it is
/// known, else by slot. Errors other than `Corrupted` pass unchanged.
pub(super) fn damaged_token(id: Option<&str>, slot: &[u8], err: Error) -> Error {
    let Error::Corrupted { what } = err else {
        return err;
    };
    match id {
        Some(id) => Error::corrupted(format!("token {id} is damaged ({what}); repair sets it aside")),
        None => Error::corrupted(format!(
            "the token at slot {}… is damaged ({what}); repair sets it aside",
            hex_prefix(slot)
        )),
    }
}

/// The first bytes of a slot or key, in hex: enough to tell entries apart in a report.
pub(super) fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Opens a sealed record read from `slot`: authenticated, decoded, and its id must map to
/// the slot (the AAD binds the record to its slot; the slot must also be its id's).
pub(super) fn open_sealed(keys: &VaultKeys, slot: &[u8], sealed: &[u8]) -> Result<OAuthToken, Error> {
    let token = open_record_unchecked(keys, slot, sealed)?;
    match token.id() {
        Some(id) if keys.slot(id).ct_eq(slot).into() => Ok(token),
        _ => Err(Error::corrupted("record: id does not match its slot")),
    }
}

/// Opens and decodes a sealed record read from `slot` (authenticated, bound to the slot by
/// its AAD); the caller checks that the record's id is the slot's.
pub(super) fn open_record_unchecked(
    keys: &VaultKeys,
    slot: &[u8],
    sealed: &[u8],
) -> Result<OAuthToken, Error> {
    let plain = seal::open_record(keys, TreeName::Tokens.name(), slot, sealed)?;
    encoding::decode_token(&plain)
}

/// Seals a token into its slot under the current epoch's key, with a fresh random nonce.
pub(super) fn seal_op(keys: &VaultKeys, epoch: u32, token: &OAuthToken) -> Result<Op, Error> {
    let id = token.id().ok_or_else(|| Error::corrupted("record without id"))?;
    let slot = keys.slot(id);
    let plain = encoding::encode_token(token)?;
    let sealed = seal::seal_record(
        keys,
        TreeName::Tokens.name(),
        &slot,
        epoch,
        fresh_nonce()?,
        &plain,
    )?;
    Ok(Op::Put(TreeName::Tokens, slot.to_vec(), sealed))
}

impl Inner {
    /// Refuses a header that unlocks but belongs to another vault (the same passphrase,
    /// transplanted with its `meta` tree) at open rather than at the first lookup: the
    /// records are tried in key order until one opens. A vault with records of which none
    /// opens is `Corrupted`; one damaged record is not (it costs one more attempt here, and
    /// only that token is unreadable).
    pub(super) fn check_records_open(&self) -> Result<(), Error> {
        let keys = self.keys();
        let mut any_record = false;
        let one_opens = self.storage().any(TreeName::Tokens, &mut |slot, sealed| {
            any_record = true;
            open_sealed(&keys, slot, sealed).is_ok()
        })?;
        if any_record && !one_opens {
            return Err(Error::corrupted(
                "no record opens under this header: the header belongs to another vault, or every record is damaged",
            ));
        }
        Ok(())
    }

    /// `err`, from the record at `slot`, as an error that names the token: by the id that
    /// `idx.id` keeps for the slot when that still opens, else by the slot.
    pub(super) fn damaged(&self, keys: &VaultKeys, slot: &[u8], err: Error) -> Error {
        if !matches!(err, Error::Corrupted { .. }) {
            return err;
        }
        let id = match self.storage().get(TreeName::Ids, slot) {
            Ok(Some(sealed)) => open_id(keys, TreeName::Ids, slot, &sealed),
            _ => None,
        };
        damaged_token(id.as_deref(), slot, err)
    }

    /// The removal of every record and index entry (and, with `quarantined`, of every
    /// record set aside), as one batch.
    pub(super) fn remove_every_token(&self, quarantined: bool) -> Result<Vec<Op>, Error> {
        let mut ops = Vec::new();
        for tree in TreeName::ALL {
            if tree == TreeName::Meta || (tree == TreeName::Quarantine && !quarantined) {
                continue;
            }
            self.storage().for_each(tree, &mut |k, _| {
                ops.push(Op::Remove(tree, k.to_vec()));
                Ok(())
            })?;
        }
        Ok(ops)
    }

    /// The removal of every record, index entry and record set aside: one clear per tree.
    pub(super) fn clear_every_token(&self) -> Vec<Op> {
        TreeName::ALL
            .into_iter()
            .filter(|t| *t != TreeName::Meta)
            .map(Op::Clear)
            .collect()
    }

    /// Every stored token, each opened and checked against its slot. The records are read
    /// a batch at a time, each batch opened on up to [`OPEN_THREADS`] threads, a chunk of
    /// [`MIN_OPEN_CHUNK`] records each.
    pub(super) fn all_tokens(&self) -> Result<Vec<OAuthToken>, Error> {
        let keys = self.keys();
        let open_all = |chunk: &[Entry]| -> Result<Vec<OAuthToken>, Error> {
            chunk
                .iter()
                .map(|(slot, sealed)| {
                    open_sealed(&keys, slot, sealed).map_err(|e| self.damaged(&keys, slot, e))
                })
                .collect()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, OPEN_THREADS);
        let mut out = Vec::new();
        self.storage()
            .for_each_batch(TreeName::Tokens, threads * MIN_OPEN_CHUNK, &mut |batch| {
                if threads == 1 || batch.len() < 2 * MIN_OPEN_CHUNK {
                    out.extend(open_all(batch)?);
                    return Ok(());
                }
                let chunk = batch.len().div_ceil(threads).max(MIN_OPEN_CHUNK);
                let mut chunks = batch.chunks(chunk);
                let first = chunks.next().unwrap_or_default();
                std::thread::scope(|scope| {
                    let others: Vec<_> = chunks.map(|c| scope.spawn(move || open_all(c))).collect();
                    out.extend(open_all(first)?);
                    for handle in others {
                        let part = handle
                            .join()
                            .unwrap_or_else(|_| Err(Error::internal("a thread opening records panicked")))?;
                        out.extend(part);
                    }
                    Ok(())
                })
            })?;
        Ok(out)
    }
}

/// The records as one operation sees them. A writer's view remembers every value its
/// decision rests on (the record by id, each index entry's owner), and its commit applies
/// only if each still holds: a writer that lost a race to another gets a conflict, re-reads
/// and decides again ([`Inner::write`]). A reader's view remembers nothing.
pub(super) struct View<'a> {
    inner: &'a Inner,
    reads: Option<RefCell<Vec<Expect>>>,
    conflicted: Cell<bool>,
    /// The storage's generation when the view began: a writer's commit applies only in
    /// it, and a reader that sees it change reads again (see [`Inner::reading`]).
    generation: u64,
}

impl<'a> View<'a> {
    /// A lookup's view.
    pub(super) fn reading(inner: &'a Inner) -> Self {
        View {
            inner,
            reads: None,
            conflicted: Cell::new(false),
            generation: inner.storage().generation(),
        }
    }

    /// A lookup's view, of the generation the caller's keys are for.
    pub(super) fn reading_at(inner: &'a Inner, generation: u64) -> Self {
        View {
            generation,
            ..Self::reading(inner)
        }
    }

    /// A read-decide-write's view, of the generation the caller's keys are for: its commit
    /// applies only there.
    pub(super) fn writing_at(inner: &'a Inner, generation: u64) -> Self {
        View {
            inner,
            reads: Some(RefCell::new(Vec::new())),
            conflicted: Cell::new(false),
            generation,
        }
    }

    /// The storage's generation when the view began.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether every value this writer's view read is still what the storage holds (and
    /// the storage still at the view's generation).
    pub(super) fn reads_still_hold(&self) -> Result<bool, Error> {
        let storage = self.inner.storage();
        if storage.generation() != self.generation {
            return Ok(false);
        }
        let Some(reads) = &self.reads else {
            return Ok(true);
        };
        let reads = reads.borrow().clone();
        for read in reads {
            if storage.get_to_decide(read.tree, &read.key)? != read.value {
                return Ok(false);
            }
        }
        Ok(storage.generation() == self.generation)
    }

    /// Whether the commit found a value read meanwhile changed (nothing was written).
    pub(super) fn conflicted(&self) -> bool {
        self.conflicted.get()
    }

    /// Reads `key` of `tree`; a writer's view remembers what it saw.
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        let storage = self.inner.storage();
        let value = match self.reads {
            Some(_) => storage.get_to_decide(tree, key)?,
            None => storage.get(tree, key)?,
        };
        if let Some(reads) = &self.reads {
            let mut reads = reads.borrow_mut();
            match reads.iter().find(|r| r.tree == tree && r.key == key) {
                // The same key read twice in one decision, changed in between (another
                // writer of shared storage): the decision would mix two states.
                Some(earlier) if earlier.value != value => {
                    drop(reads);
                    return Err(self.conflict());
                }
                Some(_) => {}
                None => reads.push(Expect {
                    tree,
                    key: key.to_vec(),
                    value: value.clone(),
                }),
            }
        }
        Ok(value)
    }

    /// Opens and decodes the record stored at `slot`, if any.
    fn open_slot(&self, keys: &VaultKeys, slot: &[u8]) -> Result<Option<OAuthToken>, Error> {
        let Some(sealed) = self.get(TreeName::Tokens, slot)? else {
            return Ok(None);
        };
        Ok(Some(open_sealed(keys, slot, &sealed)?))
    }

    /// The conflict a commit reports: nothing written, the caller decides again.
    pub(super) fn conflict(&self) -> Error {
        self.conflicted.set(true);
        Error::Storage {
            message: "the vault changed while this write was decided".into(),
        }
    }
}

impl Records for View<'_> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>, Error> {
        if id.is_empty() {
            return Ok(None);
        }
        let keys = self.inner.keys();
        let slot = keys.slot(id);
        let Some(sealed) = self.get(TreeName::Tokens, &slot)? else {
            return Ok(None);
        };
        // The slot is this id's, so the record must carry this id: comparing the ids is
        // the slot check of `open_sealed` without computing the MAC again.
        let token = match open_record_unchecked(&keys, &slot, &sealed) {
            Ok(token) => token,
            Err(e) => return Err(damaged_token(Some(id), &slot, e)),
        };
        if token.id() == Some(id) {
            Ok(Some(token))
        } else {
            let e = Error::corrupted("record: id does not match its slot");
            Err(damaged_token(Some(id), &slot, e))
        }
    }

    fn indexed(&self, index: Index, value: &str) -> Result<Option<OAuthToken>, Error> {
        // On storage that other processes write (etcd), a save elsewhere can land between
        // this lookup's two reads: an entry and a record that disagree are read again
        // before they count as damage. (In one process the commit gate rules that out.)
        let mut tries = 0;
        loop {
            match self.indexed_once(index, value) {
                Err(Error::Corrupted { .. })
                    if self.inner.engine == Engine::Etcd && tries < LOOKUP_RETRIES =>
                {
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    fn owner(&self, index: Index, value: &str, id: &str) -> Result<Owner, Error> {
        let keys = self.inner.keys();
        Ok(match self.get(index.tree(), &entry_key(&keys, index, value)?)? {
            None => Owner::Absent,
            Some(slot) if slot == keys.slot(id) => Owner::This,
            Some(_) => Owner::Other,
        })
    }

    fn commit(&self, changes: &[Change<'_>]) -> Result<(), Error> {
        self.commit_changes(changes)
    }
}

/// How many times a lookup on shared storage reads an entry and its record again when
/// they disagree (see [`View::indexed`](Records::indexed)).
const LOOKUP_RETRIES: u32 = 3;

impl View<'_> {
    fn indexed_once(&self, index: Index, value: &str) -> Result<Option<OAuthToken>, Error> {
        let inner = self.inner;
        let keys = inner.keys();
        let _gate = inner.commit_gate.read().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = self.get(index.tree(), &entry_key(&keys, index, value)?)? else {
            return Ok(None);
        };
        if slot.len() != MAC_LEN {
            return Err(Error::corrupted("index entry: malformed"));
        }
        let Some(token) = self
            .open_slot(&keys, &slot)
            .map_err(|e| inner.damaged(&keys, &slot, e))?
        else {
            return Err(Error::corrupted("index entry: points at no record"));
        };
        let stored = index.field(&token).unwrap_or("");
        if bool::from(stored.as_bytes().ct_eq(value.as_bytes())) {
            Ok(Some(token))
        } else {
            Err(Error::corrupted(
                "index entry: points at a record without the value",
            ))
        }
    }

    fn commit_changes(&self, changes: &[Change<'_>]) -> Result<(), Error> {
        let inner = self.inner;
        let mut state = lock(&inner.key_state);
        // A new record is sealed twice: the token, and its id in `idx.id`.
        let seals = changes
            .iter()
            .map(|c| match c {
                Change::PutRecord(_) => 1,
                Change::NewRecord(_) => 2,
                _ => 0,
            })
            .sum::<u64>();
        if inner.make_room_for_seals(&mut state, seals)? == Outcome::Conflict {
            return Err(self.conflict());
        }
        let keys = inner.keys();
        let mut ops = Vec::with_capacity(changes.len() + 2);
        for change in changes {
            let op = match change {
                Change::PutRecord(token) => seal_op(&keys, state.header.epoch, token)?,
                Change::NewRecord(token) => {
                    let id = token.id().ok_or_else(|| Error::corrupted("record without id"))?;
                    ops.push(id_op(&keys, state.header.epoch, id)?);
                    seal_op(&keys, state.header.epoch, token)?
                }
                Change::RemoveRecord(id) => {
                    ops.push(Op::Remove(TreeName::Ids, keys.slot(id).to_vec()));
                    Op::Remove(TreeName::Tokens, keys.slot(id).to_vec())
                }
                Change::PutIndex(index, value, id) => Op::Put(
                    index.tree(),
                    entry_key(&keys, *index, value)?.to_vec(),
                    keys.slot(id).to_vec(),
                ),
                Change::RemoveIndex(index, value) => {
                    Op::Remove(index.tree(), entry_key(&keys, *index, value)?.to_vec())
                }
            };
            ops.push(op);
        }
        let mut expects = match &self.reads {
            Some(reads) => reads.borrow().clone(),
            None => Vec::new(),
        };
        let counted = inner.count_seals(&state, &keys, seals, &mut ops, &mut expects);
        drop(keys);
        if inner.apply_if_at(self.generation, &expects, &ops)? == Outcome::Conflict {
            return Err(self.conflict());
        }
        counted.record(&mut state);
        drop(state);
        inner.after_write()
    }
}
