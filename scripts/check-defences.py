#!/usr/bin/env python3
"""Removes each security defence once, builds the test that guards it, runs it, and reports
whether the test failed (it must). Works on a scratch copy of the tree; the tree itself is
never changed.

Each row ends in one of:
  fails (defence proven)   the mutated code built, and the test ran and failed
  STILL PASSES             the mutated code built, and the test passed: it does not guard
                           the defence
  BROKEN (...)             nothing was proven: the mutation's text is not in the file, the
                           mutated code does not build, the test does not exist, or the test
                           fails on the unmutated tree too
  TIMED OUT                the build or the test ran past its time limit

The exit status is 0 only if every row says "fails (defence proven)".

Usage: scripts/check-defences.py [SCRATCH_DIR]   (ONLY=4,14 runs those attacks only)
"""
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROVEN = "fails (defence proven)"
BUILD_TIMEOUT = 3600
TEST_TIMEOUT = 900

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
     "src/vault/options.rs",
     [("        vault.inner.check_records_open()?;\n", "")],
     "tamper", "a_header_transplanted_from_another_vault_is_refused"),
    ("6 record bit flip", "a record that fails to open is treated as absent",
     "src/vault/records.rs",
     [("        Ok(Some(open_sealed(keys, slot, &sealed)?))", "        Ok(open_sealed(keys, slot, &sealed).ok())"),
      ("            Err(e) => return Err(damaged_token(Some(id), &slot, e)),",
       "            Err(_) => return Ok(None),")],
     "tamper", "a_flipped_bit_at_any_record_byte_is_rejected"),
    ("7 record moved to another slot", "the slot is left out of the record AAD and the id-slot checks are dropped (the slot MAC of an index hit, the id compare of a lookup by id)",
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
     "src/vault/records.rs",
     [("if bool::from(stored.as_bytes().ct_eq(value.as_bytes())) {", "if true {")],
     "tamper", "an_index_entry_repointed_at_another_record_never_returns_it"),
    ("10 values on disk", "index keys are an unkeyed SHA-256 of the value",
     "src/crypto/keys.rs",
     [("        Ok(mac(key, &[value]))",
       "        let _ = key;\n        Ok(<sha2::Sha256 as sha2::Digest>::digest(value).into())")],
     "at_rest", "no_secret_user_name_or_id_appears_on_disk_in_any_encoding"),
    ("11 repeated nonces", "seal nonces are a constant",
     "src/crypto/mod.rs",
     [("    let mut nonce = [0u8; NONCE_LEN];\n    random_bytes(&mut nonce)?;", "    let nonce = [0u8; NONCE_LEN];")],
     "--lib", "crypto::kat::a_million_seal_nonces_never_repeat"),
    ("12 secrets in Debug", "OAuthToken's Debug prints secret fields",
     "src/token/mod.rs",
     [("Some(_) if field.is_secret() => out.field(field.name(), &Some(\"[REDACTED]\")),", "")],
     "redaction", "no_public_type_or_error_shows_a_secret"),
    ("13 file permissions", "vault files are left with the umask's mode",
     "src/vault/fs.rs",
     [("            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;", "")],
     "lifecycle", "vault_directory_is_private_and_its_files_owner_only"),
    ("23 doctored KDF cost in the header", "open runs Argon2 with whatever the header asks, up to the ceiling (no max_kdf check)",
     "src/vault/options.rs",
     [("        header.kdf.check_within(&self.max_kdf.strongest_of(&self.kdf))?;\n", "")],
     "tamper", "a_header_asking_more_kdf_work_than_the_opener_allows_is_refused_before_argon2"),
    ("24a passphrase change that weakens the KDF", "change_passphrase and rekey write the options' parameters as they are",
     "src/vault/options.rs",
     [("            self.kdf.strongest_of(stored)\n", "            let _ = stored;\n            self.kdf\n")],
     "key_management", "changing_the_passphrase_never_weakens_the_kdf_unless_asked"),
    ("24b `passwd --kdf floor` weakens the KDF", "the command line always allows weaker parameters",
     "src/bin/tokenvault/commands.rs",
     [(".allow_weaker_kdf(self.allow_weaker_kdf)", ".allow_weaker_kdf(true)")],
     "cli", "passwd_keeps_a_stronger_stored_kdf_unless_told_to_weaken_it"),
    ("25a loose directory mode", "open no longer makes the vault directory 0700",
     "src/vault/options.rs",
     [("        restrict_dir(dir)?;\n        restrict_files(dir)?;", "        restrict_files(dir)?;")],
     "lifecycle", "open_makes_a_loosened_vault_directory_private_again"),
    ("25b symlinked lock file", "the lock file is opened following symbolic links",
     "src/vault/fs.rs",
     [("    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);\n", "")],
     "lifecycle", "a_symlinked_lock_file_is_refused_and_never_followed"),
    ("26a memory residue: KDF memory", "Argon2 allocates its own working memory and frees it unwiped",
     "src/crypto/kdf.rs",
     [(".hash_password_into_with_memory(passphrase, salt, out.as_mut(), memory.as_mut_slice())",
       ".hash_password_into(passphrase, salt, out.as_mut())")],
     "memory_residue", "argon2_working_memory_is_wiped_before_it_is_freed"),
    ("26b memory residue: HMAC and HKDF state", "sha2 is built without `zeroize`: SHA-256 states are freed unwiped",
     "Cargo.toml",
     [('sha2 = { version = "0.11", features = ["zeroize"] }', 'sha2 = "0.11"')],
     "--lib", "crypto::keys::tests::hmac_hkdf_and_argon2_hash_states_wipe_themselves"),
    ("26c memory residue: Argon2's BLAKE2b state", "blake2 is built without `zeroize`",
     "Cargo.toml",
     [('blake2 = { version = "0.11", default-features = false, features = ["zeroize"] }',
       'blake2 = { version = "0.11", default-features = false }')],
     "--lib", "crypto::keys::tests::hmac_hkdf_and_argon2_hash_states_wipe_themselves"),
    ("26d memory residue: encoding buffers", "tokens are encoded into a growing buffer (bincode's encode_to_vec)",
     "src/token/encoding.rs",
     [("    let mut bytes = Zeroizing::new(vec![0u8; size.bytes_written]);\n"
       "    let written = bincode::serde::encode_into_slice(token, bytes.as_mut_slice(), bincode_config())\n"
       "        .map_err(|_| unencodable())?;\n",
       "    let bytes = Zeroizing::new(\n"
       "        bincode::serde::encode_to_vec(token, bincode_config()).map_err(|_| unencodable())?,\n"
       "    );\n"
       "    let written = bytes.len();\n")],
     "memory_residue", "no_freed_block_holds_a_token_secret"),
    ("27 stale header after a passphrase change", "change_passphrase does not compact",
     "src/vault/keys.rs",
     [("        self.inner.storage().flush()?;\n        self.inner.compact_locked()\n    }\n\n    /// Starts a new record-key epoch",
       "        self.inner.storage().flush()\n    }\n\n    /// Starts a new record-key epoch")],
     "--lib", "vault::stale_tests::after_a_passphrase_change_and_a_compaction_no_old_header_or_deleted_record_is_readable"),
    ("28 deleted token after compaction", "compaction leaves the old generation's files in place",
     "src/vault/compaction.rs",
     [("            generations::remove_stale(&self.dir, next)?;\n", "")],
     "--lib", "vault::stale_tests::after_a_passphrase_change_and_a_compaction_no_old_header_or_deleted_record_is_readable"),
    ("29 one damaged record locks out every token", "open requires the first record in key order to open (as before)",
     "src/vault/records.rs",
     [("        let one_opens = self.storage().any(TreeName::Tokens, &mut |slot, sealed| {\n"
       "            any_record = true;\n"
       "            open_sealed(&keys, slot, sealed).is_ok()\n"
       "        })?;\n",
       "        let mut first = None;\n"
       "        self.storage().any(TreeName::Tokens, &mut |slot, sealed| {\n"
       "            any_record = true;\n"
       "            first = Some(open_sealed(&keys, slot, sealed).is_ok());\n"
       "            true\n"
       "        })?;\n"
       "        let one_opens = first.unwrap_or(false);\n")],
     "damaged_record", "a_flipped_bit_in_one_record_damages_only_its_token"),
]

# Attacks with more than one independent defence: each is removed too. Mutation 7 also
# needs the id-to-slot checks gone (the slot MAC of the record's id on index hits, the id
# compare on lookups by id); 5 the MACs of the other `meta` values; 4 the header parse's
# own bounds check.
EXTRA = {
    "7 record moved to another slot": [("src/vault/records.rs",
        [("        Some(id) if keys.slot(id).ct_eq(slot).into() => Ok(token),", "        Some(_) => Ok(token),"),
         ("        if token.id() == Some(id) {", "        if true {")])],
    # The seal counter and the compaction state are MACed under the vault's own keys too.
    "5 header transplanted from another vault": [
        ("src/vault/seals.rs",
         [("if tag.len() != MAC_LEN || !keys.verify_meta_mac(SEALS_KEY, body, tag) {", "if tag.len() != MAC_LEN {")]),
        ("src/vault/compaction.rs",
         [("if tag.len() != MAC_LEN || !keys.verify_meta_mac(COMPACTION_KEY, body, tag) {", "if tag.len() != MAC_LEN {")])],
    "4 absurd KDF parameters": [("src/crypto/header.rs",
        [('kdf.validate().map_err(|_| bad("KDF parameters out of bounds"))?;', '')])],
}


def cargo(args, scratch, env, timeout):
    """Runs cargo in the scratch tree; returns (exit code, output) or None on a timeout."""
    try:
        r = subprocess.run(["cargo"] + args, cwd=scratch, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return r.returncode, r.stdout + r.stderr


def target_args(binary):
    return ["--all-features"] + (["--lib"] if binary == "--lib" else ["--test", binary])


def run_test(binary, test, scratch, env):
    """Builds the test binary, then runs the one test. Returns an outcome string."""
    built = cargo(["test", "--no-run", "-q"] + target_args(binary), scratch, env, BUILD_TIMEOUT)
    if built is None:
        return "TIMED OUT (build)"
    if built[0] != 0:
        errors = [l for l in built[1].splitlines() if l.startswith("error")]
        sys.stderr.write(built[1][-4000:])
        return f"BROKEN (does not build: {errors[0] if errors else 'cargo failed'})"
    ran = cargo(["test", "-q"] + target_args(binary) + ["--", "--exact", test], scratch, env, TEST_TIMEOUT)
    if ran is None:
        return "TIMED OUT (test)"
    counts = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", ran[1])
    passed = sum(int(p) for p, _ in counts)
    failed = sum(int(f) for _, f in counts)
    if passed + failed == 0:
        return "BROKEN (no such test)"
    if failed > 0:
        return "failed"
    return "passed" if ran[0] == 0 else f"BROKEN (cargo exited {ran[0]} with the test passing)"


def main():
    scratch = sys.argv[1] if len(sys.argv) > 1 else "/tmp/tokenvault-defences"
    # Keep an earlier run's build directory: only the sources are replaced.
    if os.path.exists(scratch):
        for entry in os.listdir(scratch):
            if entry != "target":
                path = os.path.join(scratch, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    # New modification times (shutil.copy, not copy2): a build kept from an earlier run must
    # not look newer than the sources, or cargo would run that run's stale binaries.
    shutil.copytree(ROOT, scratch, ignore=shutil.ignore_patterns("target", "fuzz", ".git"),
                    dirs_exist_ok=True, copy_function=shutil.copy)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(scratch, "target"))
    only = {o.strip() for o in os.environ.get("ONLY", "").split(",") if o.strip()}
    selected = [m for m in MUTATIONS if not only or m[0].split()[0] in only]

    # A test that fails on the unmutated tree proves nothing by failing on a mutated one.
    baseline = {}
    for _, _, _, _, binary, test in selected:
        if (binary, test) not in baseline:
            sys.stderr.write(f"unmutated: {binary} {test}\n")
            baseline[(binary, test)] = run_test(binary, test, scratch, env)

    print("| attack | defence removed | test | with the defence removed |")
    print("|---|---|---|---|")
    results = []
    for attack, defence, path, repl, binary, test in selected:
        sys.stderr.write(f"mutation {attack}\n")
        edits = [(path, repl)]
        edits.extend(EXTRA.get(attack, []))
        saved = {}
        outcome = None
        try:
            for p, rs in edits:
                full = os.path.join(scratch, p)
                text = open(full).read()
                saved.setdefault(p, text)
                for old, new in rs:
                    if old not in text:
                        outcome = f"BROKEN (text not found in {p}: {old.strip()[:60]!r})"
                        break
                    text = text.replace(old, new)
                if outcome:
                    break
                open(full, "w").write(text)
            if outcome is None:
                if baseline[(binary, test)] != "passed":
                    outcome = f"BROKEN (unmutated: {baseline[(binary, test)]})"
                else:
                    ran = run_test(binary, test, scratch, env)
                    outcome = {"failed": PROVEN, "passed": "STILL PASSES"}.get(ran, ran)
        finally:
            for p, text in saved.items():
                open(os.path.join(scratch, p), "w").write(text)
        results.append(outcome)
        print(f"| {attack} | {defence} | `{binary.lstrip('-')}::{test}` | {outcome} |", flush=True)
    sys.exit(0 if all(r == PROVEN for r in results) else 1)


if __name__ == "__main__":
    main()
