//! tokenvault in one run: create a vault, save tokens for three users, find each by every
//! key the SDK uses, refresh one, reopen, refuse a wrong passphrase, and show that none of
//! the secrets occur in the vault's files.
//!
//! Run: `cargo run --example quickstart`

use std::path::Path;

use tokenvault::{Error, KdfParams, OAuthToken, TokenStore, VaultOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("vault");
    let passphrase = "correct horse battery staple";
    // The floor KDF keeps this demo quick; real vaults use the default (64 MiB, t=3, p=4).
    let options = VaultOptions::new().kdf(KdfParams::FLOOR);

    let vault = options.create(&path, passphrase)?;
    println!("created a vault at {}", path.display());

    let mut saved = Vec::new();
    for (n, user) in ["alice@example.com", "bob@example.com", "carol@example.com"]
        .iter()
        .enumerate()
    {
        let mut token = OAuthToken::default()
            .with_user_name(*user)
            .with_client_id("1000.QUICKSTART")
            .with_client_secret(format!("client-secret-{n}-7f3a9c"))
            .with_grant_token(format!("1000.grant-{n}-b41e0d"))
            .with_refresh_token(format!("1000.refresh-{n}-9d2c71"))
            .with_access_token(format!("1000.access-{n}-e58f02"))
            .with_expiry_time(1_764_000_000_000)
            .with_redirect_url("https://example.com/callback")
            .with_api_domain("https://www.zohoapis.com");
        vault.save_token(&mut token)?;
        println!("saved {user} as id {}", token.id().unwrap_or("?"));
        saved.push(token);
    }

    for t in &saved {
        let user = t.user_name().unwrap_or_default();
        let with_client = |q: OAuthToken| q.with_client_id("1000.QUICKSTART").with_client_secret("any");
        let queries = [
            ("user name", OAuthToken::default().with_user_name(user)),
            (
                "access token",
                OAuthToken::default().with_access_token(t.access_token().unwrap_or_default()),
            ),
            (
                "refresh token",
                with_client(OAuthToken::default().with_refresh_token(t.refresh_token().unwrap_or_default())),
            ),
            (
                "grant token",
                with_client(OAuthToken::default().with_grant_token(t.grant_token().unwrap_or_default())),
            ),
        ];
        for (key, q) in queries {
            let found = vault.find_token(&q)?;
            check(found.as_ref() == Some(t), &format!("{user} found by {key}"))?;
        }
        let by_id = vault.find_token_by_id(t.id().unwrap_or_default())?;
        check(by_id.as_ref() == Some(t), &format!("{user} found by id"))?;
    }

    // The SDK's refresh: a new access token and expiry, saved over the stored token.
    let mut refreshed = OAuthToken::default()
        .with_user_name("bob@example.com")
        .with_access_token("1000.access-1-REFRESHED-44aa")
        .with_expiry_time(1_764_003_600_000);
    vault.save_token(&mut refreshed)?;
    let bob = saved.get(1).ok_or("bob was saved second")?;
    check(
        refreshed.refresh_token() == bob.refresh_token() && refreshed.id() == bob.id(),
        "bob refreshed: same id, refresh token kept, new access token",
    )?;
    let old_access = OAuthToken::default().with_access_token(bob.access_token().unwrap_or_default());
    check(
        vault.find_token(&old_access)?.is_none(),
        "bob's old access token finds nothing",
    )?;
    drop(vault);

    let vault = options.open(&path, passphrase)?;
    check(
        vault.get_tokens()?.len() == 3,
        "reopened with the passphrase: 3 tokens",
    )?;
    drop(vault);
    match options.open(&path, "correct horse battery stapler") {
        Err(Error::WrongPassphrase) => println!("ok: a wrong passphrase is refused"),
        other => return Err(format!("a wrong passphrase was not refused: {other:?}").into()),
    }

    let mut secrets: Vec<String> = Vec::new();
    for t in saved.iter().chain(std::iter::once(&refreshed)) {
        for s in [
            t.user_name(),
            t.client_secret(),
            t.grant_token(),
            t.refresh_token(),
            t.access_token(),
        ] {
            secrets.extend(s.map(str::to_owned));
        }
    }
    let files = read_all(&path)?;
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| {
            files
                .iter()
                .any(|f| f.windows(s.len()).any(|w| w == s.as_bytes()))
        })
        .collect();
    check(
        leaked.is_empty(),
        &format!(
            "none of {} secrets and user names occur in the vault's {} files",
            secrets.len(),
            files.len()
        ),
    )?;
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<(), Box<dyn std::error::Error>> {
    if ok {
        println!("ok: {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}").into())
    }
}

fn read_all(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(read_all(&p)?);
        } else {
            out.push(std::fs::read(&p)?);
        }
    }
    Ok(out)
}
