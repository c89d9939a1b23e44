#!/usr/bin/env bash
# The Python package's checks, from scratch: a new virtualenv, the package built from
# source by pip (maturin is its build backend) with the Zoho SDK, then pytest; and clippy
# on the binding crate (the root's clippy builds only the library). Exits non-zero on any
# failure, including a pytest run that collects no test.
#
#   scripts/test-python.sh                 # uses python3; venv in target/python-venv
#   PYTHON=python3.12 scripts/test-python.sh
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

echo "== pip install ./python[zoho] (builds the Rust extension)"
"$PY" -m pip install './python[zoho]'
"$PY" -c 'import tokenvault, tokenvault.zoho; print("installed:", tokenvault.__file__)'

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
