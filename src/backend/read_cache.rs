//! Values read from a local engine, kept in memory in front of it.
//!
//! A lookup reads two values from the engine (an index entry, then the sealed record) and
//! each read walks the engine's tree: on sled, at 10,000 tokens, about two thirds of a
//! lookup's time. This cache keeps values already read, exactly as the engine returned them
//! (index entries and sealed records: the bytes the files hold, never anything decrypted),
//! so a repeated lookup finds them with one hash probe and still opens and checks the record
//! as before.
//!
//! Only a local vault has one: one process writes it (the vault's lock), and every write of
//! that process goes through [`ReadCache::writing`]. An etcd vault, which other processes
//! write, reads the cluster every time.
//!
//! Coherence: a write counts itself in (`writing`) before it reaches the engine and, when
//! it is over (applied, refused or failed), drops every key it touched and counts itself
//! out; each step moves `version`. While a write is under way nothing is served from or
//! added to the cache. A value read from the engine is added only if no write began or
//! ended while it was read (`version` unchanged), so a value older than a write never
//! outlives it in the cache.
//!
//! Memory: at most `capacity` bytes of keys and values (plus a fixed overhead per entry
//! counted in), evicted by the clock algorithm (an entry read since the hand last passed
//! gets a second chance).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Bytes, Op, TreeName};
use crate::error::Error;

/// Bytes counted for an entry beyond its key and value: the slot, the map's entry and the
/// two allocations' headers.
const ENTRY_OVERHEAD: usize = 96;

/// The trees whose values are cached: the records and the lookup indexes (`meta` and the
/// quarantine are read rarely).
fn tree_slot(tree: TreeName) -> Option<usize> {
    match tree {
        TreeName::Tokens => Some(0),
        TreeName::User => Some(1),
        TreeName::Access => Some(2),
        TreeName::Refresh => Some(3),
        TreeName::Grant => Some(4),
        TreeName::Ids => Some(5),
        TreeName::Meta | TreeName::Quarantine => None,
    }
}

const TREES: usize = 6;

pub(crate) struct ReadCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Writes under way.
    writing: u32,
    /// Moves at every write's start and end.
    version: u64,
    /// Per cached tree: key -> index into `slots`.
    maps: [HashMap<Bytes, usize>; TREES],
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
}

struct Slot {
    tree: usize,
    key: Bytes,
    value: Bytes,
    referenced: bool,
}

impl Slot {
    fn size(&self) -> usize {
        self.key.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

impl ReadCache {
    /// A cache of at most `capacity` bytes (0: nothing is cached).
    pub(crate) fn new(capacity: usize) -> Self {
        ReadCache {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value at `key` in `tree`: from the cache, else from `read` (the engine), which
    /// is then cached if present and no write overlapped the read.
    pub(crate) fn get(
        &self,
        tree: TreeName,
        key: &[u8],
        read: impl FnOnce() -> Result<Option<Bytes>, Error>,
    ) -> Result<Option<Bytes>, Error> {
        let Some(t) = tree_slot(tree).filter(|_| self.capacity > 0) else {
            return read();
        };
        let version = {
            let mut state = self.lock();
            if state.writing > 0 {
                None
            } else if let Some(value) = state.hit(t, key) {
                return Ok(Some(value));
            } else {
                Some(state.version)
            }
        };
        let value = read()?;
        if let (Some(version), Some(value)) = (version, &value) {
            let mut state = self.lock();
            if state.writing == 0 && state.version == version {
                state.insert(self.capacity, t, key, value);
            }
        }
        Ok(value)
    }

    /// Counts a write in until the returned guard is dropped, which then drops from the
    /// cache every key `ops` touch (whether or not the write applied).
    pub(crate) fn writing<'a>(&'a self, ops: &'a [Op]) -> WriteGuard<'a> {
        self.begin(Touched::Ops(ops))
    }

    /// Counts a write that may touch any key of `tree` in, until the guard is dropped.
    pub(crate) fn writing_tree(&self, tree: TreeName) -> WriteGuard<'_> {
        self.begin(Touched::Tree(tree))
    }

    fn begin<'a>(&'a self, touched: Touched<'a>) -> WriteGuard<'a> {
        let mut state = self.lock();
        state.writing += 1;
        state.version += 1;
        WriteGuard { cache: self, touched }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

enum Touched<'a> {
    Ops(&'a [Op]),
    Tree(TreeName),
}

/// A write under way (see [`ReadCache::writing`]).
pub(crate) struct WriteGuard<'a> {
    cache: &'a ReadCache,
    touched: Touched<'a>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        match self.touched {
            Touched::Ops(ops) => {
                for op in ops {
                    match op {
                        Op::Put(tree, key, _) | Op::Remove(tree, key) => {
                            if let Some(t) = tree_slot(*tree) {
                                state.remove(t, key);
                            }
                        }
                        Op::Clear(tree) => state.clear_tree(*tree),
                    }
                }
            }
            Touched::Tree(tree) => state.clear_tree(tree),
        }
        state.writing -= 1;
        state.version += 1;
    }
}

impl State {
    fn map(&mut self, t: usize) -> Option<&mut HashMap<Bytes, usize>> {
        self.maps.get_mut(t)
    }

    /// The cached value, marked as read.
    fn hit(&mut self, t: usize, key: &[u8]) -> Option<Bytes> {
        let i = *self.maps.get(t)?.get(key)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    fn insert(&mut self, capacity: usize, t: usize, key: &[u8], value: &[u8]) {
        let slot = Slot {
            tree: t,
            key: key.to_vec(),
            value: value.to_vec(),
            referenced: false,
        };
        let size = slot.size();
        // One entry never takes more than a sixteenth of the cache.
        if size > capacity / 16 || self.maps.get(t).is_none_or(|m| m.contains_key(key)) {
            return;
        }
        while self.bytes + size > capacity && !self.slots.is_empty() {
            self.evict_one();
        }
        let at = self.slots.len();
        let Some(map) = self.map(t) else { return };
        map.insert(slot.key.clone(), at);
        self.bytes += size;
        self.slots.push(slot);
    }

    /// Moves the clock's hand to the first entry not read since it last passed, and
    /// evicts it.
    fn evict_one(&mut self) {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let Some(slot) = self.slots.get_mut(self.hand) else {
                return;
            };
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                let (t, key) = (slot.tree, slot.key.clone());
                self.remove(t, &key);
                return;
            }
        }
    }

    fn remove(&mut self, t: usize, key: &[u8]) {
        let Some(i) = self.map(t).and_then(|m| m.remove(key)) else {
            return;
        };
        if i >= self.slots.len() {
            return;
        }
        let slot = self.slots.swap_remove(i);
        self.bytes -= slot.size();
        if let Some(moved) = self.slots.get(i) {
            let (tree, key) = (moved.tree, moved.key.clone());
            if let Some(index) = self.map(tree).and_then(|m| m.get_mut(&key)) {
                *index = i;
            }
        }
    }

    fn clear_tree(&mut self, tree: TreeName) {
        let Some(t) = tree_slot(tree) else { return };
        let keys: Vec<Bytes> = self
            .maps
            .get(t)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove(t, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn read_of(value: &[u8]) -> impl FnOnce() -> Result<Option<Bytes>, Error> + '_ {
        move || Ok(Some(value.to_vec()))
    }

    #[test]
    fn a_value_read_once_is_served_from_memory_until_a_write_touches_it() {
        let cache = ReadCache::new(1 << 20);
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(Some(b"v1".to_vec()))
        };
        assert_eq!(
            cache.get(TreeName::User, b"k", read).unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(
            cache.get(TreeName::User, b"k", read).unwrap(),
            Some(b"v1".to_vec())
        );
        assert_eq!(reads.get(), 1, "the second read came from the cache");
        // The same key in another tree is another entry.
        assert_eq!(
            cache.get(TreeName::Access, b"k", read_of(b"a")).unwrap(),
            Some(b"a".to_vec())
        );

        let ops = [Op::Put(TreeName::User, b"k".to_vec(), b"v2".to_vec())];
        drop(cache.writing(&ops));
        assert_eq!(
            cache.get(TreeName::User, b"k", read_of(b"v2")).unwrap(),
            Some(b"v2".to_vec())
        );
        let ops = [Op::Remove(TreeName::User, b"k".to_vec())];
        drop(cache.writing(&ops));
        assert_eq!(cache.get(TreeName::User, b"k", || Ok(None)).unwrap(), None);
        // The other tree's entry was not touched.
        assert_eq!(
            cache.get(TreeName::Access, b"k", read_of(b"x")).unwrap(),
            Some(b"a".to_vec())
        );
        drop(cache.writing(&[Op::Clear(TreeName::Access)]));
        assert_eq!(
            cache.get(TreeName::Access, b"k", read_of(b"x")).unwrap(),
            Some(b"x".to_vec())
        );
        drop(cache.writing_tree(TreeName::Access));
        assert_eq!(
            cache.get(TreeName::Access, b"k", read_of(b"y")).unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn a_read_that_a_write_overlaps_is_not_cached_and_nothing_is_served_during_a_write() {
        let cache = ReadCache::new(1 << 20);
        // A write begins and ends while the engine is read: the value read may be older
        // than the write, so it is returned but not kept.
        let ops = [Op::Put(TreeName::Tokens, b"k".to_vec(), b"new".to_vec())];
        let old = cache
            .get(TreeName::Tokens, b"k", || {
                drop(cache.writing(&ops));
                Ok(Some(b"old".to_vec()))
            })
            .unwrap();
        assert_eq!(old, Some(b"old".to_vec()));
        assert_eq!(cache.len(), 0);
        assert_eq!(
            cache.get(TreeName::Tokens, b"k", read_of(b"new")).unwrap(),
            Some(b"new".to_vec())
        );
        assert_eq!(cache.len(), 1);

        // While a write is under way the cache is bypassed, and a read then is not kept.
        let ops = [Op::Put(TreeName::Tokens, b"k".to_vec(), b"newer".to_vec())];
        let guard = cache.writing(&ops);
        assert_eq!(
            cache.get(TreeName::Tokens, b"k", read_of(b"newer")).unwrap(),
            Some(b"newer".to_vec())
        );
        assert_eq!(
            cache.get(TreeName::Tokens, b"other", read_of(b"o")).unwrap(),
            Some(b"o".to_vec())
        );
        drop(guard);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn errors_absent_keys_meta_and_oversized_values_are_not_cached() {
        let cache = ReadCache::new(16 * 1024);
        let e = cache.get(TreeName::Tokens, b"k", || Err(Error::corrupted("test")));
        assert!(e.is_err());
        assert_eq!(cache.get(TreeName::Tokens, b"k", || Ok(None)).unwrap(), None);
        cache.get(TreeName::Meta, b"k", read_of(b"m")).unwrap();
        cache.get(TreeName::Quarantine, b"k", read_of(b"q")).unwrap();
        cache
            .get(TreeName::Tokens, b"big", read_of(&[0u8; 2000]))
            .unwrap();
        assert_eq!(cache.len(), 0);
        let off = ReadCache::new(0);
        off.get(TreeName::Tokens, b"k", read_of(b"v")).unwrap();
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn memory_stays_under_the_capacity_and_recently_read_entries_stay() {
        let capacity = 64 * 1024;
        let cache = ReadCache::new(capacity);
        let value = vec![7u8; 300];
        for i in 0u32..2_000 {
            cache
                .get(TreeName::Tokens, &i.to_be_bytes(), read_of(&value))
                .unwrap();
            // Entry 0 is read again after every insert: the clock keeps it.
            cache
                .get(TreeName::Tokens, &0u32.to_be_bytes(), read_of(&value))
                .unwrap();
            let state = cache.lock();
            assert!(state.bytes <= capacity, "{} bytes cached", state.bytes);
            assert_eq!(
                state.slots.len(),
                state.maps.iter().map(HashMap::len).sum::<usize>()
            );
        }
        let state = cache.lock();
        assert!(state.maps[0].contains_key(&0u32.to_be_bytes()[..]));
        assert!(state.slots.len() > 100, "{} entries", state.slots.len());
        for (i, slot) in state.slots.iter().enumerate() {
            assert_eq!(state.maps[slot.tree][&slot.key], i);
        }
    }
}
