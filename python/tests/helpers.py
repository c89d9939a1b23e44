"""Helpers shared by the tests: the test passphrase, reopening with the KDF floor, running
code in a second Python process, reading a vault's raw bytes, damaging a record."""

import glob
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import tokenvault

PASSPHRASE = "correct horse battery staple"
TESTS = Path(__file__).resolve().parent


def reopen(path, passphrase=PASSPHRASE, **options):
    """Vault.open with the floor KDF (the default would upgrade the vault's KDF)."""
    options.setdefault("kdf", "floor")
    return tokenvault.Vault.open(path, passphrase, **options)


def run_python(code, *args, timeout=120, check=True):
    """Runs ``code`` in a new Python process with ``args`` as sys.argv[1:]; returns the
    JSON object it prints on its last line of stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        # Not the package's source directory: its tokenvault/ lacks the built module.
        cwd=TESTS,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"child exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def file_bytes(path):
    """Every byte of every file under ``path``."""
    chunks = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                chunks.append(f.read())
    return b"\0".join(chunks)


def damage_blob(path):
    """Flips one bit in the middle of the vault's one storage blob (where a record over
    the storage engine's blob threshold, such as a 1 MiB token, is kept) and fixes the
    blob's CRC, so that only the record's own authentication can notice."""
    # The live storage generation's blobs (gen-N/blobs/).
    blobs = glob.glob(os.path.join(path, "gen-*", "blobs", "*"))
    assert len(blobs) == 1, blobs
    with open(blobs[0], "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x01
        data[0:4] = zlib.crc32(bytes(data[4:])).to_bytes(4, "little")
        f.seek(0)
        f.write(data)


def import_sdk_or_skip():
    """Imports the Zoho SDK, or skips the calling test module when it is not installed
    (unless TOKENVAULT_REQUIRE_ZOHO=1, as scripts/test-python.sh sets: then it fails)."""
    import pytest

    try:
        import zohocrmsdk  # noqa: F401
    except ImportError:
        if os.environ.get("TOKENVAULT_REQUIRE_ZOHO") == "1":
            raise
        pytest.skip("the Zoho SDK (zohocrmsdk8-0) is not installed", allow_module_level=True)


def damaged_vault(tmp_path, small=3):
    """A vault of one 1 MiB token (user "big", damaged) and ``small`` intact ones. One
    damaged record does not stop the vault from opening, wherever it sorts. Returns the
    path and the intact tokens; the vault is closed."""
    path = tmp_path / "damaged"
    with tokenvault.Vault.create(path, PASSPHRASE, kdf="floor") as v:
        v.save_token({"user_name": "big", "access_token": "A" * (1 << 20)})
        intact = [
            v.save_token({"user_name": f"u{i}", "access_token": f"a{i}"})
            for i in range(small)
        ]
    damage_blob(path)
    return path, intact
