//! The bytes of a redb vault's journal (`vault.redb-journal`), as a crash or an attacker
//! may leave them, through the parser that replays it at open.
//!
//! Protects against: a panic, an unbounded allocation, a frame accepted that does not
//! encode back to exactly its bytes, and more than one frame's bytes dropped as a torn end
//! (`tokenvault::fuzzing::decode_redb_journal` checks the last two).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tokenvault::fuzzing::decode_redb_journal(data);
});
