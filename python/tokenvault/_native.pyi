"""Type stubs of tokenvault's native module (re-exported by the ``tokenvault`` package)."""

import os
import pathlib
from types import TracebackType
from typing import Dict, List, Mapping, Optional, Tuple, Type, Union

from typing_extensions import Literal, Self, TypedDict

class TokenDict(TypedDict, total=False):
    """The fields of a token as a dict (every key optional)."""

    id: Optional[str]
    user_name: Optional[str]
    client_id: Optional[str]
    client_secret: Optional[str]
    refresh_token: Optional[str]
    access_token: Optional[str]
    grant_token: Optional[str]
    expiry_time: Optional[int]
    redirect_url: Optional[str]
    api_domain: Optional[str]

class KdfDict(TypedDict):
    """Argon2id parameters as a dict."""

    memory_kib: int
    iterations: int
    parallelism: int

Kdf = Union[Literal["floor", "recommended"], KdfDict, Tuple[int, int, int], None]
TokenLike = Union["Token", TokenDict, Mapping[str, object]]
Location = Union[str, "os.PathLike[str]"]
"""A directory path, or a str ``"etcd://HOST:PORT[,HOST:PORT...]/PREFIX"`` (builds with etcd)."""

TOKEN_FIELDS: Tuple[str, ...]
FEATURES: Tuple[str, ...]
"""The optional parts this build includes: ``"redb"`` always, ``"etcd"`` when built with
etcd support (``etcd://`` locations)."""
KDF_FLOOR: Tuple[int, int, int]
KDF_RECOMMENDED: Tuple[int, int, int]
KDF_CEILING: Tuple[int, int, int]

class Error(Exception):
    """Base class of every error raised by tokenvault."""

class WrongPassphrase(Error):
    """The passphrase does not unlock the vault. Nothing was changed."""

class Corrupted(Error):
    """A header or record failed authentication or decoding."""

class InvalidToken(Error):
    """A save carried nothing to store or to match on, or a user name another token holds."""

class VaultExists(Error):
    """``Vault.create`` found a vault or other files at the location."""

class VaultNotFound(Error):
    """``Vault.open`` found no vault at the location."""

class VaultLocked(Error):
    """The directory vault is open elsewhere (another process, or another Vault in this one)."""

class InvalidKdfParams(Error):
    """Argon2id parameters outside the accepted floor and ceiling."""

class StorageError(Error):
    """The file system or the storage engine failed."""

class Token:
    """An OAuth token as the Zoho CRM SDKs persist it; every field optional.

    ``repr()`` never shows a secret; ``to_dict()`` does.
    """

    id: Optional[str]
    user_name: Optional[str]
    client_id: Optional[str]
    client_secret: Optional[str]
    refresh_token: Optional[str]
    access_token: Optional[str]
    grant_token: Optional[str]
    expiry_time: Optional[int]
    """Milliseconds since the Unix epoch."""
    redirect_url: Optional[str]
    api_domain: Optional[str]

    def __init__(
        self,
        *,
        id: Optional[str] = None,
        user_name: Optional[str] = None,
        client_id: Optional[str] = None,
        client_secret: Optional[str] = None,
        refresh_token: Optional[str] = None,
        access_token: Optional[str] = None,
        grant_token: Optional[str] = None,
        expiry_time: Optional[int] = None,
        redirect_url: Optional[str] = None,
        api_domain: Optional[str] = None,
    ) -> None: ...
    def to_dict(self) -> Dict[str, Union[str, int, None]]:
        """Every field as a dict, secrets included."""
    def __eq__(self, other: object) -> bool: ...

class VerifyReport:
    """What ``Vault.verify`` or ``Vault.repair`` found."""

    @property
    def records(self) -> int:
        """Records that opened and decoded."""
    @property
    def index_entries(self) -> int:
        """Index entries, in all four indexes."""
    @property
    def problems(self) -> List[str]:
        """One sentence per problem (never a secret)."""
    @property
    def quarantined(self) -> List[str]:
        """The records set aside by ``repair``, named by id when known."""
    @property
    def set_aside(self) -> List[str]:
        """The records this call set aside (``repair`` only)."""
    def is_clean(self) -> bool:
        """Whether nothing is wrong."""

class Vault:
    """An encrypted token vault in a directory (open in one place at a time) or, in a build
    with etcd, under a key prefix of an etcd cluster (shared by every process that opens it)."""

    @staticmethod
    def create(
        location: Location,
        passphrase: str,
        *,
        kdf: Kdf = None,
        durable: bool = True,
        engine: Optional[Literal["sled", "redb"]] = None,
        timeout: Optional[float] = None,
    ) -> "Vault":
        """Creates a vault (``VaultExists`` if something is there): in a directory on
        ``engine`` (default ``"sled"``), or at an ``"etcd://HOST:PORT[,...]/PREFIX"`` str
        (builds with etcd only; ``engine`` must then be left out). ``timeout``: seconds per
        etcd call (default 5)."""
    @staticmethod
    def open(
        location: Location,
        passphrase: str,
        *,
        kdf: Kdf = None,
        durable: bool = True,
        timeout: Optional[float] = None,
    ) -> "Vault":
        """Opens a vault (``VaultNotFound``, ``VaultLocked``, ``WrongPassphrase``, ``Corrupted``)."""
    @property
    def engine(self) -> Literal["sled", "redb", "etcd"]:
        """The storage engine that writes the vault (recognised at open)."""
    @property
    def path(self) -> Optional["pathlib.Path"]:
        """The vault's directory; None for an etcd vault."""
    @property
    def location(self) -> str:
        """Where the vault lives: its directory, or its ``etcd://`` location."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def find_token(self, token: TokenLike) -> Optional[Token]:
        """The stored token that ``token`` identifies (by user name, access, grant or refresh token), or None."""
    def save_token(self, token: TokenLike) -> Token:
        """Upserts ``token``; returns it as stored, id included (a Token argument is updated in place)."""
    def delete_token(self, id: str) -> None:
        """Deletes the token with this id (an unknown id is not an error)."""
    def get_tokens(self) -> List[Token]:
        """Every stored token."""
    def delete_tokens(self) -> None:
        """Deletes every token."""
    def find_token_by_id(self, id: str) -> Optional[Token]:
        """The token with this id, or None."""
    def find_token_by_user(self, user_name: str) -> Optional[Token]:
        """The token of this user name, or None (``find_token({"user_name": user_name})``, faster)."""
    def change_passphrase(self, new_passphrase: str) -> None:
        """Replaces the passphrase; on disk when it returns."""
    def rekey(self, new_passphrase: str) -> None:
        """Re-encrypts every token under a fresh data key and the new passphrase."""
    def verify(self) -> VerifyReport:
        """Checks every record and index entry; changes nothing."""
    def repair(self) -> VerifyReport:
        """Sets aside records that do not open (kept in the quarantine) and rebuilds the
        indexes; returns the report after the repair."""
    def compact(self) -> None:
        """Rewrites the vault into fresh storage: nothing removed stays readable in its files
        (nothing to do on etcd, whose history the cluster's own compaction removes)."""
    def flush(self) -> None:
        """Writes buffered changes to disk."""
    def close(self) -> None:
        """Flushes and closes the vault, releasing its lock (a directory vault's)."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
