#!/usr/bin/env python3
"""Removes each security defence once, runs the test that guards it, and reports whether
the test failed (it must). Works on a scratch copy of the tree; the tree itself is never
changed.

Usage: scripts/check-defences.py [SCRATCH_DIR]   (ONLY=4,5 runs those attacks only)
"""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (attack, defence removed, file, [(old, new), ...], test binary, test name)
MUTATIONS = [
    ("1 wrong passphrase", "a failed key unwrap is ignored (zero key used)",
     "src/crypto/header.rs",
     [(".ok_or(Error::WrongPassphrase)?;", ".unwrap_or_else(|| Zeroizing::new(vec![0u8; 32]));")],
     "lifecycle", "wrong_passphrase_is_refused_and_changes_nothing"),
    ("2 header bit flip", "the header checksum is not checked",
     "src/crypto/header.rs",
     [("if Sha256::digest(body).as_slice() != sum {", "if false {")],
     "tamper", "every_bit_flip_of_the_header_is_refused"),
    ("3 lowered KDF parameters", "the key is derived without the header's parameters, which are left out of the AAD",
     "src/crypto/header.rs",
     [("derive_passphrase_key(passphrase, &salt, &kdf)", "derive_passphrase_key(passphrase, &salt, &KdfParams::FLOOR)"),
      ("derive_passphrase_key(passphrase, &self.salt, &self.kdf)", "derive_passphrase_key(passphrase, &self.salt, &KdfParams::FLOOR)"),
      ("out.extend_from_slice(&self.kdf.memory_kib.to_be_bytes());", ""),
      ("out.extend_from_slice(&self.kdf.iterations.to_be_bytes());", ""),
      ("out.extend_from_slice(&self.kdf.parallelism.to_be_bytes());", "")],
     "tamper", "lowered_kdf_parameters_with_a_recomputed_checksum_are_refused"),
    ("4 absurd KDF parameters", "KDF bounds are not checked (header parse and KDF entry)",
     "src/crypto/kdf.rs",
     [("    params.validate()?;\n", "")],
     "tamper", "absurd_kdf_parameters_are_refused_before_any_work"),
    ("5 header transplanted from another vault", "open no longer opens a record, nor authenticates the seal counter, to check the header belongs",
     "src/vault/mod.rs",
     [("        vault.inner.check_records_open()?;\n", "")],
     "tamper", "a_header_transplanted_from_another_vault_is_refused"),
    ("6 record bit flip", "a record that fails to open is treated as absent",
     "src/vault/mod.rs",
     [("        Ok(Some(open_sealed(keys, slot, &sealed)?))", "        Ok(open_sealed(keys, slot, &sealed).ok())"),
      ("            Err(e) => return Err(damaged_token(Some(id), &slot, e)),",
       "            Err(_) => return Ok(None),")],
     "tamper", "a_flipped_bit_at_any_record_byte_is_rejected"),
    ("7 record moved to another slot", "the slot is left out of the record AAD and the id-slot check is dropped",
     "src/crypto/seal.rs",
     [("    aad.extend_from_slice(slot);\n", "")],
     "tamper", "a_record_moved_to_another_slot_is_rejected"),
    ("8 version or epoch byte changed", "every record uses epoch 0's key and the AAD omits version and epoch",
     "src/crypto/seal.rs",
     [("    aad.push(version);\n", ""),
      ("    aad.extend_from_slice(&epoch.to_be_bytes());\n", ""),
      ("if version != RECORD_VERSION {", "if false {"),
      (".record_key(epoch)", ".record_key(0)")],
     "tamper", "a_changed_record_version_or_epoch_byte_is_rejected"),
    ("9 index entry repointed", "an index hit is returned without comparing its field",
     "src/vault/mod.rs",
     [("if bool::from(stored.as_bytes().ct_eq(value.as_bytes())) {", "if true {")],
     "tamper", "an_index_entry_repointed_at_another_record_never_returns_it"),
    ("10 values on disk", "index keys are an unkeyed SHA-256 of the value",
     "src/crypto/keys.rs",
     [("        mac(k, &[value.as_bytes()])", "        let _ = k;\n        sha2::Sha256::digest(value.as_bytes()).into()")],
     "at_rest", "no_secret_user_name_or_id_appears_on_disk_in_any_encoding"),
    ("11 repeated nonces", "seal nonces are a constant",
     "src/crypto/mod.rs",
     [("    let mut nonce = [0u8; 12];\n    random_bytes(&mut nonce)?;", "    let nonce = [0u8; 12];")],
     "--lib", "crypto::kat::a_million_seal_nonces_never_repeat"),
    ("12 secrets in Debug", "OAuthToken's Debug prints secret fields",
     "src/token.rs",
     [('.field("refresh_token", &secret(&self.refresh_token))', '.field("refresh_token", &self.refresh_token)')],
     "redaction", "no_public_type_or_error_shows_a_secret"),
    ("13 file permissions", "vault files are left with the umask's mode",
     "src/vault/mod.rs",
     [("            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;", "")],
     "lifecycle", "vault_directory_is_private_and_its_files_owner_only"),
]

# Mutation 7 also needs the id-to-slot checks gone (a second, independent defence: the slot
# MAC of the record's id on index hits, the id compare on lookups by id).
EXTRA = {
    "7 record moved to another slot": ("src/vault/mod.rs",
        [("        Some(id) if keys.slot(id).ct_eq(slot).into() => Ok(token),", "        Some(_) => Ok(token),"),
         ("        if token.id() == Some(id) {", "        if true {")]),
    "5 header transplanted from another vault": ("src/vault/mod.rs",
        [("if tag.len() != MAC_LEN || !keys.verify_meta_mac(SEALS_KEY, body, tag) {", "if tag.len() != MAC_LEN {")]),
    "4 absurd KDF parameters": ("src/crypto/header.rs",
        [('kdf.validate().map_err(|_| bad("KDF parameters out of bounds"))?;', '')]),
}


def main():
    scratch = sys.argv[1] if len(sys.argv) > 1 else "/tmp/tokenvault-defences"
    # Keep an earlier run's build directory: only the sources are replaced.
    if os.path.exists(scratch):
        for entry in os.listdir(scratch):
            if entry != "target":
                path = os.path.join(scratch, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    shutil.copytree(ROOT, scratch, ignore=shutil.ignore_patterns("target", "fuzz", ".git"), dirs_exist_ok=True)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(scratch, "target"))
    results = []
    only = {o.strip() for o in os.environ.get("ONLY", "").split(",") if o.strip()}
    for attack, defence, path, repl, binary, test in MUTATIONS:
        if only and attack.split()[0] not in only:
            continue
        edits = [(path, repl)]
        if attack in EXTRA:
            edits.append(EXTRA[attack])
        saved = {}
        try:
            for p, rs in edits:
                full = os.path.join(scratch, p)
                text = open(full).read()
                saved.setdefault(p, text)
                for old, new in rs:
                    if old not in text:
                        raise SystemExit(f"{attack}: pattern not found in {p}: {old!r}")
                    text = text.replace(old, new)
                open(full, "w").write(text)
            args = ["cargo", "test", "-q"] + (["--lib"] if binary == "--lib" else ["--test", binary]) + ["--", "--exact", test]
            r = subprocess.run(args, cwd=scratch, env=env, capture_output=True, text=True, timeout=900)
            outcome = "fails (defence proven)" if r.returncode != 0 else "STILL PASSES"
        except subprocess.TimeoutExpired:
            outcome = "fails (timed out)"
        finally:
            for p, text in saved.items():
                open(os.path.join(scratch, p), "w").write(text)
        results.append((attack, defence, f"{binary.lstrip('-')}::{test}", outcome))
        print(f"| {attack} | {defence} | `{binary.lstrip('-')}::{test}` | {outcome} |", flush=True)
    bad = [r for r in results if r[3] == "STILL PASSES"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
