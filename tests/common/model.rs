//! A model of docs/design.md section 3, written from the text and independent of the crate's
//! internals, and a check that runs a sequence of operations on a store and on the model
//! side by side.
//!
//! Values come from small pools so that lookups, updates, user-name clashes and shared
//! index values happen often. Store-assigned ids are random: the model takes them from
//! the store's save result, checking only that they are fresh and well formed.
//!
//! Included with `mod common { pub mod fresh_id; pub mod model; }`.
//!
//! ```ignore
//! proptest! {
//!     #![proptest_config(common::model::config())]
//!     #[test]
//!     fn store_behaves_like_the_model(ops in common::model::ops()) {
//!         common::model::check_against_model(&make_store(), &ops);
//!     }
//! }
//! ```

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;
use tokenvault::{Error, OAuthToken, TokenStore};

use super::fresh_id::assert_fresh_id;

// Field positions in `Rec::fields`.
const USER: usize = 0;
const CLIENT_ID: usize = 1;
const SECRET: usize = 2;
const GRANT: usize = 3;
const REFRESH: usize = 4;
const ACCESS: usize = 5;
// 6 and 7, the redirect URL and the API domain, are carried along and never matched on.
const FIELDS: usize = 8;

/// The JSON names of the fields, by position.
const NAMES: [&str; FIELDS] = [
    "user_name",
    "client_id",
    "client_secret",
    "grant_token",
    "refresh_token",
    "access_token",
    "redirect_url",
    "api_domain",
];

/// The value pools, by position: small, so that values collide.
const POOLS: [&[&str]; FIELDS] = [
    &["alice", "bob", "carol"],
    &["c1", "c2"],
    &["s1", "s2"],
    &["g1", "g2", "g3"],
    &["r1", "r2", "r3"],
    &["a1", "a2", "a3"],
    &["u1", "u2"],
    &["d1", "d2"],
];

/// The value-indexed fields (the user name is looked up by scanning, as the rule says).
const INDEXED: [usize; 3] = [GRANT, REFRESH, ACCESS];

/// Ids a token may bring along; one looks like SQL.
const FIXED_IDS: [&str; 3] = ["id-1", "id-2", "1 OR 1=1"];

/// Which id a generated token or operation uses.
#[derive(Clone, Debug)]
pub(crate) enum IdPick {
    /// No id.
    Absent,
    /// `Some("")`, which counts as absent.
    Empty,
    /// One of `FIXED_IDS`.
    Fixed(usize),
    /// The n-th (modulo) id the store has returned so far, deleted or not; `Absent` while
    /// there is none.
    Seen(usize),
}

/// A token to save or query: each field absent, empty (`Some("")`) or from its pool.
#[derive(Clone, Debug)]
pub(crate) struct TokenSpec {
    pub id: IdPick,
    pub fields: [Option<&'static str>; FIELDS],
    pub expiry: Option<i64>,
}

/// One operation on the store.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Save(TokenSpec),
    Find(TokenSpec),
    FindById(IdPick),
    Delete(IdPick),
    DeleteAll,
    GetTokens,
}

// ---------------------------------------------------------------------------------------
// Strategies.

/// The proptest configuration: 64 cases unless `PROPTEST_CASES` says otherwise.
pub(crate) fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Sequences of 1 to 40 operations.
pub(crate) fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..=40)
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => token_spec().prop_map(Op::Save),
        6 => token_spec().prop_map(Op::Find),
        2 => id_pick().prop_map(Op::FindById),
        2 => id_pick().prop_map(Op::Delete),
        1 => Just(Op::GetTokens),
        1 => Just(Op::DeleteAll),
    ]
}

fn id_pick() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        6 => Just(IdPick::Absent),
        1 => Just(IdPick::Empty),
        2 => (0..FIXED_IDS.len()).prop_map(IdPick::Fixed),
        4 => (0..8usize).prop_map(IdPick::Seen),
    ]
}

fn field(pool: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some("")),
        5 => select(pool).prop_map(Some),
    ]
}

fn random_spec() -> impl Strategy<Value = TokenSpec> {
    let fields: [_; FIELDS] = std::array::from_fn(|i| field(POOLS[i]));
    let expiry = prop_oneof![Just(None), Just(Some(-1_i64)), Just(Some(1_764_000_000_000))];
    (id_pick(), fields, expiry).prop_map(|(id, fields, expiry)| TokenSpec { id, fields, expiry })
}

/// A random token, often bent into one of the three lookup shapes so that every rule of
/// `find_token` (and every path of `save_token`) is exercised.
fn token_spec() -> impl Strategy<Value = TokenSpec> {
    (
        random_spec(),
        0..4u8,
        select(POOLS[USER]),
        select(POOLS[ACCESS]),
        select(POOLS[CLIENT_ID]),
        select(POOLS[SECRET]),
        select(POOLS[REFRESH]),
    )
        .prop_map(|(mut spec, shape, user, access, cid, secret, refresh)| {
            let f = &mut spec.fields;
            match shape {
                // By user name.
                1 => f[USER] = Some(user),
                // By access token.
                2 => {
                    f[USER] = None;
                    f[ACCESS] = Some(access);
                    f[CLIENT_ID] = None;
                    f[SECRET] = None;
                }
                // By grant and/or refresh token with client credentials.
                3 => {
                    f[USER] = None;
                    f[CLIENT_ID] = Some(cid);
                    f[SECRET] = Some(secret);
                    // Always a refresh token, so that grant-then-refresh is tried often.
                    if f[REFRESH].is_none_or(str::is_empty) {
                        f[REFRESH] = Some(refresh);
                    }
                }
                _ => {}
            }
            spec
        })
}

// ---------------------------------------------------------------------------------------
// The model.

/// A token in the model: id, the eight string fields by position, the expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rec {
    pub id: Option<String>,
    pub fields: [Option<String>; FIELDS],
    pub expiry: Option<i64>,
}

impl Rec {
    fn from_spec(spec: &TokenSpec, id: Option<&str>) -> Rec {
        Rec {
            id: id.map(str::to_owned),
            fields: spec.fields.map(|f| f.map(str::to_owned)),
            expiry: spec.expiry,
        }
    }

    fn from_token(t: &OAuthToken) -> Rec {
        let own = |v: Option<&str>| v.map(str::to_owned);
        Rec {
            id: own(t.id()),
            fields: [
                own(t.user_name()),
                own(t.client_id()),
                own(t.client_secret()),
                own(t.grant_token()),
                own(t.refresh_token()),
                own(t.access_token()),
                own(t.redirect_url()),
                own(t.api_domain()),
            ],
            expiry: t.expiry_time(),
        }
    }

    /// The token, built through JSON so that empty strings reach the store as `Some("")`.
    fn to_token(&self) -> OAuthToken {
        let mut m = serde_json::Map::new();
        if let Some(id) = &self.id {
            m.insert("id".into(), id.clone().into());
        }
        for (name, value) in NAMES.iter().zip(&self.fields) {
            if let Some(v) = value {
                m.insert((*name).into(), v.clone().into());
            }
        }
        if let Some(e) = self.expiry {
            m.insert("expiry_time".into(), e.into());
        }
        serde_json::from_value(serde_json::Value::Object(m)).expect("a token from JSON")
    }

    /// Empty strings made absent.
    fn normalized(&self) -> Rec {
        let keep = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Rec {
            id: keep(&self.id),
            fields: std::array::from_fn(|i| keep(&self.fields[i])),
            expiry: self.expiry,
        }
    }

    fn id(&self) -> &str {
        self.id.as_deref().expect("a stored record has an id")
    }
}

/// What a save does, decided before the store's id is known.
struct Plan {
    previous: Option<Rec>,
    /// The record to store; its id is `None` when the store must assign a fresh one.
    merged: Rec,
}

#[derive(Default)]
struct Model {
    tokens: BTreeMap<String, Rec>,
    /// (indexed field, value) -> id of the token that last claimed the value.
    owners: BTreeMap<(usize, String), String>,
}

impl Model {
    fn find(&self, query: &Rec) -> Option<Rec> {
        let q = query.normalized();
        // Rule 1: the token stored for that user name; nothing else is tried.
        if let Some(u) = &q.fields[USER] {
            return self
                .tokens
                .values()
                .find(|t| t.fields[USER].as_ref() == Some(u))
                .cloned();
        }
        let cid = q.fields[CLIENT_ID].as_ref();
        let secret = q.fields[SECRET].as_ref();
        // Rule 2: by access token, without client credentials.
        if let (Some(a), None, None) = (&q.fields[ACCESS], cid, secret) {
            return self.owned(ACCESS, a);
        }
        // Rule 3: by grant, then refresh, with both credentials; the client id must match.
        if let (Some(cid), Some(_)) = (cid, secret) {
            for f in [GRANT, REFRESH] {
                if let Some(hit) = q.fields[f].as_ref().and_then(|v| self.owned(f, v)) {
                    if hit.fields[CLIENT_ID].as_ref() == Some(cid) {
                        return Some(hit);
                    }
                }
            }
        }
        None
    }

    fn owned(&self, field: usize, value: &str) -> Option<Rec> {
        let id = self.owners.get(&(field, value.to_owned()))?;
        let t = self
            .tokens
            .get(id)
            .expect("model: an index entry names a stored token");
        assert_eq!(
            t.fields[field].as_deref(),
            Some(value),
            "model: index entry is accurate"
        );
        Some(t.clone())
    }

    fn plan(&self, token: &Rec) -> Result<Plan, &'static str> {
        let t = token.normalized();
        if INDEXED.iter().all(|&f| t.fields[f].is_none()) {
            return Err("no grant, refresh or access token");
        }
        let previous = match t.id.as_ref().and_then(|id| self.tokens.get(id)) {
            Some(p) => Some(p.clone()),
            None => self.find(&t),
        };
        let merged = match &previous {
            Some(p) => {
                let mut m = p.clone();
                for (dst, src) in m.fields.iter_mut().zip(&t.fields) {
                    if src.is_some() {
                        dst.clone_from(src);
                    }
                }
                if t.expiry.is_some() {
                    m.expiry = t.expiry;
                }
                m
            }
            None => t,
        };
        if let Some(u) = &merged.fields[USER] {
            let clash = self
                .tokens
                .values()
                .any(|o| o.fields[USER].as_ref() == Some(u) && o.id != merged.id);
            if clash {
                return Err("the user name is held by another token");
            }
        }
        Ok(Plan { previous, merged })
    }

    fn apply(&mut self, plan: Plan) {
        let id = plan.merged.id().to_owned();
        for f in INDEXED {
            let new = plan.merged.fields[f].clone();
            if let Some(old) = plan.previous.as_ref().and_then(|p| p.fields[f].clone()) {
                if Some(&old) != new.as_ref() && self.owners.get(&(f, old.clone())) == Some(&id) {
                    self.owners.remove(&(f, old));
                }
            }
            if let Some(new) = new {
                self.owners.insert((f, new), id.clone());
            }
        }
        self.tokens.insert(id, plan.merged);
    }

    fn delete(&mut self, id: &str) {
        let Some(t) = self.tokens.remove(id) else {
            return;
        };
        for f in INDEXED {
            if let Some(v) = &t.fields[f] {
                let key = (f, v.clone());
                if self.owners.get(&key).map(String::as_str) == Some(id) {
                    self.owners.remove(&key);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The check.

/// Runs `ops` on `store` (emptied first) and on the model, and panics at the first
/// difference: in a result, in the stored tokens, or in any lookup over the value pools.
pub(crate) fn check_against_model<S: TokenStore>(store: &S, ops: &[Op]) {
    store.delete_tokens().expect("delete_tokens");
    let mut model = Model::default();
    let mut seen: Vec<String> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let resolve = |pick: &IdPick| -> Option<String> {
            match pick {
                IdPick::Absent => None,
                IdPick::Empty => Some(String::new()),
                IdPick::Fixed(i) => Some(FIXED_IDS[*i].to_owned()),
                IdPick::Seen(n) => (!seen.is_empty()).then(|| seen[n % seen.len()].clone()),
            }
        };
        match op {
            Op::Save(spec) => {
                let rec = Rec::from_spec(spec, resolve(&spec.id).as_deref());
                let mut token = rec.to_token();
                let got = store.save_token(&mut token);
                match (model.plan(&rec), got) {
                    (Err(_), Err(Error::InvalidToken { .. })) => {}
                    (Err(why), other) => {
                        panic!("step {step} {op:?}: the model refuses ({why}), the store gives {other:?}")
                    }
                    (Ok(plan), Err(e)) => {
                        panic!(
                            "step {step} {op:?}: the model stores {:?}, the store fails: {e:?}",
                            plan.merged
                        )
                    }
                    (Ok(mut plan), Ok(())) => {
                        let written = Rec::from_token(&token);
                        if plan.merged.id.is_none() {
                            // An insert with a store-assigned id: fresh, well formed.
                            let id = written
                                .id
                                .clone()
                                .unwrap_or_else(|| panic!("step {step} {op:?}: no id written back"));
                            assert_fresh_id(&id);
                            assert!(
                                !seen.contains(&id) && !FIXED_IDS.contains(&id.as_str()),
                                "step {step} {op:?}: the fresh id {id:?} was used before"
                            );
                            plan.merged.id = Some(id);
                        }
                        assert_eq!(written, plan.merged, "step {step} {op:?}: written back");
                        let id = plan.merged.id().to_owned();
                        if !seen.contains(&id) {
                            seen.push(id);
                        }
                        model.apply(plan);
                    }
                }
            }
            Op::Find(spec) => {
                let rec = Rec::from_spec(spec, resolve(&spec.id).as_deref());
                let got = store
                    .find_token(&rec.to_token())
                    .unwrap_or_else(|e| panic!("step {step} {op:?}: find_token: {e:?}"));
                let got = got.as_ref().map(Rec::from_token);
                assert_eq!(got, model.find(&rec), "step {step} {op:?}: find_token");
            }
            Op::FindById(pick) => {
                let id = resolve(pick).unwrap_or_default();
                let got = store
                    .find_token_by_id(&id)
                    .unwrap_or_else(|e| panic!("step {step} {op:?}: find_token_by_id: {e:?}"));
                let got = got.as_ref().map(Rec::from_token);
                assert_eq!(
                    got,
                    model.tokens.get(&id).cloned(),
                    "step {step} {op:?}: by id {id:?}"
                );
            }
            Op::Delete(pick) => {
                let id = resolve(pick).unwrap_or_default();
                store
                    .delete_token(&id)
                    .unwrap_or_else(|e| panic!("step {step} {op:?}: delete_token: {e:?}"));
                model.delete(&id);
            }
            Op::DeleteAll => {
                store
                    .delete_tokens()
                    .unwrap_or_else(|e| panic!("step {step} {op:?}: delete_tokens: {e:?}"));
                model = Model::default();
            }
            Op::GetTokens => {}
        }
        check_state(store, &model, &format!("after step {step} {op:?}"));
    }
}

/// The stored tokens equal the model's, and every lookup over the pools agrees.
fn check_state<S: TokenStore>(store: &S, model: &Model, context: &str) {
    let mut got: Vec<Rec> = store
        .get_tokens()
        .unwrap_or_else(|e| panic!("{context}: get_tokens: {e:?}"))
        .iter()
        .map(Rec::from_token)
        .collect();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    let want: Vec<Rec> = model.tokens.values().cloned().collect();
    assert_eq!(got, want, "{context}: get_tokens");

    let mut queries = Vec::new();
    for u in POOLS[USER] {
        queries.push(query(&[(USER, u)]));
    }
    for a in POOLS[ACCESS] {
        queries.push(query(&[(ACCESS, a)]));
    }
    // Grant alone, refresh alone, and every grant-then-refresh pair, under each client id.
    let maybe = |pool: &'static [&'static str]| std::iter::once(None).chain(pool.iter().copied().map(Some));
    for c in POOLS[CLIENT_ID] {
        for g in maybe(POOLS[GRANT]) {
            for r in maybe(POOLS[REFRESH]) {
                let mut q = query(&[(CLIENT_ID, c), (SECRET, "s1")]);
                q.fields[GRANT] = g.map(str::to_owned);
                q.fields[REFRESH] = r.map(str::to_owned);
                if g.is_some() || r.is_some() {
                    queries.push(q);
                }
            }
        }
    }
    for q in queries {
        let got = store
            .find_token(&q.to_token())
            .unwrap_or_else(|e| panic!("{context}: find_token({q:?}): {e:?}"));
        assert_eq!(
            got.as_ref().map(Rec::from_token),
            model.find(&q),
            "{context}: find_token({q:?})"
        );
    }
}

fn query(fields: &[(usize, &str)]) -> Rec {
    let mut q = Rec::default();
    for (f, v) in fields {
        q.fields[*f] = Some((*v).to_owned());
    }
    q
}
