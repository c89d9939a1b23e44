#!/usr/bin/env python3
"""Token stores for the Zoho CRM Python SDK at 10,000 tokens: inserts/s and lookups/s.

    pip install './python[zoho]'
    python python/bench/bench_stores.py            # about two minutes
    python python/bench/bench_stores.py --quick    # 1,000 tokens, a smoke run

Every store is driven through the SDK's TokenStore interface with SDK OAuthToken objects,
as the SDK's own token flow calls it:

- ``VaultTokenStore`` (tokenvault.zoho), durable (the default: every save on disk when it
  returns) and buffered (``durable=False``);
- ``tokenvault.Vault`` itself, with dicts (the same vault without the SDK's objects);
- the custom SQLite store of Zoho's guide (bench/seed_sqlite_store.py: DBStore's logic on
  sqlite3, string-built SQL, a connection per call);
- the SDK's FileStore (a CSV file). Its operations read the whole file, so it is filled to
  N by writing the CSV directly and then timed over a few operations at N.

Inserts: N new users into an empty store (FileStore: a few more at N). Lookups: random
users' ``find_token`` by user name, as ``OAuthToken.get_token`` does, and
``find_token_by_id``, each on a store holding N tokens, the best of three rounds. Query
objects are built before the clock starts; each query is a new OAuthToken, since
find_token fills it in.
"""

import argparse
import csv
from importlib.metadata import version
import os
import platform
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from seed_sqlite_store import SeedSQLiteStore  # noqa: E402
from tokenvault.zoho import VaultTokenStore  # noqa: E402
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken  # noqa: E402
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore  # noqa: E402
from zohocrmsdk.src.com.zoho.crm.api.user_signature import UserSignature  # noqa: E402

PASSPHRASE = "benchmark passphrase"
CLIENT_ID = "1000.BENCHMARKCLIENTID0000000000000"
CLIENT_SECRET = "b" * 42
#: Lookups are timed in this many rounds and the best kept: the machine may be shared.
ROUNDS = 3


def user(i):
    return f"user{i:06d}@example.com"


def secret(kind, i):
    return f"1000.{kind}{i:08d}{'0' * 24}.{'f' * 32}"


def sdk_token(i):
    t = OAuthToken(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=secret("r", i),
        access_token=secret("a", i),
        user_signature=UserSignature(user(i)),
        api_domain="https://www.zohoapis.com",
    )
    t.set_expires_in(str(1_764_000_000_000 + i))
    return t


def rate(count, seconds):
    return count / seconds if seconds > 0 else float("inf")


def timed(calls):
    start = time.perf_counter()
    for call in calls:
        call()
    return time.perf_counter() - start


def disk_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def measure_sdk_store(name, store, path, n, lookups, rng, prefilled=False, inserts=None):
    """Inserts (from empty, or `inserts` more at N when prefilled), then lookups."""
    if prefilled:
        extra = [sdk_token(n + k) for k in range(inserts)]
        insert_s = timed([lambda t=t: store.save_token(t) for t in extra])
        insert_count = inserts
    else:
        tokens = [sdk_token(i) for i in range(n)]
        insert_s = timed([lambda t=t: store.save_token(t) for t in tokens])
        insert_count = n
    if isinstance(store, VaultTokenStore):
        store.vault.flush()  # lookups on a settled store, not beside a background flush
    ids = [t.get_id() for t in store.get_tokens()]
    assert len(ids) >= n, (name, len(ids))

    user_s = id_s = float("inf")
    for _round in range(ROUNDS):
        picks = [rng.randrange(n) for _ in range(lookups)]
        queries = [OAuthToken(user_signature=UserSignature(user(i))) for i in picks]
        results = []
        user_s = min(user_s, timed([lambda q=q: results.append(store.find_token(q)) for q in queries]))
        for i, found in zip(picks, results):
            assert found is not None and found.get_access_token() == secret("a", i), name

        id_picks = [rng.choice(ids) for _ in range(lookups)]
        found_by_id = []
        id_s = min(id_s, timed([lambda x=x: found_by_id.append(store.find_token_by_id(x)) for x in id_picks]))
        assert all(t is not None for t in found_by_id), name
    return {
        "store": name,
        "inserts": rate(insert_count, insert_s),
        "by_user": rate(lookups, user_s),
        "by_id": rate(lookups, id_s),
        "bytes_per_token": disk_bytes(path) / len(ids),
    }


def measure_raw_vault(vault, n, lookups, rng):
    ids = [t.id for t in vault.get_tokens()]
    user_s = id_s = float("inf")
    for _round in range(ROUNDS):
        queries = [{"user_name": user(rng.randrange(n))} for _ in range(lookups)]
        results = []
        user_s = min(user_s, timed([lambda q=q: results.append(vault.find_token(q)) for q in queries]))
        assert all(r is not None for r in results)
        id_picks = [rng.choice(ids) for _ in range(lookups)]
        id_s = min(id_s, timed([lambda x=x: vault.find_token_by_id(x) for x in id_picks]))
    return {"by_user": rate(lookups, user_s), "by_id": rate(lookups, id_s)}


def fill_file_store(path, n):
    """Writes N rows in FileStore's own CSV layout (its header, its column order)."""
    FileStore(path)  # writes the header
    with open(path, "a", newline="") as f:
        w = csv.writer(f, delimiter=",", quotechar='"', quoting=csv.QUOTE_MINIMAL)
        for i in range(n):
            t = sdk_token(i)
            t.set_id(str(i + 1))
            w.writerow(FileStore.set_token(t))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 tokens, fewer lookups")
    args = parser.parse_args()
    n = 1_000 if args.quick else args.tokens
    fast_lookups = 2_000 if args.quick else 50_000
    seed_lookups = 200 if args.quick else 2_000
    file_ops = 10 if args.quick else 30
    rng = random.Random(14)
    rows = []
    raw = None

    with tempfile.TemporaryDirectory(prefix="tokenvault-bench-") as tmp:
        for name, durable in (("VaultTokenStore (durable)", True), ("VaultTokenStore (buffered)", False)):
            path = os.path.join(tmp, f"vault-{durable}")
            with VaultTokenStore(path, PASSPHRASE, kdf="floor", durable=durable) as store:
                rows.append(measure_sdk_store(name, store, path, n, fast_lookups, rng))
                if durable:
                    raw = measure_raw_vault(store.vault, n, fast_lookups, rng)

        path = os.path.join(tmp, "zohooauth.db")
        rows.append(measure_sdk_store("seed SQLite store", SeedSQLiteStore(path), path, n, seed_lookups, rng))

        path = os.path.join(tmp, "sdk_tokens.txt")
        fill_file_store(path, n)
        rows.append(measure_sdk_store("SDK FileStore", FileStore(path), path, n, file_ops, rng,
                                      prefilled=True, inserts=file_ops))

    seed = next(r for r in rows if r["store"] == "seed SQLite store")
    print(f"# {n:,} tokens; Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; tokenvault {version('tokenvault')}; "
          f"lookups best of {ROUNDS} rounds")
    print()
    print("| store | inserts/s | lookups by user/s | lookups by id/s | disk bytes/token | by user vs seed SQLite |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['store']} | {r['inserts']:,.0f} | {r['by_user']:,.0f} | {r['by_id']:,.0f} | "
              f"{r['bytes_per_token']:,.0f} | {r['by_user'] / seed['by_user']:,.1f}x |")
    print(f"| tokenvault.Vault, dicts (the durable vault above) | - | {raw['by_user']:,.0f} | "
          f"{raw['by_id']:,.0f} | - | {raw['by_user'] / seed['by_user']:,.1f}x |")


if __name__ == "__main__":
    main()
