#!/usr/bin/env bash
# The Python package's checks, from scratch: a new virtualenv, the package built from
# source by pip (maturin is its build backend) with the Zoho SDK, then pytest; and clippy
# on the binding crate (the root's clippy builds only the library). Exits non-zero on any
# failure, including a pytest run that collects no test.
#
# With TOKENVAULT_ETCD_ENDPOINTS set (HOST:PORT,...; scripts/etcd-cluster.sh run exports
# it), the package is built with the feature `etcd` (which needs protoc) and
# python/tests/test_etcd.py runs against that cluster. Without it, the package is built as
# a plain `pip install ./python` builds it (no protoc needed), and the etcd tests that need
# a cluster are skipped because the build has no etcd.
#
#   scripts/test-python.sh                 # uses python3; venv in target/python-venv
#   PYTHON=python3.12 scripts/test-python.sh
#   scripts/etcd-cluster.sh run target/etcd-python -- scripts/test-python.sh   # with etcd
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${TOKENVAULT_VENV:-target/python-venv}"

echo "== python: $("$PYTHON" --version)"
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap separately.
    apt-get update -qq
    apt-get install -y -qq python3-venv
fi

echo "== a fresh virtualenv in $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
# In-tree builds (the package depends on the library one directory up) need pip >= 21.3.
"$PY" -m pip install --quiet --upgrade 'pip>=21.3'
"$PY" -m pip install --quiet 'maturin>=1.16,<2' 'pytest>=7' 'zohocrmsdk8-0==7.0.0'

# maturin, pip's build backend here, passes MATURIN_PEP517_ARGS on to its build.
if [ -n "${TOKENVAULT_ETCD_ENDPOINTS:-}" ]; then
    WITH_ETCD=1
    export MATURIN_PEP517_ARGS="--features etcd"
    echo "== pip install ./python[zoho] with the feature etcd (builds the Rust extension)"
else
    WITH_ETCD=0
    unset MATURIN_PEP517_ARGS
    echo "== pip install ./python[zoho] (builds the Rust extension)"
fi
"$PY" -m pip install './python[zoho]'
"$PY" -c 'import tokenvault, tokenvault.zoho; print("installed:", tokenvault.__file__, tokenvault.FEATURES)'
# The build is the one asked for: with etcd exactly when a cluster is there to test it.
built="$("$PY" -c 'import tokenvault; print(int("etcd" in tokenvault.FEATURES))')"
if [ "$built" != "$WITH_ETCD" ]; then
    echo "error: asked for a build with etcd=$WITH_ETCD, got one with etcd=$built" >&2
    exit 1
fi

echo "== pytest"
set +e
# From the repository root: python/tokenvault (the source, without the built module) must
# not shadow the installed package.
TOKENVAULT_REQUIRE_ZOHO=1 "$VENV/bin/pytest" -q -p no:cacheprovider python/tests
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no test" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    exit "$status"
fi

echo "== cargo clippy (the binding crate)"
PYO3_PYTHON="$PY" cargo clippy -p tokenvault-python --all-targets -- -D warnings
if [ "$WITH_ETCD" -eq 1 ]; then
    echo "== cargo clippy (the binding crate, with the feature etcd)"
    PYO3_PYTHON="$PY" cargo clippy -p tokenvault-python --all-targets --features etcd -- -D warnings
fi
