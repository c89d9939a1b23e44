"""An encrypted ``TokenStore`` for the Zoho CRM Python SDK (``zohocrmsdk8-0``).

``VaultTokenStore`` keeps the SDK's OAuth tokens in a tokenvault ``Vault``: every secret
sealed under the passphrase, every lookup one keyed-index probe. Pass it to the SDK where a
``FileStore`` or ``DBStore`` would go::

    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from tokenvault.zoho import VaultTokenStore

    store = VaultTokenStore("zoho-tokens.vault", passphrase)
    Initializer.initialize(environment=environment, token=token, store=store)

The vault may also be an etcd vault that every app server shares (in a tokenvault built
with etcd support): ``VaultTokenStore("etcd://10.0.0.1:2379,10.0.0.2:2379/zoho", passphrase)``.

It follows the SDK stores' call conventions:

- ``find_token(token)`` merges the stored token into ``token`` (only fields that are None
  on ``token`` are filled, the id included) and returns ``token``; with no match it
  returns None. The first rule that applies decides: user name; else access token (with
  no client id and secret); else grant token, then refresh token, among tokens of the
  same client id. A token that carries only an id is looked up by id (so the SDK's
  ``revoke(id)`` finds the right token). Nothing else ever matches: there is no
  "first row" answer.
- ``save_token(token)`` updates the stored token with the same id, or else the one
  ``find_token`` would return, or inserts a new one; it sets the id (a random string) on
  ``token`` and fills its None fields from what is stored. Fields that are None never
  erase a stored value. One stored token per user name.
- ``find_token_by_id`` of an unknown id returns None; ``delete_token`` of an unknown id
  does nothing; ``delete_tokens`` deletes every token.
- The expiry stays the SDK's string of epoch milliseconds.

Every failure reaches the SDK as an ``SDKException`` (code ``TOKEN_STORE``) with a clear
message, and the tokenvault exception as its ``cause``: a wrong passphrase or a corrupted
vault is never a silent None.

This module needs the SDK: ``pip install 'tokenvault[zoho]'`` (or ``pip install
zohocrmsdk8-0``). ``import tokenvault`` alone never does.
"""

import os
from typing import Any, Callable, List, Optional, TypeVar, Union

import tokenvault

try:
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.api.authenticator.store.token_store import TokenStore
    from zohocrmsdk.src.com.zoho.crm.api.exception.sdk_exception import SDKException
    from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature
except ImportError as _missing:
    raise ImportError(
        "tokenvault.zoho needs the Zoho CRM Python SDK, which could not be imported "
        f"({_missing}). Install it with: pip install 'tokenvault[zoho]' "
        "(or: pip install zohocrmsdk8-0)"
    ) from _missing

__all__ = ["VaultTokenStore"]

#: The SDK's error code for token store failures (its ``Constants.TOKEN_STORE``).
TOKEN_STORE = "TOKEN_STORE"

_T = TypeVar("_T")


def _describe(error: BaseException) -> str:
    """A clear sentence for each tokenvault failure (messages never carry a secret)."""
    if isinstance(error, tokenvault.WrongPassphrase):
        return "the passphrase does not unlock the token vault: "
    if isinstance(error, tokenvault.Corrupted):
        return (
            "the token vault is damaged or was tampered with (tokenvault's Vault.verify() "
            "names the damage, Vault.repair() sets it aside): "
        )
    if isinstance(error, tokenvault.VaultLocked):
        return "the token vault is open in another process or store: "
    if isinstance(error, tokenvault.InvalidToken):
        return "the token vault refused the token: "
    return "the token vault failed: "


class VaultTokenStore(TokenStore):
    """The Zoho CRM SDK's ``TokenStore``, encrypted: tokens live in a tokenvault ``Vault``.

    ``VaultTokenStore(path, passphrase, *, kdf=None, durable=True, create=True,
    timeout=None)`` opens the vault at ``path``, creating it when nothing is there (unless
    ``create=False``). ``path`` is any location ``tokenvault.Vault.open`` takes: a directory,
    or (in a build with etcd support) an ``"etcd://HOST:PORT[,HOST:PORT...]/PREFIX"`` str.
    ``kdf``, ``durable`` and ``timeout`` are ``tokenvault.Vault.create``'s. The vault stays
    open until ``close()`` or the end of a ``with`` block; a directory vault is locked
    against other processes meanwhile, an etcd vault is shared with them.

    Raises ``SDKException`` (code ``TOKEN_STORE``) if the vault cannot be opened: wrong
    passphrase, damaged vault, locked by another process, a location this build cannot
    use; its ``cause`` is the tokenvault (or ``ValueError``/``TypeError``) exception.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        passphrase: str,
        *,
        kdf: Any = None,
        durable: bool = True,
        create: bool = True,
        timeout: Optional[float] = None,
    ) -> None:
        self._path = os.fspath(path)
        self._vault = self._guard(
            lambda: _open_or_create(self._path, passphrase, kdf, durable, create, timeout),
            "the token vault cannot be opened: ",
        )

    @property
    def vault(self) -> tokenvault.Vault:
        """The underlying ``tokenvault.Vault`` (for ``verify``, ``rekey``, ``change_passphrase``)."""
        return self._vault

    def _guard(
        self,
        call: Callable[[], _T],
        refused: str = "the token cannot be stored in the token vault: ",
    ) -> _T:
        """Runs ``call``, turning every tokenvault or argument error into an SDKException
        (an argument error's message starts with ``refused``)."""
        try:
            return call()
        except tokenvault.Error as e:
            raise SDKException(
                code=TOKEN_STORE,
                message=f"{_describe(e)}{self._path}: ",
                cause=e,
            ) from e
        except (TypeError, ValueError) as e:
            raise SDKException(code=TOKEN_STORE, message=refused, cause=e) from e

    def find_token(self, token: Any) -> Any:
        """Finds the stored token that ``token`` identifies and merges it into ``token``.

        Returns ``token`` (filled in) or None. A non-OAuthToken is returned unchanged, as
        the SDK's own stores do.
        """
        if not isinstance(token, OAuthToken):
            return token
        # The SDK's usual query names a user, and a user name decides alone (the first
        # rule): that lookup skips building a whole query token.
        signature = token.get_user_signature()
        name = signature.get_name() if signature is not None else None
        if isinstance(name, str) and name:
            fields = self._guard(lambda: self._vault._find_token_by_user_fields(name))
            if fields is None:
                return None
            _merge_fields(token, fields)
            return token
        query = self._guard(lambda: _to_vault(token))
        found = self._guard(lambda: self._vault.find_token(query))
        if found is None and query.id is not None and not _has_lookup_key(query):
            found = self._guard(lambda: self._vault.find_token_by_id(query.id))
        if found is None:
            return None
        _merge_into(token, found)
        return token

    def save_token(self, token: Any) -> None:
        """Saves ``token`` (insert or update), then sets its id and fills its None fields
        from what is stored. A non-OAuthToken is ignored, as the SDK's own stores do."""
        if not isinstance(token, OAuthToken):
            return
        stored = self._guard(lambda: self._vault.save_token(_to_vault(token)))
        token.set_id(stored.id)
        _merge_into(token, stored)

    def delete_token(self, id: Optional[str]) -> None:
        """Deletes the token with this id; an unknown id is not an error."""
        if id is None:
            return
        self._guard(lambda: self._vault.delete_token(id))

    def get_tokens(self) -> List[Any]:
        """Every stored token, as SDK ``OAuthToken`` objects."""
        stored = self._guard(self._vault.get_tokens)
        tokens = []
        for t in stored:
            sdk_token = _blank_sdk_token()
            _merge_into(sdk_token, t)
            tokens.append(sdk_token)
        return tokens

    def delete_tokens(self) -> None:
        """Deletes every stored token."""
        self._guard(self._vault.delete_tokens)

    def find_token_by_id(self, id: Optional[str]) -> Any:
        """The stored token with this id as an SDK ``OAuthToken``, or None."""
        if id is None:
            return None
        found = self._guard(lambda: self._vault.find_token_by_id(id))
        if found is None:
            return None
        sdk_token = _blank_sdk_token()
        _merge_into(sdk_token, found)
        return sdk_token

    def close(self) -> None:
        """Flushes and closes the vault, releasing its lock. Closing twice is harmless."""
        self._guard(self._vault.close)

    def __enter__(self) -> "VaultTokenStore":
        return self

    def __exit__(self, *exc: object) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        state = "closed" if self._vault.closed else "open"
        return f"<tokenvault.zoho.VaultTokenStore {self._path!r} {state}>"


def _open_or_create(
    path: str,
    passphrase: str,
    kdf: Any,
    durable: bool,
    create: bool,
    timeout: Optional[float],
) -> tokenvault.Vault:
    options = dict(kdf=kdf, durable=durable, timeout=timeout)
    try:
        return tokenvault.Vault.open(path, passphrase, **options)
    except tokenvault.VaultNotFound:
        if not create:
            raise
    try:
        return tokenvault.Vault.create(path, passphrase, **options)
    except tokenvault.VaultExists:
        # Another process created it in between; or the location holds something that is
        # not a vault (other files; keys of a vault without its header), and then this open
        # says VaultNotFound.
        return tokenvault.Vault.open(path, passphrase, **options)


def _expiry_ms(value: Any) -> Optional[int]:
    """The SDK's expiry (a string of epoch milliseconds) as an int."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError("the token's expiry must be epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError("the token's expiry is not a number of epoch milliseconds")


def _to_vault(token: Any) -> tokenvault.Token:
    """The vault's form of an SDK ``OAuthToken``."""
    signature = token.get_user_signature()
    return tokenvault.Token(
        id=token.get_id(),
        user_name=signature.get_name() if signature is not None else None,
        client_id=token.get_client_id(),
        client_secret=token.get_client_secret(),
        refresh_token=token.get_refresh_token(),
        access_token=token.get_access_token(),
        grant_token=token.get_grant_token(),
        expiry_time=_expiry_ms(token.get_expires_in()),
        redirect_url=token.get_redirect_url(),
        api_domain=token.get_api_domain(),
    )


def _has_lookup_key(query: tokenvault.Token) -> bool:
    return any(
        value
        for value in (
            query.user_name,
            query.access_token,
            query.grant_token,
            query.refresh_token,
        )
    )


def _merge_into(token: Any, stored: tokenvault.Token) -> None:
    """Fills every field of the SDK ``token`` that is None from ``stored`` (the SDK
    stores' ``set_merge_data``)."""
    _merge_fields(
        token,
        (
            stored.id,
            stored.user_name,
            stored.client_id,
            stored.client_secret,
            stored.refresh_token,
            stored.access_token,
            stored.grant_token,
            stored.expiry_time,
            stored.redirect_url,
            stored.api_domain,
        ),
    )


def _merge_fields(token: Any, fields: tuple) -> None:
    """``_merge_into`` from a stored token's fields in ``Token``'s order (id, user_name,
    client_id, client_secret, refresh_token, access_token, grant_token, expiry_time,
    redirect_url, api_domain)."""
    (id, user_name, client_id, client_secret, refresh_token, access_token, grant_token,
     expiry_time, redirect_url, api_domain) = fields
    if token.get_id() is None:
        token.set_id(id)
    if user_name is not None and token.get_user_signature() is None:
        token.set_user_signature(UserSignature(user_name))
    if token.get_client_id() is None:
        token.set_client_id(client_id)
    if token.get_client_secret() is None:
        token.set_client_secret(client_secret)
    if token.get_refresh_token() is None:
        token.set_refresh_token(refresh_token)
    if token.get_access_token() is None:
        token.set_access_token(access_token)
    if token.get_grant_token() is None:
        token.set_grant_token(grant_token)
    if expiry_time is not None and token.get_expires_in() is None:
        token.set_expires_in(str(expiry_time))
    if token.get_redirect_url() is None:
        token.set_redirect_url(redirect_url)
    if token.get_api_domain() is None:
        token.set_api_domain(api_domain)


def _blank_sdk_token() -> Any:
    """An ``OAuthToken`` with every field None, made as the SDK's stores make them (its
    constructor insists on credentials)."""
    token = object.__new__(OAuthToken)
    token.set_id(None)
    token.set_user_signature(None)
    token.set_client_id(None)
    token.set_client_secret(None)
    token.set_refresh_token(None)
    token.set_access_token(None)
    token.set_grant_token(None)
    token.set_redirect_url(None)
    token.set_expires_in(None)
    token.set_api_domain(None)
    # The constructor's default, which OAuthToken.get_token reads; the SDK's stores leave
    # it unset, so their tokens fail there.
    token._OAuthToken__find_user = True
    return token
