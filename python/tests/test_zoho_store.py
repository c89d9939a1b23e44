"""tokenvault.zoho.VaultTokenStore against the SDK's conventions, and each defect of the
SDK's stores (FileStore, DBStore, the custom SQLite store of Zoho's guide) shown absent.

Protects against: a store that breaks the SDK's token flow (a find that does not merge, a
save that sets no id, an expiry of the wrong type), that answers with someone else's token,
or that hides a wrong passphrase or a damaged vault behind a None."""

import os
import stat

import pytest

from helpers import PASSPHRASE, damaged_vault, import_sdk_or_skip, run_python

import_sdk_or_skip()

import tokenvault  # noqa: E402
from tokenvault.zoho import VaultTokenStore  # noqa: E402
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken  # noqa: E402
from zohocrmsdk.src.com.zoho.api.authenticator.store.token_store import TokenStore  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature  # noqa: E402

EXPIRY = "1764000000000"


def alice_token(**overrides):
    fields = dict(
        client_id="1000.ALICE",
        client_secret="alice-secret",
        refresh_token="1000.refresh.alice",
        access_token="1000.access.alice",
        grant_token="1000.grant.alice",
        redirect_url="https://example.com/cb",
        user_signature=UserSignature("alice@example.com"),
        api_domain="https://www.zohoapis.com",
    )
    fields.update(overrides)
    t = OAuthToken(**fields)
    t.set_expires_in(EXPIRY)
    return t


def user_token(name, n):
    t = OAuthToken(
        client_id="1000.CLIENT",
        client_secret="secret",
        refresh_token=f"1000.refresh.{n}",
        access_token=f"1000.access.{n}",
        user_signature=UserSignature(name),
    )
    t.set_expires_in(str(1_764_000_000_000 + n))
    return t


def by_user(name):
    return OAuthToken(user_signature=UserSignature(name))


def fields(t):
    sig = t.get_user_signature()
    return dict(
        id=t.get_id(),
        user=sig.get_name() if sig is not None else None,
        client_id=t.get_client_id(),
        client_secret=t.get_client_secret(),
        refresh=t.get_refresh_token(),
        access=t.get_access_token(),
        grant=t.get_grant_token(),
        expiry=t.get_expires_in(),
        redirect=t.get_redirect_url(),
        api_domain=t.get_api_domain(),
    )


@pytest.fixture
def store(tmp_path):
    s = VaultTokenStore(tmp_path / "vault", PASSPHRASE, kdf="floor")
    yield s
    s.close()


# --- the SDK's conventions -------------------------------------------------------------


def test_it_is_an_sdk_token_store(store):
    assert isinstance(store, TokenStore)
    assert "VaultTokenStore" in repr(store) and PASSPHRASE not in repr(store)


def test_save_token_sets_the_id_on_the_sdk_token(store):
    t = alice_token()
    assert store.save_token(t) is None
    assert isinstance(t.get_id(), str) and len(t.get_id()) >= 22
    again = alice_token(access_token="1000.access.new")
    store.save_token(again)
    assert again.get_id() == t.get_id()
    assert len(store.get_tokens()) == 1


def test_find_token_merges_into_the_token_it_is_given_and_returns_it(store):
    saved = alice_token()
    store.save_token(saved)
    query = by_user("alice@example.com")
    result = store.find_token(query)
    assert result is query
    assert fields(query) == fields(saved)


def test_find_token_fills_only_fields_that_are_none(store):
    store.save_token(alice_token())
    query = by_user("alice@example.com")
    query.set_client_id("1000.CALLER")
    query.set_expires_in("5")
    store.find_token(query)
    assert query.get_client_id() == "1000.CALLER"
    assert query.get_expires_in() == "5"
    assert query.get_refresh_token() == "1000.refresh.alice"


def test_a_user_name_decides_alone_whatever_else_the_query_carries(store):
    store.save_token(alice_token())
    store.save_token(user_token("bob@example.com", 2))
    # Bob's user name with Alice's access token: Bob's token, as the first rule says.
    query = by_user("bob@example.com")
    query.set_access_token("1000.access.alice")
    assert store.find_token(query) is query
    assert query.get_refresh_token() == "1000.refresh.2"
    assert query.get_access_token() == "1000.access.alice"
    # An unknown user name with Alice's access token finds nothing.
    query = by_user("nobody@example.com")
    query.set_access_token("1000.access.alice")
    assert store.find_token(query) is None


def test_find_token_with_no_match_returns_none_and_leaves_the_token(store):
    store.save_token(alice_token())
    query = by_user("nobody@example.com")
    assert store.find_token(query) is None
    assert query.get_access_token() is None and query.get_id() is None


def test_find_token_by_access_token_and_by_grant_then_refresh(store):
    store.save_token(alice_token())
    assert store.find_token(OAuthToken(access_token="1000.access.alice")) is not None
    q = OAuthToken(client_id="1000.ALICE", client_secret="x", grant_token="1000.grant.alice")
    assert fields(store.find_token(q))["user"] == "alice@example.com"
    q = OAuthToken(client_id="1000.ALICE", client_secret="x", refresh_token="1000.refresh.alice")
    assert fields(store.find_token(q))["user"] == "alice@example.com"


def test_a_non_oauth_token_is_passed_through_as_the_sdk_stores_do(store):
    sentinel = object()
    assert store.find_token(sentinel) is sentinel
    assert store.save_token(sentinel) is None
    assert store.get_tokens() == []


def test_expiry_stays_the_sdks_string_of_epoch_milliseconds(store, tmp_path):
    store.save_token(alice_token())
    found = store.find_token(by_user("alice@example.com"))
    assert found.get_expires_in() == EXPIRY
    assert store.vault.find_token({"user_name": "alice@example.com"}).expiry_time == int(EXPIRY)
    bad = alice_token()
    bad.set_expires_in("tomorrow")
    with pytest.raises(SDKException) as caught:
        store.save_token(bad)
    assert "epoch milliseconds" in str(caught.value)


def test_find_token_by_id_returns_an_sdk_token_or_none(store):
    t = alice_token()
    store.save_token(t)
    found = store.find_token_by_id(t.get_id())
    assert isinstance(found, OAuthToken) and fields(found) == fields(t)
    assert store.find_token_by_id("unknown") is None
    assert store.find_token_by_id(None) is None


def test_get_tokens_returns_sdk_tokens_that_the_sdk_can_use(store):
    a, b = alice_token(), user_token("bob@example.com", 2)
    store.save_token(a)
    store.save_token(b)
    got = {t.get_id(): fields(t) for t in store.get_tokens()}
    assert got == {a.get_id(): fields(a), b.get_id(): fields(b)}
    assert all(isinstance(t, OAuthToken) for t in store.get_tokens())


def test_delete_token_deletes_one_and_ignores_unknown_ids(store):
    a, b = alice_token(), user_token("bob@example.com", 2)
    store.save_token(a)
    store.save_token(b)
    store.delete_token(a.get_id())
    store.delete_token("unknown")
    store.delete_token(None)
    assert [t.get_id() for t in store.get_tokens()] == [b.get_id()]
    assert store.find_token(by_user("alice@example.com")) is None


def test_a_token_with_nothing_to_store_is_an_sdk_exception(store):
    t = OAuthToken(user_signature=UserSignature("carol@example.com"))
    with pytest.raises(SDKException) as caught:
        store.save_token(t)
    assert caught.value.code == "TOKEN_STORE"
    assert isinstance(caught.value.cause, tokenvault.InvalidToken)
    assert store.get_tokens() == []


def test_a_token_carrying_only_an_id_is_found_by_that_id(store):
    # What OAuthToken.revoke(id) asks; the SDK's stores answer None (FileStore) or the
    # first row (the custom SQLite store), so revoke never revokes the right token.
    a, b = alice_token(), user_token("bob@example.com", 2)
    store.save_token(a)
    store.save_token(b)
    query = OAuthToken(id=b.get_id())
    assert store.find_token(query) is query
    assert query.get_refresh_token() == "1000.refresh.2"
    assert store.find_token(OAuthToken(id="unknown")) is None


# --- failures reach the SDK as SDKException, never as None -----------------------------


def test_a_wrong_passphrase_is_an_sdk_exception_with_a_clear_message(tmp_path):
    VaultTokenStore(tmp_path / "vault", PASSPHRASE, kdf="floor").close()
    with pytest.raises(SDKException) as caught:
        VaultTokenStore(tmp_path / "vault", "Zebra-Passphrase-9", kdf="floor")
    e = caught.value
    assert e.code == "TOKEN_STORE"
    assert "passphrase does not unlock the token vault" in str(e)
    assert isinstance(e.cause, tokenvault.WrongPassphrase)
    assert isinstance(e.__cause__, tokenvault.WrongPassphrase)
    assert "Zebra-Passphrase-9" not in str(e)


def test_a_vault_whose_only_record_is_damaged_is_an_sdk_exception_at_open(tmp_path):
    from helpers import damage_blob

    path = tmp_path / "vault"
    with VaultTokenStore(path, PASSPHRASE, kdf="floor") as s:
        s.vault.save_token({"user_name": "big", "access_token": "A" * (1 << 20)})
    damage_blob(path)
    with pytest.raises(SDKException) as caught:
        VaultTokenStore(path, PASSPHRASE, kdf="floor")
    assert "damaged or was tampered with" in str(caught.value)
    assert isinstance(caught.value.cause, tokenvault.Corrupted)


def test_a_damaged_record_is_an_sdk_exception_not_none(tmp_path):
    path, intact = damaged_vault(tmp_path)
    with VaultTokenStore(path, PASSPHRASE, kdf="floor") as s:
        for call in (
            lambda: s.find_token(by_user("big")),
            lambda: s.find_token(OAuthToken(access_token="A" * (1 << 20))),
            s.get_tokens,
        ):
            with pytest.raises(SDKException) as caught:
                call()
            assert isinstance(caught.value.cause, tokenvault.Corrupted)
            assert "damaged or was tampered with" in str(caught.value)
        assert fields(s.find_token(by_user("u1")))["access"] == "a1"


def test_a_vault_open_in_another_store_is_an_sdk_exception(store, tmp_path):
    with pytest.raises(SDKException) as caught:
        VaultTokenStore(tmp_path / "vault", PASSPHRASE, kdf="floor")
    assert isinstance(caught.value.cause, tokenvault.VaultLocked)
    assert "open in another process" in str(caught.value)


def test_create_false_does_not_create(tmp_path):
    with pytest.raises(SDKException) as caught:
        VaultTokenStore(tmp_path / "missing", PASSPHRASE, kdf="floor", create=False)
    assert isinstance(caught.value.cause, tokenvault.VaultNotFound)
    assert not (tmp_path / "missing").exists()


def test_a_closed_store_raises_sdk_exceptions(store):
    store.close()
    store.close()
    with pytest.raises(SDKException):
        store.get_tokens()


# --- the SDK stores' defects, absent -------------------------------------------------


def test_sql_in_a_user_name_finds_and_overwrites_nothing(store):
    alice = alice_token()
    store.save_token(alice)
    for n, name in enumerate(["nobody' OR '1'='1", "alice@example.com' --", "' OR 1=1 --", "o'brien"]):
        assert store.find_token(by_user(name)) is None
        mallory = user_token(name, 100 + n)
        store.save_token(mallory)
        assert mallory.get_id() != alice.get_id()
        assert fields(store.find_token(by_user(name)))["user"] == name
    assert fields(store.find_token(by_user("alice@example.com"))) == fields(alice)
    assert len(store.get_tokens()) == 5


def test_sql_as_an_id_deletes_nothing(store):
    for n in range(3):
        store.save_token(user_token(f"user{n}@example.com", n))
    for injection in ["1 OR 1=1", "1' OR '1'='1", "*", "%"]:
        store.delete_token(injection)
        assert store.find_token_by_id(injection) is None
    assert len(store.get_tokens()) == 3


def test_a_lookup_with_no_usable_key_never_returns_the_first_row(store):
    store.save_token(alice_token())
    no_key = [
        by_user("nobody@example.com"),
        OAuthToken(client_id="1000.ALICE", client_secret="alice-secret", grant_token="1000.grant.other"),
        OAuthToken(access_token="1000.access.other"),
        OAuthToken(id="1"),
    ]
    blank = OAuthToken(user_signature=UserSignature(""))
    no_key.append(blank)
    for query in no_key:
        before = fields(query)
        assert store.find_token(query) is None
        assert fields(query) == before


def test_the_eleventh_token_and_later_ones_save_with_distinct_ids(store):
    tokens = [user_token(f"user{n}@example.com", n) for n in range(25)]
    for t in tokens:
        store.save_token(t)
    ids = [t.get_id() for t in tokens]
    assert len(set(ids)) == 25
    for n, t in enumerate(tokens):
        assert fields(store.find_token_by_id(t.get_id()))["user"] == f"user{n}@example.com"


def test_delete_tokens_really_deletes_them(store, tmp_path):
    for n in range(12):
        store.save_token(user_token(f"user{n}@example.com", n))
    store.delete_tokens()
    assert store.get_tokens() == []
    store.close()
    with VaultTokenStore(tmp_path / "vault", PASSPHRASE, kdf="floor") as again:
        assert again.get_tokens() == []
        assert again.find_token(by_user("user3@example.com")) is None


def test_an_empty_store_opens_and_answers(tmp_path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with VaultTokenStore(empty_dir, PASSPHRASE, kdf="floor") as s:  # an empty directory
        assert s.get_tokens() == []
    with VaultTokenStore(empty_dir, PASSPHRASE, kdf="floor") as s:  # an empty vault
        assert s.get_tokens() == []
        assert s.find_token(by_user("alice@example.com")) is None
        assert s.find_token_by_id("1") is None
        s.delete_tokens()
        s.delete_token("1")


def test_a_stale_grant_token_does_not_hide_a_valid_refresh_token(store):
    store.save_token(alice_token())
    q = OAuthToken(
        client_id="1000.ALICE",
        client_secret="alice-secret",
        grant_token="1000.grant.already-used",
        refresh_token="1000.refresh.alice",
    )
    assert fields(store.find_token(q))["user"] == "alice@example.com"


def test_another_client_ids_grant_or_refresh_token_finds_nothing(store):
    store.save_token(alice_token())
    q = OAuthToken(client_id="1000.OTHER", client_secret="s", refresh_token="1000.refresh.alice")
    assert store.find_token(q) is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_vault_is_private_to_its_owner(store, tmp_path):
    store.save_token(alice_token())
    path = tmp_path / "vault"
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    for root, dirs, files in os.walk(path):
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) & 0o077 == 0, name


def test_import_tokenvault_never_needs_the_sdk_and_tokenvault_zoho_says_what_to_install():
    code = """
import json, sys
sys.modules["zohocrmsdk"] = None  # as if the SDK were not installed
import tokenvault
ok = tokenvault.Vault is not None
try:
    import tokenvault.zoho
    message = None
except ImportError as e:
    message = str(e)
print(json.dumps({"ok": ok, "message": message}))
"""
    result = run_python(code)
    assert result["ok"] is True
    assert result["message"] is not None
    assert "pip install 'tokenvault[zoho]'" in result["message"]
    assert "zohocrmsdk8-0" in result["message"]
