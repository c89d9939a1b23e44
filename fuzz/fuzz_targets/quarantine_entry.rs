//! A quarantine entry (key and value, as read from the `quarantine` tree) through its
//! parser and the opening of its label under fixed keys.
//!
//! Input: the first byte is the key's length, the next that many bytes the key, the rest
//! the value. Protects against: a panic or an unbounded allocation on any entry; an entry
//! that parses but does not re-encode to its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(len).min(rest.len()));
    tokenvault::fuzzing::parse_quarantine_entry(key, value);
});
