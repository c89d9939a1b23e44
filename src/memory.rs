//! `MemoryStore`: the section 3 semantics in memory, for tests and throwaway sessions.
//!
//! Invariants: the rules come from [`crate::store`] (not copied here); one writer at a
//! time runs a whole read-modify-write; readers see each save entirely or not at all.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeroize::Zeroize;

use crate::store::{self, Change, Index, Owner, Records, Saved};
use crate::{Error, OAuthToken, TokenStore};

/// A [`TokenStore`] in memory: the same semantics as [`Vault`](crate::Vault), with no
/// encryption and no disk. Thread-safe (`Send + Sync`).
///
/// ```
/// use tokenvault::{MemoryStore, OAuthToken, TokenStore};
///
/// let store = MemoryStore::new();
/// let mut t = OAuthToken::default().with_access_token("1000.access");
/// store.save_token(&mut t)?;
/// let q = OAuthToken::default().with_access_token("1000.access");
/// assert_eq!(store.find_token(&q)?, Some(t));
/// # Ok::<(), tokenvault::Error>(())
/// ```
#[derive(Default)]
pub struct MemoryStore {
    writer: Mutex<()>,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, OAuthToken>,
    index: HashMap<(Index, String), String>,
}

impl Drop for State {
    fn drop(&mut self) {
        for ((_, mut value), mut id) in self.index.drain() {
            value.zeroize();
            id.zeroize();
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`save_token`](TokenStore::save_token), saying whether it inserted or updated.
    ///
    /// # Errors
    /// As [`TokenStore::save_token`].
    pub fn upsert_token(&self, token: &mut OAuthToken) -> Result<Saved, Error> {
        let _writer = self.writer();
        store::save(self, token)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic elsewhere cannot leave State half-updated (commit never panics midway),
        // so a poisoned lock is still consistent.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tokens", &self.read().tokens.len())
            .finish_non_exhaustive()
    }
}

impl Records for MemoryStore {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>, Error> {
        Ok(self.read().tokens.get(id).cloned())
    }

    fn indexed(&self, index: Index, value: &str) -> Result<Option<OAuthToken>, Error> {
        let state = self.read();
        let Some(id) = state.index.get(&(index, value.to_owned())) else {
            return Ok(None);
        };
        Ok(state.tokens.get(id).cloned())
    }

    fn owner(&self, index: Index, value: &str, id: &str) -> Result<Owner, Error> {
        Ok(match self.read().index.get(&(index, value.to_owned())) {
            None => Owner::Absent,
            Some(owner) if owner == id => Owner::This,
            Some(_) => Owner::Other,
        })
    }

    fn commit(&self, changes: &[Change<'_>]) -> Result<(), Error> {
        let mut state = self.write();
        for change in changes {
            match change {
                Change::PutRecord(t) | Change::NewRecord(t) => {
                    let id = t.id().ok_or_else(|| Error::corrupted("record without id"))?;
                    state.tokens.insert(id.to_owned(), (*t).clone());
                }
                Change::RemoveRecord(id) => {
                    state.tokens.remove(*id);
                }
                Change::PutIndex(index, value, id) => {
                    state
                        .index
                        .insert((*index, (*value).to_owned()), (*id).to_owned());
                }
                Change::RemoveIndex(index, value) => {
                    state.index.remove(&(*index, (*value).to_owned()));
                }
            }
        }
        Ok(())
    }
}

impl TokenStore for MemoryStore {
    fn find_token(&self, token: &OAuthToken) -> Result<Option<OAuthToken>, Error> {
        store::find(self, token)
    }

    fn save_token(&self, token: &mut OAuthToken) -> Result<(), Error> {
        self.upsert_token(token).map(|_| ())
    }

    fn delete_token(&self, id: &str) -> Result<(), Error> {
        let _writer = self.writer();
        store::delete(self, id)
    }

    fn get_tokens(&self) -> Result<Vec<OAuthToken>, Error> {
        Ok(self.read().tokens.values().cloned().collect())
    }

    fn delete_tokens(&self) -> Result<(), Error> {
        let _writer = self.writer();
        *self.write() = State::default();
        Ok(())
    }

    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>, Error> {
        self.record(id)
    }
}
