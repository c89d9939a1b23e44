//! The key hierarchy below the data key.
//!
//! passphrase --Argon2id--> passphrase key --unwraps--> random 256-bit data key
//! --HKDF-SHA256 (salt: vault id, distinct labels)--> record key per epoch, one index key
//! per index, the id key, and the header-MAC key.
//!
//! Invariants: no type here is `Debug` or `Clone`; all are zeroized on drop, the HMAC
//! and HKDF states included (their SHA-256 states wipe themselves: sha2's `zeroize`).

use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// How many blind-index keys a vault has.
pub(crate) const INDEX_KEYS: usize = 4;

/// Length of a vault id.
pub(crate) const VAULT_ID_LEN: usize = 16;
pub(crate) use super::MAC_LEN;

/// The random key every other vault key derives from.
pub(crate) struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A key from its bytes (an unwrapped data key).
    pub(crate) fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        DataKey(bytes)
    }

    /// The key's bytes (to wrap it under a passphrase key).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh key from the operating system's random source.
    pub(crate) fn generate() -> Result<Self, Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        super::random_bytes(k.as_mut())?;
        Ok(DataKey(k))
    }
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` into `okm`.
pub(crate) fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], okm: &mut [u8]) -> Result<(), Error> {
    // The extracted key opens every key derived from `ikm`: `Hkdf::new` would drop it
    // unwiped, so it is taken here and wiped. The HMAC state keyed with it wipes itself.
    let (mut prk, hkdf) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    prk.as_mut_slice().zeroize();
    hkdf.expand(info, okm)
        .map_err(|_| Error::corrupted("HKDF output length out of range"))
}

fn hkdf_expand(data_key: &DataKey, vault_id: &[u8; VAULT_ID_LEN], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: this cannot fail.
    let _ = hkdf_sha256(data_key.0.as_ref(), vault_id, label, okm.as_mut());
    okm
}

fn mac_key(data_key: &DataKey, vault_id: &[u8; VAULT_ID_LEN], label: &[u8]) -> HmacSha256 {
    let k = hkdf_expand(data_key, vault_id, label);
    // HMAC accepts keys of any length: this cannot fail.
    <HmacSha256 as hmac::KeyInit>::new_from_slice(k.as_ref()).unwrap_or_else(|_| unreachable!())
}

fn record_label(epoch: u32) -> Vec<u8> {
    let mut label = b"tokenvault v1 record key epoch ".to_vec();
    label.extend_from_slice(&epoch.to_be_bytes());
    label
}

/// The header-MAC key alone (needed before the rest, to check a header).
pub(crate) fn header_mac_key(data_key: &DataKey, vault_id: &[u8; VAULT_ID_LEN]) -> HmacSha256 {
    mac_key(data_key, vault_id, b"tokenvault v1 header mac")
}

/// Computes a MAC with a prepared key.
pub(crate) fn mac(key: &HmacSha256, parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut m = key.clone();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Verifies a MAC in constant time.
pub(crate) fn verify_mac(key: &HmacSha256, parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = key.clone();
    for p in parts {
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// Every key an open vault uses.
pub(crate) struct VaultKeys {
    pub(crate) vault_id: [u8; VAULT_ID_LEN],
    data_key: DataKey,
    /// Record keys, indexed by epoch (0..=current).
    records: Vec<Aes256Gcm>,
    index: [HmacSha256; INDEX_KEYS],
    id: HmacSha256,
    meta_mac: HmacSha256,
}

impl VaultKeys {
    /// Derives every key for epochs `0..=epoch`, with one index key per label of
    /// `index_labels` (the `n` of [`VaultKeys::index_key`] is a position in it).
    pub(crate) fn derive(
        data_key: DataKey,
        vault_id: [u8; VAULT_ID_LEN],
        epoch: u32,
        index_labels: [&[u8]; INDEX_KEYS],
    ) -> Self {
        let index = index_labels.map(|label| mac_key(&data_key, &vault_id, label));
        let mut keys = VaultKeys {
            vault_id,
            records: Vec::new(),
            index,
            id: mac_key(&data_key, &vault_id, b"tokenvault v1 id"),
            meta_mac: mac_key(&data_key, &vault_id, b"tokenvault v1 meta mac"),
            data_key,
        };
        keys.extend_epochs(epoch);
        keys
    }

    /// Makes sure record keys exist for every epoch up to `epoch`.
    pub(crate) fn extend_epochs(&mut self, epoch: u32) {
        while self.records.len() <= epoch as usize {
            let Ok(e) = u32::try_from(self.records.len()) else {
                break;
            };
            self.records.push(self.derive_record_key(e));
        }
    }

    /// The record key of `epoch`, derived afresh (not kept).
    pub(crate) fn derive_record_key(&self, epoch: u32) -> Aes256Gcm {
        let k = hkdf_expand(&self.data_key, &self.vault_id, &record_label(epoch));
        Aes256Gcm::new((&*k).into())
    }

    /// The record key of `epoch`, if that epoch exists.
    pub(crate) fn record_key(&self, epoch: u32) -> Option<&Aes256Gcm> {
        self.records.get(epoch as usize)
    }

    /// The slot of a record: MAC(id key, id).
    pub(crate) fn slot(&self, id: &str) -> [u8; MAC_LEN] {
        mac(&self.id, &[id.as_bytes()])
    }

    /// The blind index key of a value: MAC(index key `n`, value).
    ///
    /// # Errors
    /// `Internal` if there is no index key `n`.
    pub(crate) fn index_key(&self, n: usize, value: &[u8]) -> Result<[u8; MAC_LEN], Error> {
        let key = self
            .index
            .get(n)
            .ok_or_else(|| Error::internal("no such index key"))?;
        Ok(mac(key, &[value]))
    }

    /// The MAC that authenticates a `meta` value other than the header.
    pub(crate) fn meta_mac(&self, name: &[u8], value: &[u8]) -> [u8; MAC_LEN] {
        mac(&self.meta_mac, &[&(name.len() as u64).to_be_bytes(), name, value])
    }

    /// Verifies a `meta` value's MAC in constant time.
    pub(crate) fn verify_meta_mac(&self, name: &[u8], value: &[u8], tag: &[u8]) -> bool {
        verify_mac(
            &self.meta_mac,
            &[&(name.len() as u64).to_be_bytes(), name, value],
            tag,
        )
    }

    /// The data key (to wrap it again under a new passphrase).
    pub(crate) fn data_key(&self) -> &DataKey {
        &self.data_key
    }
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;
    use zeroize::ZeroizeOnDrop;

    /// Asks at run time whether `T` wipes itself when dropped: the method is found through
    /// `ZeroizeOnDrop` when `T` implements it, through the fallback otherwise. A dependency
    /// built without its `zeroize` feature then fails the test below, not the build.
    struct Probe<T>(PhantomData<T>);
    trait Wiped {
        fn wiped(&self) -> bool {
            true
        }
    }
    impl<T: ZeroizeOnDrop> Wiped for Probe<T> {}
    trait NotWiped {
        fn wiped(&self) -> bool {
            false
        }
    }
    impl<T> NotWiped for &Probe<T> {}

    macro_rules! wiped_on_drop {
        ($t:ty) => {
            (&Probe::<$t>(PhantomData)).wiped()
        };
    }

    #[test]
    fn the_probe_tells_wiped_types_from_others() {
        assert!(wiped_on_drop!(zeroize::Zeroizing<[u8; 32]>));
        assert!(!wiped_on_drop!([u8; 32]));
    }

    /// Every HMAC (the MAC and index keys, HKDF's extract and expand) keeps two SHA-256
    /// states computed from its key, and a block buffer; Argon2 hashes the passphrase with
    /// BLAKE2b. Each must wipe itself when dropped.
    #[test]
    fn hmac_hkdf_and_argon2_hash_states_wipe_themselves() {
        type Sha256Core = <sha2::Sha256 as hmac::EagerHash>::Core;
        type HmacBuffer = hmac::digest::block_api::Buffer<hmac::block_api::HmacCore<sha2::Sha256>>;
        assert!(
            wiped_on_drop!(Sha256Core),
            "SHA-256 state (sha2 without `zeroize`)"
        );
        assert!(wiped_on_drop!(HmacBuffer), "HMAC block buffer");
        assert!(
            wiped_on_drop!(blake2::Blake2bVarCore),
            "BLAKE2b state (blake2 without `zeroize`)"
        );
    }
}
