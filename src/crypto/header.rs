//! The vault header: what unlocks the data key, and proves the header is the vault's own.
//!
//! Layout (v1, big-endian; see docs/format.md):
//! `magic(8) version(2) vault_id(16) kdf_id(1) memory_kib(4) iterations(4) parallelism(4)
//! salt_len(1) salt(salt_len) epoch(4) wrap_nonce(12) wrapped_key(48) mac(32) checksum(32)`
//!
//! Invariants: parsing is strict (exact lengths, no trailing bytes); KDF parameters are
//! checked against the bounds before Argon2 runs; the wrapped key is authenticated with
//! every preceding byte as associated data, so parameters cannot be swapped unnoticed.

use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::kdf::{derive_passphrase_key, KdfParams, PassphraseKey};
use super::keys::{self, DataKey, VAULT_ID_LEN};
use super::seal::{aead_open, aead_seal};
use crate::Error;

/// The first bytes of every header.
pub(crate) const MAGIC: &[u8; 8] = b"TKNVAULT";
/// The header format this code writes.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Argon2id, version 0x13.
const KDF_ARGON2ID_13: u8 = 1;
/// Length of the salt this code writes.
pub(crate) const SALT_LEN: usize = 32;
const MIN_SALT_LEN: usize = 16;
const MAX_SALT_LEN: usize = 64;
use super::NONCE_LEN;
const WRAPPED_LEN: usize = 32 + 16;
use super::MAC_LEN;
const CHECKSUM_LEN: usize = 32;
/// The largest header any v1 parser accepts.
pub(crate) const MAX_HEADER_LEN: usize =
    8 + 2 + VAULT_ID_LEN + 1 + 12 + 1 + MAX_SALT_LEN + 4 + NONCE_LEN + WRAPPED_LEN + MAC_LEN + CHECKSUM_LEN;

/// A parsed header. Holds nothing secret: the data key inside is wrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) vault_id: [u8; VAULT_ID_LEN],
    pub(crate) kdf: KdfParams,
    pub(crate) salt: Vec<u8>,
    pub(crate) epoch: u32,
    wrap_nonce: [u8; NONCE_LEN],
    wrapped_key: [u8; WRAPPED_LEN],
    mac: [u8; MAC_LEN],
}

impl Header {
    /// Wraps `data_key` under `kek` and signs the result with the header-MAC key.
    pub(crate) fn build(
        vault_id: [u8; VAULT_ID_LEN],
        kdf: KdfParams,
        salt: Vec<u8>,
        epoch: u32,
        kek: &PassphraseKey,
        data_key: &DataKey,
    ) -> Result<Header, Error> {
        let mut h = Header {
            vault_id,
            kdf,
            salt,
            epoch,
            wrap_nonce: [0; NONCE_LEN],
            wrapped_key: [0; WRAPPED_LEN],
            mac: [0; MAC_LEN],
        };
        super::random_bytes(&mut h.wrap_nonce)?;
        let cipher = Aes256Gcm::new(kek.bytes().into());
        let aad = h.wrap_aad();
        let wrapped = aead_seal(&cipher, &h.wrap_nonce, &aad, data_key.bytes().as_ref())
            .ok_or_else(|| Error::corrupted("key wrapping failed"))?;
        h.wrapped_key = wrapped
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupted("wrapped key has the wrong length"))?;
        let mac_key = keys::header_mac_key(data_key, &vault_id);
        h.mac = keys::mac(&mac_key, &[&h.mac_input()]);
        Ok(h)
    }

    /// A new header with a fresh random salt for `passphrase` (create, change passphrase).
    pub(crate) fn for_passphrase(
        vault_id: [u8; VAULT_ID_LEN],
        kdf: KdfParams,
        epoch: u32,
        passphrase: &[u8],
        data_key: &DataKey,
    ) -> Result<(Header, PassphraseKey), Error> {
        let mut salt = vec![0u8; SALT_LEN];
        super::random_bytes(&mut salt)?;
        let kek = derive_passphrase_key(passphrase, &salt, &kdf)?;
        let h = Header::build(vault_id, kdf, salt, epoch, &kek, data_key)?;
        Ok((h, kek))
    }

    /// The bytes before the wrapped key: its associated data.
    fn wrap_aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&self.vault_id);
        out.push(KDF_ARGON2ID_13);
        out.extend_from_slice(&self.kdf.memory_kib.to_be_bytes());
        out.extend_from_slice(&self.kdf.iterations.to_be_bytes());
        out.extend_from_slice(&self.kdf.parallelism.to_be_bytes());
        // The salt length is bounded to MAX_SALT_LEN (64) by build's callers and parse; a
        // longer one could not be written truthfully, and parse refuses the saturated value.
        out.push(u8::try_from(self.salt.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.wrap_nonce);
        out
    }

    fn mac_input(&self) -> Vec<u8> {
        let mut out = self.wrap_aad();
        out.extend_from_slice(&self.wrapped_key);
        out
    }

    /// The header as stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.mac_input();
        out.extend_from_slice(&self.mac);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parses stored bytes strictly. Does not run the KDF.
    ///
    /// # Errors
    /// `Corrupted` on a bad checksum, magic, version, KDF id, length, trailing bytes, or
    /// KDF parameters outside the bounds.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, Error> {
        let bad = |what: &str| Error::corrupted(format!("vault header: {what}"));
        if bytes.len() > MAX_HEADER_LEN || bytes.len() < CHECKSUM_LEN {
            return Err(bad("wrong length"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader { bytes: body };
        if r.take(8)? != MAGIC {
            return Err(bad("not a tokenvault header"));
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != FORMAT_VERSION {
            return Err(bad("unsupported format version"));
        }
        let vault_id = r.array()?;
        if r.array::<1>()?[0] != KDF_ARGON2ID_13 {
            return Err(bad("unknown KDF"));
        }
        let kdf = KdfParams {
            memory_kib: u32::from_be_bytes(r.array()?),
            iterations: u32::from_be_bytes(r.array()?),
            parallelism: u32::from_be_bytes(r.array()?),
        };
        kdf.validate().map_err(|_| bad("KDF parameters out of bounds"))?;
        let salt_len = usize::from(r.array::<1>()?[0]);
        if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&salt_len) {
            return Err(bad("salt length out of bounds"));
        }
        let salt = r.take(salt_len)?.to_vec();
        let epoch = u32::from_be_bytes(r.array()?);
        let wrap_nonce = r.array()?;
        let wrapped_key = r.array()?;
        let mac = r.array()?;
        if !r.bytes.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Header {
            vault_id,
            kdf,
            salt,
            epoch,
            wrap_nonce,
            wrapped_key,
            mac,
        })
    }

    /// Derives the passphrase key and unwraps the data key, then checks the header MAC.
    ///
    /// # Errors
    /// `WrongPassphrase` if the key does not unwrap; `Corrupted` if it unwraps but the MAC
    /// does not verify.
    pub(crate) fn unlock(&self, passphrase: &[u8]) -> Result<(DataKey, PassphraseKey), Error> {
        let kek = derive_passphrase_key(passphrase, &self.salt, &self.kdf)
            .map_err(|_| Error::corrupted("vault header: KDF parameters out of bounds"))?;
        let data_key = self.unwrap_with(&kek)?;
        Ok((data_key, kek))
    }

    /// Unwraps the data key with an already derived passphrase key and checks the MAC.
    pub(crate) fn unwrap_with(&self, kek: &PassphraseKey) -> Result<DataKey, Error> {
        let cipher = Aes256Gcm::new(kek.bytes().into());
        let plain = aead_open(&cipher, &self.wrap_nonce, &self.wrap_aad(), &self.wrapped_key)
            .ok_or(Error::WrongPassphrase)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(Error::corrupted("vault header: wrapped key has the wrong length"));
        }
        key.copy_from_slice(&plain);
        let data_key = DataKey::from_bytes(key);
        let mac_key = keys::header_mac_key(&data_key, &self.vault_id);
        if !keys::verify_mac(&mac_key, &[&self.mac_input()], &self.mac) {
            return Err(Error::corrupted("vault header: MAC mismatch"));
        }
        Ok(data_key)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::corrupted("vault header: truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<u8>) {
        let dk = DataKey::generate().unwrap();
        let (h, _) = Header::for_passphrase([7; 16], KdfParams::FLOOR, 0, b"pass", &dk).unwrap();
        let bytes = h.encode();
        (h, bytes)
    }

    #[test]
    fn header_round_trips_and_unlocks() {
        let (h, bytes) = sample();
        assert!(bytes.len() <= MAX_HEADER_LEN);
        let parsed = Header::parse(&bytes).unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.unlock(b"pass").is_ok());
        assert!(matches!(parsed.unlock(b"pasS"), Err(Error::WrongPassphrase)));
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let (_, bytes) = sample();
        for n in 0..bytes.len() {
            assert!(Header::parse(&bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Header::parse(&longer).is_err());
    }
}
