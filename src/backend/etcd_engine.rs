//! The etcd engine (feature `etcd`): the vault's trees as key prefixes in an etcd v3
//! cluster, shared by every process that opens the same location.
//!
//! Keys: the vault's trees live in a *generation*: generation 0 at `PREFIX/TREE/KEY`,
//! generation N at `PREFIX/gen.N/TREE/KEY` (the tree's name as in docs/format.md, then the
//! tree's key bytes); values unchanged. `PREFIX/current` names the live generation (absent:
//! 0), and `PREFIX/frozen` exists while one process rewrites the vault (attached to a lease,
//! so it ends with that process). Every read checks the pointer in the same request, and
//! every write carries it (and the absence of a freeze) as conditions, so no process reads
//! a generation after it was replaced, or writes into one being replaced.
//!
//! A batch is one etcd transaction whose compare conditions are the batch's expectations
//! (a value unchanged, or a key absent: version 0); a failed condition is
//! [`Outcome::Conflict`]. A transaction that times out may or may not have applied: it is
//! reported as a conflict, so the writer re-reads and decides again (its conditions make a
//! second application of a stale decision impossible). A write larger than one transaction
//! (a `rekey` or `repair` of more than a few tokens) freezes the generation, writes the
//! next one in pieces, and switches the pointer to it in one transaction that also removes
//! the old one ([`EtcdStorage::exclusive`]). Every call has a deadline. The async client
//! runs on a runtime thread of its own, so the synchronous seam works from any thread, one
//! inside a tokio runtime included.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{mpsc, RwLock};
use std::time::{Duration, Instant};

use etcd_client::proto::{PbRangeResponse, PbTxnOpResponse, PbTxnResponse};
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KvClient, LeaseClient, PutOptions, Txn, TxnOp,
};

use super::{
    BatchVisitor, Batcher, Bytes, Decide, Entry, EntryVisitor, Expect, Op, Outcome, Storage, TreeName,
};
use crate::Error;

/// The most operations (and, separately, compare conditions) etcd takes in one
/// transaction by default (`--max-txn-ops`).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Entries read per range request of a scan.
const SCAN_PAGE: i64 = 1024;

/// The key (under the prefix) naming the live generation.
const POINTER: &str = "current";
/// The key (under the prefix) that exists while a process rewrites the vault.
const FREEZE: &str = "frozen";
/// The lease a freeze is attached to: a rewriter that dies stops holding the vault after
/// this long; a live one renews it every third of it, from the grant to the revoke (see
/// [`KeepAlive`]).
const FREEZE_TTL_SECS: i64 = 10;
/// What one transaction of a rewrite carries at most, in bytes of keys and values (etcd
/// takes 1.5 MiB per request by default).
const REWRITE_CHUNK_BYTES: usize = 1 << 20;
/// How many times a read follows a generation switch before giving up.
const FOLLOW_TRIES: u32 = 8;
/// How often a writer held off by a freeze looks whether it ended.
const FREEZE_POLL: Duration = Duration::from_millis(50);

/// Parses the generation pointer's value: a decimal number of at least 1, without a sign
/// or leading zeros.
///
/// # Errors
/// `Corrupted` for anything else.
pub(crate) fn parse_pointer(bytes: &[u8]) -> Result<u64, Error> {
    let bad = || Error::corrupted("etcd: the generation pointer");
    if bytes.is_empty()
        || bytes.len() > 20
        || bytes.first() == Some(&b'0')
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    std::str::from_utf8(bytes)
        .map_err(|_| bad())?
        .parse::<u64>()
        .map_err(|_| bad())
}

/// The entries of one range response, each key stripped of the `strip` bytes every key of
/// the range starts with.
///
/// # Errors
/// `Corrupted` for a key shorter than that (a response that is not for the range asked).
pub(crate) fn range_entries(resp: &PbRangeResponse, strip: usize) -> Result<Vec<Entry>, Error> {
    resp.kvs
        .iter()
        .map(|kv| match kv.key.get(strip..) {
            Some(key) => Ok((key.to_vec(), kv.value.clone())),
            None => Err(Error::corrupted("etcd: a key outside its tree")),
        })
        .collect()
}

/// Checks that a page of a scan asked from `from` holds keys in `[from, end)`, each past
/// the one before: a cluster that answers otherwise (keys of another tree, or a page that
/// does not move on) is refused, never read as the tree or looped on.
///
/// # Errors
/// `Corrupted`.
pub(crate) fn page_within(resp: &PbRangeResponse, from: &[u8], end: &[u8]) -> Result<(), Error> {
    let mut previous: Option<&[u8]> = None;
    for kv in &resp.kvs {
        let key = kv.key.as_slice();
        if key < from || key >= end || previous.is_some_and(|p| key <= p) {
            return Err(Error::corrupted(
                "etcd: a page of keys outside its range or out of order",
            ));
        }
        previous = Some(key);
    }
    Ok(())
}

/// The range responses of a transaction whose every operation is a read (`N` of them), in
/// order.
///
/// # Errors
/// `Corrupted` when the transaction's answer does not have one range response per read
/// asked.
pub(crate) fn txn_ranges<const N: usize>(resp: &PbTxnResponse) -> Result<[&PbRangeResponse; N], Error> {
    let ranges = resp
        .responses
        .iter()
        .map(|r| match &r.response {
            Some(PbTxnOpResponse::ResponseRange(range)) => Ok(range),
            _ => Err(Error::corrupted("etcd: a read answered with something else")),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    ranges
        .try_into()
        .map_err(|_| Error::corrupted("etcd: a transaction answered with the wrong number of results"))
}

/// What the probe of a failed transaction found: the live generation, and whether a
/// freeze holds it (its value).
pub(crate) fn probe_result(resp: &PbTxnResponse) -> Result<(u64, Option<Vec<u8>>), Error> {
    let [pointer, freeze] = txn_ranges(resp)?;
    let live = match pointer.kvs.first() {
        None => 0,
        Some(kv) => parse_pointer(&kv.value)?,
    };
    Ok((live, freeze.kvs.first().map(|kv| kv.value.clone())))
}

/// Entry points for `crate::fuzzing` (compiled only under `cfg(fuzzing)`): the decoders of
/// what the cluster answers.
#[cfg(fuzzing)]
pub(crate) mod fuzz_hooks {
    pub(crate) use super::{parse_pointer, probe_result, range_entries, txn_ranges};
}

/// One generation of the vault: its number and the prefix its trees live under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Generation {
    number: u64,
    /// `PREFIX/` (generation 0) or `PREFIX/gen.N/`.
    base: Vec<u8>,
}

impl Generation {
    fn new(prefix: &[u8], number: u64) -> Generation {
        let mut base = prefix.to_vec();
        if number > 0 {
            base.extend_from_slice(format!("gen.{number}/").as_bytes());
        }
        Generation { number, base }
    }

    /// The etcd key of `key` in `tree`.
    fn key(&self, tree: TreeName, key: &[u8]) -> Vec<u8> {
        let mut k = self.tree_start(tree);
        k.extend_from_slice(key);
        k
    }

    /// `BASE/TREE/`: the first key a tree may hold.
    fn tree_start(&self, tree: TreeName) -> Vec<u8> {
        let mut k = self.base.clone();
        k.extend_from_slice(tree.name().as_bytes());
        k.push(b'/');
        k
    }

    /// The keys of `tree`: `[BASE/TREE/, BASE/TREE0)`.
    fn tree_range(&self, tree: TreeName) -> (Vec<u8>, Vec<u8>) {
        let start = self.tree_start(tree);
        (start.clone(), past(start))
    }

    /// The deletes that remove every key of this generation.
    fn remove_all(&self) -> Vec<TxnOp> {
        if self.number == 0 {
            // Generation 0 shares the prefix with the pointer and the others: tree by tree.
            TreeName::ALL
                .into_iter()
                .map(|tree| {
                    let (start, end) = self.tree_range(tree);
                    TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
                })
                .collect()
        } else {
            vec![TxnOp::delete(
                self.base.clone(),
                Some(DeleteOptions::new().with_range(past(self.base.clone()))),
            )]
        }
    }
}

/// The end of the range of keys starting with `start`, which ends in `/`: `/` + 1.
fn past(mut start: Vec<u8>) -> Vec<u8> {
    if let Some(last) = start.last_mut() {
        *last += 1;
    }
    start
}

/// Where an etcd vault lives: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EtcdLocation {
    /// `http://HOST:PORT` for each member given.
    pub(crate) endpoints: Vec<String>,
    /// The vault's key prefix, without a trailing `/`.
    pub(crate) prefix: String,
}

impl EtcdLocation {
    /// The scheme of an etcd location.
    pub(crate) const SCHEME: &'static str = "etcd://";

    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    ///
    /// # Errors
    /// `Storage`, saying what is wrong with the location.
    pub(crate) fn parse(location: &str) -> Result<EtcdLocation, Error> {
        let bad = |why: &str| Error::Storage {
            message: format!("not an etcd location ({why}): expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX"),
        };
        let rest = location
            .strip_prefix(Self::SCHEME)
            .ok_or_else(|| bad("no etcd:// scheme"))?;
        let (hosts, prefix) = rest.split_once('/').ok_or_else(|| bad("no prefix"))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad("an empty prefix"));
        }
        if prefix.chars().any(|c| c.is_control()) {
            return Err(bad("a control character in the prefix"));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad("a member without a port"))?;
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("a member that is not HOST:PORT"));
            }
            if host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
                return Err(bad("a member that is not HOST:PORT"));
            }
            endpoints.push(format!("http://{host}"));
        }
        Ok(EtcdLocation {
            endpoints,
            prefix: prefix.to_owned(),
        })
    }
}

fn etcd_error(e: etcd_client::Error) -> Error {
    Error::Storage {
        message: format!("etcd: {e}"),
    }
}

/// What a call's deadline passing means for a read: a clear error.
fn timed_out(timeout: Duration) -> Error {
    Error::Storage {
        message: format!(
            "etcd: no answer within {} ms (is a quorum of the cluster up?)",
            timeout.as_millis()
        ),
    }
}

/// [`Storage`] on an etcd cluster.
pub(crate) struct EtcdStorage {
    /// The runtime the client runs on; shut down without waiting when dropped (a drop may
    /// happen inside the caller's own runtime, where waiting is not allowed).
    runtime: Option<tokio::runtime::Runtime>,
    kv: KvClient,
    lease: LeaseClient,
    /// `PREFIX/`.
    prefix: Vec<u8>,
    /// The generation this handle reads and writes.
    current: RwLock<Generation>,
    timeout: Duration,
    /// The time to live of a freeze's lease, in seconds ([`FREEZE_TTL_SECS`]; tests
    /// shorten it).
    freeze_ttl: i64,
}

/// The task that renews a freeze's lease every third of its time to live while it runs;
/// dropping it stops the renewals. It starts right after the grant and stops just before
/// the revoke, so the freeze holds while the vault reads and decides as much as while the
/// pieces of a rewrite are written. A renewal that fails (the cluster is unreachable, or
/// changes leader) is tried again until the task stops: if the lease runs out meanwhile,
/// the freeze ends and the rewrite's switch refuses to apply ("lost its hold").
struct KeepAlive(Option<tokio::task::JoinHandle<()>>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Drop for EtcdStorage {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl EtcdStorage {
    /// Connects to the cluster of `location`; every call then has `timeout`.
    pub(crate) fn connect(location: &EtcdLocation, timeout: Duration) -> Result<EtcdStorage, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tokenvault-etcd")
            .enable_all()
            .build()?;
        let endpoints = location.endpoints.clone();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = run(&runtime, timeout, move || {
            let (endpoints, options) = (endpoints.clone(), options.clone());
            async move { etcd_client::Client::connect(endpoints, Some(options)).await }
        })??;
        let mut prefix = location.prefix.as_bytes().to_vec();
        prefix.push(b'/');
        // Responses up to 64 MiB (a record is at most 16 MiB of token); what the cluster
        // accepts per request is its own `--max-request-bytes`.
        let kv = client
            .kv_client()
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let storage = EtcdStorage {
            kv,
            lease: client.lease_client(),
            runtime: Some(runtime),
            current: RwLock::new(Generation::new(&prefix, 0)),
            prefix,
            timeout,
            freeze_ttl: FREEZE_TTL_SECS,
        };
        let (live, _) = storage.probe()?;
        storage.follow(live);
        Ok(storage)
    }

    /// Runs the request `make` builds on the client's runtime and waits for it, at most
    /// the deadline (see [`run`]).
    fn call<T: Send + 'static, Fut>(
        &self,
        make: impl FnMut() -> Fut + Send + 'static,
    ) -> Result<Result<T, Error>, Error>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
    {
        let Some(runtime) = &self.runtime else {
            return Err(Error::internal("etcd: the runtime is gone"));
        };
        run(runtime, self.timeout, make)
    }

    /// Sends one transaction: `Ok(Err(..))` is etcd's answer of an error, `Err(..)` no
    /// answer within the deadline.
    fn send(&self, txn: Txn) -> Result<Result<PbTxnResponse, Error>, Error> {
        let kv = self.kv.clone();
        Ok(self
            .call(move || {
                let (mut kv, txn) = (kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })?
            .map(|resp| resp.0))
    }

    fn pointer_key(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(POINTER.as_bytes());
        k
    }

    fn freeze_key(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(FREEZE.as_bytes());
        k
    }

    /// The condition that generation `number` is the live one.
    fn is_live(&self, number: u64) -> Compare {
        if number == 0 {
            Compare::version(self.pointer_key(), CompareOp::Equal, 0)
        } else {
            Compare::value(self.pointer_key(), CompareOp::Equal, number.to_string())
        }
    }

    /// The condition that no process is rewriting the vault.
    fn not_frozen(&self) -> Compare {
        Compare::version(self.freeze_key(), CompareOp::Equal, 0)
    }

    /// The condition that this process's freeze (`token`) still holds.
    fn frozen_by(&self, token: &[u8]) -> Compare {
        Compare::value(self.freeze_key(), CompareOp::Equal, token.to_vec())
    }

    /// The reads that say why a transaction's conditions failed: the pointer, the freeze.
    fn probe_ops(&self) -> Vec<TxnOp> {
        vec![
            TxnOp::get(self.pointer_key(), None),
            TxnOp::get(self.freeze_key(), None),
        ]
    }

    /// The live generation and the freeze, if any, as the cluster has them now.
    fn probe(&self) -> Result<(u64, Option<Vec<u8>>), Error> {
        probe_result(&self.send(Txn::new().and_then(self.probe_ops()))??)
    }

    /// The generation this handle uses.
    fn current(&self) -> Generation {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves this handle to generation `number` (the pointer moved: another process
    /// rewrote the vault).
    fn follow(&self, number: u64) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.number != number {
            *current = Generation::new(&self.prefix, number);
        }
    }

    /// After a transaction of generation `at` failed its conditions: follows the pointer if
    /// it moved; if a freeze holds the generation, waits (until the deadline) for the
    /// rewrite to end. The caller reports a conflict either way.
    fn after_failure(&self, at: u64, resp: &PbTxnResponse) -> Result<(), Error> {
        let (mut live, mut frozen) = probe_result(resp)?;
        let deadline = Instant::now() + self.timeout;
        while live == at && frozen.is_some() && Instant::now() < deadline {
            std::thread::sleep(FREEZE_POLL);
            (live, frozen) = self.probe()?;
        }
        self.follow(live);
        Ok(())
    }

    /// Whether nothing at all is stored under the vault's prefix.
    pub(crate) fn is_empty(&self) -> Result<bool, Error> {
        let kv = self.kv.clone();
        let (start, end) = (self.prefix.clone(), past(self.prefix.clone()));
        let resp = self.call(move || {
            let (mut kv, start) = (kv.clone(), start.clone());
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(1)
                .with_keys_only();
            async move { kv.get(start, Some(options)).await }
        })??;
        Ok(resp.kvs().is_empty())
    }

    /// Calls `f` with the entries of `tree`, in key order, a page at a time, every page
    /// read at the revision of the first (one consistent snapshot of the live generation),
    /// until `f` returns `Ok(false)`; whether it stopped early.
    fn scan(
        &self,
        tree: TreeName,
        f: &mut dyn FnMut(&[Entry]) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        for _ in 0..FOLLOW_TRIES {
            let generation = self.current();
            let (start, end) = generation.tree_range(tree);
            let strip = start.len();
            // The first page in a transaction that checks the generation is still live.
            let options = GetOptions::new().with_range(end.clone()).with_limit(SCAN_PAGE);
            let txn = Txn::new()
                .when([self.is_live(generation.number)])
                .and_then([TxnOp::get(start.clone(), Some(options))])
                .or_else(self.probe_ops());
            let resp = self.send(txn)??;
            if !resp.succeeded {
                self.after_failure(generation.number, &resp)?;
                continue;
            }
            let revision = resp
                .header
                .as_ref()
                .map(|h| h.revision)
                .filter(|r| *r > 0)
                .ok_or_else(|| Error::corrupted("etcd: an answer without its revision"))?;
            let [first] = txn_ranges(&resp)?;
            page_within(first, &start, &end)?;
            let mut page = range_entries(first, strip)?;
            let mut more = first.more;
            let mut last = first.kvs.last().map(|kv| kv.key.clone());
            loop {
                if !page.is_empty() && !f(&page)? {
                    return Ok(true);
                }
                let Some(mut from) = last.filter(|_| more) else {
                    return Ok(false);
                };
                from.push(0);
                let kv = self.kv.clone();
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(SCAN_PAGE)
                    .with_revision(revision);
                let asked = from.clone();
                let resp = self.call(move || {
                    let (mut kv, from, options) = (kv.clone(), asked.clone(), options.clone());
                    async move { kv.get(from, Some(options)).await }
                })??;
                let resp = resp.0;
                // Every key past the last one: a scan always moves on.
                page_within(&resp, &from, &end)?;
                page = range_entries(&resp, strip)?;
                more = resp.more;
                last = resp.kvs.last().map(|kv| kv.key.clone());
            }
        }
        Err(generation_kept_changing())
    }

    /// Every entry of every tree of `generation` (held still by this process's freeze).
    fn read_all(&self, generation: &Generation) -> Result<BTreeMap<TreeName, BTreeMap<Bytes, Bytes>>, Error> {
        let mut trees = BTreeMap::new();
        for tree in TreeName::ALL {
            let mut entries = BTreeMap::new();
            // The freeze keeps the generation live and unchanged: `scan` reads it.
            self.scan(tree, &mut |page| {
                entries.extend(page.iter().cloned());
                Ok(true)
            })?;
            if self.current() != *generation {
                return Err(lost_freeze());
            }
            trees.insert(tree, entries);
        }
        Ok(trees)
    }

    /// Starts renewing `lease` every third of the freeze's time to live (see [`KeepAlive`]).
    fn keep_alive(&self, lease: i64) -> KeepAlive {
        let Some(runtime) = &self.runtime else {
            return KeepAlive(None);
        };
        let every = Duration::from_millis(u64::try_from(self.freeze_ttl).unwrap_or(1).max(1) * 1000 / 3);
        let client = self.lease.clone();
        KeepAlive(Some(runtime.spawn(async move {
            loop {
                let mut client = client.clone();
                if let Ok((mut keeper, mut stream)) = client.keep_alive(lease).await {
                    loop {
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        match stream.message().await {
                            Ok(Some(answer)) if answer.ttl() > 0 => {}
                            // The lease is gone (revoked, or it ran out): nothing to keep.
                            Ok(Some(_)) => return,
                            _ => break,
                        }
                        tokio::time::sleep(every).await;
                    }
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        })))
    }

    /// The rewrite of [`exclusive`](Storage::exclusive) once the freeze (`token`) holds
    /// `generation`: the batch applied to a copy of it written as the next generation, a
    /// piece at a time, then one transaction that points at the new one and removes the old
    /// one and the freeze.
    fn rewrite(&self, generation: &Generation, token: &[u8], ops: &[Op]) -> Result<Outcome, Error> {
        let mut trees = self.read_all(generation)?;
        for op in ops {
            let entries = trees.entry(op.tree()).or_default();
            match op {
                Op::Put(_, k, v) => {
                    entries.insert(k.clone(), v.clone());
                }
                Op::Remove(_, k) => {
                    entries.remove(k);
                }
                Op::Clear(_) => entries.clear(),
            }
        }
        let number = generation
            .number
            .checked_add(1)
            .ok_or_else(|| Error::internal("etcd: generations exhausted"))?;
        let next = Generation::new(&self.prefix, number);
        // What a rewriter that died before its switch left of the next generation.
        let send_piece = |piece: Vec<TxnOp>| -> Result<(), Error> {
            let resp = self.send(Txn::new().when([self.frozen_by(token)]).and_then(piece))??;
            if resp.succeeded {
                Ok(())
            } else {
                Err(lost_freeze())
            }
        };
        send_piece(next.remove_all())?;
        // The copy, a piece at a time (bounded in operations and bytes).
        let (mut piece, mut bytes) = (Vec::new(), 0usize);
        for (tree, entries) in &trees {
            for (k, v) in entries {
                let key = next.key(*tree, k);
                let size = key.len() + v.len();
                if !piece.is_empty() && (piece.len() == MAX_TXN_OPS || bytes + size > REWRITE_CHUNK_BYTES) {
                    send_piece(std::mem::take(&mut piece))?;
                    bytes = 0;
                }
                bytes += size;
                piece.push(TxnOp::put(key, v.clone(), None));
            }
        }
        if !piece.is_empty() {
            send_piece(piece)?;
        }
        let mut switch = vec![
            TxnOp::put(self.pointer_key(), number.to_string(), None),
            TxnOp::delete(self.freeze_key(), None),
        ];
        switch.extend(generation.remove_all());
        let txn = Txn::new()
            .when([self.is_live(generation.number), self.frozen_by(token)])
            .and_then(switch);
        let switched = match self.send(txn)? {
            Ok(resp) => resp.succeeded,
            // No answer: the pointer says whether it applied.
            Err(e) => match self.probe() {
                Ok((live, _)) if live == number => true,
                Ok(_) => false,
                Err(_) => return Err(e),
            },
        };
        if !switched {
            // What was written of the next generation stays until the next rewrite clears
            // it: another rewriter may be writing there by now.
            return Err(lost_freeze());
        }
        self.follow(number);
        Ok(Outcome::Applied)
    }

    /// [`exclusive`](Storage::exclusive) with the freeze on `lease`.
    fn exclusive_on(&self, lease: i64, decide: &mut Decide<'_>) -> Result<Outcome, Error> {
        let generation = self.current();
        let mut token = vec![0u8; 16];
        crate::crypto::random_bytes(&mut token)?;
        let freeze = Txn::new()
            .when([self.is_live(generation.number), self.not_frozen()])
            .and_then([TxnOp::put(
                self.freeze_key(),
                token.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(self.probe_ops());
        let resp = self.send(freeze)??;
        if !resp.succeeded {
            self.after_failure(generation.number, &resp)?;
            return Ok(Outcome::Conflict);
        }
        let (expects, ops) = decide()?;
        let bytes: usize = ops
            .iter()
            .map(|op| match op {
                Op::Put(_, k, v) => k.len() + v.len(),
                Op::Remove(_, k) => k.len(),
                Op::Clear(_) => 0,
            })
            .sum::<usize>()
            + expects
                .iter()
                .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        // A batch that replaces the header (a re-key: new data key) always makes a new
        // generation, so that every other handle sees the switch and reads the header again
        // before it reads or writes under its old keys.
        let rekeys = ops.iter().any(
            |op| matches!(op, Op::Put(TreeName::Meta, k, _) if k.as_slice() == crate::vault::HEADER_KEY),
        );
        if !rekeys
            && ops.len() < MAX_TXN_OPS
            && expects.len() + 2 <= MAX_TXN_OPS
            && bytes <= REWRITE_CHUNK_BYTES
        {
            // Small enough for one transaction: applied in place, the freeze ended with it.
            let mut compares = vec![self.is_live(generation.number), self.frozen_by(&token)];
            compares.extend(self.expect_compares(&generation, &expects));
            let mut writes = self.writes(&generation, &ops);
            writes.push(TxnOp::delete(self.freeze_key(), None));
            let resp = self.send(
                Txn::new()
                    .when(compares)
                    .and_then(writes)
                    .or_else(self.probe_ops()),
            )??;
            if resp.succeeded {
                return Ok(Outcome::Applied);
            }
            let (_, frozen) = probe_result(&resp)?;
            return match frozen {
                Some(v) if v == token => Ok(Outcome::Conflict),
                _ => Err(lost_freeze()),
            };
        }
        for expect in &expects {
            if self.get(expect.tree, &expect.key)? != expect.value {
                return Ok(Outcome::Conflict);
            }
        }
        self.rewrite(&generation, &token, &ops)
    }

    fn expect_compares(&self, generation: &Generation, expects: &[Expect]) -> Vec<Compare> {
        expects
            .iter()
            .map(|e| {
                let key = generation.key(e.tree, &e.key);
                match &e.value {
                    Some(v) => Compare::value(key, CompareOp::Equal, v.clone()),
                    None => Compare::version(key, CompareOp::Equal, 0),
                }
            })
            .collect()
    }

    fn writes(&self, generation: &Generation, ops: &[Op]) -> Vec<TxnOp> {
        ops.iter()
            .map(|op| match op {
                Op::Put(t, k, v) => TxnOp::put(generation.key(*t, k), v.clone(), None),
                Op::Remove(t, k) => TxnOp::delete(generation.key(*t, k), None),
                Op::Clear(t) => {
                    let (start, end) = generation.tree_range(*t);
                    TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
                }
            })
            .collect()
    }
}

/// A rewrite whose freeze ended before its switch (its lease ran out): nothing changed.
fn lost_freeze() -> Error {
    Error::Storage {
        message: "etcd: the rewrite of the vault lost its hold (its lease ran out) before it finished; nothing was changed: run it again".into(),
    }
}

fn generation_kept_changing() -> Error {
    Error::Storage {
        message: "etcd: the vault was rewritten again and again while this read ran".into(),
    }
}

/// Whether `e` says the member asked could not answer (its connection was refused or
/// reset, or it is unavailable, as during an election): asking again goes to another
/// member. Safe for every request the engine makes: reads are reads; a transaction that did
/// apply before its answer was lost fails its compare conditions when asked again (the
/// writer then decides again), and one without conditions writes the same values again.
fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::Unavailable => true,
            // A connection that broke under the request (hyper's reset, a closed stream).
            tonic::Code::Unknown | tonic::Code::Cancelled => std::error::Error::source(status).is_some(),
            _ => false,
        },
        _ => false,
    }
}

/// The pause before asking again after a member was unreachable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Runs the request `make` builds on `runtime`, from any thread (a runtime thread of the
/// caller's included), and waits for its result, at most `timeout` (plus a margin for the
/// runtime itself). A member that is down or unavailable (a killed member, a leader
/// election) is not an answer: the request is made again, to the cluster's other members,
/// until the deadline.
fn run<T: Send + 'static, Fut>(
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    mut make: impl FnMut() -> Fut + Send + 'static,
) -> Result<Result<T, Error>, Error>
where
    Fut: Future<Output = Result<T, etcd_client::Error>> + Send,
{
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let result = loop {
            match tokio::time::timeout_at(deadline, make()).await {
                Ok(Ok(v)) => break Some(Ok(v)),
                Ok(Err(e)) if unreachable(&e) && tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(e)) => break Some(Err(etcd_error(e))),
                Err(_) => break None,
            }
        };
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(1)) {
        Ok(Some(result)) => Ok(result),
        Ok(None) | Err(_) => Err(timed_out(timeout)),
    }
}

impl Storage for EtcdStorage {
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Bytes>, Error> {
        for _ in 0..FOLLOW_TRIES {
            let generation = self.current();
            let txn = Txn::new()
                .when([self.is_live(generation.number)])
                .and_then([TxnOp::get(generation.key(tree, key), None)])
                .or_else(self.probe_ops());
            let resp = self.send(txn)??;
            if resp.succeeded {
                let [range] = txn_ranges(&resp)?;
                return match range.kvs.first() {
                    None => Ok(None),
                    Some(kv) if kv.key == generation.key(tree, key) => Ok(Some(kv.value.clone())),
                    Some(_) => Err(Error::corrupted("etcd: an answer for another key")),
                };
            }
            self.after_failure(generation.number, &resp)?;
        }
        Err(generation_kept_changing())
    }

    fn any(&self, tree: TreeName, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<bool, Error> {
        self.scan(tree, &mut |page| Ok(!page.iter().any(|(k, v)| f(k, v))))
    }

    fn for_each(&self, tree: TreeName, f: &mut EntryVisitor<'_>) -> Result<(), Error> {
        self.scan(tree, &mut |page| {
            for (k, v) in page {
                f(k, v)?;
            }
            Ok(true)
        })
        .map(|_| ())
    }

    fn for_each_batch(&self, tree: TreeName, batch: usize, f: &mut BatchVisitor<'_>) -> Result<(), Error> {
        let mut batcher = Batcher::new(batch, f);
        self.scan(tree, &mut |page| {
            for (k, v) in page {
                batcher.push(k, v)?;
            }
            Ok(true)
        })?;
        batcher.finish()
    }

    fn apply_if(&self, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        self.apply_if_at(self.generation(), expects, ops)
    }

    fn generation(&self) -> u64 {
        self.current().number
    }

    fn apply_if_at(&self, at: u64, expects: &[Expect], ops: &[Op]) -> Result<Outcome, Error> {
        if ops.is_empty() && expects.is_empty() {
            return Ok(Outcome::Applied);
        }
        let generation = self.current();
        if generation.number != at {
            // Decided on a generation that has been replaced since.
            return Ok(Outcome::Conflict);
        }
        if ops.len() > MAX_TXN_OPS || expects.len() + 2 > MAX_TXN_OPS {
            return Err(Error::Storage {
                message: format!(
                    "etcd: a batch of {} writes and {} conditions is more than one transaction takes ({MAX_TXN_OPS})",
                    ops.len(),
                    expects.len()
                ),
            });
        }
        let mut compares = vec![self.is_live(generation.number), self.not_frozen()];
        compares.extend(self.expect_compares(&generation, expects));
        let txn = Txn::new()
            .when(compares)
            .and_then(self.writes(&generation, ops))
            .or_else(self.probe_ops());
        match self.send(txn) {
            Ok(Ok(resp)) if resp.succeeded => Ok(Outcome::Applied),
            Ok(Ok(resp)) => {
                self.after_failure(generation.number, &resp)?;
                Ok(Outcome::Conflict)
            }
            // No answer: it may have applied or not. A conflict makes the writer read again
            // and decide from what is there; the conditions keep a stale decision out.
            Err(_) if !expects.is_empty() => Ok(Outcome::Conflict),
            Err(e) | Ok(Err(e)) => Err(e),
        }
    }

    /// Freezes the live generation (a key on a lease, so the freeze ends if this process
    /// dies), lets `decide` read it, and applies the batch: in place and ending the freeze
    /// in one transaction if it fits one, else as a new generation (see the module).
    /// Writers of other processes wait for the freeze to end (up to their deadline);
    /// readers go on reading the frozen generation until the switch, then follow it.
    fn exclusive(&self, decide: &mut Decide<'_>) -> Result<Outcome, Error> {
        let client = self.lease.clone();
        let ttl = self.freeze_ttl;
        let lease = self
            .call(move || {
                let mut client = client.clone();
                async move { client.grant(ttl, None).await }
            })??
            .id();
        let keep_alive = self.keep_alive(lease);
        let result = self.exclusive_on(lease, decide);
        drop(keep_alive);
        // Revoking the lease removes the freeze if it is still there.
        let client = self.lease.clone();
        let _ = self.call(move || {
            let mut client = client.clone();
            async move { client.revoke(lease).await }
        });
        result
    }

    fn flush(&self) -> Result<(), Error> {
        // An acknowledged transaction is on a quorum of members' disks already.
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        // Not the vault's to measure (etcd keeps history until it compacts); the local
        // compaction policy does not apply.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freeze holds for as long as the vault reads and decides, not only while a
    /// rewrite's pieces are written: a `rekey` or `repair` of a large vault decides for
    /// longer than the lease lives. Here the lease lives 2 s and each decision takes 5 s,
    /// for a batch applied in place and for one large enough to be a rewrite.
    #[test]
    fn a_freeze_outlives_its_lease_while_the_vault_decides() {
        let endpoints = std::env::var("TOKENVAULT_ETCD_ENDPOINTS").expect(
            "TOKENVAULT_ETCD_ENDPOINTS is not set: run scripts/test.sh, which starts an etcd cluster",
        );
        let mut nonce = [0u8; 8];
        crate::crypto::random_bytes(&mut nonce).unwrap();
        let location = format!(
            "etcd://{endpoints}/tokenvault-test/freeze-{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut storage =
            EtcdStorage::connect(&EtcdLocation::parse(&location).unwrap(), Duration::from_secs(5)).unwrap();
        storage.freeze_ttl = 2;
        for (case, puts) in [("in place", 3usize), ("a rewrite", MAX_TXN_OPS + 10)] {
            let ops = || -> Vec<Op> {
                (0..puts)
                    .map(|i| Op::Put(TreeName::Tokens, format!("{case} {i}").into_bytes(), vec![1; 40]))
                    .collect()
            };
            let outcome = storage.exclusive(&mut || {
                std::thread::sleep(Duration::from_secs(5));
                Ok((Vec::new(), ops()))
            });
            assert!(matches!(outcome, Ok(Outcome::Applied)), "{case}: {outcome:?}");
            for i in [0, puts - 1] {
                let key = format!("{case} {i}").into_bytes();
                assert_eq!(
                    storage.get(TreeName::Tokens, &key).unwrap(),
                    Some(vec![1; 40]),
                    "{case}"
                );
            }
        }
        // The freeze ended with each batch: a plain write goes through at once.
        let put = [Op::Put(TreeName::Tokens, b"after".to_vec(), vec![2])];
        assert!(matches!(storage.apply_if(&[], &put), Ok(Outcome::Applied)));
        assert!(matches!(
            storage.apply_if(&[], &[Op::Clear(TreeName::Tokens)]),
            Ok(Outcome::Applied)
        ));
    }

    #[test]
    fn the_pointer_parses_only_as_written() {
        for n in [1u64, 7, 10, 12345, u64::MAX] {
            assert_eq!(parse_pointer(n.to_string().as_bytes()).unwrap(), n);
        }
        for bad in [
            &b""[..],
            b"0",
            b"01",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1\n",
            b"18446744073709551616",
            b"100000000000000000000",
            b"\xff",
        ] {
            assert!(
                matches!(parse_pointer(bad), Err(Error::Corrupted { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_page_must_stay_in_its_range_and_move_on() {
        use etcd_client::proto::PbKeyValue;
        let page = |keys: &[&[u8]]| PbRangeResponse {
            kvs: keys
                .iter()
                .map(|k| PbKeyValue {
                    key: k.to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let (from, end) = (&b"p/tokens/b"[..], &b"p/tokens0"[..]);
        assert!(page_within(&page(&[]), from, end).is_ok());
        assert!(page_within(&page(&[b"p/tokens/b", b"p/tokens/c"]), from, end).is_ok());
        for bad in [
            &[&b"p/tokens/a"[..]][..],
            &[b"p/tokens0"],
            &[b"p/user/x"],
            &[b"p/tokens/c", b"p/tokens/c"],
            &[b"p/tokens/d", b"p/tokens/c"],
        ] {
            assert!(
                matches!(page_within(&page(bad), from, end), Err(Error::Corrupted { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generations_keep_their_keys_apart() {
        let zero = Generation::new(b"p/", 0);
        let three = Generation::new(b"p/", 3);
        assert_eq!(zero.key(TreeName::Tokens, b"k"), b"p/tokens/k");
        assert_eq!(three.key(TreeName::Tokens, b"k"), b"p/gen.3/tokens/k");
        assert_eq!(
            three.tree_range(TreeName::User),
            (b"p/gen.3/idx.user/".to_vec(), b"p/gen.3/idx.user0".to_vec())
        );
        assert_eq!(zero.remove_all().len(), TreeName::ALL.len());
        assert_eq!(three.remove_all().len(), 1);
    }

    #[test]
    fn locations_parse_and_bad_ones_say_why() {
        let l = EtcdLocation::parse("etcd://127.0.0.1:2379,10.0.0.2:2380/vaults/portal/").unwrap();
        assert_eq!(l.endpoints, ["http://127.0.0.1:2379", "http://10.0.0.2:2380"]);
        assert_eq!(l.prefix, "vaults/portal");
        for bad in [
            "127.0.0.1:2379/p",
            "etcd://127.0.0.1:2379",
            "etcd://127.0.0.1:2379/",
            "etcd://127.0.0.1/p",
            "etcd://:2379/p",
            "etcd://h:99999/p",
            "etcd://h:1,/p",
            "etcd://us@h:1/p",
            "etcd://h:1/p\n",
        ] {
            let e = EtcdLocation::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not an etcd location"), "{bad}: {e}");
        }
    }
}
