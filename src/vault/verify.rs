//! `Vault::verify` and `Vault::repair`: every record opened, every index entry checked
//! both ways.
//!
//! Invariants: verify changes nothing; repair only touches the index trees (it never
//! deletes or rewrites a record), so it cannot lose a token.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{index_tree, lock, open_sealed, Vault};
use crate::backend::{Op, TreeName};
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
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong in a vault. Names records by id (or by a slot prefix when the record
/// cannot be read) and never shows a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A record that fails authentication or decoding.
    UnreadableRecord {
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
            Problem::UnreadableRecord { slot, reason } => {
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

fn index_name(index: Index) -> &'static str {
    match index {
        Index::User => "user",
        Index::Access => "access",
        Index::Refresh => "refresh",
        Index::Grant => "grant",
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The state of the index trees against the records, and what would make them agree.
struct Survey {
    report: VerifyReport,
    fixes: Vec<Op>,
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
        Ok(self.survey()?.report)
    }

    /// Rebuilds the index trees from the records: removes every entry that `verify`
    /// calls dangling and adds every missing user-name entry. Records are never changed or removed, so
    /// an unreadable record (or a duplicate user name) is still reported afterwards.
    /// Returns the report of a `verify` run after the repair.
    ///
    /// # Errors
    /// `Io`, `Storage`.
    pub fn repair(&self) -> Result<VerifyReport, Error> {
        let _writer = lock(&self.inner.writer);
        let survey = self.survey()?;
        self.inner.apply(&survey.fixes)?;
        self.inner.storage.flush()?;
        Ok(self.survey()?.report)
    }

    fn survey(&self) -> Result<Survey, Error> {
        let inner = &*self.inner;
        let keys = inner.keys();
        let mut report = VerifyReport::default();
        let mut fixes = Vec::new();

        let mut records: HashMap<Vec<u8>, OAuthToken> = HashMap::new();
        let mut unreadable: HashSet<Vec<u8>> = HashSet::new();
        inner.storage.for_each(TreeName::Tokens, &mut |slot, sealed| {
            match open_sealed(&keys, slot, sealed) {
                Ok(token) => {
                    records.insert(slot.to_vec(), token);
                }
                Err(e) => {
                    unreadable.insert(slot.to_vec());
                    report.problems.push(Problem::UnreadableRecord {
                        slot: hex_prefix(slot),
                        reason: e.to_string(),
                    });
                }
            }
            Ok(())
        })?;
        report.records = records.len();

        for index in Index::ALL {
            let tree = index_tree(index);
            let name = index_name(index);
            let mut valid: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            inner.storage.for_each(tree, &mut |key, slot| {
                report.index_entries += 1;
                let reason = if slot.len() != MAC_LEN {
                    Some("is malformed")
                } else if unreadable.contains(slot) {
                    Some("points at an unreadable record")
                } else {
                    match records.get(slot).map(|t| index.field(t)) {
                        None => Some("points at no record"),
                        Some(None) => Some("points at a record without such a value"),
                        Some(Some(v)) if keys.index_key(index, v).as_slice() != key => {
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
                let key = keys.index_key(index, value).to_vec();
                let id = token.id().unwrap_or_default().to_owned();
                match valid.get(&key) {
                    // An access, refresh or grant value may rightly have no entry: its last
                    // claimant dropped it (DESIGN.md section 3), and then it finds nothing.
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
        Ok(Survey { report, fixes })
    }
}
