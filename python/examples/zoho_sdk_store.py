#!/usr/bin/env python3
"""The Zoho CRM Python SDK keeping its OAuth tokens in an encrypted tokenvault.

    pip install './python[zoho]'
    python python/examples/zoho_sdk_store.py zoho-tokens.vault --offline   # no network
    python python/examples/zoho_sdk_store.py zoho-tokens.vault --offline   # the restart

The first run hands ``VaultTokenStore`` to the SDK's ``Initializer.initialize``: the SDK
exchanges the grant token at the accounts server and saves the tokens in the vault. The
second run (a new process: a restart) finds them there and makes no call. Nothing in the
vault's files is readable without the passphrase.

Against Zoho itself (without ``--offline``) set ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET,
ZOHO_GRANT_TOKEN (a self-client grant token; only the first run needs it), ZOHO_USER (the
CRM user's email) and, if your client has one, ZOHO_REDIRECT_URL. ``--offline`` instead
answers the SDK's two accounts-server calls (grant exchange, refresh) in this process,
with made-up credentials. The passphrase comes from TOKENVAULT_PASSPHRASE, or a prompt.
"""

import argparse
import getpass
import os
import secrets
import sys
import types

from tokenvault.zoho import VaultTokenStore
from zohocrmsdk.src.com.zoho.api.authenticator import oauth_token as sdk_oauth_token
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.crm.api.dc import USDataCenter
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature

OFFLINE_CREDENTIALS = {
    "ZOHO_CLIENT_ID": "1000.OFFLINEEXAMPLE",
    "ZOHO_CLIENT_SECRET": "offline-example-client-secret",
    "ZOHO_GRANT_TOKEN": "1000.offline-example-grant",
    "ZOHO_USER": "alice@example.com",
    "ZOHO_REDIRECT_URL": "https://example.com/callback",
}


class OfflineAccounts:
    """Answers the SDK's token calls (``requests.post`` in its oauth_token module) as the
    accounts server would: a grant token once, then refreshes. Every other line of the SDK
    runs as shipped."""

    class Response:
        def __init__(self, body):
            self.body = body

        def json(self):
            return self.body

    def __init__(self):
        self.calls = []

    def post(self, url, data=None, **_):
        kind = (data or {}).get("grant_type")
        self.calls.append(kind)
        body = {
            "access_token": "1000." + secrets.token_hex(16),
            "api_domain": "https://www.zohoapis.com",
            "token_type": "Bearer",
            "expires_in": 3600,
        }
        if kind == "authorization_code":
            body["refresh_token"] = "1000." + secrets.token_hex(16)
        return self.Response(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vault", help="the vault's directory, or (a build with etcd) its "
                        "etcd://HOST:PORT[,...]/PREFIX location; created on first use")
    parser.add_argument("--offline", action="store_true",
                        help="answer the SDK's accounts-server calls locally")
    args = parser.parse_args()

    env = dict(os.environ)
    offline = None
    if args.offline:
        for name, value in OFFLINE_CREDENTIALS.items():
            env.setdefault(name, value)
        offline = OfflineAccounts()
        sdk_oauth_token.requests = types.SimpleNamespace(post=offline.post)
    user = env.get("ZOHO_USER")
    if not user:
        sys.exit("set ZOHO_USER (and ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_GRANT_TOKEN), or use --offline")
    passphrase = env.get("TOKENVAULT_PASSPHRASE") or getpass.getpass("vault passphrase: ")

    with VaultTokenStore(args.vault, passphrase) as store:
        before = store.vault.find_token({"user_name": user})
        token = OAuthToken(
            client_id=env.get("ZOHO_CLIENT_ID"),
            client_secret=env.get("ZOHO_CLIENT_SECRET"),
            grant_token=None if before else env.get("ZOHO_GRANT_TOKEN"),
            redirect_url=env.get("ZOHO_REDIRECT_URL"),
            user_signature=UserSignature(user),
        )
        # The SDK's own token flow: find in the store, else exchange the grant token;
        # refresh when under 5 s remain; save_token. ``store`` is the only change.
        Initializer.initialize(environment=USDataCenter.PRODUCTION(), token=token, store=store)
        after = store.vault.find_token({"user_name": user})

    if after is None:
        sys.exit("the SDK did not save the token (see its log above)")
    if before is None:
        how = "obtained by grant exchange and saved in the vault"
    elif before.access_token != after.access_token:
        how = "found in the vault, refreshed, saved again"
    else:
        how = "found in the vault; no network call"
    print(f"user: {after.user_name}")
    print(f"token id: {after.id}")
    print(f"access token expires at (epoch ms): {after.expiry_time}")
    print(f"how: {how}")
    if offline is not None:
        print(f"accounts-server calls: {offline.calls}")


if __name__ == "__main__":
    main()
