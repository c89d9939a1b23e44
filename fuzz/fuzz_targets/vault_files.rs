//! A hostile vault directory: a valid vault whose sled trees were edited behind its back
//! (values overwritten, bit-flipped, truncated, copied between entries and trees, removed;
//! keys inserted), then opened and queried through the public API.
//!
//! Protects against: a panic on any stored bytes (DESIGN: "no input, however malformed,
//! panics the library"); a lookup that returns a token whose queried field is not the
//! query (a doctored index entry must be an error, never another user's token); `verify`
//! calling a vault clean while its lookups fail; `repair` leaving an index problem behind.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tokenvault::{KdfParams, OAuthToken, Problem, TokenStore, VaultOptions};
use tokenvault_fuzz::{copy_dir, process_dir, sample_tokens, scratch_dir, PASSPHRASE};

const TREES: [&str; 6] = [
    "meta",
    "tokens",
    "idx.user",
    "idx.access",
    "idx.refresh",
    "idx.grant",
];
/// Header bytes 27..39 hold the Argon2 parameters (docs/format.md).
const KDF_PARAMS: std::ops::Range<usize> = 27..39;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tree {
    Meta,
    Tokens,
    User,
    Access,
    Refresh,
    Grant,
}

impl Tree {
    fn name(self) -> &'static str {
        TREES[self as usize]
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    /// The n-th key (modulo the count) of a tree, as it stands when the edit runs.
    Existing(Tree, u8),
    Header,
    Seals,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Set(Vec<u8>),
    Remove,
    FlipBit {
        at: u16,
        bit: u8,
    },
    SetByte {
        at: u16,
        byte: u8,
    },
    Truncate(u16),
    Append(Vec<u8>),
    /// The value of another entry (a record moved to another slot, an index entry
    /// repointed, a record put in an index tree...).
    CopyFrom(Key),
    /// Recomputes the trailing SHA-256 checksum over the rest of the value, as the header
    /// carries one: lets edits reach the checks behind the checksum.
    FixChecksum,
}

#[derive(Arbitrary, Debug)]
struct Mutation {
    tree: Tree,
    key: Key,
    edit: Edit,
}

#[derive(Arbitrary, Debug)]
enum Write {
    /// Saves a copy of the n-th template token with its access token changed.
    Update(u8),
    /// Saves a new token that claims the n-th template token's user name, or not.
    Insert {
        claim_user_of: Option<u8>,
    },
    Delete(u8),
    DeleteAll,
    Repair,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mutations: Vec<Mutation>,
    writes: Vec<Write>,
}

struct Template {
    dir: PathBuf,
    tokens: Vec<OAuthToken>,
}

fn options() -> VaultOptions {
    VaultOptions::new().kdf(KdfParams::FLOOR).durable(false)
}

/// A small valid vault with records in two key epochs, built once per process.
fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = process_dir("vault-files").join("vault");
        let vault = options().create(&dir, PASSPHRASE).expect("create the template");
        let mut tokens = Vec::new();
        for (i, mut t) in sample_tokens().into_iter().enumerate() {
            if i == 2 {
                vault.rotate_key().expect("rotate");
            }
            vault.save_token(&mut t).expect("save a template token");
            tokens.push(t);
        }
        // One token without an explicit id, sharing its refresh token with another.
        let mut shared = OAuthToken::default()
            .with_user_name("dave@example.com")
            .with_client_id("1000.CLIENT")
            .with_client_secret("client-secret")
            .with_refresh_token("1000.refresh.alice");
        vault.save_token(&mut shared).expect("save");
        tokens.push(shared);
        drop(vault);
        Template { dir, tokens }
    })
}

fn keys_of(tree: &sled::Tree) -> Vec<Vec<u8>> {
    tree.iter()
        .keys()
        .filter_map(Result::ok)
        .map(|k| k.to_vec())
        .collect()
}

fn resolve(db: &sled::Db, key: &Key) -> Option<Vec<u8>> {
    match key {
        Key::Existing(tree, n) => {
            let keys = keys_of(&db.open_tree(tree.name()).ok()?);
            if keys.is_empty() {
                None
            } else {
                Some(keys[usize::from(*n) % keys.len()].clone())
            }
        }
        Key::Header => Some(b"header".to_vec()),
        Key::Seals => Some(b"seals".to_vec()),
        Key::Raw(k) => Some(k.clone()),
    }
}

fn source_value(db: &sled::Db, key: &Key) -> Option<Vec<u8>> {
    let (tree, k) = match key {
        Key::Existing(tree, _) => (tree.name(), resolve(db, key)?),
        Key::Header | Key::Seals => ("meta", resolve(db, key)?),
        Key::Raw(k) => ("tokens", k.clone()),
    };
    db.open_tree(tree).ok()?.get(k).ok()?.map(|v| v.to_vec())
}

/// Applies the edits with sled directly. Returns false if the result would make Argon2
/// run with parameters far above the floor (seconds per execution: not what this target
/// is for; the header target covers the parameter checks).
fn mutate(dir: &Path, mutations: &[Mutation]) -> bool {
    let db = sled::open(tokenvault_fuzz::sled_dir(dir)).expect("sled opens the template copy");
    for m in mutations.iter().take(16) {
        let tree = db.open_tree(m.tree.name()).expect("tree");
        let Some(key) = resolve(&db, &m.key) else { continue };
        let old = tree.get(&key).expect("get").map(|v| v.to_vec());
        let new = match &m.edit {
            Edit::Set(v) => Some(v.clone()),
            Edit::Remove => None,
            Edit::FlipBit { at, bit } => old.map(|mut v| {
                if !v.is_empty() {
                    let i = usize::from(*at) % v.len();
                    v[i] ^= 1 << (bit % 8);
                }
                v
            }),
            Edit::SetByte { at, byte } => old.map(|mut v| {
                if !v.is_empty() {
                    let i = usize::from(*at) % v.len();
                    v[i] = *byte;
                }
                v
            }),
            Edit::Truncate(n) => old.map(|mut v| {
                v.truncate(usize::from(*n) % (v.len() + 1));
                v
            }),
            Edit::Append(extra) => old.map(|mut v| {
                v.extend_from_slice(extra);
                v
            }),
            Edit::CopyFrom(src) => source_value(&db, src),
            Edit::FixChecksum => old.map(|mut v| {
                if v.len() >= 32 {
                    let body = v.len() - 32;
                    let sum = Sha256::digest(&v[..body]);
                    v[body..].copy_from_slice(&sum);
                }
                v
            }),
        };
        match new {
            Some(v) => tree.insert(key, v).expect("insert"),
            None => tree.remove(key).expect("remove"),
        };
    }
    let header = db.open_tree("meta").expect("meta").get("header").expect("get");
    db.flush().expect("flush");
    drop(db);
    let floor = template_kdf_bytes();
    match header {
        Some(h) if h.len() >= KDF_PARAMS.end => &h[KDF_PARAMS] == floor.as_slice(),
        _ => true,
    }
}

fn template_kdf_bytes() -> Vec<u8> {
    let p = KdfParams::FLOOR;
    [p.memory_kib, p.iterations, p.parallelism]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect()
}

/// The lookups a caller makes with `t`'s values; every hit must carry the queried value.
fn check_lookups(vault: &tokenvault::Vault, t: &OAuthToken) -> bool {
    let mut all_ok = true;
    if let Some(user) = t.user_name() {
        let q = OAuthToken::default().with_user_name(user);
        match vault.find_token(&q) {
            Ok(Some(hit)) => assert_eq!(hit.user_name(), Some(user), "user lookup returned another user"),
            Ok(None) => {}
            Err(_) => all_ok = false,
        }
    }
    if let Some(access) = t.access_token() {
        let q = OAuthToken::default().with_access_token(access);
        match vault.find_token(&q) {
            Ok(Some(hit)) => assert_eq!(hit.access_token(), Some(access), "access lookup mismatch"),
            Ok(None) => {}
            Err(_) => all_ok = false,
        }
    }
    if let (Some(client), Some(secret)) = (t.client_id(), t.client_secret()) {
        for (grant, refresh) in [(t.grant_token(), None), (None, t.refresh_token())] {
            if grant.is_none() && refresh.is_none() {
                continue;
            }
            let mut q = OAuthToken::default()
                .with_client_id(client)
                .with_client_secret(secret);
            q.set_grant_token(grant);
            q.set_refresh_token(refresh);
            match vault.find_token(&q) {
                Ok(Some(hit)) => {
                    assert_eq!(
                        hit.client_id(),
                        Some(client),
                        "grant/refresh lookup: other client"
                    );
                    assert!(
                        (grant.is_some() && hit.grant_token() == grant)
                            || (refresh.is_some() && hit.refresh_token() == refresh),
                        "grant/refresh lookup returned a token without the value"
                    );
                }
                Ok(None) => {}
                Err(_) => all_ok = false,
            }
        }
    }
    if let Some(id) = t.id() {
        match vault.find_token_by_id(id) {
            Ok(Some(hit)) => assert_eq!(hit.id(), Some(id), "id lookup returned another id"),
            Ok(None) => {}
            Err(_) => all_ok = false,
        }
    }
    all_ok
}

fn pick(tokens: &[OAuthToken], n: u8) -> &OAuthToken {
    &tokens[usize::from(n) % tokens.len()]
}

fn write(vault: &tokenvault::Vault, tokens: &[OAuthToken], w: &Write) {
    match w {
        Write::Update(n) => {
            let mut t = pick(tokens, *n).clone();
            t.set_access_token(Some("1000.access.updated"));
            let _ = vault.save_token(&mut t);
        }
        Write::Insert { claim_user_of } => {
            let mut t = OAuthToken::default()
                .with_client_id("1000.CLIENT")
                .with_client_secret("client-secret")
                .with_grant_token("1000.grant.new");
            if let Some(n) = claim_user_of {
                t.set_user_name(pick(tokens, *n).user_name());
            }
            let _ = vault.save_token(&mut t);
        }
        Write::Delete(n) => {
            let _ = vault.delete_token(pick(tokens, *n).id().unwrap_or(""));
        }
        Write::DeleteAll => {
            let _ = vault.delete_tokens();
        }
        Write::Repair => {
            if let Ok(report) = vault.repair() {
                // Repair sets damaged records aside and rebuilds the indexes: only what it
                // must not fix (two records with one user name) may remain, and every
                // record left opens.
                for p in &report.problems {
                    assert!(
                        matches!(p, Problem::DuplicateUserName { .. }),
                        "repair left a problem: {p}"
                    );
                }
                let stored = vault.get_tokens();
                assert!(stored.is_ok(), "get_tokens fails after a repair: {stored:?}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let template = template();
    let scratch = scratch_dir("input-");
    let dir = scratch.path().join("vault");
    copy_dir(&template.dir, &dir);
    if !input.mutations.is_empty() && !mutate(&dir, &input.mutations) {
        return;
    }
    let Ok(vault) = options().open(&dir, PASSPHRASE) else {
        return;
    };
    let stored = vault.get_tokens();
    let report = vault.verify();
    let mut probes: Vec<OAuthToken> = template.tokens.clone();
    if let Ok(stored) = &stored {
        for t in stored {
            assert!(t.id().is_some(), "a stored token without an id");
            probes.push(t.clone());
        }
    }
    let mut lookups_ok = true;
    for t in &probes {
        lookups_ok &= check_lookups(&vault, t);
    }
    if let Ok(report) = &report {
        if report.is_clean() {
            assert!(
                stored.is_ok(),
                "verify is clean but get_tokens failed: {stored:?}"
            );
            assert!(lookups_ok, "verify is clean but a lookup failed");
        }
    }
    for w in input.writes.iter().take(4) {
        write(&vault, &template.tokens, w);
    }
    if !input.writes.is_empty() {
        if let Ok(stored) = vault.get_tokens() {
            for t in &stored {
                check_lookups(&vault, t);
            }
        }
    }
});
