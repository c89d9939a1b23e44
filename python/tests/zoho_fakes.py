"""A local stand-in for the Zoho accounts server, for the SDK's token flow.

The SDK's token flow makes exactly two kinds of network call, both in
``zohocrmsdk/src/com/zoho/api/authenticator/oauth_token.py``:
``OAuthToken.generate_access_token`` (grant exchange) and
``OAuthToken.refresh_access_token`` (refresh), each a ``requests.post`` to the data
center's accounts URL (``https://accounts.zoho.com/oauth/v2/token`` for the US). ``install``
replaces the ``requests`` name in that module only, so every other line of the SDK runs as
shipped; ``forbid_network`` makes any other connection attempt fail loudly.
"""

import secrets
import socket
import types

from zohocrmsdk.src.com.zoho.api.authenticator import oauth_token as sdk_oauth_token

TOKEN_URL_SUFFIX = "/oauth/v2/token"


class FakeResponse:
    def __init__(self, body):
        self._body = body

    def json(self):
        return dict(self._body)


class FakeAccounts:
    """Issues tokens like the accounts server: a grant token works once, a refresh token
    works for its client only. ``calls`` records each call's grant type."""

    def __init__(self, client_id, client_secret, grant_token, grant_expires_in=3600,
                 api_domain="https://www.zohoapis.com"):
        self.client_id = client_id
        self.client_secret = client_secret
        self.grant_tokens = {grant_token}
        self.grant_expires_in = grant_expires_in
        self.api_domain = api_domain
        self.refresh_tokens = set()
        self.issued = []  # every secret handed out, for the at-rest scan
        self.calls = []

    def _issue(self, prefix):
        value = f"1000.{prefix}.{secrets.token_hex(16)}"
        self.issued.append(value)
        return value

    def post(self, url, data=None, params=None, headers=None, allow_redirects=True, **kw):
        if not url.endswith(TOKEN_URL_SUFFIX) or "accounts." not in url:
            raise AssertionError(f"unexpected network call to {url}")
        data = dict(data or {})
        kind = data.get("grant_type")
        self.calls.append(kind)
        if data.get("client_id") != self.client_id or data.get("client_secret") != self.client_secret:
            return FakeResponse({"error": "invalid_client"})
        if kind == "authorization_code":
            if data.get("code") not in self.grant_tokens:
                return FakeResponse({"error": "invalid_code"})
            self.grant_tokens.discard(data["code"])
            refresh = self._issue("refresh")
            self.refresh_tokens.add(refresh)
            return FakeResponse({
                "access_token": self._issue("access"),
                "refresh_token": refresh,
                "api_domain": self.api_domain,
                "token_type": "Bearer",
                "expires_in": self.grant_expires_in,
            })
        if kind == "refresh_token":
            if data.get("refresh_token") not in self.refresh_tokens:
                return FakeResponse({"error": "invalid_code"})
            return FakeResponse({
                "access_token": self._issue("access"),
                "api_domain": self.api_domain,
                "token_type": "Bearer",
                "expires_in": 3600,
            })
        return FakeResponse({"error": "unsupported_grant_type"})


def install(fake):
    """Points the SDK's token calls at ``fake``; returns a function that undoes it."""
    original = sdk_oauth_token.requests
    sdk_oauth_token.requests = types.SimpleNamespace(post=fake.post)

    def undo():
        sdk_oauth_token.requests = original

    return undo


def forbid_network():
    """Makes every outgoing connection raise; returns a function that undoes it."""
    original_connect = socket.socket.connect
    original_create = socket.create_connection

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected network access: {args[1:] or kwargs}")

    socket.socket.connect = refuse
    socket.create_connection = refuse

    def undo():
        socket.socket.connect = original_connect
        socket.create_connection = original_create

    return undo
