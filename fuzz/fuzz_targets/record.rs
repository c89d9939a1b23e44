//! `tokens[slot]` bytes, as read from a vault on disk, opened under fixed keys at
//! `FIXED_SLOT`: version, epoch, nonce, AES-256-GCM, then the bounded token decoder.
//!
//! Protects against: a panic or an unbounded allocation on any record bytes; a record that
//! opens to a token which does not survive a seal/open round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::fuzzing::{open_record, seal_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = open_record(data) {
        // Only records sealed under the fixed keys get here (the seeds, or mutations that
        // leave the authenticated part alone): resealing must give back the same token.
        let resealed = seal_record(&token).expect("an opened token must seal again");
        assert_eq!(open_record(&resealed).expect("a sealed record must open"), token);
    }
});
