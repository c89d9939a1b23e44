//! What a store-assigned id must look like, for the conformance suite and the model check
//! both (each file that includes either includes this one beside it).

/// A store-assigned id: at least 22 characters (128 bits in base64url), URL-safe.
pub(crate) fn assert_fresh_id(id: &str) {
    assert!(id.len() >= 22, "fresh id {id:?} is shorter than 22 characters");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')),
        "fresh id {id:?} is not URL-safe"
    );
}
