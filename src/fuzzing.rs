//! Entry points for the fuzz targets in `fuzz/`, compiled only under `cfg(fuzzing)`
//! (cargo-fuzz sets it). They expose the parsers of untrusted bytes with fixed keys, so a
//! fuzzer can reach them without a vault on disk, and (feature `etcd`) the etcd engine's
//! decoding of the cluster's answers, without a cluster. Not part of the public API.

use crate::crypto::header::Header;
use crate::crypto::keys::{DataKey, VaultKeys};
use crate::crypto::seal;
use crate::token::encoding;
use crate::{Error, OAuthToken};

/// The fixed record keys the record targets use.
fn fixed_keys() -> VaultKeys {
    VaultKeys::derive(
        DataKey::from_bytes(zeroize::Zeroizing::new([7u8; 32])),
        [9u8; 16],
        1,
        crate::store::Index::ALL.map(crate::store::Index::key_label),
    )
}

/// The slot the record targets open records from.
pub const FIXED_SLOT: [u8; 32] = [5u8; 32];

/// Parses header bytes as read from `meta`; a header that parses must re-encode to the
/// same bytes.
pub fn parse_header(bytes: &[u8]) -> Result<(), Error> {
    let header = Header::parse(bytes)?;
    assert_eq!(
        header.encode(),
        bytes,
        "a parsed header must re-encode to its bytes"
    );
    Ok(())
}

/// Decodes a redb vault's journal (`vault.redb-journal`, either format); the number of
/// batches. The frames of the batches decoded, encoded again with their numbers (and
/// epoch), must be exactly the bytes they were read from, where they were read from: in
/// the first format one after another from the start, with at most one frame's bytes after
/// them (a cut last frame); in the current format each at the first slot after the one
/// before, from the frame area's start.
#[cfg(feature = "redb")]
pub fn decode_redb_journal(bytes: &[u8]) -> Result<usize, Error> {
    use crate::backend::redb_journal;
    let decoded = redb_journal::decode(bytes)?;
    let mut expected_at = match decoded.epoch {
        Some(_) => redb_journal::HEADERS,
        None => 0,
    };
    for ((n, ops), &(at, len)) in (1u64..).zip(&decoded.batches).zip(&decoded.frames) {
        let frame = match decoded.epoch {
            Some(epoch) => redb_journal::encode(epoch, n, ops),
            None => redb_journal::encode_first_format(n, ops),
        };
        assert!(frame.is_some(), "a decoded batch must fit a frame again");
        let frame = frame.unwrap_or_default();
        assert_eq!(at, expected_at, "frames must be where the format puts them");
        assert_eq!(
            bytes.get(at..at + len),
            Some(&frame[..]),
            "decoded frames must encode to the bytes they were read from"
        );
        expected_at = match decoded.epoch {
            Some(_) => at + len.div_ceil(redb_journal::SLOT) * redb_journal::SLOT,
            None => at + len,
        };
    }
    if decoded.epoch.is_none() {
        assert!(
            bytes.len() - expected_at <= redb_journal::MAX_FRAME,
            "no more than one frame may be dropped as a torn end"
        );
    }
    Ok(decoded.batches.len())
}

/// Opens record bytes as read from `tokens[FIXED_SLOT]` under the fixed keys.
pub fn open_record(bytes: &[u8]) -> Result<OAuthToken, Error> {
    let keys = fixed_keys();
    let plain = seal::open_record(&keys, "tokens", &FIXED_SLOT, bytes)?;
    encoding::decode_token(&plain)
}

/// Seals a token for `FIXED_SLOT` under the fixed keys (to build seed corpora).
pub fn seal_record(token: &OAuthToken) -> Result<Vec<u8>, Error> {
    let keys = fixed_keys();
    let plain = encoding::encode_token(token)?;
    seal::seal_record(&keys, "tokens", &FIXED_SLOT, 1, [1u8; 12], &plain)
}

/// Decodes decrypted record bytes into a token (bounded, strict); a token that decodes
/// must re-encode to the same bytes.
pub fn decode_token(bytes: &[u8]) -> Result<OAuthToken, Error> {
    let token = encoding::decode_token(bytes)?;
    Ok(token)
}

/// Encodes a token as a record's plaintext (to build seed corpora).
pub fn encode_token(token: &OAuthToken) -> Result<Vec<u8>, Error> {
    Ok(encoding::encode_token(token)?.to_vec())
}

/// Parses a generation pointer (`CURRENT`); a pointer that parses must be exactly the bytes
/// written for its number.
pub fn parse_generation_pointer(bytes: &[u8]) -> Result<u64, Error> {
    let n = crate::vault::fuzz_hooks::parse_pointer(bytes)?;
    assert_eq!(
        crate::vault::fuzz_hooks::encode_pointer(n),
        bytes,
        "a parsed pointer must re-encode to its bytes"
    );
    Ok(n)
}

/// The bytes of a pointer to generation `n` (to build seed corpora).
pub fn encode_pointer(n: u64) -> Vec<u8> {
    crate::vault::fuzz_hooks::encode_pointer(n)
}

/// Parses a quarantine entry (as read from the `quarantine` tree) and opens its label
/// under the fixed keys; `None` if it does not parse.
pub fn parse_quarantine_entry(key: &[u8], value: &[u8]) -> Option<Option<String>> {
    crate::vault::fuzz_hooks::parse_quarantine(&fixed_keys(), key, value)
}

/// A quarantine entry for `FIXED_SLOT` under the fixed keys, as the first byte (the key's
/// length), the key and the value (the input format of the `quarantine_entry` target).
#[allow(
    clippy::expect_used,
    reason = "seed building only, with fixed keys and a short id: sealing cannot fail"
)]
pub fn encode_quarantine_entry(id: Option<&str>, record: &[u8]) -> Vec<u8> {
    let (key, value) = crate::vault::fuzz_hooks::quarantine_entry(&fixed_keys(), &FIXED_SLOT, id, record)
        .expect("sealing a label"); // ok: seed building only, fixed keys and a short id
    let mut out = vec![u8::try_from(key.len()).unwrap_or(u8::MAX)];
    out.extend_from_slice(&key);
    out.extend_from_slice(&value);
    out
}

/// The etcd client's protobuf messages, for the `etcd_responses` target to decode its input
/// into and the seed generator to build answers with (a `prost` message each).
#[cfg(feature = "etcd")]
pub use etcd_client::proto as etcd_proto;

/// What the etcd engine took from one answer of the cluster: what it hands on to the vault.
#[cfg(feature = "etcd")]
#[derive(Debug, Default)]
pub struct EtcdDecoded {
    /// The entries of every range in the answer, as a tree's (key, value) pairs: the keys
    /// stripped of their tree's prefix, as a scan hands them to the vault.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every value the vault would be given: the entries' values, and the value a read of
    /// one key returns.
    pub values: Vec<Vec<u8>>,
}

/// Parses the etcd generation pointer (`PREFIX/current`): it is accepted exactly when it is
/// the decimal of a number of at least 1, as `to_string` writes it.
#[cfg(feature = "etcd")]
pub fn etcd_pointer(bytes: &[u8]) -> Result<u64, Error> {
    let canonical = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|n| *n >= 1 && n.to_string().as_bytes() == bytes);
    let parsed = crate::backend::etcd_fuzz_hooks::parse_pointer(bytes);
    match (&parsed, canonical) {
        (Ok(n), Some(c)) => assert_eq!(*n, c, "a pointer parses to its number"),
        (Err(Error::Corrupted { .. }), None) => {}
        (Ok(_), None) => panic!("a pointer that is not canonical was accepted: {bytes:?}"),
        (Err(e), _) => panic!("the pointer {bytes:?} was refused with {e:?}"),
    }
    parsed
}

/// The entries of a range answer (a scan's page) with `strip` bytes of tree prefix taken
/// off each key: one entry per key-value, each key minus its first `strip` bytes and each
/// value unchanged; refused (`Corrupted`) exactly when some key is shorter than `strip`.
#[cfg(feature = "etcd")]
pub fn etcd_range_response(resp: &etcd_proto::PbRangeResponse, strip: usize) -> EtcdDecoded {
    let mut decoded = EtcdDecoded::default();
    check_range(resp, strip, &mut decoded);
    decoded
}

/// Everything the engine reads from a transaction's answer: its range results as a read of
/// one key, a scan's first page (stripping `strip` bytes) and a probe (the pointer and
/// the freeze) would read them. `txn_ranges::<N>` succeeds exactly when every result is a
/// range and there are `N` of them, and gives them in order; `probe_result` succeeds
/// exactly when there are two ranges and the first one's first value, if any, is a
/// pointer, and agrees with reading them directly.
#[cfg(feature = "etcd")]
pub fn etcd_txn_response(resp: &etcd_proto::PbTxnResponse, strip: usize) -> EtcdDecoded {
    use crate::backend::etcd_fuzz_hooks::probe_result;
    use etcd_proto::PbTxnOpResponse;

    let mut decoded = EtcdDecoded::default();
    let ranges: Option<Vec<&etcd_proto::PbRangeResponse>> = resp
        .responses
        .iter()
        .map(|r| match &r.response {
            Some(PbTxnOpResponse::ResponseRange(range)) => Some(range),
            _ => None,
        })
        .collect();
    // A read of one key: its value, if any.
    if let Some([range]) = check_txn_ranges::<1>(resp, ranges.as_deref()) {
        if let Some(kv) = range.kvs.first() {
            decoded.values.push(kv.value.clone());
        }
    }
    // Every range result as a scan's page (the engine takes only a single one as such),
    // and each of its values as a pointer.
    for r in &resp.responses {
        let Some(PbTxnOpResponse::ResponseRange(range)) = &r.response else {
            continue;
        };
        check_range(range, strip, &mut decoded);
        for kv in &range.kvs {
            let _ = etcd_pointer(&kv.value);
        }
    }
    // The probe: the pointer (absent: generation 0) and the freeze.
    let two = check_txn_ranges::<2>(resp, ranges.as_deref());
    let expected = two.map(|[pointer, freeze]| {
        let live = match pointer.kvs.first() {
            None => Ok(0),
            Some(kv) => crate::backend::etcd_fuzz_hooks::parse_pointer(&kv.value),
        };
        live.map(|live| (live, freeze.kvs.first().map(|kv| kv.value.clone())))
    });
    match (probe_result(resp), expected) {
        (Ok(got), Some(Ok(want))) => assert_eq!(got, want, "the probe reads the pointer and the freeze"),
        (Err(Error::Corrupted { .. }), None | Some(Err(_))) => {}
        (got, want) => panic!("the probe gave {got:?}, its ranges {want:?}"),
    }
    // Other counts: none, or three.
    let _ = check_txn_ranges::<0>(resp, ranges.as_deref());
    let _ = check_txn_ranges::<3>(resp, ranges.as_deref());
    decoded
}

/// `txn_ranges::<N>` against `ranges` (every result of the answer as a range, or `None`
/// if one is not): the same ranges in the same order when there are `N`, else `Corrupted`.
#[cfg(feature = "etcd")]
fn check_txn_ranges<'a, const N: usize>(
    resp: &'a etcd_proto::PbTxnResponse,
    ranges: Option<&[&'a etcd_proto::PbRangeResponse]>,
) -> Option<[&'a etcd_proto::PbRangeResponse; N]> {
    let expected = ranges.filter(|r| r.len() == N);
    match (crate::backend::etcd_fuzz_hooks::txn_ranges::<N>(resp), expected) {
        (Ok(got), Some(want)) => {
            assert!(
                got.iter().zip(want).all(|(g, w)| std::ptr::eq(*g, *w)),
                "txn_ranges gives the answer's ranges in order"
            );
            Some(got)
        }
        (Err(Error::Corrupted { .. }), None) => None,
        (got, want) => panic!(
            "txn_ranges::<{N}> of {} results gave {}, {} expected",
            resp.responses.len(),
            if got.is_ok() { "ranges" } else { "an error" },
            if want.is_some() { "ranges" } else { "Corrupted" },
        ),
    }
}

/// `range_entries` against its specification; the entries go into `decoded`.
#[cfg(feature = "etcd")]
fn check_range(resp: &etcd_proto::PbRangeResponse, strip: usize, decoded: &mut EtcdDecoded) {
    let short = resp.kvs.iter().any(|kv| kv.key.len() < strip);
    match crate::backend::etcd_fuzz_hooks::range_entries(resp, strip) {
        Ok(entries) => {
            assert!(!short, "a key shorter than its tree's prefix was accepted");
            assert_eq!(entries.len(), resp.kvs.len(), "one entry per key-value");
            for ((key, value), kv) in entries.iter().zip(&resp.kvs) {
                assert_eq!(
                    Some(key.as_slice()),
                    kv.key.get(strip..),
                    "a key loses its prefix"
                );
                assert_eq!(value, &kv.value, "a value is unchanged");
            }
            decoded.values.extend(entries.iter().map(|(_, v)| v.clone()));
            decoded.entries.extend(entries);
        }
        Err(Error::Corrupted { .. }) => assert!(short, "a range with every key long enough was refused"),
        Err(e) => panic!("range_entries failed with {e:?}"),
    }
}
