//! The conformance suite: every rule of docs/design.md section 3, written once against the
//! `TokenStore` trait and instantiated for each store with [`conformance_suite!`].
//!
//! ```ignore
//! #[macro_use]
//! mod common {
//!     #[macro_use]
//!     pub mod conformance;
//!     pub mod fresh_id;
//! }
//! conformance_suite!((tokenvault::MemoryStore::new(), ()));
//! ```
//!
//! The macro argument is an expression evaluated afresh for every test; it yields
//! `(store, guard)`: the store under test and anything that must outlive it (a `TempDir`,
//! say). The store is dropped before the guard, also when a test fails.
//!
//! Each check below is a generic function named as the sentence it asserts; the macro turns
//! each into one `#[test]` of the same name. The list in the macro is the one register of
//! checks: a check left out of it is never called, and the `dead_code` lint (an error under
//! `clippy -D warnings`) names it.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use serde_json::json;
use tokenvault::{Error, OAuthToken, TokenStore};

use super::fresh_id::assert_fresh_id;

/// Expands to one `#[test]` per check of this module, each on a fresh store from `$make`.
macro_rules! conformance_suite {
    ($make:expr) => {
        conformance_suite!(@tests $make;
            // Empty strings are absent.
            empty_user_name_counts_as_absent,
            empty_id_counts_as_absent,
            empty_strings_in_every_field_are_stored_as_absent,
            empty_client_credentials_in_a_query_count_as_absent,
            empty_token_values_in_a_query_count_as_absent,
            // Queries with no usable key.
            an_empty_query_finds_nothing,
            a_query_with_only_a_client_id_finds_nothing,
            a_query_with_only_client_credentials_finds_nothing,
            a_query_with_only_an_id_finds_nothing,
            a_query_with_only_non_key_fields_finds_nothing,
            an_access_token_with_a_client_id_or_secret_finds_nothing,
            a_grant_or_refresh_token_without_both_client_credentials_finds_nothing,
            // Rule 1: user name.
            a_user_name_finds_the_token_stored_for_it,
            the_user_name_rule_takes_precedence_over_every_other_key,
            the_user_name_rule_does_not_fall_through_to_other_keys,
            a_user_name_matches_only_exactly,
            an_sql_injection_user_name_does_not_find_another_users_token,
            // Rule 2: access token.
            an_access_token_alone_finds_its_token,
            an_access_token_is_ignored_when_client_credentials_are_given,
            // Rule 3: grant, then refresh, with client credentials.
            a_grant_token_with_client_credentials_finds_its_token,
            a_refresh_token_with_client_credentials_finds_its_token,
            the_grant_token_is_tried_before_the_refresh_token,
            the_refresh_token_is_tried_when_the_grant_token_finds_nothing,
            the_refresh_token_is_tried_when_the_grant_hit_has_another_client_id,
            a_grant_hit_under_another_client_id_finds_nothing,
            a_refresh_hit_under_another_client_id_finds_nothing,
            a_hit_on_a_token_without_client_id_finds_nothing,
            the_client_secret_is_not_compared,
            find_returns_the_full_stored_token_with_its_id,
            // save_token.
            saving_a_token_without_grant_refresh_or_access_token_is_invalid_and_writes_nothing,
            a_grant_refresh_or_access_token_alone_is_enough_to_save,
            saving_assigns_a_fresh_url_safe_id_of_at_least_22_characters,
            fresh_ids_are_distinct,
            an_insert_keeps_the_tokens_own_id,
            saving_with_an_existing_id_updates_that_token,
            an_update_by_id_takes_precedence_over_find_token,
            saving_without_an_id_updates_the_token_found_by_user_name,
            saving_without_an_id_updates_the_token_found_by_access_token,
            saving_without_an_id_updates_the_token_found_by_refresh_token,
            saving_with_an_unknown_id_updates_the_token_find_token_returns_and_keeps_the_stored_id,
            a_save_that_matches_nothing_inserts_a_new_token,
            a_save_whose_grant_hit_has_another_client_id_inserts_a_new_token,
            an_update_keeps_the_fields_absent_from_the_saved_token,
            an_update_overwrites_every_field_present_in_the_saved_token,
            an_update_with_empty_strings_keeps_the_stored_values,
            saving_writes_back_exactly_what_is_stored,
            an_update_that_would_take_another_tokens_user_name_is_invalid_and_writes_nothing,
            an_update_may_keep_its_own_user_name,
            an_update_may_change_its_user_name_and_frees_the_old_one,
            concurrent_saves_of_one_user_name_end_with_one_record,
            // Index ownership.
            a_value_shared_by_two_tokens_finds_the_last_saved,
            resaving_a_token_that_carries_a_shared_value_claims_it,
            deleting_the_token_that_does_not_own_a_shared_value_leaves_the_entry_alone,
            changing_the_value_of_the_token_that_does_not_own_it_leaves_the_entry_alone,
            when_the_owner_changes_a_shared_value_the_value_finds_nothing,
            when_the_owner_is_deleted_a_shared_value_finds_nothing,
            a_value_dropped_by_its_only_token_finds_nothing,
            stale_index_entries_never_find_a_new_token_under_a_reused_id,
            // Delete, list, get.
            deleting_an_absent_id_is_ok_and_changes_nothing,
            delete_token_removes_the_token_and_all_its_index_entries,
            delete_tokens_removes_every_token_and_index_entry,
            get_tokens_returns_every_stored_token,
            find_token_by_id_of_an_absent_id_is_none,
            find_token_by_id_returns_the_full_stored_token,
            // Any value is legal in any field.
            odd_values_are_stored_and_found_exactly_by_every_key,
            a_one_mebibyte_value_is_stored_and_found_exactly,
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::common::conformance::run($make, $crate::common::conformance::$name);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Harness and helpers.

/// Holds the store and its guard; fields drop in order, so the store goes first.
struct Fixture<S, G> {
    store: S,
    _guard: G,
}

/// Runs one check on a freshly made `(store, guard)`.
pub(crate) fn run<S, G>((store, guard): (S, G), check: impl FnOnce(&S)) {
    let fixture = Fixture { store, _guard: guard };
    check(&fixture.store);
}

/// The client id every helper token carries.
pub(crate) const CID: &str = "1000.CLIENT";
/// The client secret every helper token and query carries.
pub(crate) const SECRET: &str = "s3cret";

/// Values that would break a store gluing strings into SQL, C strings, paths or regexes.
pub(crate) const ODD_VALUES: &[&str] = &[
    "nobody' OR '1'='1",
    "1 OR 1=1",
    "'; DROP TABLE oauthtoken; --",
    "a\0b",
    "\0",
    "\0\0\0",
    "trailing\0",
    "\"double\" 'single' `back`",
    "🔑🦀👩‍👩‍👧",
    "日本語のトークン",
    "e\u{301}",
    "\u{202e}rtl",
    "\u{feff}bom",
    "\u{10ffff}",
    "%",
    "_",
    "*",
    ".*",
    "\\",
    "../../etc/passwd",
    "line\nbreak\r\ttab",
    " ",
    "null",
];

fn saved<S: TokenStore>(store: &S, token: OAuthToken) -> OAuthToken {
    let mut token = token;
    if let Err(e) = store.save_token(&mut token) {
        panic!("save_token({token:?}) failed: {e}");
    }
    token
}

fn found<S: TokenStore>(store: &S, query: &OAuthToken) -> Option<OAuthToken> {
    store
        .find_token(query)
        .unwrap_or_else(|e| panic!("find_token({query:?}) failed: {e}"))
}

fn by_id<S: TokenStore>(store: &S, id: &str) -> Option<OAuthToken> {
    store
        .find_token_by_id(id)
        .unwrap_or_else(|e| panic!("find_token_by_id({id:?}) failed: {e}"))
}

fn delete<S: TokenStore>(store: &S, id: &str) {
    store
        .delete_token(id)
        .unwrap_or_else(|e| panic!("delete_token({id:?}) failed: {e}"));
}

/// Every stored token, sorted by id.
fn all<S: TokenStore>(store: &S) -> Vec<OAuthToken> {
    let mut tokens = store
        .get_tokens()
        .unwrap_or_else(|e| panic!("get_tokens failed: {e}"));
    tokens.sort_by(|a, b| a.id().cmp(&b.id()));
    tokens
}

fn id_of(token: &OAuthToken) -> String {
    token
        .id()
        .unwrap_or_else(|| panic!("a saved token has an id: {token:?}"))
        .to_owned()
}

/// Saving `token` is refused with `InvalidToken` and changes nothing.
fn assert_refused<S: TokenStore>(store: &S, token: OAuthToken) {
    let before = all(store);
    let mut token = token;
    match store.save_token(&mut token) {
        Err(Error::InvalidToken { .. }) => {}
        other => panic!("saving {token:?}: expected InvalidToken, got {other:?}"),
    }
    assert_eq!(all(store), before, "a refused save wrote something");
}

/// A token built from JSON, so that fields can be `Some("")` (the builders make "" absent).
fn raw(value: serde_json::Value) -> OAuthToken {
    let text = value.to_string();
    serde_json::from_value(value).unwrap_or_else(|e| panic!("token JSON {text}: {e}"))
}

/// A token with every field set, its values derived from `tag`.
fn full(tag: &str) -> OAuthToken {
    OAuthToken::default()
        .with_user_name(format!("{tag}@example.com"))
        .with_client_id(CID)
        .with_client_secret(SECRET)
        .with_grant_token(format!("{tag}.grant"))
        .with_refresh_token(format!("{tag}.refresh"))
        .with_access_token(format!("{tag}.access"))
        .with_expiry_time(1_764_000_000_000)
        .with_redirect_url(format!("https://{tag}.example.com/cb"))
        .with_api_domain(format!("https://{tag}.zohoapis.com"))
}

fn user(name: &str) -> OAuthToken {
    OAuthToken::default().with_user_name(name)
}

fn access(value: &str) -> OAuthToken {
    OAuthToken::default().with_access_token(value)
}

fn grant_query(value: &str, client_id: &str) -> OAuthToken {
    OAuthToken::default()
        .with_grant_token(value)
        .with_client_id(client_id)
        .with_client_secret(SECRET)
}

fn refresh_query(value: &str, client_id: &str) -> OAuthToken {
    OAuthToken::default()
        .with_refresh_token(value)
        .with_client_id(client_id)
        .with_client_secret(SECRET)
}

/// The four lookups of a token saved with `full`-style values: by user, access, grant and
/// refresh (the last two with its client id).
fn every_key_query(token: &OAuthToken) -> Vec<(&'static str, OAuthToken)> {
    let cid = token.client_id().unwrap_or(CID);
    let mut queries = Vec::new();
    if let Some(u) = token.user_name() {
        queries.push(("user name", user(u)));
    }
    if let Some(a) = token.access_token() {
        queries.push(("access token", access(a)));
    }
    if let Some(g) = token.grant_token() {
        queries.push(("grant token", grant_query(g, cid)));
    }
    if let Some(r) = token.refresh_token() {
        queries.push(("refresh token", refresh_query(r, cid)));
    }
    queries
}

/// The three value-indexed keys, for the index-ownership checks. Tokens made by `token`
/// carry `CID`, so grant and refresh hits count.
#[derive(Clone, Copy, Debug)]
enum Key {
    Access,
    Refresh,
    Grant,
}

const KEYS: [Key; 3] = [Key::Access, Key::Refresh, Key::Grant];

impl Key {
    /// `token` with this key set to `value`.
    fn set(self, token: OAuthToken, value: &str) -> OAuthToken {
        match self {
            Key::Access => token.with_access_token(value),
            Key::Refresh => token.with_refresh_token(value),
            Key::Grant => token.with_grant_token(value),
        }
    }

    fn get(self, token: &OAuthToken) -> Option<&str> {
        match self {
            Key::Access => token.access_token(),
            Key::Refresh => token.refresh_token(),
            Key::Grant => token.grant_token(),
        }
    }

    /// A new token for user `name` carrying `value` under this key. The user name makes a
    /// save of it an insert even when another token carries the same value.
    fn token(self, name: &str, value: &str) -> OAuthToken {
        self.set(user(name).with_client_id(CID).with_client_secret(SECRET), value)
    }

    /// An update, by id, of this key only.
    fn update(self, id: &str, value: &str) -> OAuthToken {
        self.set(OAuthToken::default().with_id(id), value)
    }

    /// The query that finds a token by this key.
    fn query(self, value: &str) -> OAuthToken {
        match self {
            Key::Access => access(value),
            Key::Refresh => refresh_query(value, CID),
            Key::Grant => grant_query(value, CID),
        }
    }

    /// Another key, to re-save a token without naming this one.
    fn other(self) -> Key {
        match self {
            Key::Access => Key::Refresh,
            Key::Refresh => Key::Grant,
            Key::Grant => Key::Access,
        }
    }
}

/// Two tokens A (saved first) and B (saved last) both carrying `value` under `key`.
fn two_sharing<S: TokenStore>(store: &S, key: Key, value: &str) -> (OAuthToken, OAuthToken) {
    let a = saved(store, key.token("a", value));
    let b = saved(store, key.token("b", value));
    assert_ne!(a.id(), b.id(), "{key:?}: A and B are two tokens");
    (a, b)
}

// ---------------------------------------------------------------------------------------
// Empty strings are absent.

pub(crate) fn empty_user_name_counts_as_absent<S: TokenStore>(store: &S) {
    let t = saved(store, raw(json!({"user_name": "", "access_token": "a1"})));
    assert_eq!(t.user_name(), None, "written back: an empty user name is absent");
    let stored = by_id(store, &id_of(&t)).expect("saved above");
    assert_eq!(stored.user_name(), None, "stored: an empty user name is absent");
    // An empty user name in a query: rule 1 does not apply, rule 2 does.
    let q = raw(json!({"user_name": "", "access_token": "a1"}));
    assert_eq!(found(store, &q), Some(t.clone()));
    assert_eq!(found(store, &raw(json!({"user_name": ""}))), None);
    // A second token with an empty user name is no user-name clash.
    let t2 = saved(store, raw(json!({"user_name": "", "access_token": "a2"})));
    assert_ne!(t2.id(), t.id());
    assert_eq!(all(store).len(), 2);
}

pub(crate) fn empty_id_counts_as_absent<S: TokenStore>(store: &S) {
    let t = saved(store, raw(json!({"id": "", "access_token": "a1"})));
    let id = id_of(&t);
    assert_fresh_id(&id);
    assert_eq!(by_id(store, ""), None);
    delete(store, "");
    assert_eq!(all(store), vec![t.clone()]);
    // An empty id on a save that matches by access token updates that token.
    let u = saved(
        store,
        raw(json!({"id": "", "access_token": "a1", "api_domain": "d"})),
    );
    assert_eq!(u.id(), Some(id.as_str()));
    assert_eq!(all(store).len(), 1);
}

pub(crate) fn empty_strings_in_every_field_are_stored_as_absent<S: TokenStore>(store: &S) {
    let t = saved(
        store,
        raw(json!({
            "id": "", "user_name": "", "client_id": "", "client_secret": "",
            "grant_token": "", "refresh_token": "", "access_token": "a1",
            "redirect_url": "", "api_domain": ""
        })),
    );
    let expected = OAuthToken::default().with_id(id_of(&t)).with_access_token("a1");
    assert_eq!(t, expected, "written back");
    assert_eq!(all(store), vec![expected], "stored");
}

pub(crate) fn empty_client_credentials_in_a_query_count_as_absent<S: TokenStore>(store: &S) {
    let t = saved(
        store,
        OAuthToken::default()
            .with_client_id(CID)
            .with_access_token("a1")
            .with_refresh_token("r1"),
    );
    // Empty client id and secret: rule 2 applies.
    let q = raw(json!({"access_token": "a1", "client_id": "", "client_secret": ""}));
    assert_eq!(found(store, &q), Some(t.clone()), "empty credentials are absent");
    // An empty secret (or client id): rule 3 does not apply.
    let q = raw(json!({"refresh_token": "r1", "client_id": CID, "client_secret": ""}));
    assert_eq!(found(store, &q), None, "empty client secret");
    let q = raw(json!({"refresh_token": "r1", "client_id": "", "client_secret": SECRET}));
    assert_eq!(found(store, &q), None, "empty client id");
}

pub(crate) fn empty_token_values_in_a_query_count_as_absent<S: TokenStore>(store: &S) {
    let t = saved(store, full("alice"));
    let q = raw(json!({
        "grant_token": "", "refresh_token": "alice.refresh",
        "client_id": CID, "client_secret": SECRET
    }));
    assert_eq!(found(store, &q), Some(t.clone()), "empty grant: by refresh");
    let q = raw(json!({"access_token": "", "refresh_token": "alice.refresh"}));
    assert_eq!(found(store, &q), None, "empty access and no credentials: no rule");
    let q = raw(json!({"grant_token": "", "refresh_token": "", "access_token": "",
        "client_id": CID, "client_secret": SECRET}));
    assert_eq!(found(store, &q), None, "only empty values");
    // A save carrying only empty token values has nothing to store.
    assert_refused(
        store,
        raw(json!({"user_name": "alice@example.com", "grant_token": "",
            "refresh_token": "", "access_token": ""})),
    );
}

// ---------------------------------------------------------------------------------------
// A query with no usable key finds nothing.

pub(crate) fn an_empty_query_finds_nothing<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    assert_eq!(found(store, &OAuthToken::default()), None);
}

pub(crate) fn a_query_with_only_a_client_id_finds_nothing<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    assert_eq!(found(store, &OAuthToken::default().with_client_id(CID)), None);
}

pub(crate) fn a_query_with_only_client_credentials_finds_nothing<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    let q = OAuthToken::default()
        .with_client_id(CID)
        .with_client_secret(SECRET);
    assert_eq!(found(store, &q), None);
    assert_eq!(
        found(store, &OAuthToken::default().with_client_secret(SECRET)),
        None
    );
}

pub(crate) fn a_query_with_only_an_id_finds_nothing<S: TokenStore>(store: &S) {
    let t = saved(store, full("alice"));
    let q = OAuthToken::default().with_id(id_of(&t));
    assert_eq!(found(store, &q), None, "find_token does not look up ids");
}

pub(crate) fn a_query_with_only_non_key_fields_finds_nothing<S: TokenStore>(store: &S) {
    let t = saved(store, full("alice"));
    let q = OAuthToken::default()
        .with_expiry_time(t.expiry_time().expect("set by full"))
        .with_redirect_url(t.redirect_url().expect("set by full"))
        .with_api_domain(t.api_domain().expect("set by full"));
    assert_eq!(found(store, &q), None);
}

pub(crate) fn an_access_token_with_a_client_id_or_secret_finds_nothing<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    let a = access("alice.access");
    for (what, q) in [
        ("client id", a.clone().with_client_id(CID)),
        ("client secret", a.clone().with_client_secret(SECRET)),
        ("both", a.with_client_id(CID).with_client_secret(SECRET)),
    ] {
        assert_eq!(found(store, &q), None, "access token with {what}");
    }
}

pub(crate) fn a_grant_or_refresh_token_without_both_client_credentials_finds_nothing<S: TokenStore>(
    store: &S,
) {
    saved(store, full("alice"));
    let g = OAuthToken::default().with_grant_token("alice.grant");
    let r = OAuthToken::default().with_refresh_token("alice.refresh");
    for (what, q) in [
        ("grant alone", g.clone()),
        ("grant with client id", g.clone().with_client_id(CID)),
        ("grant with client secret", g.with_client_secret(SECRET)),
        ("refresh alone", r.clone()),
        ("refresh with client id", r.clone().with_client_id(CID)),
        ("refresh with client secret", r.with_client_secret(SECRET)),
    ] {
        assert_eq!(found(store, &q), None, "{what}");
    }
}

// ---------------------------------------------------------------------------------------
// Rule 1: user name.

pub(crate) fn a_user_name_finds_the_token_stored_for_it<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let b = saved(store, full("bob"));
    assert_eq!(found(store, &user("alice@example.com")), Some(a));
    assert_eq!(found(store, &user("bob@example.com")), Some(b));
    assert_eq!(found(store, &user("carol@example.com")), None);
}

pub(crate) fn the_user_name_rule_takes_precedence_over_every_other_key<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    saved(store, full("bob"));
    // Every other key names bob; the user name names alice.
    let q = full("bob").with_user_name("alice@example.com");
    assert_eq!(found(store, &q), Some(a.clone()), "all of bob's keys");
    let q = access("bob.access").with_user_name("alice@example.com");
    assert_eq!(found(store, &q), Some(a.clone()), "bob's access token");
    let q = refresh_query("bob.refresh", CID).with_user_name("alice@example.com");
    assert_eq!(found(store, &q), Some(a), "bob's refresh token");
}

pub(crate) fn the_user_name_rule_does_not_fall_through_to_other_keys<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    for (what, q) in [
        ("access token", access("alice.access")),
        ("grant token", grant_query("alice.grant", CID)),
        ("refresh token", refresh_query("alice.refresh", CID)),
        ("every key", full("alice")),
    ] {
        let q = q.with_user_name("nobody@example.com");
        assert_eq!(found(store, &q), None, "unknown user name with alice's {what}");
    }
}

pub(crate) fn a_user_name_matches_only_exactly<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    for name in [
        "ALICE@example.com",
        "alice@example.co",
        "alice@example.com ",
        " alice@example.com",
        "alice@example.com\0",
        "alice",
        "%",
        "*",
        "alice%",
    ] {
        assert_eq!(found(store, &user(name)), None, "user name {name:?}");
    }
}

pub(crate) fn an_sql_injection_user_name_does_not_find_another_users_token<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    saved(store, full("bob"));
    for name in [
        "nobody' OR '1'='1",
        "nobody\" OR \"1\"=\"1",
        "' OR 1=1 --",
        "alice@example.com' --",
        "1 OR 1=1",
    ] {
        assert_eq!(found(store, &user(name)), None, "user name {name:?}");
        let q = access(name);
        assert_eq!(found(store, &q), None, "access token {name:?}");
        assert_eq!(found(store, &grant_query(name, CID)), None, "grant {name:?}");
        assert_eq!(found(store, &refresh_query(name, CID)), None, "refresh {name:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Rule 2: access token.

pub(crate) fn an_access_token_alone_finds_its_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let b = saved(store, access("b.access"));
    assert_eq!(found(store, &access("alice.access")), Some(a));
    assert_eq!(found(store, &access("b.access")), Some(b));
    assert_eq!(found(store, &access("c.access")), None);
    // Non-key fields in the query do not matter.
    let q = access("b.access")
        .with_api_domain("elsewhere")
        .with_expiry_time(1);
    assert!(found(store, &q).is_some());
}

pub(crate) fn an_access_token_is_ignored_when_client_credentials_are_given<S: TokenStore>(store: &S) {
    saved(store, full("alice"));
    let b = saved(store, full("bob"));
    // Alice's access token, bob's refresh token, both credentials: rule 3, by refresh.
    let q = refresh_query("bob.refresh", CID).with_access_token("alice.access");
    assert_eq!(found(store, &q), Some(b));
}

// ---------------------------------------------------------------------------------------
// Rule 3: grant, then refresh, with client credentials.

pub(crate) fn a_grant_token_with_client_credentials_finds_its_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    assert_eq!(found(store, &grant_query("alice.grant", CID)), Some(a));
    assert_eq!(found(store, &grant_query("nobody.grant", CID)), None);
}

pub(crate) fn a_refresh_token_with_client_credentials_finds_its_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    assert_eq!(found(store, &refresh_query("alice.refresh", CID)), Some(a));
    assert_eq!(found(store, &refresh_query("nobody.refresh", CID)), None);
}

pub(crate) fn the_grant_token_is_tried_before_the_refresh_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    saved(store, full("bob"));
    let q = grant_query("alice.grant", CID).with_refresh_token("bob.refresh");
    assert_eq!(found(store, &q), Some(a));
}

pub(crate) fn the_refresh_token_is_tried_when_the_grant_token_finds_nothing<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let q = grant_query("nobody.grant", CID).with_refresh_token("alice.refresh");
    assert_eq!(found(store, &q), Some(a));
}

pub(crate) fn the_refresh_token_is_tried_when_the_grant_hit_has_another_client_id<S: TokenStore>(store: &S) {
    saved(store, full("other").with_client_id("2000.OTHER"));
    let a = saved(store, full("alice"));
    let q = grant_query("other.grant", CID).with_refresh_token("alice.refresh");
    assert_eq!(found(store, &q), Some(a));
}

pub(crate) fn a_grant_hit_under_another_client_id_finds_nothing<S: TokenStore>(store: &S) {
    let o = saved(store, full("other").with_client_id("2000.OTHER"));
    assert_eq!(found(store, &grant_query("other.grant", CID)), None);
    assert_eq!(found(store, &grant_query("other.grant", "2000.OTHER")), Some(o));
}

pub(crate) fn a_refresh_hit_under_another_client_id_finds_nothing<S: TokenStore>(store: &S) {
    let o = saved(store, full("other").with_client_id("2000.OTHER"));
    assert_eq!(found(store, &refresh_query("other.refresh", CID)), None);
    assert_eq!(
        found(store, &refresh_query("other.refresh", "2000.OTHER")),
        Some(o)
    );
}

pub(crate) fn a_hit_on_a_token_without_client_id_finds_nothing<S: TokenStore>(store: &S) {
    saved(
        store,
        OAuthToken::default()
            .with_grant_token("g")
            .with_refresh_token("r"),
    );
    assert_eq!(found(store, &grant_query("g", CID)), None);
    assert_eq!(found(store, &refresh_query("r", CID)), None);
}

pub(crate) fn the_client_secret_is_not_compared<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let q = refresh_query("alice.refresh", CID).with_client_secret("rotated");
    assert_eq!(found(store, &q), Some(a.clone()), "refresh");
    let q = grant_query("alice.grant", CID).with_client_secret("rotated");
    assert_eq!(found(store, &q), Some(a), "grant");
}

pub(crate) fn find_returns_the_full_stored_token_with_its_id<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    assert!(a.id().is_some());
    assert_eq!(a, full("alice").with_id(id_of(&a)));
    for (what, q) in every_key_query(&a) {
        assert_eq!(found(store, &q), Some(a.clone()), "by {what}");
    }
}

// ---------------------------------------------------------------------------------------
// save_token.

pub(crate) fn saving_a_token_without_grant_refresh_or_access_token_is_invalid_and_writes_nothing<
    S: TokenStore,
>(
    store: &S,
) {
    let no_tokens = full("alice")
        .with_grant_token("")
        .with_refresh_token("")
        .with_access_token("");
    assert_eq!(no_tokens.access_token(), None);
    assert_refused(store, no_tokens.clone());
    assert!(all(store).is_empty());
    assert_refused(store, OAuthToken::default());
    let a = saved(store, full("alice"));
    // Even when it names a stored token (by id or by user name) whose merged form would
    // carry tokens.
    assert_refused(
        store,
        OAuthToken::default().with_id(id_of(&a)).with_api_domain("d"),
    );
    assert_refused(store, no_tokens.with_api_domain("elsewhere"));
    assert_eq!(all(store), vec![a]);
}

pub(crate) fn a_grant_refresh_or_access_token_alone_is_enough_to_save<S: TokenStore>(store: &S) {
    let g = saved(store, OAuthToken::default().with_grant_token("g"));
    let r = saved(store, OAuthToken::default().with_refresh_token("r"));
    let a = saved(store, OAuthToken::default().with_access_token("a"));
    let mut expected = vec![g, r, a];
    expected.sort_by(|x, y| x.id().cmp(&y.id()));
    assert_eq!(all(store), expected);
}

pub(crate) fn saving_assigns_a_fresh_url_safe_id_of_at_least_22_characters<S: TokenStore>(store: &S) {
    let t = saved(store, full("alice"));
    let id = id_of(&t);
    assert_fresh_id(&id);
    assert_eq!(by_id(store, &id), Some(t));
}

pub(crate) fn fresh_ids_are_distinct<S: TokenStore>(store: &S) {
    let ids: BTreeSet<String> = (0..64)
        .map(|i| id_of(&saved(store, access(&format!("access-{i}")))))
        .collect();
    assert_eq!(ids.len(), 64, "64 saves, 64 distinct ids");
    for id in &ids {
        assert_fresh_id(id);
    }
    assert_eq!(all(store).len(), 64);
}

pub(crate) fn an_insert_keeps_the_tokens_own_id<S: TokenStore>(store: &S) {
    let t = saved(store, full("alice").with_id("my-id"));
    assert_eq!(t.id(), Some("my-id"));
    assert_eq!(by_id(store, "my-id"), Some(t.clone()));
    assert_eq!(found(store, &user("alice@example.com")), Some(t));
}

pub(crate) fn saving_with_an_existing_id_updates_that_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let id = id_of(&a);
    let u = saved(store, access("new.access").with_id(&id));
    assert_eq!(u.id(), Some(id.as_str()));
    assert_eq!(u, a.clone().with_access_token("new.access"));
    assert_eq!(all(store), vec![u.clone()]);
    assert_eq!(found(store, &access("new.access")), Some(u));
}

pub(crate) fn an_update_by_id_takes_precedence_over_find_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let b = saved(store, full("bob"));
    // The token names A by id and B by access token (and by grant/refresh with CID).
    let t = full("bob")
        .with_user_name("")
        .with_id(id_of(&a))
        .with_api_domain("updated");
    let u = saved(store, t);
    assert_eq!(u.id(), a.id(), "A was updated");
    assert_eq!(u.user_name(), Some("alice@example.com"));
    assert_eq!(u.access_token(), Some("bob.access"));
    assert_eq!(by_id(store, &id_of(&b)), Some(b), "B is untouched");
    assert_eq!(all(store).len(), 2);
}

pub(crate) fn saving_without_an_id_updates_the_token_found_by_user_name<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let u = saved(store, user("alice@example.com").with_access_token("new.access"));
    assert_eq!(u, a.with_access_token("new.access"));
    assert_eq!(all(store), vec![u]);
}

pub(crate) fn saving_without_an_id_updates_the_token_found_by_access_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let u = saved(store, access("alice.access").with_api_domain("updated"));
    assert_eq!(u, a.with_api_domain("updated"));
    assert_eq!(all(store), vec![u]);
}

pub(crate) fn saving_without_an_id_updates_the_token_found_by_refresh_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    // Grant unknown, refresh known, secret rotated: an update, and the secret overwritten.
    let t = refresh_query("alice.refresh", CID)
        .with_grant_token("new.grant")
        .with_client_secret("rotated")
        .with_access_token("new.access");
    let u = saved(store, t);
    let expected = a
        .with_grant_token("new.grant")
        .with_client_secret("rotated")
        .with_access_token("new.access");
    assert_eq!(u, expected);
    assert_eq!(all(store), vec![u]);
}

pub(crate) fn saving_with_an_unknown_id_updates_the_token_find_token_returns_and_keeps_the_stored_id<
    S: TokenStore,
>(
    store: &S,
) {
    let a = saved(store, full("alice"));
    let t = user("alice@example.com")
        .with_id("unknown-id")
        .with_access_token("new.access");
    let u = saved(store, t);
    assert_eq!(u.id(), a.id(), "the stored id stays");
    assert_eq!(u, a.with_access_token("new.access"));
    assert_eq!(by_id(store, "unknown-id"), None);
    assert_eq!(all(store), vec![u]);
}

pub(crate) fn a_save_that_matches_nothing_inserts_a_new_token<S: TokenStore>(store: &S) {
    // No usable key (access token with client id; refresh without secret): two inserts.
    let t = access("a1").with_client_id(CID);
    let first = saved(store, t.clone());
    let second = saved(store, t);
    assert_ne!(first.id(), second.id());
    let t = OAuthToken::default().with_refresh_token("r1").with_client_id(CID);
    let third = saved(store, t.clone());
    let fourth = saved(store, t);
    assert_ne!(third.id(), fourth.id());
    assert_eq!(all(store).len(), 4);
    // A user name that finds nothing does not fall through either.
    let a = saved(store, full("alice"));
    let b = saved(store, full("alice").with_user_name("bob@example.com"));
    assert_ne!(a.id(), b.id());
    assert_eq!(all(store).len(), 6);
}

pub(crate) fn a_save_whose_grant_hit_has_another_client_id_inserts_a_new_token<S: TokenStore>(store: &S) {
    let o = saved(store, full("other").with_client_id("2000.OTHER"));
    let n = saved(store, grant_query("other.grant", CID));
    assert_ne!(n.id(), o.id());
    assert_eq!(by_id(store, &id_of(&o)), Some(o));
    assert_eq!(all(store).len(), 2);
    assert_eq!(found(store, &grant_query("other.grant", CID)), Some(n));
}

pub(crate) fn an_update_keeps_the_fields_absent_from_the_saved_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let u = saved(store, access("new.access").with_id(id_of(&a)));
    assert_eq!(u.user_name(), a.user_name());
    assert_eq!(u.client_id(), a.client_id());
    assert_eq!(u.client_secret(), a.client_secret());
    assert_eq!(u.grant_token(), a.grant_token());
    assert_eq!(u.refresh_token(), a.refresh_token());
    assert_eq!(u.expiry_time(), a.expiry_time());
    assert_eq!(u.redirect_url(), a.redirect_url());
    assert_eq!(u.api_domain(), a.api_domain());
    assert_eq!(u, a.with_access_token("new.access"));
}

pub(crate) fn an_update_overwrites_every_field_present_in_the_saved_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let id = id_of(&a);
    let new = full("bob")
        .with_client_id("2000.NEW")
        .with_client_secret("new-secret")
        .with_expiry_time(5);
    let u = saved(store, new.clone().with_id(&id));
    assert_eq!(u.user_name(), Some("bob@example.com"));
    assert_eq!(u.client_id(), Some("2000.NEW"));
    assert_eq!(u.client_secret(), Some("new-secret"));
    assert_eq!(u.grant_token(), Some("bob.grant"));
    assert_eq!(u.refresh_token(), Some("bob.refresh"));
    assert_eq!(u.access_token(), Some("bob.access"));
    assert_eq!(u.expiry_time(), Some(5));
    assert_eq!(u.redirect_url(), new.redirect_url());
    assert_eq!(u.api_domain(), new.api_domain());
    assert_eq!(u, new.with_id(&id));
    assert_eq!(all(store), vec![u]);
}

pub(crate) fn an_update_with_empty_strings_keeps_the_stored_values<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let t = raw(json!({
        "id": id_of(&a), "user_name": "", "client_id": "", "client_secret": "",
        "grant_token": "", "refresh_token": "", "access_token": "new.access",
        "redirect_url": "", "api_domain": ""
    }));
    let u = saved(store, t);
    assert_eq!(u, a.with_access_token("new.access"));
    assert_eq!(all(store), vec![u]);
}

pub(crate) fn saving_writes_back_exactly_what_is_stored<S: TokenStore>(store: &S) {
    // Insert: the id is written back.
    let a = saved(store, full("alice"));
    assert_eq!(by_id(store, &id_of(&a)), Some(a.clone()));
    // Update by find: the stored id and the merged fields are written back.
    let u = saved(store, access("alice.access").with_expiry_time(7));
    assert_eq!(u.id(), a.id());
    assert_eq!(u.refresh_token(), Some("alice.refresh"));
    assert_eq!(by_id(store, &id_of(&a)), Some(u));
    // Update with an unknown id: the stored id is written back over it.
    let v = saved(
        store,
        user("alice@example.com").with_id("x").with_access_token("v"),
    );
    assert_eq!(v.id(), a.id());
    assert_eq!(by_id(store, &id_of(&a)), Some(v));
}

pub(crate) fn an_update_that_would_take_another_tokens_user_name_is_invalid_and_writes_nothing<
    S: TokenStore,
>(
    store: &S,
) {
    saved(store, full("alice"));
    let b = saved(store, full("bob"));
    let t = user("alice@example.com")
        .with_id(id_of(&b))
        .with_access_token("stolen.access");
    assert_refused(store, t);
    assert_eq!(found(store, &access("stolen.access")), None);
    assert_eq!(
        found(store, &user("alice@example.com")).and_then(|t| t.access_token().map(str::to_owned)),
        Some("alice.access".to_owned())
    );
}

pub(crate) fn an_update_may_keep_its_own_user_name<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let t = user("alice@example.com")
        .with_id(id_of(&a))
        .with_access_token("new.access");
    let u = saved(store, t);
    assert_eq!(u, a.with_access_token("new.access"));
}

pub(crate) fn an_update_may_change_its_user_name_and_frees_the_old_one<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let u = saved(
        store,
        user("carol@example.com")
            .with_id(id_of(&a))
            .with_access_token("c"),
    );
    assert_eq!(found(store, &user("alice@example.com")), None);
    assert_eq!(found(store, &user("carol@example.com")), Some(u));
    let n = saved(store, user("alice@example.com").with_access_token("n"));
    assert_ne!(n.id(), a.id(), "the freed name is a new token");
    assert_eq!(n.refresh_token(), None);
    assert_eq!(all(store).len(), 2);
}

pub(crate) fn concurrent_saves_of_one_user_name_end_with_one_record<S: TokenStore + Sync>(store: &S) {
    const THREADS: usize = 8;
    const USERS: usize = 16;
    // One round per user name; in each, every thread saves that user once. A round starts
    // when all threads are spinning at the gate (a `Barrier` wakes its waiters one by one,
    // which lets the first save finish before the next begins), so that the threads on the
    // CPUs race their first saves. A worker never stops early (a failed or panicking save
    // is recorded and checked after the join), so a broken store fails instead of hanging.
    let ready = AtomicUsize::new(0);
    let gate = AtomicUsize::new(0);
    let outcomes: Vec<String> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|worker| {
                let (ready, gate) = (&ready, &gate);
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for u in 0..USERS {
                        if ready.fetch_add(1, Ordering::SeqCst) + 1 == THREADS * (u + 1) {
                            gate.store(u + 1, Ordering::SeqCst);
                        }
                        while gate.load(Ordering::SeqCst) <= u {
                            thread::yield_now();
                        }
                        let name = format!("user-{u}@example.com");
                        let mut t = user(&name).with_access_token(format!("access-{u}-{worker}"));
                        let result = panic::catch_unwind(AssertUnwindSafe(|| store.save_token(&mut t)));
                        match result {
                            Ok(Ok(())) if t.user_name() == Some(name.as_str()) => {}
                            Ok(Ok(())) => failures.push(format!("{name}: written back {t:?}")),
                            Ok(Err(e)) => failures.push(format!("{name}: save_token failed: {e}")),
                            Err(_) => failures.push(format!("{name}: save_token panicked")),
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| vec!["a worker panicked".to_owned()]))
            .collect()
    });
    assert!(outcomes.is_empty(), "concurrent saves: {outcomes:#?}");
    let tokens = all(store);
    for u in 0..USERS {
        let name = format!("user-{u}@example.com");
        let holders: Vec<_> = tokens
            .iter()
            .filter(|t| t.user_name() == Some(name.as_str()))
            .collect();
        assert_eq!(holders.len(), 1, "{name}: {holders:?}");
        assert_eq!(found(store, &user(&name)).as_ref(), Some(holders[0]));
    }
    assert_eq!(tokens.len(), USERS);
}

// ---------------------------------------------------------------------------------------
// Index ownership: an access, refresh or grant entry belongs to the last token to claim it.

pub(crate) fn a_value_shared_by_two_tokens_finds_the_last_saved<S: TokenStore>(store: &S) {
    for key in KEYS {
        let value = format!("{key:?}-shared");
        let (_, b) = two_sharing(store, key, &value);
        assert_eq!(found(store, &key.query(&value)), Some(b), "{key:?}");
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn resaving_a_token_that_carries_a_shared_value_claims_it<S: TokenStore>(store: &S) {
    for key in KEYS {
        let value = format!("{key:?}-shared");
        let (a, _) = two_sharing(store, key, &value);
        // Re-save A without naming the shared value: its merged form still carries it.
        let a = saved(store, key.other().update(&id_of(&a), "unrelated"));
        assert_eq!(key.get(&a), Some(value.as_str()));
        assert_eq!(found(store, &key.query(&value)), Some(a), "{key:?}");
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn deleting_the_token_that_does_not_own_a_shared_value_leaves_the_entry_alone<S: TokenStore>(
    store: &S,
) {
    for key in KEYS {
        let value = format!("{key:?}-shared");
        let (a, b) = two_sharing(store, key, &value);
        delete(store, &id_of(&a));
        assert_eq!(found(store, &key.query(&value)), Some(b), "{key:?}");
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn changing_the_value_of_the_token_that_does_not_own_it_leaves_the_entry_alone<S: TokenStore>(
    store: &S,
) {
    for key in KEYS {
        let value = format!("{key:?}-shared");
        let (a, b) = two_sharing(store, key, &value);
        let a = saved(store, key.update(&id_of(&a), "changed"));
        assert_eq!(found(store, &key.query(&value)), Some(b), "{key:?}: old value");
        assert_eq!(found(store, &key.query("changed")), Some(a), "{key:?}: new value");
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn when_the_owner_changes_a_shared_value_the_value_finds_nothing<S: TokenStore>(store: &S) {
    for key in KEYS {
        let value = format!("{key:?}-shared");
        let (a, b) = two_sharing(store, key, &value);
        let b = saved(store, key.update(&id_of(&b), "changed"));
        assert_eq!(found(store, &key.query(&value)), None, "{key:?}: old value");
        assert_eq!(found(store, &key.query("changed")), Some(b), "{key:?}: new value");
        // A still carries the value; it just is not indexed any more.
        let a = by_id(store, &id_of(&a)).expect("A is still stored");
        assert_eq!(key.get(&a), Some(value.as_str()));
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn when_the_owner_is_deleted_a_shared_value_finds_nothing<S: TokenStore>(store: &S) {
    for key in KEYS {
        let value = format!("{key:?}-shared");
        let (a, b) = two_sharing(store, key, &value);
        delete(store, &id_of(&b));
        assert_eq!(found(store, &key.query(&value)), None, "{key:?}");
        assert_eq!(all(store), vec![a]);
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn a_value_dropped_by_its_only_token_finds_nothing<S: TokenStore>(store: &S) {
    for key in KEYS {
        let a = saved(store, key.token("a", "before"));
        let a2 = saved(store, key.update(&id_of(&a), "after"));
        assert_eq!(found(store, &key.query("before")), None, "{key:?}: old value");
        assert_eq!(found(store, &key.query("after")), Some(a2), "{key:?}: new value");
        store.delete_tokens().expect("delete_tokens");
    }
}

pub(crate) fn stale_index_entries_never_find_a_new_token_under_a_reused_id<S: TokenStore>(store: &S) {
    let old = saved(store, full("alice").with_id("reused"));
    delete(store, "reused");
    let new = saved(store, full("bob").with_id("reused"));
    assert_eq!(new.id(), Some("reused"));
    for (what, q) in every_key_query(&old) {
        assert_eq!(found(store, &q), None, "alice's {what} after delete and id reuse");
    }
    // The same after an update that drops every value.
    let newer = saved(store, full("carol").with_id("reused"));
    for (what, q) in every_key_query(&new) {
        assert_eq!(found(store, &q), None, "bob's {what} after the update");
    }
    for (what, q) in every_key_query(&newer) {
        assert_eq!(found(store, &q), Some(newer.clone()), "carol's {what}");
    }
}

// ---------------------------------------------------------------------------------------
// delete_token, delete_tokens, get_tokens, find_token_by_id.

pub(crate) fn deleting_an_absent_id_is_ok_and_changes_nothing<S: TokenStore>(store: &S) {
    delete(store, "absent");
    let a = saved(store, full("alice"));
    for id in ["absent", "", "1 OR 1=1", "%", "*"] {
        delete(store, id);
    }
    assert_eq!(all(store), vec![a.clone()]);
    delete(store, &id_of(&a));
    delete(store, &id_of(&a));
    assert!(all(store).is_empty());
}

pub(crate) fn delete_token_removes_the_token_and_all_its_index_entries<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let b = saved(store, full("bob"));
    delete(store, &id_of(&a));
    assert_eq!(by_id(store, &id_of(&a)), None);
    for (what, q) in every_key_query(&a) {
        assert_eq!(found(store, &q), None, "alice's {what}");
    }
    for (what, q) in every_key_query(&b) {
        assert_eq!(found(store, &q), Some(b.clone()), "bob's {what}");
    }
    assert_eq!(all(store), vec![b]);
    // The user name is free: a save of it inserts a new token with none of the old fields.
    let n = saved(store, user("alice@example.com").with_access_token("n"));
    assert_ne!(n.id(), a.id());
    assert_eq!(n.refresh_token(), None);
}

pub(crate) fn delete_tokens_removes_every_token_and_index_entry<S: TokenStore>(store: &S) {
    store.delete_tokens().expect("delete_tokens on an empty store");
    let tokens: Vec<_> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|tag| saved(store, full(tag)))
        .collect();
    store.delete_tokens().expect("delete_tokens");
    assert!(all(store).is_empty());
    for t in &tokens {
        assert_eq!(by_id(store, &id_of(t)), None);
        for (what, q) in every_key_query(t) {
            assert_eq!(found(store, &q), None, "{what} of {t:?}");
        }
    }
    let n = saved(store, user("alice@example.com").with_access_token("n"));
    assert_eq!(n.refresh_token(), None, "a new token, not the old one");
    assert_eq!(all(store), vec![n]);
}

pub(crate) fn get_tokens_returns_every_stored_token<S: TokenStore>(store: &S) {
    assert!(all(store).is_empty());
    let mut expected: Vec<_> = ["alice", "bob", "carol", "dave", "erin"]
        .into_iter()
        .map(|tag| saved(store, full(tag)))
        .collect();
    expected.push(saved(store, access("bare")));
    expected.sort_by(|a, b| a.id().cmp(&b.id()));
    assert_eq!(all(store), expected);
}

pub(crate) fn find_token_by_id_of_an_absent_id_is_none<S: TokenStore>(store: &S) {
    assert_eq!(by_id(store, "absent"), None);
    saved(store, full("alice").with_id("present"));
    for id in [
        "absent", "", "1 OR 1=1", "%", "*", "present ", "PRESENT", "presen",
    ] {
        assert_eq!(by_id(store, id), None, "{id:?}");
    }
}

pub(crate) fn find_token_by_id_returns_the_full_stored_token<S: TokenStore>(store: &S) {
    let a = saved(store, full("alice"));
    let b = saved(store, full("bob"));
    assert_eq!(by_id(store, &id_of(&a)), Some(a));
    assert_eq!(by_id(store, &id_of(&b)), Some(b));
}

// ---------------------------------------------------------------------------------------
// Any value is legal in any field.

pub(crate) fn odd_values_are_stored_and_found_exactly_by_every_key<S: TokenStore>(store: &S) {
    let tokens: Vec<OAuthToken> = ODD_VALUES
        .iter()
        .map(|v| {
            let t = OAuthToken::default()
                .with_id(*v)
                .with_user_name(*v)
                .with_client_id(*v)
                .with_client_secret(*v)
                .with_grant_token(*v)
                .with_refresh_token(*v)
                .with_access_token(*v)
                .with_redirect_url(*v)
                .with_api_domain(*v);
            let s = saved(store, t.clone());
            assert_eq!(s, t, "{v:?} is stored as given, under its own id");
            s
        })
        .collect();
    for (v, t) in ODD_VALUES.iter().zip(&tokens) {
        assert_eq!(by_id(store, v).as_ref(), Some(t), "by id {v:?}");
        assert_eq!(found(store, &user(v)).as_ref(), Some(t), "by user name {v:?}");
        assert_eq!(
            found(store, &access(v)).as_ref(),
            Some(t),
            "by access token {v:?}"
        );
        assert_eq!(
            found(store, &grant_query(v, v)).as_ref(),
            Some(t),
            "by grant {v:?}"
        );
        assert_eq!(
            found(store, &refresh_query(v, v)).as_ref(),
            Some(t),
            "by refresh {v:?}"
        );
    }
    let mut expected = tokens.clone();
    expected.sort_by(|a, b| a.id().cmp(&b.id()));
    assert_eq!(all(store), expected);
    // Deleting the SQL-looking id removes that token only.
    delete(store, "1 OR 1=1");
    assert_eq!(by_id(store, "1 OR 1=1"), None);
    assert_eq!(found(store, &user("1 OR 1=1")), None);
    assert_eq!(all(store).len(), ODD_VALUES.len() - 1);
}

pub(crate) fn a_one_mebibyte_value_is_stored_and_found_exactly<S: TokenStore>(store: &S) {
    let big: String = (0..1usize << 20)
        .map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz"[i % 26]))
        .collect();
    assert_eq!(big.len(), 1 << 20);
    let t = OAuthToken::default()
        .with_user_name(&big)
        .with_client_id(CID)
        .with_client_secret(&big)
        .with_refresh_token(&big)
        .with_access_token(&big);
    let s = saved(store, t.clone());
    assert_eq!(s, t.with_id(id_of(&s)));
    assert_eq!(by_id(store, &id_of(&s)).as_ref(), Some(&s));
    assert_eq!(found(store, &user(&big)).as_ref(), Some(&s), "by user name");
    assert_eq!(found(store, &access(&big)).as_ref(), Some(&s), "by access token");
    assert_eq!(
        found(store, &refresh_query(&big, CID)).as_ref(),
        Some(&s),
        "by refresh"
    );
    // One byte off finds nothing.
    let mut near = big.clone();
    near.pop();
    near.push('!');
    assert_eq!(found(store, &user(&near)), None);
    assert_eq!(found(store, &access(&near)), None);
    assert_eq!(found(store, &user(&big[..big.len() - 1])), None);
}
