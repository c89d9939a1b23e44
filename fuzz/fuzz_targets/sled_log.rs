//! A forged vault: bytes of the messages in sled's log changed and each changed message's
//! CRC32 recomputed (a CRC is no protection against whoever can write the file) or, as a
//! hex editor would leave it, not, then the vault opened and used through the public API. Where `vault_files` edits the trees
//! through sled, this one hands sled's own parser the forged bytes.
//!
//! Protects against: a panic escaping the library, or a hang, on a forged log (the vendored
//! sled returns corruption for what does not parse; the vault turns a panic left in sled's
//! deeper code into `Corrupted`); a lookup or `get_tokens` returning anything but a
//! template token as it was saved (the records are sealed, so a forgery may lose tokens,
//! never change one).
//!
//! libFuzzer's panic hook aborts at every panic, even one the library catches; this target
//! replaces it with a silent one, so only a panic that escapes the library (which
//! libfuzzer-sys still turns into an abort) is a crash here. The panics the vault catches
//! are sled's, and are listed by running an input with the default hook.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tokenvault::{KdfParams, OAuthToken, TokenStore, VaultOptions};
use tokenvault_fuzz::{copy_dir, process_dir, sample_tokens, scratch_dir, sled_dir, PASSPHRASE};

/// How the tests read sled's log (messages, CRCs, forging), shared with them.
#[path = "../../tests/common/sled_log.rs"]
#[allow(dead_code, reason = "the tests use more of it")]
mod sled_log;
use sled_log::{forge, messages, Message};

/// One changed byte: of the `message`-th message of the log (modulo their count), at
/// `at` (modulo the message's length after its CRC).
#[derive(Arbitrary, Debug)]
struct Forgery {
    message: u16,
    at: u16,
    byte: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    forgeries: Vec<Forgery>,
    /// Also a save, a delete and a repair on the forged vault.
    write: bool,
    /// Leave the changed messages' CRCs as they were, as a hex editor or a bad sector
    /// would, instead of recomputing them: recovery then tells a changed message from a
    /// torn write (the vendored sled's `damaged_not_torn`).
    leave_crc: bool,
}

struct Template {
    dir: PathBuf,
    tokens: Vec<OAuthToken>,
    log: Vec<u8>,
    messages: Vec<Message>,
}

fn options() -> VaultOptions {
    VaultOptions::new().kdf(KdfParams::FLOOR).durable(false)
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = process_dir("sled-log").join("vault");
        let vault = options().create(&dir, PASSPHRASE).expect("create the template");
        let mut tokens = Vec::new();
        for mut t in sample_tokens() {
            vault.save_token(&mut t).expect("save a template token");
            tokens.push(t);
        }
        drop(vault);
        let log = std::fs::read(sled_dir(&dir).join("db")).expect("sled's log");
        let messages = messages(&log);
        assert!(messages.len() > 10, "the template's log parses into messages");
        Template {
            dir,
            tokens,
            log,
            messages,
        }
    })
}

fn forged(t: &Template, forgeries: &[Forgery], leave_crc: bool) -> Vec<u8> {
    let mut log = t.log.clone();
    let mut touched = Vec::new();
    for f in forgeries.iter().take(8) {
        let m = t.messages[usize::from(f.message) % t.messages.len()];
        log[m.header + 4 + usize::from(f.at) % (m.end - m.header - 4)] = f.byte;
        touched.push(m);
    }
    for m in touched.into_iter().filter(|_| !leave_crc) {
        forge(&mut log, &m);
    }
    log
}

fn check(dir: &Path, tokens: &[OAuthToken], write: bool) {
    let Ok(vault) = options().open(dir, PASSPHRASE) else {
        return;
    };
    for t in tokens {
        if let Ok(Some(hit)) = vault.find_token_by_id(t.id().expect("template ids")) {
            assert_eq!(&hit, t, "a forged log changed a token (by id)");
        }
        if let Some(user) = t.user_name() {
            if let Ok(Some(hit)) = vault.find_token(&OAuthToken::default().with_user_name(user)) {
                assert_eq!(&hit, t, "a forged log changed a token (by user)");
            }
        }
    }
    if let Ok(all) = vault.get_tokens() {
        for hit in &all {
            assert!(tokens.contains(hit), "get_tokens gave a token never saved");
        }
    }
    let _ = vault.verify();
    if write {
        let mut t = tokens[0].clone();
        t.set_access_token(Some("1000.access.forged-log"));
        let _ = vault.save_token(&mut t);
        let _ = vault.delete_token(tokens[1].id().unwrap_or(""));
        let _ = vault.repair();
        let _ = vault.get_tokens();
    }
}

fuzz_target!(|input: Input| {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let t = template();
    let scratch = scratch_dir("sled-log");
    let dir = scratch.path().join("vault");
    copy_dir(&t.dir, &dir);
    std::fs::write(
        sled_dir(&dir).join("db"),
        forged(t, &input.forgeries, input.leave_crc),
    )
    .expect("write the log");
    check(&dir, &t.tokens, input.write);
});
