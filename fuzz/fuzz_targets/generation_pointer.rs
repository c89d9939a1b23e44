//! The generation pointer (`CURRENT`), as read from a vault directory, through its strict
//! parser.
//!
//! Protects against: a panic, and an accepted pointer that is not exactly the bytes the
//! vault writes for its number (checked by `tokenvault::fuzzing::parse_generation_pointer`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tokenvault::fuzzing::parse_generation_pointer(data);
});
