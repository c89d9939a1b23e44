//! `Vault::verify` and `Vault::repair`: every record opened, every index entry checked
//! both ways.
//!
//! Invariants: verify changes nothing; repair rewrites the index trees and moves records
//! that do not open into the quarantine, bytes unchanged, in one batch; it never removes or
//! rewrites a record that opens, so it cannot lose a readable token.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::keys::header_as;
use super::quarantine::{self, Entry};
use super::records::{hex_prefix, id_op, open_id, open_sealed};
use super::{back_off, entry_key, lock, KeyState, Vault, VaultKeys, HEADER_KEY, WRITE_ATTEMPTS};
use crate::backend::{Expect, Op, Outcome, TreeName};
use crate::crypto::keys::MAC_LEN;
use crate::store::Index;
use crate::{Error, OAuthToken};

/// What [`Vault::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that opened and decoded.
    pub records: usize,
    /// Index entries, in all four indexes.
    pub index_entries: usize,
    /// Everything wrong, one entry per problem.
    pub problems: Vec<Problem>,
    /// Every record in the quarantine: set aside by a `repair` because it did not open.
    /// These are not problems (they no longer affect any lookup), but their tokens are
    /// lost unless saved again.
    pub quarantined: Vec<QuarantinedRecord>,
    /// The records that this call set aside (only [`Vault::repair`] sets any aside).
    pub set_aside: Vec<QuarantinedRecord>,
}

impl VerifyReport {
    /// Whether nothing is wrong. Records in the quarantine do not count: they are out of
    /// every lookup.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A record that `repair` moved out of the vault's records into its quarantine, bytes
/// unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedRecord {
    /// The token's id, when the vault still knew it (its entry in the id index opened).
    pub id: Option<String>,
    /// The first bytes of the record's slot, in hex.
    pub slot: String,
}

impl fmt::Display for QuarantinedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "token {id} (slot {}…)", self.slot),
            None => write!(f, "an unknown token (slot {}…)", self.slot),
        }
    }
}

/// One thing wrong in a vault. Names records by id (or by a slot prefix when the record
/// cannot be read) and never shows a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A record that fails authentication or decoding.
    UnreadableRecord {
        /// The token's id, when the id index still knows it.
        id: Option<String>,
        /// The first bytes of the record's slot, in hex.
        slot: String,
        /// Why it failed.
        reason: String,
    },
    /// A record's user name with no index entry: lookups by it find nothing. (Access,
    /// refresh and grant values may rightly lack an entry, once the token that last
    /// claimed a shared value dropped it, so they are not reported.)
    MissingIndexEntry {
        /// The record's id.
        id: String,
        /// The index (`user`, `access`, `refresh`, `grant`).
        index: &'static str,
    },
    /// Two records with the same user name.
    DuplicateUserName {
        /// The record that the user index points at.
        indexed: String,
        /// The other record.
        other: String,
    },
    /// An index entry that points at nothing, at an unreadable record, or at a record
    /// without the value it is keyed by.
    DanglingIndexEntry {
        /// The index (`user`, `access`, `refresh`, `grant`).
        index: &'static str,
        /// The first bytes of the entry's key, in hex.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnreadableRecord {
                id: Some(id),
                slot,
                reason,
            } => write!(f, "token {id} (slot {slot}…) is unreadable: {reason}"),
            Problem::UnreadableRecord {
                id: None,
                slot,
                reason,
            } => {
                write!(f, "record at slot {slot}… is unreadable: {reason}")
            }
            Problem::MissingIndexEntry { id, index } => {
                write!(f, "token {id} has a {index} value with no index entry")
            }
            Problem::DuplicateUserName { indexed, other } => {
                write!(f, "tokens {indexed} and {other} have the same user name")
            }
            Problem::DanglingIndexEntry { index, key, reason } => {
                write!(f, "{index} index entry {key}… {reason}")
            }
        }
    }
}

/// The state of the index trees against the records, and what would make them agree.
struct Survey {
    report: VerifyReport,
    fixes: Vec<Op>,
    /// Seals the fixes make under the current epoch.
    seals: u64,
}

impl Vault {
    /// Opens every record and checks every index entry both ways: each entry must point at
    /// a readable record that carries the value it is keyed by, and each record's user name
    /// must be indexed (to that record, unless two records share it). Changes nothing.
    ///
    /// ```
    /// # use tokenvault::{KdfParams, OAuthToken, TokenStore, VaultOptions};
    /// # let tmp = tempfile::tempdir()?;
    /// let vault = VaultOptions::new().kdf(KdfParams::FLOOR).create(tmp.path().join("v"), "pass")?;
    /// vault.save_token(&mut OAuthToken::default().with_user_name("a").with_access_token("t"))?;
    /// let report = vault.verify()?;
    /// assert!(report.is_clean());
    /// assert_eq!((report.records, report.index_entries), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Io`, `Storage` (damaged records and entries are reported, not errors).
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let _writer = lock(&self.inner.writer);
        Ok(self.inner.reading(|_| self.survey(None))?.report)
    }

    /// The records a [`repair`](Self::repair) set aside into the vault's quarantine, as
    /// [`VerifyReport::quarantined`] lists them, without checking the rest of the vault:
    /// one pass over the quarantine alone.
    ///
    /// ```
    /// # use tokenvault::{KdfParams, OAuthToken, TokenStore, VaultOptions};
    /// # let tmp = tempfile::tempdir()?;
    /// let vault = VaultOptions::new().kdf(KdfParams::FLOOR).create(tmp.path().join("v"), "pass")?;
    /// vault.save_token(&mut OAuthToken::default().with_user_name("a").with_access_token("t"))?;
    /// assert!(vault.quarantined()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Io`, `Storage`.
    pub fn quarantined(&self) -> Result<Vec<QuarantinedRecord>, Error> {
        self.inner
            .reading(|_| self.list_quarantine(&self.inner.keys(), &mut HashMap::new()))
    }

    /// Moves every record that does not open into the quarantine (bytes unchanged, with
    /// the token's id when the id index still knows it) and rebuilds the index trees from
    /// the records that open: removes every entry that `verify` calls dangling and adds
    /// every missing user-name entry. A record that opens is never changed or removed, so
    /// a duplicate user name is still reported afterwards. All of it is one atomic batch,
    /// on disk when this returns; a second `repair` finds nothing to do.
    ///
    /// Returns the report of a `verify` run after the repair, with
    /// [`set_aside`](VerifyReport::set_aside) listing the records this call moved.
    ///
    /// ```
    /// # use tokenvault::{KdfParams, OAuthToken, TokenStore, VaultOptions};
    /// # let tmp = tempfile::tempdir()?;
    /// let vault = VaultOptions::new().kdf(KdfParams::FLOOR).create(tmp.path().join("v"), "pass")?;
    /// vault.save_token(&mut OAuthToken::default().with_user_name("a").with_access_token("t"))?;
    /// let report = vault.repair()?;
    /// assert!(report.is_clean() && report.set_aside.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Io`, `Storage`.
    pub fn repair(&self) -> Result<VerifyReport, Error> {
        let inner = &*self.inner;
        let _writer = lock(&inner.writer);
        let mut state = lock(&inner.key_state);
        let mut seals_needed = 0u64;
        for n in 0..WRITE_ATTEMPTS {
            if let Some(set_aside) = self.repair_once(&mut state, &mut seals_needed)? {
                drop(state);
                inner.storage().flush()?;
                let mut report = inner.reading(|_| self.survey(None))?.report;
                report.set_aside = set_aside;
                return Ok(report);
            }
            // Another writer of shared storage moved the key state, or the fixes need a
            // new epoch first: take that up and survey again.
            inner.reload_into(&mut state)?;
            back_off(n)?;
        }
        Err(changed_meanwhile())
    }

    /// One attempt at a repair: the survey and its fixes with every other writer held off
    /// (see `Storage::exclusive`). `None` when it must be made again: the key state moved,
    /// or the fixes need more seals than the current key has left (`seals_needed` says how
    /// many; the next attempt moves to a new epoch first).
    fn repair_once(
        &self,
        state: &mut KeyState,
        seals_needed: &mut u64,
    ) -> Result<Option<Vec<QuarantinedRecord>>, Error> {
        let inner = &*self.inner;
        inner.keys_current_locked(state)?;
        if inner.options.seals_per_key.saturating_sub(state.seals) < *seals_needed
            && inner.make_room_for_seals(state, *seals_needed)? == Outcome::Conflict
        {
            return Ok(None);
        }
        let state_now: &KeyState = state;
        let mut set_aside = Vec::new();
        let mut counted = None;
        let (outcome, keys) = inner.exclusive(&mut || {
            let mut survey = self.survey(Some(state_now))?;
            if inner.options.seals_per_key.saturating_sub(state_now.seals) < survey.seals {
                *seals_needed = survey.seals;
                // An expectation that cannot hold: nothing is applied.
                return Ok((vec![never()], Vec::new()));
            }
            set_aside.clear();
            for problem in &survey.report.problems {
                if let Problem::UnreadableRecord { id, slot, .. } = problem {
                    set_aside.push(QuarantinedRecord {
                        id: id.clone(),
                        slot: slot.clone(),
                    });
                }
            }
            let keys = inner.keys();
            // The header the survey's keys belong to (another process may have re-keyed).
            let mut expects = vec![header_as(state_now)];
            counted =
                Some(inner.count_seals(state_now, &keys, survey.seals, &mut survey.fixes, &mut expects));
            Ok((expects, survey.fixes))
        })?;
        drop(keys);
        match (outcome, counted) {
            (Outcome::Applied, Some(counted)) => {
                counted.record(state);
                Ok(Some(set_aside))
            }
            _ => Ok(None),
        }
    }

    /// Reads every tree and checks it against the records. With `sealing` (repair), also
    /// builds the fixes, sealing under that state's epoch.
    /// The records of the quarantine; fills `next_number` with the next free number for
    /// each slot in it.
    fn list_quarantine(
        &self,
        keys: &VaultKeys,
        next_number: &mut HashMap<Vec<u8>, u32>,
    ) -> Result<Vec<QuarantinedRecord>, Error> {
        let mut listed = Vec::new();
        self.inner.storage().for_each(TreeName::Quarantine, &mut |k, v| {
            let (slot, id) = match Entry::parse(k, v) {
                Some(entry) => {
                    let next = next_number.entry(entry.slot.to_vec()).or_insert(0);
                    *next = (*next).max(entry.number.saturating_add(1));
                    (entry.slot, entry.id(keys))
                }
                None => (k, None),
            };
            listed.push(QuarantinedRecord {
                id,
                slot: hex_prefix(slot),
            });
            Ok(())
        })?;
        Ok(listed)
    }

    fn survey(&self, sealing: Option<&KeyState>) -> Result<Survey, Error> {
        let inner = &*self.inner;
        let keys = inner.keys();
        let mut report = VerifyReport::default();
        let mut fixes = Vec::new();
        let mut seals = 0u64;

        // The id index: slot -> the id it names, if it opens.
        let mut ids: BTreeMap<Vec<u8>, Option<String>> = BTreeMap::new();
        inner.storage().for_each(TreeName::Ids, &mut |slot, sealed| {
            ids.insert(slot.to_vec(), open_id(&keys, TreeName::Ids, slot, sealed));
            Ok(())
        })?;

        // The quarantine, and the next free number for each slot in it.
        let mut next_number: HashMap<Vec<u8>, u32> = HashMap::new();
        report.quarantined = self.list_quarantine(&keys, &mut next_number)?;

        let mut records: HashMap<Vec<u8>, OAuthToken> = HashMap::new();
        let mut unreadable: HashSet<Vec<u8>> = HashSet::new();
        inner.storage().for_each(TreeName::Tokens, &mut |slot, sealed| {
            match open_sealed(&keys, slot, sealed) {
                Ok(token) => {
                    records.insert(slot.to_vec(), token);
                }
                Err(e) => {
                    unreadable.insert(slot.to_vec());
                    let id = ids.get(slot).cloned().flatten();
                    if let Some(state) = sealing {
                        // Set aside, bytes unchanged, labelled with the id when known.
                        let number = next_number.get(slot).copied().unwrap_or(0);
                        let slot_key: [u8; MAC_LEN] = slot.try_into().unwrap_or([0; MAC_LEN]);
                        let value =
                            quarantine::value(&keys, state.header.epoch, &slot_key, id.as_deref(), sealed)?;
                        seals += u64::from(id.is_some());
                        fixes.push(Op::Put(
                            TreeName::Quarantine,
                            quarantine::key(slot, number),
                            value,
                        ));
                        fixes.push(Op::Remove(TreeName::Tokens, slot.to_vec()));
                    }
                    report.problems.push(Problem::UnreadableRecord {
                        id,
                        slot: hex_prefix(slot),
                        reason: e.to_string(),
                    });
                }
            }
            Ok(())
        })?;
        report.records = records.len();

        // Every id entry must name its own record; a record that opens gets its entry back
        // (vaults written before the id index have none; that is not a problem).
        for (slot, id) in &ids {
            match (records.get(slot), id) {
                (Some(token), Some(id)) if token.id() == Some(id.as_str()) => {}
                // Rewritten below from the record.
                (Some(_), _) => report.problems.push(Problem::DanglingIndexEntry {
                    index: "id",
                    key: hex_prefix(slot),
                    reason: "does not name its record",
                }),
                // Its id moves into the quarantine label with the record.
                (None, _) if unreadable.contains(slot) => fixes.push(Op::Remove(TreeName::Ids, slot.clone())),
                (None, _) => {
                    report.problems.push(Problem::DanglingIndexEntry {
                        index: "id",
                        key: hex_prefix(slot),
                        reason: "points at no record",
                    });
                    fixes.push(Op::Remove(TreeName::Ids, slot.clone()));
                }
            }
        }
        if let Some(state) = sealing {
            let mut ordered: Vec<(&Vec<u8>, &OAuthToken)> = records.iter().collect();
            ordered.sort_by(|a, b| a.0.cmp(b.0));
            for (slot, token) in ordered {
                let named = matches!(ids.get(slot), Some(Some(id)) if token.id() == Some(id.as_str()));
                if let (false, Some(id)) = (named, token.id()) {
                    fixes.push(id_op(&keys, state.header.epoch, id)?);
                    seals += 1;
                }
            }
        }

        for index in Index::ALL {
            let tree = index.tree();
            let name = index.name();
            let mut valid: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            inner.storage().for_each(tree, &mut |key, slot| {
                report.index_entries += 1;
                let reason = if slot.len() != MAC_LEN {
                    Some("is malformed")
                } else if unreadable.contains(slot) {
                    Some("points at an unreadable record")
                } else {
                    match records.get(slot).map(|t| index.field(t)) {
                        None => Some("points at no record"),
                        Some(None) => Some("points at a record without such a value"),
                        Some(Some(v)) if entry_key(&keys, index, v)?.as_slice() != key => {
                            Some("points at a record with another value")
                        }
                        Some(Some(_)) => None,
                    }
                };
                match reason {
                    Some(reason) => {
                        report.problems.push(Problem::DanglingIndexEntry {
                            index: name,
                            key: hex_prefix(key),
                            reason,
                        });
                        fixes.push(Op::Remove(tree, key.to_vec()));
                    }
                    None => {
                        valid.insert(key.to_vec(), slot.to_vec());
                    }
                }
                Ok(())
            })?;
            // Records in a fixed order, so repair picks the same owner every time.
            let mut ordered: Vec<(&Vec<u8>, &OAuthToken)> = records.iter().collect();
            ordered.sort_by(|a, b| a.0.cmp(b.0));
            for (slot, token) in ordered {
                let Some(value) = index.field(token) else { continue };
                let key = entry_key(&keys, index, value)?.to_vec();
                let id = token.id().unwrap_or_default().to_owned();
                match valid.get(&key) {
                    // An access, refresh or grant value may rightly have no entry: its last
                    // claimant dropped it (docs/design.md section 3), and then it finds nothing.
                    // Only the user index must cover every record.
                    None if index != Index::User => {}
                    None => {
                        report
                            .problems
                            .push(Problem::MissingIndexEntry { id, index: name });
                        fixes.push(Op::Put(tree, key.clone(), slot.clone()));
                        valid.insert(key, slot.clone());
                    }
                    Some(owner) if owner != slot && index == Index::User => {
                        let indexed = records
                            .get(owner)
                            .and_then(|t| t.id())
                            .unwrap_or_default()
                            .to_owned();
                        report
                            .problems
                            .push(Problem::DuplicateUserName { indexed, other: id });
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(Survey { report, fixes, seals })
    }
}

/// A repair that kept losing to other writers: nothing was changed.
fn changed_meanwhile() -> Error {
    Error::Storage {
        message:
            "other writers kept changing the vault during repair (nothing was changed): run repair again"
                .into(),
    }
}

/// An expectation no vault meets (its header absent): a batch carrying it applies nothing.
fn never() -> Expect {
    Expect {
        tree: TreeName::Meta,
        key: HEADER_KEY.to_vec(),
        value: None,
    }
}
