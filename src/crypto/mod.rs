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

#[cfg(test)]
mod kat;

/// Fills `buf` from the operating system's random source.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), crate::Error> {
    #[cfg(test)]
    if test_rng::fill(buf) {
        return Ok(());
    }
    getrandom::fill(buf).map_err(|e| crate::Error::internal(format!("the random source failed: {e}")))
}

/// Length of an AES-GCM nonce (records, the wrapped data key).
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an HMAC-SHA256 tag (slots, index keys, header and `meta` MACs).
pub(crate) const MAC_LEN: usize = 32;

/// A fresh random 96-bit AES-GCM nonce (every record seal takes one).
pub(crate) fn fresh_nonce() -> Result<[u8; NONCE_LEN], crate::Error> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    Ok(nonce)
}

/// Unit tests only: a deterministic random source for the calling thread, so a test can
/// build the frozen fixture vault through the real code path.
#[cfg(test)]
pub(crate) mod test_rng {
    use sha2::{Digest, Sha256};
    use std::cell::RefCell;

    thread_local! {
        static STATE: RefCell<Option<(u64, u64)>> = const { RefCell::new(None) };
    }

    /// From now on this thread's random bytes are SHA-256(seed || counter) blocks.
    pub(crate) fn seed(seed: u64) {
        STATE.with(|s| *s.borrow_mut() = Some((seed, 0)));
    }

    pub(super) fn fill(buf: &mut [u8]) -> bool {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some((seed, counter)) = s.as_mut() else {
                return false;
            };
            for chunk in buf.chunks_mut(32) {
                let block = Sha256::new()
                    .chain_update(seed.to_be_bytes())
                    .chain_update(counter.to_be_bytes())
                    .finalize();
                *counter += 1;
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
            true
        })
    }
}
