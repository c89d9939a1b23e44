//! Writes the committed seed corpora under `fuzz/corpus/<target>/`.
//!
//! Run from `fuzz/` with the fuzzing hooks compiled in:
//! `RUSTFLAGS="--cfg fuzzing" cargo run --example gen_seeds`
//! The output is deterministic except for the header and record seeds, which carry the
//! random salt, nonce and keys of a freshly created vault.

use std::fs;
use std::path::Path;

use tokenvault::fuzzing::{encode_pointer, encode_quarantine_entry, encode_token, seal_record};
use tokenvault::{KdfParams, OAuthToken, VaultOptions};
use tokenvault_fuzz::{process_root, sample_tokens, scratch_dir, sled_dir, PASSPHRASE};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// The `meta/header` value of a vault created with `kdf` (and, if given, re-keyed to a new
/// passphrase).
fn header_of(kdf: KdfParams, new_passphrase: Option<&str>) -> Vec<u8> {
    let tmp = scratch_dir("seed-");
    let path = tmp.path().join("vault");
    let vault = VaultOptions::new()
        .kdf(kdf)
        .durable(false)
        .create(&path, PASSPHRASE)
        .expect("create");
    if let Some(p) = new_passphrase {
        vault.change_passphrase(p).expect("change passphrase");
    }
    drop(vault);
    let db = sled::open(sled_dir(&path)).expect("sled open");
    let header = db
        .open_tree("meta")
        .expect("meta")
        .get("header")
        .expect("get")
        .expect("a header");
    header.to_vec()
}

/// A deterministic byte stream (xorshift) for the structured targets' seeds: any bytes are
/// a valid input there; these just give the fuzzer several shapes to start from.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn main() {
    // header: the floor KDF, a changed passphrase, the recommended KDF.
    write("header", "floor", &header_of(KdfParams::FLOOR, None));
    write(
        "header",
        "rewrapped",
        &header_of(KdfParams::FLOOR, Some("another")),
    );
    write("header", "recommended", &header_of(KdfParams::RECOMMENDED, None));

    // record and token_decode: each sample token, plus an empty one.
    let mut tokens = sample_tokens();
    tokens.push(OAuthToken::default());
    for (i, token) in tokens.iter().enumerate() {
        let plain = encode_token(token).expect("encode");
        write("token_decode", &format!("token-{i}"), &plain);
        let sealed = seal_record(token).expect("seal");
        write("record", &format!("record-{i}"), &sealed);
    }

    // generation_pointer: valid pointers, and near misses.
    for n in [1u64, 2, 10, 4_294_967_296, u64::MAX] {
        write("generation_pointer", &format!("gen-{n}"), &encode_pointer(n));
    }
    write(
        "generation_pointer",
        "leading-zero",
        b"tokenvault generation 01\n",
    );
    write("generation_pointer", "no-newline", b"tokenvault generation 7");

    // quarantine_entry: an entry labelled with an id, one without, and a bare key.
    for (i, id) in [Some("quarantined-id"), None].into_iter().enumerate() {
        write(
            "quarantine_entry",
            &format!("entry-{i}"),
            &encode_quarantine_entry(id, b"damaged record bytes"),
        );
    }
    write("quarantine_entry", "short", &[36u8; 40]);

    // vault_files and differential: structured (`arbitrary`) inputs of several lengths.
    for (i, len) in [16usize, 64, 128, 256, 512, 1024].into_iter().enumerate() {
        write("vault_files", &format!("noise-{len}"), &noise(i as u64 + 1, len));
        write(
            "differential",
            &format!("noise-{len}"),
            &noise(i as u64 + 101, len),
        );
    }
    std::fs::remove_dir_all(process_root()).expect("remove the scratch dir");
    println!(
        "seeds written under {}",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").display()
    );
}
