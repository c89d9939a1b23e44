//! The `TokenStore` trait and its matching rules, written once for every store.
//!
//! The rules (docs/design.md section 3) live here and nowhere else: a store only provides
//! [`Records`], a keyed record collection with four value indexes, and this module decides
//! what a lookup, a save and a delete mean. Invariants kept here:
//! - a lookup with no usable key finds nothing (never "the first row");
//! - one stored token per user name;
//! - an access, refresh or grant index entry points at the token that last claimed the
//!   value, and goes when that token drops the value;
//! - a save or delete is one `commit` (all or nothing); callers hold their writer lock
//!   across the read-modify-write so concurrent saves cannot interleave.

use crate::backend::TreeName;
use crate::{Error, OAuthToken};

/// The persistence interface of the Zoho CRM SDKs, with exact, documented semantics.
///
/// Both [`Vault`](crate::Vault) and [`MemoryStore`](crate::MemoryStore) implement it with
/// identical behaviour.
///
/// ```
/// use tokenvault::{MemoryStore, OAuthToken, TokenStore};
///
/// let store = MemoryStore::new();
/// let mut t = OAuthToken::default()
///     .with_user_name("alice@example.com")
///     .with_refresh_token("1000.refresh");
/// store.save_token(&mut t)?;
/// let id = t.id().expect("the store assigns an id").to_owned();
///
/// let query = OAuthToken::default().with_user_name("alice@example.com");
/// let found = store.find_token(&query)?.expect("saved above");
/// assert_eq!(found.id(), Some(id.as_str()));
/// # Ok::<(), tokenvault::Error>(())
/// ```
pub trait TokenStore {
    /// Finds the stored token that `token` identifies, by the first rule that applies:
    /// 1. user name present: the token stored for that user name;
    /// 2. access token present and client id and secret both absent: by access token;
    /// 3. grant or refresh token present, with client id and secret: by grant token, then
    ///    by refresh token; a hit only counts if its stored client id equals the query's.
    ///
    /// No rule applies: `Ok(None)`.
    ///
    /// # Errors
    /// `Corrupted` if an index entry or record fails its checks; `Io`/`Storage` on
    /// storage failures.
    fn find_token(&self, token: &OAuthToken) -> Result<Option<OAuthToken>, Error>;

    /// Inserts or updates `token` (an upsert) and writes back what is stored, id included.
    ///
    /// The token replaced is the one with the same id, if it exists, else the one
    /// [`find_token`](TokenStore::find_token) returns. On update, present fields overwrite
    /// and absent fields keep their stored value.
    ///
    /// # Errors
    /// `InvalidToken` if the token has no grant, refresh or access token, or would take a
    /// user name held by another token (nothing is written); `Corrupted`, `Io`, `Storage`.
    fn save_token(&self, token: &mut OAuthToken) -> Result<(), Error>;

    /// Removes the token with this id and all its index entries; an absent id is `Ok`.
    ///
    /// # Errors
    /// `Corrupted`, `Io`, `Storage`.
    fn delete_token(&self, id: &str) -> Result<(), Error>;

    /// Returns every stored token, in no particular order.
    ///
    /// # Errors
    /// `Corrupted`, `Io`, `Storage`.
    fn get_tokens(&self) -> Result<Vec<OAuthToken>, Error>;

    /// Removes every token.
    ///
    /// # Errors
    /// `Io`, `Storage`.
    fn delete_tokens(&self) -> Result<(), Error>;

    /// Returns the token with this id, or `Ok(None)`.
    ///
    /// # Errors
    /// `Corrupted`, `Io`, `Storage`.
    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>, Error>;
}

/// What a save did: see [`Vault::upsert_token`](crate::Vault::upsert_token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// No stored token matched: the token was added.
    Inserted,
    /// A stored token (the one with the same id, else the one `find_token` returns) was
    /// updated.
    Updated,
}

/// The four value indexes a store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Index {
    User,
    Access,
    Refresh,
    Grant,
}

/// Everything that is said about an index is said here: the field it is keyed by, its
/// name in reports, the tree that holds it, and the label its key is derived with.
impl Index {
    pub(crate) const ALL: [Index; 4] = [Index::User, Index::Access, Index::Refresh, Index::Grant];

    /// Its name in reports (`verify`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Index::User => "user",
            Index::Access => "access",
            Index::Refresh => "refresh",
            Index::Grant => "grant",
        }
    }

    /// The tree that holds its entries.
    pub(crate) fn tree(self) -> TreeName {
        match self {
            Index::User => TreeName::User,
            Index::Access => TreeName::Access,
            Index::Refresh => TreeName::Refresh,
            Index::Grant => TreeName::Grant,
        }
    }

    /// The HKDF label its key is derived with (docs/format.md, "Keys").
    pub(crate) fn key_label(self) -> &'static [u8] {
        match self {
            Index::User => b"tokenvault v1 index user",
            Index::Access => b"tokenvault v1 index access",
            Index::Refresh => b"tokenvault v1 index refresh",
            Index::Grant => b"tokenvault v1 index grant",
        }
    }

    /// Its position in [`Index::ALL`] (and among the vault's index keys).
    pub(crate) fn position(self) -> usize {
        match self {
            Index::User => 0,
            Index::Access => 1,
            Index::Refresh => 2,
            Index::Grant => 3,
        }
    }

    /// The field of `token` this index is keyed by, if present.
    pub(crate) fn field(self, token: &OAuthToken) -> Option<&str> {
        let v = match self {
            Index::User => token.user_name(),
            Index::Access => token.access_token(),
            Index::Refresh => token.refresh_token(),
            Index::Grant => token.grant_token(),
        };
        v.filter(|s| !s.is_empty())
    }
}

/// Who an index entry points at, relative to one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Absent,
    This,
    Other,
}

/// One part of an all-or-nothing commit.
pub(crate) enum Change<'a> {
    /// A record that replaces a stored one with the same id.
    PutRecord(&'a OAuthToken),
    /// A record whose id is not stored yet.
    NewRecord(&'a OAuthToken),
    RemoveRecord(&'a str),
    PutIndex(Index, &'a str, &'a str),
    RemoveIndex(Index, &'a str),
}

/// A record collection with value indexes: what a store provides to the rules.
pub(crate) trait Records {
    /// The record with this id.
    fn record(&self, id: &str) -> Result<Option<OAuthToken>, Error>;
    /// The record the `index` entry for `value` points at, verified to carry `value`.
    fn indexed(&self, index: Index, value: &str) -> Result<Option<OAuthToken>, Error>;
    /// Whether the `index` entry for `value` points at the record `id`.
    fn owner(&self, index: Index, value: &str, id: &str) -> Result<Owner, Error>;
    /// Applies every change, or none.
    fn commit(&self, changes: &[Change<'_>]) -> Result<(), Error>;
}

fn present(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The section 3 lookup.
pub(crate) fn find(records: &impl Records, query: &OAuthToken) -> Result<Option<OAuthToken>, Error> {
    if let Some(user) = present(query.user_name()) {
        return records.indexed(Index::User, user);
    }
    let client_id = present(query.client_id());
    let client_secret = present(query.client_secret());
    if let Some(access) = present(query.access_token()) {
        if client_id.is_none() && client_secret.is_none() {
            return records.indexed(Index::Access, access);
        }
    }
    let (Some(client_id), Some(_)) = (client_id, client_secret) else {
        return Ok(None);
    };
    for (index, value) in [
        (Index::Grant, present(query.grant_token())),
        (Index::Refresh, present(query.refresh_token())),
    ] {
        let Some(value) = value else { continue };
        if let Some(hit) = records.indexed(index, value)? {
            if hit.client_id() == Some(client_id) {
                return Ok(Some(hit));
            }
        }
    }
    Ok(None)
}

/// The section 3 upsert. The caller holds its writer lock.
pub(crate) fn save(records: &impl Records, token: &mut OAuthToken) -> Result<Saved, Error> {
    token.normalize();
    if [Index::Access, Index::Refresh, Index::Grant]
        .iter()
        .all(|i| i.field(token).is_none())
    {
        return Err(Error::InvalidToken {
            reason: "a token needs a grant, refresh or access token",
        });
    }
    let by_id = match token.id() {
        Some(id) => records.record(id)?,
        None => None,
    };
    let previous = match by_id {
        Some(p) => Some(p),
        None => find(records, token)?,
    };
    let merged = match &previous {
        Some(stored) => {
            let mut m = stored.clone();
            m.merge_from(token);
            m.set_id(stored.id());
            m
        }
        None => {
            let mut m = token.clone();
            if m.id().is_none() {
                m.set_id(Some(fresh_id()?));
            }
            m
        }
    };
    let Some(id) = merged.id() else {
        return Err(Error::corrupted("a stored record has no id"));
    };
    let user_owner = match Index::User.field(&merged) {
        Some(user) => Some(records.owner(Index::User, user, id)?),
        None => None,
    };
    if user_owner == Some(Owner::Other) {
        return Err(Error::InvalidToken {
            reason: "another stored token has this user name",
        });
    }
    let mut changes = vec![if previous.is_some() {
        Change::PutRecord(&merged)
    } else {
        Change::NewRecord(&merged)
    }];
    for index in Index::ALL {
        let new = index.field(&merged);
        let old = previous.as_ref().and_then(|p| index.field(p));
        if let Some(old) = old {
            if Some(old) != new && records.owner(index, old, id)? == Owner::This {
                changes.push(Change::RemoveIndex(index, old));
            }
        }
        if let Some(new) = new {
            // The saved token claims the value; an entry already pointing at it needs no
            // rewrite (most updates change only the access token).
            let claimed = match (index, user_owner) {
                (Index::User, Some(owner)) => owner == Owner::This,
                _ if old != Some(new) => false,
                _ => records.owner(index, new, id)? == Owner::This,
            };
            if !claimed {
                changes.push(Change::PutIndex(index, new, id));
            }
        }
    }
    let saved = if previous.is_some() {
        Saved::Updated
    } else {
        Saved::Inserted
    };
    records.commit(&changes)?;
    drop(changes);
    *token = merged;
    Ok(saved)
}

/// The section 3 delete. The caller holds its writer lock.
pub(crate) fn delete(records: &impl Records, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Ok(());
    }
    let Some(stored) = records.record(id)? else {
        return Ok(());
    };
    let mut changes = Vec::with_capacity(5);
    for index in Index::ALL {
        if let Some(v) = index.field(&stored) {
            if records.owner(index, v, id)? == Owner::This {
                changes.push(Change::RemoveIndex(index, v));
            }
        }
    }
    changes.push(Change::RemoveRecord(id));
    records.commit(&changes)
}

/// A fresh random id: 128 bits from the random source every key and nonce comes from (so
/// the fixture writer's deterministic source covers it), as 32 lowercase hex digits.
pub(crate) fn fresh_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    crate::crypto::random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_reports_whether_it_inserted_or_updated_by_the_rules() {
        let store = crate::MemoryStore::new();
        let mut a = OAuthToken::default().with_user_name("a").with_access_token("1");
        assert_eq!(store.upsert_token(&mut a).unwrap(), Saved::Inserted);
        // The same user name: rule 1 finds it.
        let mut again = OAuthToken::default().with_user_name("a").with_access_token("2");
        assert_eq!(store.upsert_token(&mut again).unwrap(), Saved::Updated);
        // The same id.
        let mut by_id = OAuthToken::default()
            .with_id(a.id().unwrap())
            .with_refresh_token("r");
        assert_eq!(store.upsert_token(&mut by_id).unwrap(), Saved::Updated);
        // An access token with a client id matches nothing (rule 2 needs neither).
        let mut other = OAuthToken::default().with_access_token("2").with_client_id("c");
        assert_eq!(store.upsert_token(&mut other).unwrap(), Saved::Inserted);
        // A refused save reports nothing.
        let mut empty = OAuthToken::default().with_user_name("b");
        assert!(store.upsert_token(&mut empty).is_err());
        assert_eq!(store.get_tokens().unwrap().len(), 2);
    }

    #[test]
    fn fresh_ids_are_long_url_safe_and_distinct() {
        let a = fresh_id().unwrap();
        let b = fresh_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
