"""Fixtures: vaults made with the KDF floor (fast)."""

import pytest

import tokenvault
from helpers import PASSPHRASE


@pytest.fixture
def vault_path(tmp_path):
    return tmp_path / "vault"


@pytest.fixture
def vault(vault_path):
    v = tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor")
    yield v
    v.close()

