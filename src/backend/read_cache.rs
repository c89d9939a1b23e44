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
//! Memory: at most `capacity` bytes, counting each entry's key and value and an estimate
//! of what holding it costs beyond them ([`ENTRY_OVERHEAD`]: its slot, its place in the map
//! and its allocation's header), and beside it a frequency sketch of `capacity / 32` bytes
//! (up to twice that: its rows' width is rounded up to a power of two). An entry is one
//! allocation (key and value together), found through a map from a 64-bit hash of its tree
//! and key, the same hash the sketch counts with; a hit compares the whole key, so two keys
//! whose hashes collide share a place and never each other's value.
//!
//! Eviction and admission: SIEVE (Zhang et al., NSDI 2024) picks the entry to give up:
//! entries are kept in the order they were added, and a hand moving from the oldest
//! towards the newest stops at the first entry not read since it last passed, clearing the
//! mark of each read one it passes (a read moves nothing). TinyLFU (Einziger et al., 2017)
//! decides whether a new value is worth it: a count-min sketch estimates how often each key
//! was asked for lately (counts halved every ten reads per counter), and when the cache is
//! full a new value comes in only if its key was asked for more often than the entry the
//! hand picked. Lookups cycling over more keys than fit (a plain least-recently-used cache
//! would miss every one) keep hitting on the keys that stay, a pass over many keys read
//! once replaces nothing, and a key read again and again gets in over entries nobody reads.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};
use std::sync::{Mutex, MutexGuard};

use super::{Bytes, Op, TreeName};
use crate::error::Error;

/// Bytes counted for an entry beyond its key and value: its slot (48 B, with up to as much
/// again of the slots' vector grown ahead), its place in the map (17 B a bucket, buckets
/// 7/16 to 7/8 full) and its allocation's header and rounding (8-23 B): 75-157 B in all,
/// counted towards the top, since the vector and the map are mostly grown ahead.
const ENTRY_OVERHEAD: usize = 128;

/// The trees whose values are cached: the records and the lookup indexes (`meta` and the
/// quarantine are read rarely).
fn tree_slot(tree: TreeName) -> Option<u8> {
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

/// SipHash with fixed keys, of a tree and a key: the map's key and the sketch's counters.
/// The keys hashed are MACs and slots, which nobody without the vault's keys can choose, so
/// nothing is gained by a random seed, and the counts (and the tests) are the same from run
/// to run.
fn hash_of(t: u8, key: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one((t, key))
}

/// The map's hasher: its keys are [`hash_of`]'s hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; anything else is folded in, never dropped.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

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
    /// [`hash_of`] an entry's tree and key -> its index in `slots`.
    map: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    /// Entries; `None` is a free place, listed in `free`.
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// The newest and the oldest entry (the ends of the list the `newer`/`older` links make).
    newest: Option<u32>,
    oldest: Option<u32>,
    /// Where the next eviction looks first (the oldest entry when `None`).
    hand: Option<u32>,
    bytes: usize,
    /// How often each key was asked for lately (TinyLFU's sketch; empty until first used).
    sketch: Sketch,
}

/// A count-min sketch of 4 rows of saturating 4-bit counts (a byte each), all halved once
/// the counts added reach ten per counter of a row, so that old popularity fades.
#[derive(Default)]
struct Sketch {
    /// 4 rows of `width` counters, one after the other; `width` is a power of two.
    counts: Vec<u8>,
    width: usize,
    added: usize,
}

/// The most a count of the sketch holds.
const MAX_COUNT: u8 = 15;

impl Sketch {
    /// The four counters of the key whose [`hash_of`] is `hash`.
    fn places(&mut self, capacity: usize, hash: u64) -> [usize; 4] {
        if self.counts.is_empty() {
            self.width = (capacity / 32 / 4).next_power_of_two().max(64);
            self.counts = vec![0; 4 * self.width];
        }
        // Four indexes from one 64-bit hash (double hashing: h1 + row * h2).
        let low = usize::try_from(hash & 0xffff_ffff).unwrap_or(0);
        let high = usize::try_from(hash >> 32).unwrap_or(0);
        let (h1, h2) = (low, high | 1);
        let mask = self.width - 1;
        [0usize, 1, 2, 3].map(|row| row * self.width + (h1.wrapping_add(row.wrapping_mul(h2)) & mask))
    }

    /// Counts one more request of the key whose hash is `hash`.
    fn add(&mut self, capacity: usize, hash: u64) {
        for i in self.places(capacity, hash) {
            if let Some(c) = self.counts.get_mut(i) {
                *c = (*c + 1).min(MAX_COUNT);
            }
        }
        self.added += 1;
        if self.added >= 10 * self.width {
            for c in &mut self.counts {
                *c /= 2;
            }
            self.added /= 2;
        }
    }

    /// How often the key whose hash is `hash` was asked for lately (an estimate never below
    /// the truth, halvings aside).
    fn estimate(&mut self, capacity: usize, hash: u64) -> u8 {
        self.places(capacity, hash)
            .iter()
            .map(|&i| self.counts.get(i).copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }
}

struct Slot {
    /// The key, then the value, in one allocation.
    entry: Box<[u8]>,
    key_len: u32,
    tree: u8,
    /// Read since the hand last passed it.
    visited: bool,
    hash: u64,
    newer: Option<u32>,
    older: Option<u32>,
}

impl Slot {
    fn size(&self) -> usize {
        self.entry.len() + ENTRY_OVERHEAD
    }

    fn key(&self) -> &[u8] {
        self.entry.get(..self.key_len as usize).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.entry.get(self.key_len as usize..).unwrap_or_default()
    }

    fn is(&self, t: u8, key: &[u8]) -> bool {
        self.tree == t && self.key() == key
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
        let hash = hash_of(t, key);
        let version = {
            let mut state = self.lock();
            state.sketch.add(self.capacity, hash);
            if state.writing > 0 {
                None
            } else if let Some(value) = state.hit(hash, t, key) {
                return Ok(Some(value));
            } else {
                Some(state.version)
            }
        };
        let value = read()?;
        if let (Some(version), Some(value)) = (version, &value) {
            let mut state = self.lock();
            if state.writing == 0 && state.version == version {
                state.insert(self.capacity, hash, t, key, value);
            }
        }
        Ok(value)
    }

    /// The value at `key` in `tree` for a write's decision: from the cache if there (not
    /// marked as read), else from `read`, and then not cached, nor counted as asked for.
    /// A save reads the index entries of the token it writes to check who owns them, and
    /// the record it replaces; what it writes is dropped from the cache anyway, and the
    /// rest would fill the cache with entries no lookup asked for (at 100,000 tokens, 20,000
    /// updates left 54,000 entries that held their places against the lookups after them).
    pub(crate) fn peek(
        &self,
        tree: TreeName,
        key: &[u8],
        read: impl FnOnce() -> Result<Option<Bytes>, Error>,
    ) -> Result<Option<Bytes>, Error> {
        if let Some(t) = tree_slot(tree).filter(|_| self.capacity > 0) {
            let state = self.lock();
            let cached = state
                .find(hash_of(t, key), t, key)
                .filter(|_| state.writing == 0)
                .and_then(|i| state.slots.get(i as usize)?.as_ref())
                .map(|slot| slot.value().to_vec());
            if cached.is_some() {
                return Ok(cached);
            }
        }
        read()
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
        self.lock().slots.iter().flatten().count()
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
                                state.remove_key(t, key);
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
    fn slot(&mut self, i: u32) -> Option<&mut Slot> {
        self.slots.get_mut(i as usize).and_then(Option::as_mut)
    }

    /// The place of the entry of `(t, key)`, if cached.
    fn find(&self, hash: u64, t: u8, key: &[u8]) -> Option<u32> {
        let i = *self.map.get(&hash)?;
        self.slots
            .get(i as usize)
            .and_then(Option::as_ref)
            .filter(|slot| slot.is(t, key))
            .map(|_| i)
    }

    /// The cached value, marked as read.
    fn hit(&mut self, hash: u64, t: u8, key: &[u8]) -> Option<Bytes> {
        let i = self.find(hash, t, key)?;
        let slot = self.slot(i)?;
        slot.visited = true;
        Some(slot.value().to_vec())
    }

    fn insert(&mut self, capacity: usize, hash: u64, t: u8, key: &[u8], value: &[u8]) {
        let size = key.len() + value.len() + ENTRY_OVERHEAD;
        // One entry never takes more than a sixteenth of the cache. A place already taken
        // (by this key, or by another whose hash is the same) is left as it is.
        let Ok(key_len) = u32::try_from(key.len()) else {
            return;
        };
        if size > capacity / 16 || self.map.contains_key(&hash) {
            return;
        }
        // Full: the new value comes in only if its key is asked for more often than the
        // entry SIEVE would give up for it.
        // (The hand stays on the victim, so the loop below gives up that one first.)
        if self.bytes + size > capacity {
            let Some(victim) = self.victim() else { return };
            if self.sketch.estimate(capacity, hash) <= self.sketch.estimate(capacity, victim) {
                return;
            }
        }
        while self.bytes + size > capacity {
            let Some(victim) = self.victim() else { return };
            let before = self.bytes;
            self.remove(victim);
            if self.bytes == before {
                return; // nothing was freed: never spin
            }
        }
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                let Ok(at) = u32::try_from(self.slots.len()) else {
                    return;
                };
                self.slots.push(None);
                at
            }
        };
        let mut entry = Vec::with_capacity(key.len() + value.len());
        entry.extend_from_slice(key);
        entry.extend_from_slice(value);
        let slot = Slot {
            entry: entry.into_boxed_slice(),
            key_len,
            tree: t,
            visited: false,
            hash,
            newer: None,
            older: self.newest,
        };
        if let Some(place) = self.slots.get_mut(at as usize) {
            *place = Some(slot);
        }
        self.map.insert(hash, at);
        match self.newest.and_then(|n| self.slot(n)) {
            Some(newest) => newest.newer = Some(at),
            None => self.oldest = Some(at),
        }
        self.newest = Some(at);
        self.bytes += size;
    }

    /// Moves the hand towards the newest entry, clearing the marks of read entries it
    /// passes, to the first entry not read since it last passed, and leaves it there; that
    /// entry's hash, the one to give up next (removing it moves the hand on).
    fn victim(&mut self) -> Option<u64> {
        let mut at = self.hand.or(self.oldest);
        // Every entry is passed at most twice: the first pass clears its mark.
        for _ in 0..=2 * self.slots.len() {
            let i = at?;
            let oldest = self.oldest;
            let slot = self.slot(i)?;
            if slot.visited {
                slot.visited = false;
                at = slot.newer.or(oldest);
            } else {
                let found = slot.hash;
                self.hand = Some(i);
                return Some(found);
            }
        }
        None
    }

    /// Drops the entry of `(t, key)`, if cached.
    fn remove_key(&mut self, t: u8, key: &[u8]) {
        let hash = hash_of(t, key);
        if self.find(hash, t, key).is_some() {
            self.remove(hash);
        }
    }

    /// Drops the entry whose hash is `hash`.
    fn remove(&mut self, hash: u64) {
        let Some(i) = self.map.remove(&hash) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        self.bytes -= slot.size();
        match slot.older.and_then(|o| self.slot(o)) {
            Some(older) => older.newer = slot.newer,
            None => self.oldest = slot.newer,
        }
        match slot.newer.and_then(|n| self.slot(n)) {
            Some(newer) => newer.older = slot.older,
            None => self.newest = slot.older,
        }
        if self.hand == Some(i) {
            self.hand = slot.newer;
        }
    }

    fn clear_tree(&mut self, tree: TreeName) {
        let Some(t) = tree_slot(tree) else { return };
        let hashes: Vec<u64> = self
            .slots
            .iter()
            .flatten()
            .filter(|slot| slot.tree == t)
            .map(|slot| slot.hash)
            .collect();
        for hash in hashes {
            self.remove(hash);
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
            assert_eq!(state.slots.iter().flatten().count(), state.map.len());
        }
        let state = cache.lock();
        let zero = 0u32.to_be_bytes();
        assert!(state.find(hash_of(0, &zero), 0, &zero).is_some());
        let live = state.slots.iter().flatten().count();
        assert!(live > 100, "{live} entries");
        assert_consistent(&state);
    }

    /// The maps, the slots, the list and the byte count agree.
    fn assert_consistent(state: &State) {
        for (i, slot) in state.slots.iter().enumerate() {
            match slot {
                Some(slot) => {
                    assert_eq!(slot.hash, hash_of(slot.tree, slot.key()));
                    assert_eq!(state.map[&slot.hash] as usize, i);
                }
                None => assert!(
                    state.free.iter().any(|&f| f as usize == i),
                    "place {i} neither used nor free"
                ),
            }
        }
        let (mut seen, mut bytes, mut at, mut older) = (0, 0, state.oldest, None);
        while let Some(i) = at {
            let slot = state.slots[i as usize].as_ref().expect("a listed entry is live");
            assert_eq!(slot.older, older);
            seen += 1;
            bytes += slot.size();
            older = Some(i);
            at = slot.newer;
        }
        assert_eq!(state.newest, older);
        assert_eq!(seen, state.slots.iter().flatten().count());
        assert_eq!(bytes, state.bytes);
    }

    /// Reads `keys` through the cache; how many were served from it.
    fn hits(cache: &ReadCache, keys: std::ops::Range<u32>, value: &[u8]) -> usize {
        let reads = Cell::new(0);
        let total = keys.len();
        for i in keys {
            cache
                .get(TreeName::Tokens, &i.to_be_bytes(), || {
                    reads.set(reads.get() + 1);
                    Ok(Some(value.to_vec()))
                })
                .unwrap();
        }
        total - reads.get()
    }

    #[test]
    fn a_cache_full_of_entries_never_read_again_takes_new_ones() {
        let cache = ReadCache::new(64 * 1024);
        let value = vec![7u8; 300];
        // Fill it with entries read once (about 160 fit).
        assert_eq!(hits(&cache, 0..1_000, &value), 0);
        // Then 50 new keys, read again and again: once asked for more often than the
        // entries there (whose counts the sketch may overestimate a little), they come in.
        for _ in 0..7 {
            hits(&cache, 10_000..10_050, &value);
        }
        let hit = hits(&cache, 10_000..10_050, &value);
        assert!(
            hit >= 45,
            "{hit} of 50 new keys read eight times came from the cache"
        );
        assert_consistent(&cache.lock());
    }

    #[test]
    fn entries_read_again_outlast_a_pass_over_more_keys_than_fit() {
        let cache = ReadCache::new(64 * 1024);
        let value = vec![7u8; 300];
        // 50 keys read twice, then a pass over 1,000 keys read once.
        hits(&cache, 0..50, &value);
        assert_eq!(hits(&cache, 0..50, &value), 50);
        assert_eq!(hits(&cache, 1_000..2_000, &value), 0);
        assert_eq!(
            hits(&cache, 0..50, &value),
            50,
            "the pass evicted entries read twice"
        );
        assert_consistent(&cache.lock());
    }

    #[test]
    fn lookups_cycling_over_more_keys_than_fit_still_hit() {
        let cache = ReadCache::new(64 * 1024);
        let value = vec![7u8; 300];
        // About 160 entries fit; cycle over 240 keys.
        let mut hit = 0;
        for _ in 0..10 {
            hit += hits(&cache, 0..240, &value);
            assert_consistent(&cache.lock());
        }
        assert!(hit > 240 * 10 / 4, "{hit} hits of 2,400 reads");
    }

    #[test]
    fn a_key_whose_hash_another_key_has_is_never_served_its_value() {
        let cache = ReadCache::new(1 << 20);
        cache.get(TreeName::User, b"a", read_of(b"value of a")).unwrap();
        // Make b's hash point at a's entry, as a collision of the 64-bit hashes would.
        let (ha, hb) = (hash_of(1, b"a"), hash_of(1, b"b"));
        {
            let mut state = cache.lock();
            let at = state.map[&ha];
            state.map.insert(hb, at);
        }
        let reads = Cell::new(0);
        let got = cache
            .get(TreeName::User, b"b", || {
                reads.set(reads.get() + 1);
                Ok(Some(b"value of b".to_vec()))
            })
            .unwrap();
        assert_eq!(got, Some(b"value of b".to_vec()));
        assert_eq!(reads.get(), 1, "b was read from the engine, not from a's entry");
        // A write of b leaves a's entry alone; the same key in another tree is not a.
        drop(cache.writing(&[Op::Remove(TreeName::User, b"b".to_vec())]));
        drop(cache.writing(&[Op::Remove(TreeName::Access, b"a".to_vec())]));
        let state = cache.lock();
        assert!(state.find(ha, 1, b"a").is_some());
        assert!(state.find(hb, 1, b"b").is_none());
        assert!(state.find(ha, 2, b"a").is_none());
    }

    #[test]
    fn the_overhead_counted_is_within_what_an_entry_holds_beyond_its_bytes() {
        // ENTRY_OVERHEAD's reckoning: a slot, up to as much again of the vector grown ahead,
        // a map bucket at 7/16 to 7/8 load, an allocation header and rounding of 8-23 B.
        let slot = std::mem::size_of::<Option<Slot>>();
        let bucket = std::mem::size_of::<(u64, u32)>() + 1;
        let least = slot + bucket * 8 / 7 + 8;
        let most = 2 * slot + bucket * 16 / 7 + 23;
        assert_eq!((slot, bucket), (48, 17));
        assert_eq!((least, most), (75, 157));
        assert!((least + most) / 2 <= ENTRY_OVERHEAD && ENTRY_OVERHEAD <= most);
    }

    #[test]
    fn a_write_decision_s_reads_are_served_but_add_nothing() {
        let cache = ReadCache::new(64 * 1024);
        let value = vec![7u8; 300];
        // Missed: read from the engine, not kept, not counted.
        for _ in 0..5 {
            let got = cache.peek(TreeName::User, b"k", read_of(b"engine")).unwrap();
            assert_eq!(got, Some(b"engine".to_vec()));
        }
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.lock().sketch.estimate(64 * 1024, hash_of(1, b"k")), 0);
        // Cached by a lookup: served from the cache.
        cache.get(TreeName::User, b"k", read_of(b"cached")).unwrap();
        let got = cache
            .peek(TreeName::User, b"k", || {
                panic!("read the engine for a cached value")
            })
            .unwrap();
        assert_eq!(got, Some(b"cached".to_vec()));
        // Not while a write is under way.
        let guard = cache.writing_tree(TreeName::Access);
        assert_eq!(
            cache.peek(TreeName::User, b"k", read_of(b"engine")).unwrap(),
            Some(b"engine".to_vec())
        );
        drop(guard);
        // A full cache of entries read once: decisions reading other keys, however often,
        // replace none of them.
        assert_eq!(hits(&cache, 0..1_000, &value), 0);
        let before = cache.len();
        for _ in 0..10 {
            for i in 5_000u32..5_100 {
                cache
                    .peek(TreeName::Tokens, &i.to_be_bytes(), read_of(&value))
                    .unwrap();
            }
        }
        assert_eq!(cache.len(), before);
        assert_eq!(hits(&cache, 5_000..5_100, &value), 0);
        assert_consistent(&cache.lock());
    }

    #[test]
    fn writes_drop_entries_anywhere_in_the_list() {
        let cache = ReadCache::new(64 * 1024);
        let value = vec![7u8; 300];
        hits(&cache, 0..100, &value);
        // Touch the oldest, a middle one, the newest, then a whole tree.
        let ops: Vec<Op> = [0u32, 50, 99]
            .iter()
            .map(|i| Op::Remove(TreeName::Tokens, i.to_be_bytes().to_vec()))
            .collect();
        drop(cache.writing(&ops));
        assert_consistent(&cache.lock());
        assert_eq!(hits(&cache, 0..100, &value), 97);
        drop(cache.writing_tree(TreeName::Tokens));
        assert_consistent(&cache.lock());
        assert_eq!(cache.len(), 0);
        assert_eq!(hits(&cache, 0..10, &value), 0);
        assert_eq!(hits(&cache, 0..10, &value), 10);
    }
}
