//! The only module that touches aes-gcm, argon2, hkdf and hmac.
//!
//! Invariants: key material has no `Debug` and no `Clone` and is zeroized on drop; every
//! parse of bytes read from disk is bounded and strict; failures of authentication are
//! reported as errors, never as data.

pub(crate) mod header;
pub(crate) mod kdf;
pub(crate) mod keys;
pub(crate) mod seal;

pub use kdf::KdfParams;

/// Fills `buf` from the operating system's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), crate::Error> {
    getrandom::fill(buf).map_err(|e| crate::Error::Io(std::io::Error::other(e.to_string())))
}
