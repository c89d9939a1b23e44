"""The Zoho SDK's real token lifecycle on a VaultTokenStore: Initializer.initialize with a
grant token (exchange), again once the access token is about to expire (refresh), by user
name, by id; then a new process reopens the vault and finds the tokens, and no secret is
in the vault's files. Only the SDK's two accounts-server calls are answered locally
(tests/zoho_fakes.py); every other network access fails the test.

Protects against: a store that the SDK's own code cannot drive (wrong types, unmerged
finds, ids not set), tokens that do not survive a restart, and secrets at rest in the
clear."""

import os
import time

import pytest

from helpers import PASSPHRASE, TESTS, file_bytes, import_sdk_or_skip, run_python

import_sdk_or_skip()

from tokenvault.zoho import VaultTokenStore  # noqa: E402
from zoho_fakes import FakeAccounts, forbid_network, install  # noqa: E402
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.dc import USDataCenter  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature  # noqa: E402

USER = "alice@example.com"
CLIENT_ID = "1000.LIFECYCLECLIENT"
CLIENT_SECRET = "lifecycle-client-secret-8c1f"
GRANT = "1000.lifecycle-grant-5d2e"
REDIRECT = "https://example.com/callback"


@pytest.fixture
def accounts(request):
    # The grant exchange answers with 4 s of validity: under the SDK's 5 s margin, so the
    # next use of the token refreshes it.
    fake = FakeAccounts(CLIENT_ID, CLIENT_SECRET, GRANT, grant_expires_in=4)
    request.addfinalizer(install(fake))
    request.addfinalizer(forbid_network())
    return fake


def initialize(store, token, tmp_path):
    Initializer.initialize(
        environment=USDataCenter.PRODUCTION(),
        token=token,
        store=store,
        resource_path=str(tmp_path),
    )


def test_the_sdk_token_lifecycle_runs_on_the_vault_and_survives_a_restart(accounts, tmp_path):
    path = tmp_path / "vault"
    store = VaultTokenStore(path, PASSPHRASE, kdf="floor")

    # 1. Grant exchange: nothing stored for the user yet.
    first = OAuthToken(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        grant_token=GRANT,
        redirect_url=REDIRECT,
        user_signature=UserSignature(USER),
    )
    initialize(store, first, tmp_path)
    assert accounts.calls == ["authorization_code"]
    token_id = first.get_id()
    assert token_id, "save_token did not set the id"
    stored = store.vault.find_token_by_id(token_id)
    refresh, access1 = accounts.issued[0], accounts.issued[1]  # in the order issued
    assert stored.to_dict() == {
        "id": token_id,
        "user_name": USER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh,
        "access_token": access1,
        "grant_token": GRANT,
        "expiry_time": int(first.get_expires_in()),
        "redirect_url": REDIRECT,
        "api_domain": "https://www.zohoapis.com",
    }
    assert isinstance(first.get_expires_in(), str)

    # 2. Refresh on expiry: the user signature alone; the store supplies the rest.
    second = OAuthToken(user_signature=UserSignature(USER))
    initialize(store, second, tmp_path)
    assert accounts.calls == ["authorization_code", "refresh_token"]
    access2 = accounts.issued[2]
    assert second.get_id() == token_id
    assert second.get_access_token() == access2
    stored = store.vault.find_token_by_id(token_id)
    assert stored.access_token == access2 and stored.refresh_token == refresh
    assert stored.expiry_time > time.time() * 1000 + 3500 * 1000
    assert len(store.get_tokens()) == 1

    # 3. Find by user: a valid token, so no call.
    third = OAuthToken(user_signature=UserSignature(USER))
    initialize(store, third, tmp_path)
    assert third.get_access_token() == access2 and third.get_id() == token_id
    assert Initializer.get_initializer().token.get_token() == access2

    # 4. Find by id: no call either.
    fourth = OAuthToken(id=token_id)
    initialize(store, fourth, tmp_path)
    assert fourth.get_access_token() == access2
    assert fourth.get_refresh_token() == refresh
    assert accounts.calls == ["authorization_code", "refresh_token"]
    assert store.find_token_by_id("no-such-id") is None
    store.close()

    # No secret, user name or client id in the vault's files.
    raw = file_bytes(path)
    assert len(raw) > 0
    for value in [USER, CLIENT_ID, CLIENT_SECRET, GRANT, REDIRECT, *accounts.issued]:
        assert value.encode() not in raw, value

    # A new process (a restart) reopens the vault and the SDK finds the token there.
    child = run_python(
        """
        import json, sys
        from tokenvault.zoho import VaultTokenStore
        from zoho_fakes import FakeAccounts, forbid_network, install
        from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
        from zohocrmsdk.src.com.zoho.crm.api.dc import USDataCenter
        from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
        from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

        accounts = FakeAccounts("unused", "unused", "unused")
        install(accounts)
        forbid_network()
        store = VaultTokenStore(sys.argv[1], sys.argv[2], kdf="floor")
        token = OAuthToken(user_signature=UserSignature(sys.argv[3]))
        Initializer.initialize(environment=USDataCenter.PRODUCTION(), token=token,
                               store=store, resource_path=sys.argv[4])
        by_id = store.find_token_by_id(token.get_id())
        print(json.dumps({
            "id": token.get_id(),
            "access": token.get_access_token(),
            "refresh": token.get_refresh_token(),
            "by_id_access": by_id.get_access_token(),
            "calls": accounts.calls,
            "count": len(store.get_tokens()),
        }))
        """,
        path,
        PASSPHRASE,
        USER,
        tmp_path,
    )
    assert child == {
        "id": token_id,
        "access": access2,
        "refresh": refresh,
        "by_id_access": access2,
        "calls": [],
        "count": 1,
    }


def test_a_wrong_passphrase_stops_the_sdk_with_an_sdk_exception(accounts, tmp_path):
    from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException

    path = tmp_path / "vault"
    with VaultTokenStore(path, PASSPHRASE, kdf="floor") as store:
        initialize(store, OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                     grant_token=GRANT, user_signature=UserSignature(USER)), tmp_path)
    with pytest.raises(SDKException, match="passphrase does not unlock"):
        VaultTokenStore(path, "not the passphrase", kdf="floor")


EXAMPLE = TESTS.parent / "examples" / "zoho_sdk_store.py"


def test_the_example_finds_its_tokens_after_a_restart_encrypted_on_disk(tmp_path):
    """The package's "done when": a script passing VaultTokenStore to
    Initializer.initialize runs the SDK's token flow, and a second process finds the
    tokens again; the files hold none of them."""
    import subprocess
    import sys

    path = tmp_path / "example.vault"
    env = dict(os.environ, TOKENVAULT_PASSPHRASE=PASSPHRASE)

    def run():
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), str(path), "--offline"],
            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        return dict(line.split(": ", 1) for line in proc.stdout.strip().splitlines())

    first = run()
    assert first["how"] == "obtained by grant exchange and saved in the vault"
    assert first["accounts-server calls"] == "['authorization_code']"
    second = run()
    assert second["how"] == "found in the vault; no network call"
    assert second["accounts-server calls"] == "[]"
    assert second["token id"] == first["token id"]
    assert second["user"] == "alice@example.com"

    with VaultTokenStore(path, PASSPHRASE) as store:
        (token,) = store.get_tokens()
        secrets = [token.get_access_token(), token.get_refresh_token(), token.get_client_secret(),
                   token.get_grant_token(), token.get_client_id(), "alice@example.com"]
    raw = file_bytes(path)
    for value in secrets:
        assert value and value.encode() not in raw, value
