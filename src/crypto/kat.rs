//! Known-answer tests through our own plumbing: the AES-256-GCM, Argon2id and HKDF-SHA256
//! calls that the vault makes, checked against published vectors.

use aes_gcm::{Aes256Gcm, KeyInit};

use super::kdf::{derive_passphrase_key, KdfParams};
use super::keys::hkdf_sha256;
use super::seal::{aead_open, aead_seal};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The GCM specification's test case 16 (AES-256, 60-byte plaintext, 20-byte AAD).
#[test]
fn aes_256_gcm_matches_the_gcm_spec_test_case_16() {
    let key = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let nonce: [u8; 12] = unhex("cafebabefacedbaddecaf888").try_into().unwrap();
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let plain = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let expected = unhex(concat!(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b"
    ));
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let sealed = aead_seal(&cipher, &nonce, &aad, &plain).unwrap();
    assert_eq!(sealed, expected);
    assert_eq!(
        aead_open(&cipher, &nonce, &aad, &sealed).unwrap().as_slice(),
        plain.as_slice()
    );
    let mut bad = sealed.clone();
    bad[0] ^= 1;
    assert!(aead_open(&cipher, &nonce, &aad, &bad).is_none());
    assert!(aead_open(&cipher, &nonce, b"other aad", &sealed).is_none());
}

/// The Argon2 reference implementation's Argon2id vector (v=0x13, m=64 MiB, t=2, p=1,
/// "password", "somesalt", 32-byte tag), through the bounded KDF entry point.
#[test]
fn argon2id_matches_the_reference_implementation_vector() {
    let params = KdfParams {
        memory_kib: 65536,
        iterations: 2,
        parallelism: 1,
    };
    let key = derive_passphrase_key(b"password", b"somesalt", &params).unwrap();
    assert_eq!(
        key.bytes().as_slice(),
        unhex("09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7").as_slice()
    );
}

/// RFC 5869 test case 1 (HKDF-SHA256).
#[test]
fn hkdf_sha256_matches_rfc_5869_test_case_1() {
    let ikm = [0x0bu8; 22];
    let salt = unhex("000102030405060708090a0b0c");
    let info = unhex("f0f1f2f3f4f5f6f7f8f9");
    let mut okm = [0u8; 42];
    hkdf_sha256(&ikm, &salt, &info, &mut okm).unwrap();
    assert_eq!(
        okm.as_slice(),
        unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
            .as_slice()
    );
}

/// A million nonces drawn the way record seals draw them: none repeats.
#[test]
fn a_million_seal_nonces_never_repeat() {
    let mut seen = std::collections::HashSet::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        assert!(seen.insert(super::fresh_nonce().unwrap()), "a nonce repeated");
    }
}
