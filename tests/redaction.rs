//! Nothing secret in Debug or Display: every public type, and every error the library
//! returns on the paths where secrets are at hand.
//!
//! Protects against: a passphrase, client secret, grant, refresh or access token (or a key)
//! reaching logs through `{:?}` or `{}`.
//!
//! The vault's part runs on each engine (`sled::NAME`, `redb::NAME`): the errors of each
//! engine's paths are checked.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "test code: a panic is how a check fails"
)]

mod common {
    pub(crate) mod raw_edit;
    pub(crate) mod vaults;
}

use common::raw_edit;
use tokenvault::{Error, KdfParams, MemoryStore, OAuthToken, TokenStore};

const PASSPHRASE: &str = "PASSPHRASE-7c1e-never-print";
const SECRETS: [&str; 4] = ["CLIENTSECRET-91aa", "GRANT-5d2f", "REFRESH-0b7e", "ACCESS-e3c4"];

fn secret_token() -> OAuthToken {
    OAuthToken::default()
        .with_user_name("alice@example.com")
        .with_client_id("1000.CLIENT")
        .with_client_secret(SECRETS[0])
        .with_grant_token(SECRETS[1])
        .with_refresh_token(SECRETS[2])
        .with_access_token(SECRETS[3])
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS.iter().chain(std::iter::once(&PASSPHRASE)) {
        assert!(!text.contains(s), "{what} shows a secret: {text}");
    }
}

common::vaults::engine_suite! {
    fn no_public_type_or_error_shows_a_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vault");
        let options = common::vaults::options();
        let vault = options.create(&path, PASSPHRASE).unwrap();
        let mut t = secret_token();
        vault.save_token(&mut t).unwrap();
        let memory = MemoryStore::new();
        memory.save_token(&mut secret_token()).unwrap();

        let mut texts: Vec<(String, String)> = vec![
            ("token".into(), format!("{t:?} {t:#?}")),
            ("vault".into(), format!("{vault:?} {vault:#?}")),
            ("options".into(), format!("{options:?}")),
            ("memory store".into(), format!("{memory:?}")),
            ("kdf".into(), format!("{:?}", KdfParams::RECOMMENDED)),
            ("verify report".into(), format!("{:?}", vault.verify().unwrap())),
            (
                "found".into(),
                format!("{:?}", vault.find_token(&secret_token()).unwrap()),
            ),
            ("all".into(), format!("{:?}", vault.get_tokens().unwrap())),
        ];
        // Errors raised while secrets are in play.
        let mut errors: Vec<Error> = Vec::new();
        errors.push(options.open(&path, PASSPHRASE).unwrap_err()); // locked
        errors.push(options.create(&path, PASSPHRASE).unwrap_err()); // exists
        let mut clash = secret_token()
            .with_user_name("bob@example.com")
            .with_id(t.id().unwrap());
        memory
            .save_token(
                &mut OAuthToken::default()
                    .with_user_name("bob@example.com")
                    .with_access_token("x"),
            )
            .unwrap();
        let memory_id = memory
            .get_tokens()
            .unwrap()
            .into_iter()
            .find(|x| x.user_name() == Some("alice@example.com"))
            .unwrap();
        clash = clash.with_id(memory_id.id().unwrap());
        errors.push(memory.save_token(&mut clash).unwrap_err()); // user name held
        errors.push(
            memory
                .save_token(&mut OAuthToken::default().with_client_secret(SECRETS[0]))
                .unwrap_err(),
        );
        drop(vault);
        errors.push(options.open(&path, &format!("{PASSPHRASE}x")).unwrap_err()); // wrong passphrase
        errors.push(options.open(tmp.path().join("none"), PASSPHRASE).unwrap_err()); // not found
        errors.push(
            options
                .clone()
                .kdf(KdfParams {
                    memory_kib: 1,
                    iterations: 1,
                    parallelism: 1,
                })
                .create(tmp.path().join("weak"), PASSPHRASE)
                .unwrap_err(),
        );
        // A corrupted record.
        raw_edit::edit(&path, |db| {
            let (k, mut v) = db.entries("tokens").swap_remove(0);
            let last = v.len() - 1;
            v[last] ^= 1;
            db.insert("tokens", k, v);
        });
        errors.push(options.open(&path, PASSPHRASE).unwrap_err()); // corrupted
        let kinds: Vec<String> = errors.iter().map(|e| format!("{e:?}")).collect();
        for needed in [
            "VaultLocked",
            "VaultExists",
            "InvalidToken",
            "WrongPassphrase",
            "VaultNotFound",
            "InvalidKdfParams",
            "Corrupted",
        ] {
            assert!(
                kinds.iter().any(|k| k.starts_with(needed)),
                "no {needed} among {kinds:?}"
            );
        }
        for e in &errors {
            texts.push(("error".into(), format!("{e} {e:?}")));
        }
        texts.push((
            "io error".into(),
            format!("{}", Error::Io(std::io::Error::other("disk"))),
        ));
        for (what, text) in &texts {
            assert_clean(what, text);
        }
    }
}

/// Engine-free: the check itself.
#[test]
fn the_redaction_check_itself_sees_a_secret() {
    // Guards the test above: a plain string with a secret must be caught.
    let r = std::panic::catch_unwind(|| assert_clean("probe", &format!("x{}y", SECRETS[2])));
    assert!(r.is_err());
}
