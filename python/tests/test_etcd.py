"""Vaults at etcd:// locations: a package built with etcd support ("etcd" in
tokenvault.FEATURES) against a real etcd cluster, and a package built without it refusing
such a location with an error that says how to build one with it.

The cluster's client endpoints come from TOKENVAULT_ETCD_ENDPOINTS (HOST:PORT,...), which
``scripts/etcd-cluster.sh run DIR -- scripts/test-python.sh`` (and scripts/test.sh) set.
The cluster tests are skipped only when the package was built without etcd; built with
it and without the endpoints, they fail and say so.

Protects against: a binding that loses a field or a token on the way to etcd, that locks
an etcd vault to one process (it is shared: the opposite of a directory vault's
VaultLocked), that turns a wrong passphrase or a bad location into the wrong (or no)
exception, that quietly takes an option it cannot honour (``engine=`` with etcd), or a
build without etcd whose error does not say how to get it."""

import os
import time
import uuid

import pytest

import tokenvault
from helpers import PASSPHRASE, import_sdk_or_skip, run_python
from tokenvault import Token

BUILT_WITH_ETCD = "etcd" in tokenvault.FEATURES

with_etcd = pytest.mark.skipif(not BUILT_WITH_ETCD, reason="the package was built without etcd")
without_etcd = pytest.mark.skipif(BUILT_WITH_ETCD, reason="the package was built with etcd")

ALICE = dict(
    user_name="alice@example.com",
    client_id="1000.ALICE",
    client_secret="alice-secret",
    refresh_token="1000.refresh.alice",
    access_token="1000.access.alice",
    grant_token="1000.grant.alice",
    expiry_time=1_764_000_000_000,
    redirect_url="https://example.com/cb",
    api_domain="https://www.zohoapis.com",
)
BOB = dict(
    user_name="bob@example.com",
    client_id="1000.BOB",
    client_secret="bob-secret",
    refresh_token="1000.refresh.bob",
    access_token="1000.access.bob",
)

# Nothing listens on the discard port: an unreachable cluster.
UNREACHABLE = "etcd://127.0.0.1:9/tokenvault-pytest/none"


@pytest.fixture
def at():
    """A location no other test (or run) uses, on the cluster of TOKENVAULT_ETCD_ENDPOINTS."""
    if not BUILT_WITH_ETCD:
        pytest.skip("the package was built without etcd")
    endpoints = os.environ.get("TOKENVAULT_ETCD_ENDPOINTS")
    if not endpoints:
        pytest.fail(
            "TOKENVAULT_ETCD_ENDPOINTS is not set, but this tokenvault was built with etcd: "
            "run the tests beside a cluster (scripts/etcd-cluster.sh run DIR -- "
            "scripts/test-python.sh, or scripts/test.sh)"
        )
    return f"etcd://{endpoints}/tokenvault-pytest/{os.getpid()}-{uuid.uuid4().hex}"


def create(location, passphrase=PASSPHRASE, **options):
    options.setdefault("kdf", "floor")
    return tokenvault.Vault.create(location, passphrase, **options)


def reopen(location, passphrase=PASSPHRASE, **options):
    """Vault.open with the floor KDF (the default would upgrade the vault's KDF)."""
    options.setdefault("kdf", "floor")
    return tokenvault.Vault.open(location, passphrase, **options)


def without_id(token):
    d = token.to_dict()
    del d["id"]
    return d


def test_features_name_what_the_build_includes():
    assert isinstance(tokenvault.FEATURES, tuple)
    assert "redb" in tokenvault.FEATURES
    assert set(tokenvault.FEATURES) <= {"redb", "etcd"}


# --- a build without etcd --------------------------------------------------------------


@without_etcd
def test_an_etcd_location_in_a_build_without_etcd_says_how_to_build_it(tmp_path):
    for call in (
        lambda: create("etcd://127.0.0.1:2379/vaults/x"),
        lambda: reopen("etcd://127.0.0.1:2379/vaults/x"),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        message = str(caught.value)
        assert "built without etcd" in message
        assert 'MATURIN_PEP517_ARGS="--features etcd" pip install ./python' in message


# --- a build with etcd: what needs no cluster ------------------------------------------


@with_etcd
@pytest.mark.parametrize(
    "bad", ["etcd://127.0.0.1:2379", "etcd://127.0.0.1:2379/", "etcd://nohost/p", "etcd://h:1,/p"]
)
def test_a_malformed_etcd_location_is_a_storage_error_that_says_so(bad):
    with pytest.raises(tokenvault.StorageError, match="not an etcd location"):
        create(bad)
    with pytest.raises(tokenvault.StorageError, match="not an etcd location"):
        reopen(bad)


@with_etcd
def test_an_unreachable_cluster_is_a_storage_error_within_the_timeout():
    started = time.monotonic()
    with pytest.raises(tokenvault.StorageError):
        reopen(UNREACHABLE, timeout=0.5)
    with pytest.raises(tokenvault.StorageError):
        create(UNREACHABLE, timeout=0.5)
    assert time.monotonic() - started < 8


@with_etcd
def test_engine_with_an_etcd_location_is_a_value_error():
    for engine in ("sled", "redb"):
        with pytest.raises(ValueError, match="leave engine out"):
            create(UNREACHABLE, engine=engine)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 1e300])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_a_value_error(tmp_path, timeout):
    with pytest.raises(ValueError, match="timeout"):
        create(tmp_path / "v", timeout=timeout)
    assert not (tmp_path / "v").exists()


def test_a_directory_vault_takes_and_ignores_a_timeout(tmp_path):
    with create(tmp_path / "v", timeout=0.25) as v:
        v.save_token(ALICE)
        assert v.location == str(tmp_path / "v") and v.path == tmp_path / "v"
    with reopen(tmp_path / "v", timeout=30) as v:
        assert len(v.get_tokens()) == 1


def test_a_location_of_another_scheme_is_a_value_error(tmp_path):
    for location in ("s3://bucket/vaults/x", "ETCD://127.0.0.1:2379/x", "file:///tmp/x"):
        with pytest.raises(ValueError, match="not a vault location"):
            create(location)


# --- a build with etcd, on the cluster -------------------------------------------------


def test_create_at_a_fresh_location_and_the_six_methods_round_trip(at):
    with create(at) as v:
        assert v.engine == "etcd"
        assert v.location == at and v.path is None
        assert repr(v) == f"<tokenvault.Vault {at!r} open>"
        assert v.get_tokens() == []

        alice = v.save_token(Token(**ALICE))
        bob = v.save_token(dict(BOB))
        assert alice.id and bob.id and alice.id != bob.id
        assert without_id(v.find_token({"user_name": ALICE["user_name"]})) == ALICE
        assert v.find_token({"access_token": BOB["access_token"]}) == bob
        assert (
            v.find_token(
                {
                    "client_id": ALICE["client_id"],
                    "client_secret": ALICE["client_secret"],
                    "refresh_token": ALICE["refresh_token"],
                }
            )
            == alice
        )
        assert v.find_token_by_id(alice.id) == alice
        assert v.find_token_by_id("unknown") is None
        assert sorted(t.user_name for t in v.get_tokens()) == [ALICE["user_name"], BOB["user_name"]]

        # An update keeps the id and every field it does not carry.
        updated = v.save_token({"user_name": ALICE["user_name"], "access_token": "fresh"})
        assert updated.id == alice.id and updated.refresh_token == ALICE["refresh_token"]

        v.delete_token(bob.id)
        assert v.find_token_by_id(bob.id) is None
        assert v.find_token({"access_token": BOB["access_token"]}) is None
        v.delete_token(bob.id)  # an unknown id is not an error
        assert [t.id for t in v.get_tokens()] == [alice.id]

        v.delete_tokens()
        assert v.get_tokens() == []
        assert v.find_token({"user_name": ALICE["user_name"]}) is None
        assert v.verify().is_clean()
    assert v.closed and "closed" in repr(v)
    with pytest.raises(tokenvault.Error, match="closed"):
        v.get_tokens()


def test_a_second_vault_object_opens_it_while_the_first_is_open(at):
    first = create(at)
    try:
        saved = first.save_token(dict(ALICE))
        # No VaultLocked: an etcd vault is shared, within a process as between processes.
        with reopen(at, durable=False) as second:
            assert second.engine == "etcd"
            assert second.find_token_by_id(saved.id) == saved
            bob = second.save_token(dict(BOB))
            assert first.find_token({"user_name": BOB["user_name"]}) == bob
            first.delete_token(saved.id)
            assert second.find_token({"user_name": ALICE["user_name"]}) is None
    finally:
        first.close()


OPEN_IN_CHILD = """
import json, sys, tokenvault
try:
    with tokenvault.Vault.open(sys.argv[1], sys.argv[2], kdf="floor") as v:
        users = sorted(t.user_name for t in v.get_tokens())
        v.save_token({"user_name": "from-the-child", "access_token": "child"})
        print(json.dumps({"opened": True, "users": users}))
except tokenvault.Error as e:
    print(json.dumps({"opened": False, "error": type(e).__name__, "message": str(e)}))
"""


def test_another_process_opens_it_while_this_one_has_it_open_and_sees_its_tokens(at):
    with create(at) as v:
        v.save_token(dict(ALICE))
        # The opposite of a directory vault, which that child would find VaultLocked.
        child = run_python(OPEN_IN_CHILD, at, PASSPHRASE)
        assert child == {"opened": True, "users": [ALICE["user_name"]]}
        # And what the child saved is here, without reopening.
        assert v.find_token({"user_name": "from-the-child"}).access_token == "child"
        assert len(v.get_tokens()) == 2


def test_a_wrong_passphrase_is_wrong_passphrase_and_changes_nothing(at):
    with create(at) as v:
        v.save_token(dict(ALICE))
    with pytest.raises(tokenvault.WrongPassphrase) as caught:
        reopen(at, "not the passphrase")
    assert "not the passphrase" not in str(caught.value)
    with pytest.raises(tokenvault.WrongPassphrase):
        reopen(at, "")
    child = run_python(OPEN_IN_CHILD, at, "not the passphrase")
    assert child["opened"] is False and child["error"] == "WrongPassphrase"
    with reopen(at) as v:
        assert [t.user_name for t in v.get_tokens()] == [ALICE["user_name"]]


def test_open_where_no_vault_is_is_vault_not_found_and_create_twice_is_vault_exists(at):
    with pytest.raises(tokenvault.VaultNotFound):
        reopen(at)
    create(at).close()
    with pytest.raises(tokenvault.VaultExists):
        create(at)
    reopen(at).close()


def test_change_passphrase_and_rekey_switch_which_passphrase_opens(at):
    with create(at) as v:
        ids = {v.save_token({"user_name": f"u{i}", "access_token": f"a{i}"}).id for i in range(30)}
        v.change_passphrase("a new passphrase")
        with pytest.raises(tokenvault.WrongPassphrase):
            reopen(at)
        other = reopen(at, "a new passphrase")
        # 30 tokens: more records and index entries than one etcd transaction takes.
        v.rekey("rekeyed")
        assert {t.id for t in v.get_tokens()} == ids
        # A Vault opened before the rekey: a clear error, never a miss; a new open works.
        with pytest.raises(tokenvault.WrongPassphrase):
            other.find_token({"user_name": "u3"})
        other.close()
        v.compact()  # nothing of the vault's own to rewrite on etcd
        v.flush()
    with pytest.raises(tokenvault.WrongPassphrase):
        reopen(at, "a new passphrase")
    with reopen(at, "rekeyed") as v:
        assert {t.id for t in v.get_tokens()} == ids
        assert v.find_token({"access_token": "a3"}).user_name == "u3"
        assert v.verify().is_clean()


def test_the_zoho_token_store_keeps_its_tokens_on_etcd(at):
    import_sdk_or_skip()
    from tokenvault.zoho import VaultTokenStore
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

    token = OAuthToken(
        client_id="1000.ALICE",
        client_secret="alice-secret",
        refresh_token="1000.refresh.alice",
        access_token="1000.access.alice",
        user_signature=UserSignature("alice@example.com"),
    )
    token.set_expires_in("1764000000000")
    with VaultTokenStore(at, PASSPHRASE, kdf="floor", timeout=10) as store:  # created here
        assert store.vault.engine == "etcd" and at in repr(store)
        store.save_token(token)
        assert token.get_id()
        # A second store (another app server) on the same location, both open.
        with VaultTokenStore(at, PASSPHRASE, kdf="floor", create=False) as other:
            found = other.find_token(OAuthToken(user_signature=UserSignature("alice@example.com")))
            assert found.get_refresh_token() == "1000.refresh.alice"
            assert found.get_expires_in() == "1764000000000"
            assert found.get_id() == token.get_id()
            other.delete_token(token.get_id())
        assert store.get_tokens() == []
    with pytest.raises(SDKException) as caught:
        VaultTokenStore(at, "not the passphrase", kdf="floor")
    assert isinstance(caught.value.cause, tokenvault.WrongPassphrase)


@without_etcd
def test_the_zoho_token_store_on_etcd_in_a_build_without_it_says_how_to_build_it():
    import_sdk_or_skip()
    from tokenvault.zoho import VaultTokenStore
    from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException

    with pytest.raises(SDKException) as caught:
        VaultTokenStore("etcd://127.0.0.1:2379/zoho", PASSPHRASE, kdf="floor")
    assert "cannot be opened" in str(caught.value)
    assert isinstance(caught.value.cause, ValueError)
    assert "--features etcd" in str(caught.value.cause)
