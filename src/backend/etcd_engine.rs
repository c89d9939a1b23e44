//! The etcd engine (feature `etcd`): the vault's trees as key prefixes in an etcd v3
//! cluster, shared by every process that opens the same location.
//!
//! Keys: `PREFIX/TREE/KEY` (the tree's name as in docs/format.md, then the tree's key bytes);
//! values unchanged. A batch is one etcd transaction whose compare conditions are the
//! batch's expectations (a value unchanged, or a key absent: version 0); a failed
//! condition is [`Outcome::Conflict`]. A transaction that times out may or may not have
//! applied: it is reported as a conflict, so the writer re-reads and decides again (its
//! conditions make a second application of a stale decision impossible). Every call has a
//! deadline. The async client runs on a runtime thread of its own, so the synchronous
//! seam works from any thread, one inside a tokio runtime included.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KvClient, Txn, TxnOp};

use super::{BatchVisitor, Batcher, Bytes, Entry, EntryVisitor, Expect, Op, Outcome, Storage, TreeName};
use crate::Error;

/// The most operations (and, separately, compare conditions) etcd takes in one
/// transaction by default (`--max-txn-ops`).
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Entries read per range request of a scan.
const SCAN_PAGE: i64 = 1024;

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
    /// `PREFIX/`.
    prefix: Vec<u8>,
    timeout: Duration,
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
        Ok(EtcdStorage {
            kv,
            runtime: Some(runtime),
            prefix,
            timeout,
        })
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

    /// The etcd key of `key` in `tree`.
    fn key(&self, tree: TreeName, key: &[u8]) -> Vec<u8> {
        let mut k = self.tree_start(tree);
        k.extend_from_slice(key);
        k
    }

    /// `PREFIX/TREE/`: the first key a tree may hold.
    fn tree_start(&self, tree: TreeName) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(tree.name().as_bytes());
        k.push(b'/');
        k
    }

    /// The keys of `tree`: `[PREFIX/TREE/, PREFIX/TREE0)`.
    fn tree_range(&self, tree: TreeName) -> (Vec<u8>, Vec<u8>) {
        let start = self.tree_start(tree);
        let mut end = start.clone();
        if let Some(last) = end.last_mut() {
            // `/` + 1: just past every key of the tree.
            *last += 1;
        }
        (start, end)
    }

    /// Calls `f` with the entries of `tree`, in key order, a page at a time, every page
    /// read at the revision of the first (one consistent snapshot), until `f` returns
    /// `Ok(false)`; whether it stopped early.
    fn scan(
        &self,
        tree: TreeName,
        f: &mut dyn FnMut(&[Entry]) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let (start, end) = self.tree_range(tree);
        let strip = start.len();
        let mut from = start;
        let mut revision = 0i64;
        loop {
            let kv = self.kv.clone();
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(SCAN_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let key = from.clone();
            let resp = self.call(move || {
                let (mut kv, key, options) = (kv.clone(), key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })??;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let mut page = Vec::with_capacity(resp.kvs().len());
            for kv in resp.kvs() {
                let Some(key) = kv.key().get(strip..) else {
                    return Err(Error::corrupted("etcd: a key outside its tree"));
                };
                page.push((key.to_vec(), kv.value().to_vec()));
            }
            let last = resp.kvs().last().map(|kv| kv.key().to_vec());
            if !page.is_empty() && !f(&page)? {
                return Ok(true);
            }
            match last {
                Some(mut last) if resp.more() => {
                    last.push(0);
                    from = last;
                }
                _ => return Ok(false),
            }
        }
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
        let kv = self.kv.clone();
        let key = self.key(tree, key);
        let resp = self.call(move || {
            let (mut kv, key) = (kv.clone(), key.clone());
            async move { kv.get(key, None).await }
        })??;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
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
        if ops.is_empty() && expects.is_empty() {
            return Ok(Outcome::Applied);
        }
        if ops.len() > MAX_TXN_OPS || expects.len() > MAX_TXN_OPS {
            return Err(Error::Storage {
                message: format!(
                    "etcd: a batch of {} writes and {} conditions is more than one transaction takes ({MAX_TXN_OPS})",
                    ops.len(),
                    expects.len()
                ),
            });
        }
        let compares: Vec<Compare> = expects
            .iter()
            .map(|e| {
                let key = self.key(e.tree, &e.key);
                match &e.value {
                    Some(v) => Compare::value(key, CompareOp::Equal, v.clone()),
                    None => Compare::version(key, CompareOp::Equal, 0),
                }
            })
            .collect();
        let writes: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put(t, k, v) => TxnOp::put(self.key(*t, k), v.clone(), None),
                Op::Remove(t, k) => TxnOp::delete(self.key(*t, k), None),
                Op::Clear(t) => {
                    let (start, end) = self.tree_range(*t);
                    TxnOp::delete(start, Some(DeleteOptions::new().with_range(end)))
                }
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(writes);
        let kv = self.kv.clone();
        match self.call(move || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        }) {
            Ok(Ok(resp)) if resp.succeeded() => Ok(Outcome::Applied),
            Ok(Ok(_)) => Ok(Outcome::Conflict),
            // No answer: it may have applied or not. A conflict makes the writer read again
            // and decide from what is there; the conditions keep a stale decision out.
            Err(_) if !expects.is_empty() => Ok(Outcome::Conflict),
            Err(e) | Ok(Err(e)) => Err(e),
        }
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
