"""tokenvault: an encrypted store for OAuth tokens.

Every token is sealed with AES-256-GCM under a data key that only the passphrase unlocks
(Argon2id); lookups by user name, access, refresh or grant token go through keyed (blind)
indexes, so nothing secret is ever written to disk in the clear.

    import tokenvault

    with tokenvault.Vault.create("tokens.vault", "correct horse battery staple") as vault:
        saved = vault.save_token({"user_name": "alice@example.com",
                                  "client_id": "1000.ABC",
                                  "refresh_token": "1000.refresh"})
        found = vault.find_token({"user_name": "alice@example.com"})
        assert found.refresh_token == "1000.refresh" and found.id == saved.id

A vault lives in a directory or, in a package built with etcd support (``"etcd" in
tokenvault.FEATURES``), under a key prefix of an etcd cluster that many processes share:
``Vault.create("etcd://10.0.0.1:2379,10.0.0.2:2379/vaults/portal", passphrase)``. Build
it so from a checkout (needs protoc): ``MATURIN_PEP517_ARGS="--features etcd" pip install
./python``.

The Zoho CRM Python SDK's ``TokenStore`` is ``tokenvault.zoho.VaultTokenStore`` (it needs
the SDK: ``pip install 'tokenvault[zoho]'``).
"""

from ._native import (
    FEATURES,
    KDF_CEILING,
    KDF_FLOOR,
    KDF_RECOMMENDED,
    TOKEN_FIELDS,
    Corrupted,
    Error,
    InvalidKdfParams,
    InvalidToken,
    StorageError,
    Token,
    Vault,
    VaultExists,
    VaultLocked,
    VaultNotFound,
    VerifyReport,
    WrongPassphrase,
)

__all__ = [
    "Vault",
    "Token",
    "VerifyReport",
    "Error",
    "WrongPassphrase",
    "Corrupted",
    "InvalidToken",
    "VaultExists",
    "VaultNotFound",
    "VaultLocked",
    "InvalidKdfParams",
    "StorageError",
    "TOKEN_FIELDS",
    "KDF_FLOOR",
    "KDF_RECOMMENDED",
    "KDF_CEILING",
    "FEATURES",
]
