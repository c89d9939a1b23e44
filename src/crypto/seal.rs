//! Sealing and opening records: bytes in, bytes out.
//!
//! A record is `version(1) || epoch(4) || nonce(12) || AES-256-GCM(record key of epoch,
//! plaintext)`, with associated data `"tokenvault/record/v1" || vault id || version ||
//! epoch || len(tree) || tree || slot`. The plaintext of a token record is the token's
//! encoding (`crate::token::encoding`).
//!
//! Invariants: a record opens only in the vault, tree and slot it was sealed for, under the
//! epoch it names; a record longer than the largest encoded token is refused before it is
//! decrypted; opened plaintext is zeroized.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::keys::{VaultKeys, MAC_LEN};
use crate::token::encoding::MAX_ENCODED_LEN;
use crate::Error;

/// The record format this code writes.
pub(crate) const RECORD_VERSION: u8 = 1;
use super::NONCE_LEN;
const TAG_LEN: usize = 16;
const PREFIX_LEN: usize = 1 + 4 + NONCE_LEN;
/// Domain separation for record AAD.
const RECORD_TAG: &[u8] = b"tokenvault/record/v1";

/// AES-256-GCM encryption: ciphertext || 16-byte tag. `None` only if the message is
/// beyond AES-GCM's length limit.
pub(crate) fn aead_seal(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    msg: &[u8],
) -> Option<Vec<u8>> {
    cipher.encrypt(&Nonce::from(*nonce), Payload { msg, aad }).ok()
}

/// AES-256-GCM decryption and authentication. `None` if the tag does not verify; the
/// plaintext is zeroized on drop.
pub(crate) fn aead_open(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    cipher
        .decrypt(&Nonce::from(*nonce), Payload { msg: ciphertext, aad })
        .ok()
        .map(Zeroizing::new)
}

fn record_aad(vault_id: &[u8], version: u8, epoch: u32, tree: &str, slot: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RECORD_TAG.len() + vault_id.len() + 6 + tree.len() + slot.len());
    aad.extend_from_slice(RECORD_TAG);
    aad.extend_from_slice(vault_id);
    aad.push(version);
    aad.extend_from_slice(&epoch.to_be_bytes());
    // Tree names are short constants: their length fits a byte.
    aad.push(u8::try_from(tree.len()).unwrap_or(u8::MAX));
    aad.extend_from_slice(tree.as_bytes());
    aad.extend_from_slice(slot);
    aad
}

/// Seals `plaintext` for `slot` of `tree` under the record key of `epoch` (the epoch the
/// header names: the caller passes it, so a key derived ahead of a failed rotation is
/// never used).
pub(crate) fn seal_record(
    keys: &VaultKeys,
    tree: &str,
    slot: &[u8; MAC_LEN],
    epoch: u32,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let cipher = keys
        .record_key(epoch)
        .ok_or_else(|| Error::corrupted("no record key for the epoch"))?;
    let aad = record_aad(&keys.vault_id, RECORD_VERSION, epoch, tree, slot);
    let ct = aead_seal(cipher, &nonce, &aad, plaintext).ok_or(Error::InvalidToken {
        reason: "the token is too large to seal",
    })?;
    let mut out = Vec::with_capacity(PREFIX_LEN + ct.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a record read from `slot` of `tree`.
///
/// # Errors
/// `Corrupted` if the record is malformed, names an unknown version or epoch, or fails
/// authentication (flipped bits, another slot, tree or vault).
pub(crate) fn open_record(
    keys: &VaultKeys,
    tree: &str,
    slot: &[u8],
    record: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if record.len() < PREFIX_LEN + TAG_LEN {
        return Err(Error::corrupted("record: truncated"));
    }
    if record.len() > PREFIX_LEN + MAX_ENCODED_LEN + TAG_LEN {
        return Err(Error::corrupted("record: too large"));
    }
    let Some((prefix, body)) = record.split_first_chunk::<PREFIX_LEN>() else {
        return Err(Error::corrupted("record: truncated"));
    };
    let [version, e0, e1, e2, e3, nonce @ ..] = *prefix;
    if version != RECORD_VERSION {
        return Err(Error::corrupted("record: unknown version"));
    }
    let epoch = u32::from_be_bytes([e0, e1, e2, e3]);
    // An epoch past this handle's is one another process sharing the storage moved to
    // (an etcd vault): its key derives from the data key like every other. A made-up
    // epoch gets a key too, and fails authentication like any other doctored record.
    let derived;
    let cipher = match keys.record_key(epoch) {
        Some(cipher) => cipher,
        None => {
            derived = keys.derive_record_key(epoch);
            &derived
        }
    };
    let aad = record_aad(&keys.vault_id, version, epoch, tree, slot);
    aead_open(cipher, &nonce, &aad, body).ok_or_else(|| Error::corrupted("record: authentication failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::DataKey;

    fn keys() -> VaultKeys {
        VaultKeys::derive(
            DataKey::generate().unwrap(),
            [1; 16],
            0,
            [b"i0", b"i1", b"i2", b"i3"],
        )
    }

    #[test]
    fn sealed_record_opens_only_where_it_was_sealed() {
        let k = keys();
        let slot = [9u8; 32];
        let rec = seal_record(&k, "tokens", &slot, 0, [3; 12], b"hello").unwrap();
        assert_eq!(
            open_record(&k, "tokens", &slot, &rec).unwrap().as_slice(),
            b"hello"
        );
        assert!(open_record(&k, "tokens", &[8u8; 32], &rec).is_err());
        assert!(open_record(&k, "other", &slot, &rec).is_err());
        assert!(open_record(&keys(), "tokens", &slot, &rec).is_err());
        for i in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[i] ^= 1 << bit;
                assert!(open_record(&k, "tokens", &slot, &bad).is_err());
            }
        }
    }
}
