//! Decrypted record bytes through the bincode decoder with its limits.
//!
//! Protects against: a panic, or an allocation sized by an unchecked length prefix, on any
//! plaintext; a decoded token that does not survive an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenvault::fuzzing::{decode_token, encode_token};

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = decode_token(data) {
        let bytes = encode_token(&token).expect("a decoded token must encode");
        let again = decode_token(&bytes).expect("an encoded token must decode");
        assert_eq!(again, token, "decode(encode(t)) != t");
        // The canonical encoding is a fixed point.
        assert_eq!(encode_token(&again).expect("encodes"), bytes);
    }
});
