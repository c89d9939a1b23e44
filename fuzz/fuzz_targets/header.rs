//! `meta/header` bytes, as read from a vault on disk, through the strict header parser.
//!
//! Protects against: a panic, an unbounded allocation, or an accepted header that does not
//! re-encode to exactly its bytes (the parser is checked for strictness by
//! `tokenvault::fuzzing::parse_header` itself).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tokenvault::fuzzing::parse_header(data);
});
