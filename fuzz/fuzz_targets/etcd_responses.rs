//! What an etcd cluster answers, through the etcd engine's decoding, and the values it
//! yields into the vault's parsers, as a hostile cluster could send them.
//!
//! Input: the first byte is the length of the tree prefix a scan strips from each key; the
//! rest is decoded as a transaction's answer (`TxnResponse`) and as a range answer
//! (`RangeResponse`), as the etcd client would decode it off the wire, and is also parsed
//! as a generation pointer (`PREFIX/current`).
//!
//! Protects against: a panic or an unbounded allocation on any answer; a pointer accepted
//! that is not exactly the decimal the engine writes; a range whose entries are not its
//! keys minus the prefix with their values unchanged, or refused for anything but a key
//! shorter than the prefix; a transaction's results taken as ranges when they are not
//! all ranges of the expected count, or out of order; a probe that disagrees with its two
//! ranges. Every value decoded then goes where a cluster's values go in the vault: the
//! header parser, the record opener (under fixed keys), and with its key the quarantine
//! entry parser (each checked as in its own target).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokenvault::fuzzing::etcd_proto::{PbRangeResponse, PbTxnResponse};
use tokenvault::fuzzing::{
    etcd_pointer, etcd_range_response, etcd_txn_response, open_record, parse_header, parse_quarantine_entry,
    seal_record, EtcdDecoded,
};

fuzz_target!(|data: &[u8]| {
    let Some((&strip, answer)) = data.split_first() else {
        return;
    };
    let strip = usize::from(strip);
    let _ = etcd_pointer(answer);
    if let Ok(resp) = PbTxnResponse::decode(answer) {
        to_the_vault(etcd_txn_response(&resp, strip));
    }
    if let Ok(resp) = PbRangeResponse::decode(answer) {
        to_the_vault(etcd_range_response(&resp, strip));
    }
});

/// The values as the vault reads them: a header (`meta/header`), a record
/// (`tokens[slot]`), a quarantine entry.
fn to_the_vault(decoded: EtcdDecoded) {
    for value in &decoded.values {
        let _ = parse_header(value);
        if let Ok(token) = open_record(value) {
            let resealed = seal_record(&token).expect("an opened token must seal again");
            assert_eq!(open_record(&resealed).expect("a sealed record must open"), token);
        }
    }
    for (key, value) in &decoded.entries {
        parse_quarantine_entry(key, value);
    }
}
