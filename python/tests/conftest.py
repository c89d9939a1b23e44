"""Fixtures: vaults made with the KDF floor (fast)."""

import pytest

import tokenvault
from helpers import PASSPHRASE


@pytest.fixture
def vault_path(tmp_path):
    return tmp_path / "vault"


@pytest.fixture(params=["sled", "redb"])
def engine(request):
    """Each test that takes a vault runs once on each storage engine."""
    return request.param


@pytest.fixture
def vault(vault_path, engine):
    v = tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor", engine=engine)
    assert v.engine == engine
    yield v
    v.close()

