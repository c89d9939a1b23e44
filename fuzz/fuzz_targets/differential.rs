//! `Vault` (on sled or redb, as the input says) and `MemoryStore` driven with the same
//! operation sequence must agree.
//!
//! Fields come from small pools so that user names, tokens and ids collide, which is where
//! the section 3 rules (priority, client-id check, upsert merge, one token per user name,
//! last claimer owns an index entry) decide. Tokens saved without an id get a random id
//! from each store; the harness maps the n-th fresh id of one store to the n-th of the
//! other and compares tokens modulo that mapping. Errors are compared by variant.
//!
//! Protects against: the two stores drifting apart (the rules are meant to live in one
//! place); the vault losing or changing state across reopen, passphrase change or key
//! rotation; `verify` reporting problems in a vault that only the public API touched, or
//! `repair` changing what a lookup finds.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tokenvault::{Engine, Error, Field, KdfParams, MemoryStore, OAuthToken, TokenStore, Vault, VaultOptions};
use tokenvault_fuzz::{copy_dir, process_dir, scratch_dir, variant, PASSPHRASE};

/// Values for every string field: the empty string (stored as absent), plain values,
/// a NUL byte, non-ASCII, a quote.
const VALUES: [&str; 8] = ["", "v1", "v2", "v3", "\0", "ü🔑", "it's", "v1\0"];
const IDS: [&str; 4] = ["id-a", "id-b", "id-c", ""];
const PASSPHRASES: [&str; 3] = ["new passphrase", "ü🔑 passphrase", ""];
const MAX_OPS: usize = 48;
const MAX_SLOW_OPS: usize = 2;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum IdRef {
    Pool(u8),
    /// The n-th id a store generated in this run.
    Generated(u8),
}

/// What a token's field is built from.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Id(Option<IdRef>),
    Expiry(Option<i8>),
    /// An index into [`VALUES`].
    Text(Option<u8>),
}

/// A token to build: the pick of each field of `Field::ALL`, at its position.
#[derive(Debug, Clone, Copy)]
struct Fields([Pick; Field::ALL.len()]);

/// The picks are read in `Field::ALL`'s order, one `Option` each: the encoding the seed
/// corpus and the saved inputs of `fuzz/regressions/` were written in.
impl<'a> Arbitrary<'a> for Fields {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut picks = [Pick::Text(None); Field::ALL.len()];
        for (pick, field) in picks.iter_mut().zip(Field::ALL) {
            *pick = match field {
                Field::Id => Pick::Id(u.arbitrary()?),
                Field::ExpiryTime => Pick::Expiry(u.arbitrary()?),
                _ => Pick::Text(u.arbitrary()?),
            };
        }
        Ok(Fields(picks))
    }
}

impl Fields {
    fn id(&self) -> Option<IdRef> {
        self.0.iter().find_map(|pick| match pick {
            Pick::Id(id) => *id,
            _ => None,
        })
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Save(Fields),
    FindByUser(u8),
    FindByAccess(u8),
    FindByGrant {
        grant: u8,
        client_id: u8,
        client_secret: u8,
    },
    FindByRefresh {
        refresh: u8,
        client_id: u8,
        client_secret: u8,
    },
    /// Any query: exercises the rule priorities and the "no key: nothing" rule.
    Find(Fields),
    FindById(IdRef),
    Delete(IdRef),
    DeleteAll,
    GetTokens,
    Reopen,
    ChangePassphrase(u8),
    /// Vault-only operations. (One variant for both keeps the encoding of the other
    /// operations, and so the saved regression inputs, as they were.)
    Maintain(Maintenance),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Maintenance {
    RotateKey,
    /// `repair` on a vault only the API touched must find nothing to fix and change no
    /// lookup (the later steps compare with the memory store again).
    Repair,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// A small seal budget makes the vault start new key epochs by itself.
    seals_per_key: Option<u8>,
    /// The engine: redb when set, else sled.
    redb: bool,
    ops: Vec<Op>,
}

fn value(n: u8) -> &'static str {
    VALUES[usize::from(n) % VALUES.len()]
}

/// Ids the stores generated, in order: the n-th of the vault is the n-th of the memory store.
#[derive(Default)]
struct IdMap {
    vault: Vec<String>,
    memory: Vec<String>,
}

impl IdMap {
    fn resolve(&self, id: IdRef) -> (Option<String>, Option<String>) {
        match id {
            IdRef::Pool(n) => {
                let id = IDS[usize::from(n) % IDS.len()].to_owned();
                (Some(id.clone()), Some(id))
            }
            IdRef::Generated(n) => {
                let n = usize::from(n);
                (self.vault.get(n).cloned(), self.memory.get(n).cloned())
            }
        }
    }

    fn canonical(&self, generated: &[String], id: Option<&str>) -> Option<String> {
        let id = id?;
        match generated.iter().position(|g| g == id) {
            Some(n) => Some(format!("generated#{n}")),
            None => Some(id.to_owned()),
        }
    }

    /// Records the ids of the token each store just saved, if new to both.
    fn learn(&mut self, v: &OAuthToken, m: &OAuthToken) {
        let (Some(vid), Some(mid)) = (v.id(), m.id()) else {
            return;
        };
        let v_known = IDS.contains(&vid) || self.vault.iter().any(|g| g == vid);
        let m_known = IDS.contains(&mid) || self.memory.iter().any(|g| g == mid);
        match (v_known, m_known) {
            (false, false) => {
                self.vault.push(vid.to_owned());
                self.memory.push(mid.to_owned());
            }
            (true, true) => {}
            _ => panic!("one store made a new token, the other updated one: vault {vid}, memory {mid}"),
        }
    }

    /// A token with its id replaced by the store-independent name.
    fn normalize(&self, t: &OAuthToken, vault_side: bool) -> OAuthToken {
        let generated = if vault_side { &self.vault } else { &self.memory };
        let mut t = t.clone();
        let id = self.canonical(generated, t.id());
        t.set_id(id);
        t
    }
}

/// The token `fields` pick, with `id` (the id pick resolved for one store).
fn build(fields: &Fields, id: Option<String>) -> OAuthToken {
    let mut t = OAuthToken::default();
    t.set_id(id);
    for (field, pick) in Field::ALL.into_iter().zip(fields.0) {
        match pick {
            Pick::Id(_) => {}
            Pick::Expiry(e) => t.set_expiry_time(e.map(|e| i64::from(e) * 1_000_000_007)),
            Pick::Text(n) => t
                .set_text(field, n.map(value))
                .expect("every field but the expiry is text"),
        }
    }
    t
}

fn result_kind<T>(r: &Result<T, Error>) -> &'static str {
    match r {
        Ok(_) => "Ok",
        Err(e) => variant(e),
    }
}

/// An empty vault on `engine`, built once per process; each input works on a copy of it,
/// so the (memoized) KDF is the only Argon2 run.
fn template(engine: Engine) -> &'static PathBuf {
    static SLED: OnceLock<PathBuf> = OnceLock::new();
    static REDB: OnceLock<PathBuf> = OnceLock::new();
    let cell = if engine == Engine::Redb { &REDB } else { &SLED };
    cell.get_or_init(|| {
        let dir = process_dir("differential").join(format!("vault-{engine}"));
        drop(
            options(None, engine)
                .create(&dir, PASSPHRASE)
                .expect("create the template"),
        );
        dir
    })
}

fn options(seals_per_key: Option<u8>, engine: Engine) -> VaultOptions {
    let o = VaultOptions::new()
        .kdf(KdfParams::FLOOR)
        .durable(false)
        .engine(engine);
    match seals_per_key {
        Some(n) => o.seals_per_key(u64::from(n % 8) + 1),
        None => o,
    }
}

struct Run {
    vault: Option<Vault>,
    memory: MemoryStore,
    ids: IdMap,
    passphrase: &'static str,
    options: VaultOptions,
    dir: PathBuf,
    slow_ops: usize,
    log: Vec<String>,
}

impl Run {
    fn vault(&self) -> &Vault {
        self.vault.as_ref().expect("the vault is open")
    }

    fn compare_found(
        &self,
        what: &str,
        v: Result<Option<OAuthToken>, Error>,
        m: Result<Option<OAuthToken>, Error>,
    ) {
        match (&v, &m) {
            (Ok(v), Ok(m)) => {
                let v = v.as_ref().map(|t| self.ids.normalize(t, true));
                let m = m.as_ref().map(|t| self.ids.normalize(t, false));
                assert_eq!(
                    v, m,
                    "{what}: vault and memory store disagree\nops: {:#?}",
                    self.log
                );
            }
            _ => assert_eq!(
                result_kind(&v),
                result_kind(&m),
                "{what}: vault {v:?}, memory {m:?}\nops: {:#?}",
                self.log
            ),
        }
    }

    fn compare_all(&self, what: &str) {
        let v = self.vault().get_tokens();
        let m = self.memory.get_tokens();
        match (v, m) {
            (Ok(v), Ok(m)) => {
                let mut v: Vec<_> = v.iter().map(|t| self.ids.normalize(t, true)).collect();
                let mut m: Vec<_> = m.iter().map(|t| self.ids.normalize(t, false)).collect();
                v.sort_by(|a, b| a.id().cmp(&b.id()));
                m.sort_by(|a, b| a.id().cmp(&b.id()));
                assert_eq!(v, m, "{what}: get_tokens disagree\nops: {:#?}", self.log);
            }
            (v, m) => panic!("{what}: get_tokens failed: vault {v:?}, memory {m:?}"),
        }
    }

    fn check_verify(&self, what: &str) {
        let report = self.vault().verify().expect("verify runs");
        assert!(
            report.is_clean(),
            "{what}: verify reports problems in a vault only the API touched: {:?}\nops: {:#?}",
            report.problems,
            self.log
        );
    }

    fn apply(&mut self, op: Op) {
        self.log.push(format!("{op:?}"));
        match op {
            Op::Save(fields) => {
                let (vid, mid) = match fields.id() {
                    Some(r) => self.ids.resolve(r),
                    None => (None, None),
                };
                let mut vt = build(&fields, vid);
                let mut mt = build(&fields, mid);
                let v = self.vault().save_token(&mut vt);
                let m = self.memory.save_token(&mut mt);
                assert_eq!(
                    result_kind(&v),
                    result_kind(&m),
                    "save: vault {v:?}, memory {m:?}\nops: {:#?}",
                    self.log
                );
                if v.is_ok() {
                    self.ids.learn(&vt, &mt);
                }
                assert_eq!(
                    self.ids.normalize(&vt, true),
                    self.ids.normalize(&mt, false),
                    "save wrote back different tokens\nops: {:#?}",
                    self.log
                );
                self.check_verify("after save");
            }
            Op::FindByUser(u) => self.find(&OAuthToken::default().with_user_name(value(u))),
            Op::FindByAccess(a) => self.find(&OAuthToken::default().with_access_token(value(a))),
            Op::FindByGrant {
                grant,
                client_id,
                client_secret,
            } => self.find(
                &OAuthToken::default()
                    .with_grant_token(value(grant))
                    .with_client_id(value(client_id))
                    .with_client_secret(value(client_secret)),
            ),
            Op::FindByRefresh {
                refresh,
                client_id,
                client_secret,
            } => self.find(
                &OAuthToken::default()
                    .with_refresh_token(value(refresh))
                    .with_client_id(value(client_id))
                    .with_client_secret(value(client_secret)),
            ),
            Op::Find(fields) => {
                // The id of a query is not a lookup key; use the vault's form of it.
                let id = fields.id().and_then(|r| self.ids.resolve(r).0);
                self.find(&build(&fields, id));
            }
            Op::FindById(r) => {
                let (vid, mid) = self.ids.resolve(r);
                let v = self.vault().find_token_by_id(vid.as_deref().unwrap_or(""));
                let m = self.memory.find_token_by_id(mid.as_deref().unwrap_or(""));
                self.compare_found("find_token_by_id", v, m);
            }
            Op::Delete(r) => {
                let (vid, mid) = self.ids.resolve(r);
                let v = self.vault().delete_token(vid.as_deref().unwrap_or(""));
                let m = self.memory.delete_token(mid.as_deref().unwrap_or(""));
                assert_eq!(
                    result_kind(&v),
                    result_kind(&m),
                    "delete: vault {v:?}, memory {m:?}"
                );
                self.check_verify("after delete");
            }
            Op::DeleteAll => {
                let v = self.vault().delete_tokens();
                let m = self.memory.delete_tokens();
                assert_eq!(
                    result_kind(&v),
                    result_kind(&m),
                    "delete_tokens: vault {v:?}, memory {m:?}"
                );
                self.check_verify("after delete_tokens");
            }
            Op::GetTokens => self.compare_all("get_tokens"),
            Op::Reopen => {
                drop(self.vault.take());
                let vault = self
                    .options
                    .open(&self.dir, self.passphrase)
                    .unwrap_or_else(|e| panic!("reopen failed: {e:?}\nops: {:#?}", self.log));
                self.vault = Some(vault);
                self.compare_all("after reopen");
            }
            Op::ChangePassphrase(n) => {
                // Argon2 runs with a fresh salt here (not memoized): keep it rare.
                if self.slow_ops >= MAX_SLOW_OPS {
                    return;
                }
                self.slow_ops += 1;
                let new = PASSPHRASES[usize::from(n) % PASSPHRASES.len()];
                if self.vault().change_passphrase(new).is_ok() {
                    self.passphrase = new;
                }
            }
            Op::Maintain(Maintenance::RotateKey) => {
                self.vault().rotate_key().expect("rotate_key");
                self.check_verify("after rotate_key");
            }
            Op::Maintain(Maintenance::Repair) => {
                let report = self.vault().repair().expect("repair runs");
                assert!(
                    report.is_clean(),
                    "repair: problems in a vault only the API touched: {:?}\nops: {:#?}",
                    report.problems,
                    self.log
                );
            }
        }
    }

    fn find(&self, query: &OAuthToken) {
        let v = self.vault().find_token(query);
        let m = self.memory.find_token(query);
        self.compare_found("find_token", v, m);
    }
}

fuzz_target!(|input: Input| {
    let scratch = scratch_dir("input-");
    let dir = scratch.path().join("vault");
    let engine = if input.redb { Engine::Redb } else { Engine::Sled };
    copy_dir(template(engine), &dir);
    let options = options(input.seals_per_key, engine);
    let vault = options.open(&dir, PASSPHRASE).expect("open the template copy");
    let mut run = Run {
        vault: Some(vault),
        memory: MemoryStore::new(),
        ids: IdMap::default(),
        passphrase: PASSPHRASE,
        options,
        dir,
        slow_ops: 0,
        log: Vec::new(),
    };
    for op in input.ops.into_iter().take(MAX_OPS) {
        run.apply(op);
    }
    run.compare_all("at the end");
});
