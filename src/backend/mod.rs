//! The storage seam: named trees of bytes, with one all-or-nothing batch per write.
//!
//! The vault never talks to an engine directly; it talks to [`Storage`], in plain bytes.
//! Only ciphertext and keyed hashes ever cross this seam. Invariants: [`Storage::apply`]
//! applies every operation of a batch or none of them, and only if every condition of the
//! batch holds when it applies (each key the writer read to decide still holds what it
//! read), so a writer that lost a race learns it and decides again instead of overwriting.

use std::path::Path;
use std::time::Duration;

use crate::Error;

#[cfg(feature = "etcd")]
mod etcd_engine;
mod read_cache;
#[cfg(feature = "redb")]
mod redb_engine;
#[cfg(feature = "redb")]
pub(crate) mod redb_journal;
mod sled_engine;

#[cfg(all(fuzzing, feature = "etcd"))]
pub(crate) use etcd_engine::fuzz_hooks as etcd_fuzz_hooks;
#[cfg(feature = "etcd")]
pub(crate) use etcd_engine::{EtcdLocation, EtcdStorage};
#[cfg(feature = "redb")]
pub(crate) use redb_engine::RedbStorage;
pub(crate) use sled_engine::SledStorage;

use std::sync::Arc;

use read_cache::ReadCache;

/// The trees of a vault, in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TreeName {
    Meta,
    Tokens,
    User,
    Access,
    Refresh,
    Grant,
    /// Each live record's id, sealed, at the record's slot: names a record that no longer
    /// opens.
    Ids,
    /// Records that `repair` set aside because they no longer open, with their ids when known.
    Quarantine,
}

impl TreeName {
    /// Every tree, in the order the storage opens them.
    pub(crate) const ALL: [TreeName; 8] = [
        TreeName::Meta,
        TreeName::Tokens,
        TreeName::User,
        TreeName::Access,
        TreeName::Refresh,
        TreeName::Grant,
        TreeName::Ids,
        TreeName::Quarantine,
    ];

    /// The tree's number, where an engine keeps every tree in one table (redb): the first
    /// byte of each key. Fixed on disk: docs/format.md.
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) fn tag(self) -> u8 {
        match self {
            TreeName::Meta => 0,
            TreeName::Tokens => 1,
            TreeName::User => 2,
            TreeName::Access => 3,
            TreeName::Refresh => 4,
            TreeName::Grant => 5,
            TreeName::Ids => 6,
            TreeName::Quarantine => 7,
        }
    }

    /// The tree whose number is `tag`.
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) fn from_tag(tag: u8) -> Option<TreeName> {
        TreeName::ALL.into_iter().find(|t| t.tag() == tag)
    }

    /// The tree's name on disk (also bound into record AAD).
    pub(crate) fn name(self) -> &'static str {
        match self {
            TreeName::Meta => "meta",
            TreeName::Tokens => "tokens",
            TreeName::User => "idx.user",
            TreeName::Access => "idx.access",
            TreeName::Refresh => "idx.refresh",
            TreeName::Grant => "idx.grant",
            TreeName::Ids => "idx.id",
            TreeName::Quarantine => "quarantine",
        }
    }
}

/// One write of a batch.
pub(crate) enum Op {
    Put(TreeName, Vec<u8>, Vec<u8>),
    Remove(TreeName, Vec<u8>),
    /// Removes every entry of the tree (one range delete where the engine has one). A batch
    /// that clears a tree writes nothing else to it.
    Clear(TreeName),
}

impl Op {
    /// The tree the operation writes.
    pub(crate) fn tree(&self) -> TreeName {
        match self {
            Op::Put(t, ..) | Op::Remove(t, ..) | Op::Clear(t) => *t,
        }
    }
}

/// What a batch expects of one key when it applies: the value the writer read (`None`:
/// the key was absent). Values are compared whole; a record or sealed value changes with
/// every write (fresh nonce), so an unchanged value means an unchanged key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Expect {
    pub(crate) tree: TreeName,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Option<Vec<u8>>,
}

/// Whether a conditional batch applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Outcome {
    /// Every condition held: every operation is applied.
    Applied,
    /// A condition failed: nothing is applied; the writer re-reads and decides again.
    Conflict,
}

/// Bytes read from storage: plain bytes, whatever the engine.
pub(crate) type Bytes = Vec<u8>;

/// A key and its value.
pub(crate) type Entry = (Bytes, Bytes);

/// A callback over the entries of a tree: key, value.
pub(crate) type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// A callback over a batch of entries of a tree.
pub(crate) type BatchVisitor<'a> = dyn FnMut(&[Entry]) -> Result<(), Error> + 'a;

/// What an exclusive write decides: the expectations and the batch.
pub(crate) type Decide<'a> = dyn FnMut() -> Result<(Vec<Expect>, Vec<Op>), Error> + 'a;

/// Gathers entries into batches of at least one for a [`BatchVisitor`]: what every
/// engine's `for_each_batch` does over its own iteration. A batch at a time bounds the
/// memory.
pub(crate) struct Batcher<'a, 'f> {
    entries: Vec<Entry>,
    size: usize,
    f: &'a mut BatchVisitor<'f>,
}

impl<'a, 'f> Batcher<'a, 'f> {
    pub(crate) fn new(size: usize, f: &'a mut BatchVisitor<'f>) -> Self {
        let size = size.max(1);
        Batcher {
            entries: Vec::with_capacity(size),
            size,
            f,
        }
    }

    /// Adds an entry; hands over the batch once it is full.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.entries.push((key.to_vec(), value.to_vec()));
        if self.entries.len() >= self.size {
            (self.f)(&self.entries)?;
            self.entries.clear();
        }
        Ok(())
    }

    /// Hands over what is left.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.entries.is_empty() {
            Ok(())
        } else {
            (self.f)(&self.entries)
        }
    }
}

/// Byte storage in named trees.
pub(crate) trait Storage: Send + Sync {
    /// The value at `key` in `tree`.
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error>;
    /// [`get`](Storage::get) for a write's decision: the same value, but a storage that
    /// caches what lookups read does not cache it ([`ReadCache::peek`]).
    fn get_to_decide(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.get(tree, key)
    }
    /// Calls `f` with the entries of `tree` in key order until it returns `true`; whether
    /// it did.
    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error>;
    /// Calls `f` with every entry of `tree`, in key order, until it returns an error.
    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error>;
    /// Calls `f` with the entries of `tree` in key order, `batch` (at least 1) at a time,
    /// until it returns an error.
    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error>;
    /// Applies every operation, or none: all of them when every expectation holds at the
    /// moment the batch applies, else none ([`Outcome::Conflict`]).
    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error>;
    /// Applies every operation, or none, unconditionally.
    fn apply(&self, ops: &[Op]) -> Result<(), Error> {
        match self.apply_if(&[], ops)? {
            Outcome::Applied => Ok(()),
            Outcome::Conflict => Err(Error::internal("a batch without conditions conflicted")),
        }
    }
    /// The generation the storage reads and writes now: on storage other processes
    /// rewrite as a whole (etcd: `rekey` and `repair` of a large vault write a new
    /// generation and switch to it), a number that changes when this handle follows such a
    /// switch; always 0 on a local engine. A reader that saw it change re-reads the header
    /// (the keys may be new) and reads again.
    fn generation(&self) -> u64 {
        0
    }
    /// [`apply_if`](Storage::apply_if), only while the storage is still at `generation`
    /// (a writer that decided on an older generation gets [`Outcome::Conflict`]).
    fn apply_if_at(&self, generation: u64, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        let _ = generation;
        self.apply_if(expects, ops)
    }
    /// Lets `decide` read the storage with every other writer held off, and applies the
    /// batch it returns if its expectations hold: a write of any size that no other writer
    /// interleaves with (`rekey`, `repair`). On a local engine the vault's own writer lock
    /// already holds every other writer off; etcd freezes the vault's generation for it.
    fn exclusive(&self, decide: &mut Decide<'_>) -> Result<Outcome, Error> {
        let (expects, ops) = decide()?;
        self.apply_if(&expects, &ops)
    }
    /// Makes every applied batch durable (as far as the engine can).
    fn flush(&self) -> Result<(), Error>;
    /// The bytes the engine's files take on disk.
    fn size_on_disk(&self) -> Result<u64, Error>;
}

/// The storage engine a vault's files are written by. Chosen when a vault is created
/// ([`VaultOptions::engine`](crate::VaultOptions::engine)); `open` recognises it from the
/// files, whatever the options name.
///
/// | | sled (default) | redb (feature `redb`) |
/// |---|---|---|
/// | files | sled's log and snapshots | `vault.redb` and its journal |
/// | a durable write | `sync_file_range` | `fdatasync` of a journal append |
/// | best for | vaults that fit the cache | vaults larger than the cache |
///
/// docs/performance.md has the measured figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Engine {
    /// sled 0.34: the engine the vault format was first specified on.
    #[default]
    Sled,
    /// redb 4.6 (feature `redb`): a copy-on-write B-tree in one file; faster lookups and
    /// reopens on large vaults, real `fdatasync` on durable writes (of a journal, which redb
    /// checkpoints into its file; docs/format.md, "The redb journal"). Without the feature,
    /// creating or opening a redb vault is an error that says so.
    Redb,
    /// An etcd cluster (feature `etcd`): the vault of an `etcd://` location
    /// ([`VaultOptions::create_at`](crate::VaultOptions::create_at)), shared by every
    /// process that opens it. Not an engine a directory vault can be created with.
    Etcd,
}

impl Engine {
    /// Its name, as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
            Engine::Etcd => "etcd",
        }
    }

    /// The engine whose files `dir` holds, if any.
    pub(crate) fn in_dir(dir: &Path) -> Option<Engine> {
        if SledStorage::exists_in(dir) {
            Some(Engine::Sled)
        } else if dir.join(REDB_FILE).is_file() {
            Some(Engine::Redb)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "sled" => Ok(Engine::Sled),
            "redb" => Ok(Engine::Redb),
            _ => Err(Error::Storage {
                message: format!(
                    "unknown storage engine {s:?}: sled or redb (an etcd vault is an etcd:// location)"
                ),
            }),
        }
    }
}

/// The redb engine's one file in a generation's directory.
pub(crate) const REDB_FILE: &str = "vault.redb";

/// How a local engine is opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalConfig {
    /// The page cache, in bytes.
    pub(crate) cache_capacity: u64,
    /// Whether every applied batch must be on disk when `apply_if` returns (redb commits
    /// durably; sled is flushed by the vault).
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) durable: bool,
}

/// A vault's storage on the local disk, whichever engine wrote it, with the values it read
/// kept in front of it ([`ReadCache`]). A clone is another handle on the same database
/// (and the same cache).
#[derive(Clone)]
pub(crate) struct LocalStorage {
    engine: LocalEngine,
    cache: Arc<ReadCache>,
}

#[derive(Clone)]
enum LocalEngine {
    Sled(SledStorage),
    #[cfg(feature = "redb")]
    Redb(RedbStorage),
}

/// The part of a local vault's cache budget ([`LocalConfig::cache_capacity`]) that holds
/// values read (index entries and sealed records, [`ReadCache`]), at most 64 MiB; the
/// engine's page cache gets the rest.
///
/// - sled: a quarter. sled keeps the nodes it caches as decoded structures whose memory
///   its budget undercounts: at 100,000 tokens and 32 MiB, three quarters for values made
///   lookups 2.3-11x faster but raised the peak RSS from 177 to 194 MiB.
/// - redb: seven eighths. redb caches whole 4 KiB pages, and a lookup needs two values of
///   a few hundred bytes from two pages it reads at random: held as values, the same bytes
///   serve many more lookups. What redb needs its own cache for is its branch pages and
///   the pages being written. At 100,000 tokens and 32 MiB, the bench's lookups (20,000
///   tokens by each of five keys) need 90,660 entries: a quarter held 19,710, three
///   quarters 86,692, seven eighths all of them, and the run's peak RSS was 128, 126-127
///   and 122 MiB.
fn read_cache_share(engine: Engine, budget: u64) -> u64 {
    let share = match engine {
        Engine::Redb => budget / 8 * 7,
        Engine::Sled | Engine::Etcd => budget / 4,
    };
    share.min(64 * 1024 * 1024)
}

impl LocalStorage {
    /// Creates the database of `engine` in the empty directory `dir`.
    pub(crate) fn create(engine: Engine, dir: &Path, config: LocalConfig) -> Result<Self, Error> {
        Self::open_or_create(engine, dir, config, true)
    }

    /// Opens the database of `engine` that `dir` holds (sled finishes one a crash left
    /// half-made; redb refuses a file that is not a redb database, and never rewrites it).
    pub(crate) fn open(engine: Engine, dir: &Path, config: LocalConfig) -> Result<Self, Error> {
        Self::open_or_create(engine, dir, config, false)
    }

    #[cfg_attr(not(feature = "redb"), allow(unused_variables))]
    fn open_or_create(engine: Engine, dir: &Path, config: LocalConfig, create: bool) -> Result<Self, Error> {
        let read_cache = read_cache_share(engine, config.cache_capacity);
        let engine_config = LocalConfig {
            cache_capacity: config.cache_capacity - read_cache,
            ..config
        };
        let engine =
            match engine {
                Engine::Sled => LocalEngine::Sled(SledStorage::open(dir, engine_config.cache_capacity)?),
                #[cfg(feature = "redb")]
                Engine::Redb => {
                    LocalEngine::Redb(RedbStorage::open(&dir.join(REDB_FILE), engine_config, create)?)
                }
                Engine::Etcd => {
                    return Err(Error::Storage {
                        message: "an etcd vault lives at an etcd:// location, not in a directory".into(),
                    })
                }
                #[cfg(not(feature = "redb"))]
                Engine::Redb => return Err(Error::Storage {
                    message:
                        "this vault is stored by the redb engine: build tokenvault with its feature `redb`"
                            .into(),
                }),
            };
        Ok(LocalStorage {
            engine,
            cache: Arc::new(ReadCache::new(usize::try_from(read_cache).unwrap_or(usize::MAX))),
        })
    }

    /// The engine.
    pub(crate) fn engine(&self) -> Engine {
        match self.engine {
            LocalEngine::Sled(_) => Engine::Sled,
            #[cfg(feature = "redb")]
            LocalEngine::Redb(_) => Engine::Redb,
        }
    }

    fn storage(&self) -> &dyn Storage {
        match &self.engine {
            LocalEngine::Sled(s) => s,
            #[cfg(feature = "redb")]
            LocalEngine::Redb(s) => s,
        }
    }

    /// Writes `entries` into `tree` of a database that nothing reads yet (a compaction's
    /// new generation).
    pub(crate) fn load(&self, tree: TreeName, entries: &[Entry]) -> Result<(), Error> {
        let _writing = self.cache.writing_tree(tree);
        match &self.engine {
            LocalEngine::Sled(s) => s.load(tree, entries),
            #[cfg(feature = "redb")]
            LocalEngine::Redb(s) => s.load(tree, entries),
        }
    }

    /// Waits (at most `patience`) until no handle of this process holds the engine's lock
    /// on the database in `dir` (sled lets go only when its background jobs end).
    pub(crate) fn wait_until_released(dir: &Path, patience: Duration) {
        SledStorage::wait_until_released(dir, patience);
    }
}

impl Storage for LocalStorage {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.cache.get(tree, key, || self.storage().get(tree, key))
    }
    fn get_to_decide(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.cache
            .peek(tree, key, || self.storage().get_to_decide(tree, key))
    }
    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
        self.storage().any(tree, f)
    }
    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
        self.storage().for_each(tree, f)
    }
    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error> {
        self.storage().for_each_batch(tree, batch, f)
    }
    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        // Every write of a local vault comes here (`apply`, `apply_if_at` and `exclusive`
        // are the trait's defaults, which call it): the cache drops what the batch touches.
        let _writing = self.cache.writing(ops);
        self.storage().apply_if(expects, ops)
    }
    fn flush(&self) -> Result<(), Error> {
        self.storage().flush()
    }
    fn size_on_disk(&self) -> Result<u64, Error> {
        self.storage().size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn put(t: TreeName, k: &[u8], v: &[u8]) -> Op {
        Op::Put(t, k.to_vec(), v.to_vec())
    }

    pub(super) fn expect(t: TreeName, k: &[u8], v: Option<&[u8]>) -> Expect {
        Expect {
            tree: t,
            key: k.to_vec(),
            value: v.map(<[u8]>::to_vec),
        }
    }

    /// Every engine of this build.
    const ENGINES: &[Engine] = &[
        Engine::Sled,
        #[cfg(feature = "redb")]
        Engine::Redb,
    ];

    #[test]
    fn a_batch_applies_only_when_every_expectation_holds() {
        for engine in ENGINES {
            batch_conditions(*engine);
        }
    }

    fn batch_conditions(engine: Engine) {
        let tmp = tempfile::tempdir().unwrap();
        let config = LocalConfig {
            cache_capacity: 1 << 20,
            durable: false,
        };
        let s = LocalStorage::create(engine, tmp.path(), config).unwrap();
        assert_eq!(s.engine(), engine);
        s.apply(&[put(TreeName::Tokens, b"k", b"v1")]).unwrap();
        let write = [
            put(TreeName::Tokens, b"k", b"v2"),
            put(TreeName::User, b"u", b"k"),
        ];

        // A stale value, an entry expected absent that exists, a present one expected
        // absent in another tree: nothing applies.
        for stale in [
            expect(TreeName::Tokens, b"k", Some(b"v0")),
            expect(TreeName::Tokens, b"k", None),
            expect(TreeName::Tokens, b"other", Some(b"v1")),
        ] {
            let outcome = s.apply_if(&[expect(TreeName::User, b"u", None), stale], &write);
            assert_eq!(outcome.unwrap(), Outcome::Conflict);
            assert_eq!(s.get(TreeName::Tokens, b"k").unwrap(), Some(b"v1".to_vec()));
            assert_eq!(s.get(TreeName::User, b"u").unwrap(), None);
        }
        // Every expectation holds, one in a tree the batch does not write.
        s.apply(&[put(TreeName::Grant, b"g", b"x")]).unwrap();
        let holds = [
            expect(TreeName::Tokens, b"k", Some(b"v1")),
            expect(TreeName::User, b"u", None),
            expect(TreeName::Grant, b"g", Some(b"x")),
        ];
        assert_eq!(s.apply_if(&holds, &write).unwrap(), Outcome::Applied);
        assert_eq!(s.get(TreeName::Tokens, b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(s.get(TreeName::User, b"u").unwrap(), Some(b"k".to_vec()));
        // The same expectations are stale now.
        assert_eq!(s.apply_if(&holds, &write).unwrap(), Outcome::Conflict);
        // Expectations alone (nothing to write) are checked too.
        assert_eq!(s.apply_if(&holds[..1], &[]).unwrap(), Outcome::Conflict);
        assert_eq!(s.apply_if(&[], &[]).unwrap(), Outcome::Applied);
    }
}

#[cfg(test)]
#[cfg(feature = "redb")]
mod redb_tests {
    use super::tests::{expect, put};
    use super::*;

    fn config(durable: bool) -> LocalConfig {
        LocalConfig {
            cache_capacity: 1 << 20,
            durable,
        }
    }

    #[test]
    fn trees_are_kept_apart_and_iterated_in_key_order() {
        let tmp = tempfile::tempdir().unwrap();
        let s = LocalStorage::create(Engine::Redb, tmp.path(), config(true)).unwrap();
        assert_eq!(Engine::in_dir(tmp.path()), Some(Engine::Redb));
        let mut ops = Vec::new();
        for tree in TreeName::ALL {
            for k in [b"b".as_slice(), b"a", b"", b"c\xff"] {
                ops.push(Op::Put(tree, k.to_vec(), vec![tree.tag(); 3]));
            }
        }
        s.apply(&ops).unwrap();
        for tree in TreeName::ALL {
            let mut seen = Vec::new();
            s.for_each(tree, &mut |k, v| {
                assert_eq!(v, [tree.tag(); 3]);
                seen.push(k.to_vec());
                Ok(())
            })
            .unwrap();
            let want: Vec<Vec<u8>> = vec![b"".to_vec(), b"a".to_vec(), b"b".to_vec(), b"c\xff".to_vec()];
            assert_eq!(seen, want);
            let mut batches = Vec::new();
            s.for_each_batch(tree, 3, &mut |b| {
                batches.push(b.len());
                Ok(())
            })
            .unwrap();
            assert_eq!(batches, [3, 1]);
            assert!(s.any(tree, &mut |k, _| k == b"b").unwrap());
        }
        s.apply(&[Op::Remove(TreeName::Tokens, b"a".to_vec())]).unwrap();
        assert_eq!(s.get(TreeName::Tokens, b"a").unwrap(), None);
        assert_eq!(
            s.get(TreeName::User, b"a").unwrap(),
            Some(vec![TreeName::User.tag(); 3])
        );
    }

    #[test]
    fn a_file_that_is_not_a_redb_database_is_corrupted_and_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(REDB_FILE);
        for junk in [Vec::new(), vec![0u8; 4096], b"not a database".repeat(500)] {
            std::fs::write(&file, &junk).unwrap();
            match LocalStorage::open(Engine::Redb, tmp.path(), config(false)) {
                Err(Error::Corrupted { .. }) => {}
                Err(e) => panic!("{} bytes: {e:?}", junk.len()),
                Ok(_) => panic!("{} bytes opened", junk.len()),
            }
            assert_eq!(std::fs::read(&file).unwrap(), junk);
        }
    }

    fn journal_path(dir: &Path) -> std::path::PathBuf {
        dir.join(redb_journal::JOURNAL_FILE)
    }

    /// A journal holding `batches`: in the current format (epoch 7) or the first.
    fn journal_bytes(current: bool, batches: &[Vec<Op>]) -> Vec<u8> {
        let frame = |i: usize, ops: &[Op]| match current {
            true => redb_journal::encode(7, i as u64 + 1, ops).unwrap(),
            false => redb_journal::encode_first_format(i as u64 + 1, ops).unwrap(),
        };
        let mut bytes = Vec::new();
        if current {
            bytes.resize(redb_journal::SLOT, 0);
            bytes.extend_from_slice(&redb_journal::header(7));
        }
        for (i, ops) in batches.iter().enumerate() {
            bytes.extend_from_slice(&frame(i, ops));
            if current {
                bytes.resize(bytes.len().div_ceil(redb_journal::SLOT) * redb_journal::SLOT, 0);
            }
        }
        bytes
    }

    /// The journal at `dir` holds no frame and nothing else (zeros after its headers).
    fn journal_is_empty(dir: &Path) -> bool {
        let read = redb_journal::read(&journal_path(dir)).unwrap();
        read.batches.is_empty() && !read.dirty
    }

    fn value(s: &LocalStorage, k: &[u8]) -> Option<Vec<u8>> {
        s.get(TreeName::Tokens, k).unwrap()
    }

    #[test]
    fn a_durable_handle_journals_each_batch_and_a_clean_close_empties_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = LocalStorage::create(Engine::Redb, tmp.path(), config(true)).unwrap();
            for i in 0..3u8 {
                s.apply(&[
                    put(TreeName::Tokens, &[i], &[i; 100]),
                    put(TreeName::User, &[i], b"id"),
                ])
                .unwrap();
            }
            s.apply(&[Op::Remove(TreeName::Tokens, vec![1])]).unwrap();
            // A batch whose expectation fails writes nothing, to redb or to the journal.
            let failed = s.apply_if(
                &[expect(TreeName::Tokens, &[1], Some(b"x"))],
                &[put(TreeName::Tokens, &[9], b"no")],
            );
            assert_eq!(failed.unwrap(), Outcome::Conflict);
            let frames = redb_journal::read(&journal_path(tmp.path())).unwrap().batches;
            assert_eq!(frames.len(), 4);
            assert!(matches!(&frames[3][..], [Op::Remove(TreeName::Tokens, k)] if k == &[1]));
            // `flush` has nothing to do: each batch was durable when `apply` returned.
            s.flush().unwrap();
            assert_eq!(
                redb_journal::read(&journal_path(tmp.path()))
                    .unwrap()
                    .batches
                    .len(),
                4
            );
        }
        assert!(journal_is_empty(tmp.path()));
        let s = LocalStorage::open(Engine::Redb, tmp.path(), config(false)).unwrap();
        assert_eq!(value(&s, &[0]), Some(vec![0; 100]));
        assert_eq!(value(&s, &[1]), None);
        assert_eq!(value(&s, &[2]), Some(vec![2; 100]));
        assert_eq!(value(&s, &[9]), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_journal_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let _s = LocalStorage::create(Engine::Redb, tmp.path(), config(true)).unwrap();
        let mode = std::fs::metadata(journal_path(tmp.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A vault holding `k` = `old`, `gone` = `x` and a quarantine entry, closed cleanly.
    fn closed_vault(dir: &Path) {
        let s = LocalStorage::create(Engine::Redb, dir, config(true)).unwrap();
        s.apply(&[
            put(TreeName::Tokens, b"k", b"old"),
            put(TreeName::Tokens, b"gone", b"x"),
            put(TreeName::Quarantine, b"q", b"q"),
        ])
        .unwrap();
    }

    #[test]
    fn a_journal_left_by_a_crash_is_replayed_in_order_at_open_and_then_emptied() {
        let frames = [
            vec![
                put(TreeName::Tokens, b"k", b"first"),
                put(TreeName::Tokens, b"new", b"n"),
            ],
            vec![
                Op::Remove(TreeName::Tokens, b"gone".to_vec()),
                Op::Clear(TreeName::Quarantine),
            ],
            vec![put(TreeName::Tokens, b"k", b"second")],
        ];
        // Replayed onto the state before the frames, and onto one that already holds the
        // first two durably (a checkpoint that the crash interrupted before it emptied the
        // journal): the same. Each open finds the journal again, as the crash left it. A
        // journal of the first format too.
        for current in [true, false] {
            let journal = journal_bytes(current, &frames);
            for already in [0, 2] {
                let tmp = tempfile::tempdir().unwrap();
                closed_vault(tmp.path());
                if already > 0 {
                    let s = LocalStorage::open(Engine::Redb, tmp.path(), config(true)).unwrap();
                    for ops in &frames[..already] {
                        s.apply(ops).unwrap();
                    }
                }
                for durable in [false, true] {
                    std::fs::write(journal_path(tmp.path()), &journal).unwrap();
                    let s = LocalStorage::open(Engine::Redb, tmp.path(), config(durable)).unwrap();
                    assert_eq!(value(&s, b"k"), Some(b"second".to_vec()), "{already}");
                    assert_eq!(value(&s, b"new"), Some(b"n".to_vec()));
                    assert_eq!(value(&s, b"gone"), None);
                    assert_eq!(s.get(TreeName::Quarantine, b"q").unwrap(), None);
                    assert!(journal_is_empty(tmp.path()), "{current} {already} {durable}");
                }
            }
        }
    }

    #[test]
    fn a_journal_cut_in_its_last_frame_replays_the_frames_before_it() {
        let batches = [
            vec![put(TreeName::Tokens, b"k", b"acknowledged")],
            vec![put(TreeName::Tokens, b"k", b"cut")],
        ];
        for current in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            closed_vault(tmp.path());
            let whole = journal_bytes(current, &batches);
            let last = redb_journal::encode_first_format(2, &batches[1]).unwrap().len();
            let cut = match current {
                // The second frame less its last byte.
                true => redb_journal::HEADERS + redb_journal::SLOT + last + 8 - 1,
                false => whole.len() - 1,
            };
            std::fs::write(journal_path(tmp.path()), &whole[..cut]).unwrap();
            let s = LocalStorage::open(Engine::Redb, tmp.path(), config(true)).unwrap();
            assert_eq!(value(&s, b"k"), Some(b"acknowledged".to_vec()), "{current}");
        }
    }

    #[test]
    fn a_damaged_journal_is_corrupted_and_none_of_it_is_applied() {
        for current in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            closed_vault(tmp.path());
            let batches: Vec<Vec<Op>> = (0..300u64)
                .map(|_| vec![put(TreeName::Tokens, b"k", &[7; 300])])
                .collect();
            let mut journal = journal_bytes(current, &batches);
            let first = if current { redb_journal::HEADERS } else { 0 };
            journal[first + 100] ^= 0x10;
            std::fs::write(journal_path(tmp.path()), &journal).unwrap();
            for durable in [false, true] {
                match LocalStorage::open(Engine::Redb, tmp.path(), config(durable)) {
                    Err(Error::Corrupted { what }) => assert!(what.contains("journal"), "{what}"),
                    Err(e) => panic!("{e:?}"),
                    Ok(_) => panic!("opened with a damaged journal"),
                }
                assert!(std::fs::read(journal_path(tmp.path())).unwrap() == journal);
            }
            // Without the journal, the vault is as it was.
            std::fs::remove_file(journal_path(tmp.path())).unwrap();
            let s = LocalStorage::open(Engine::Redb, tmp.path(), config(true)).unwrap();
            assert_eq!(value(&s, b"k"), Some(b"old".to_vec()));
        }
    }

    #[test]
    fn checkpoints_bound_the_journal_and_a_batch_too_large_for_a_frame_is_committed_durably() {
        let tmp = tempfile::tempdir().unwrap();
        let s = LocalStorage::create(Engine::Redb, tmp.path(), config(true)).unwrap();
        let n = redb_journal::CHECKPOINT_FRAMES + 10;
        for i in 0..n {
            s.apply(&[put(TreeName::Tokens, &i.to_be_bytes(), b"v")]).unwrap();
        }
        // The checkpoint before frame CHECKPOINT_FRAMES + 1 emptied the journal.
        assert_eq!(
            redb_journal::read(&journal_path(tmp.path()))
                .unwrap()
                .batches
                .len(),
            10
        );
        let big = vec![3u8; redb_journal::MAX_FRAME];
        s.apply(&[put(TreeName::Tokens, b"big", &big)]).unwrap();
        assert!(journal_is_empty(tmp.path()));
        s.apply(&[put(TreeName::Tokens, b"after", b"a")]).unwrap();
        assert_eq!(
            redb_journal::read(&journal_path(tmp.path()))
                .unwrap()
                .batches
                .len(),
            1
        );
        drop(s);
        let s = LocalStorage::open(Engine::Redb, tmp.path(), config(true)).unwrap();
        assert_eq!(value(&s, b"big"), Some(big));
        assert_eq!(value(&s, &(n - 1).to_be_bytes()), Some(b"v".to_vec()));
        assert_eq!(value(&s, b"after"), Some(b"a".to_vec()));
    }

    #[test]
    fn buffered_commits_are_made_durable_by_flush_and_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = LocalStorage::create(Engine::Redb, tmp.path(), config(false)).unwrap();
            s.apply(&[Op::Put(TreeName::Tokens, b"k".to_vec(), b"v".to_vec())])
                .unwrap();
            s.flush().unwrap();
        }
        let s = LocalStorage::open(Engine::Redb, tmp.path(), config(false)).unwrap();
        assert_eq!(s.get(TreeName::Tokens, b"k").unwrap(), Some(b"v".to_vec()));
        assert!(s.size_on_disk().unwrap() > 0);
    }
}
