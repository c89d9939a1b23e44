#!/usr/bin/env bash
# Every test, on a fresh machine: the Rust suites (`cargo test --all-features`: the
# library, the CLI, crash, tamper, compaction, fuzz regressions, ...), then the Python
# package's (scripts/test-python.sh: installs python3-venv if missing, builds the package
# with pip and maturin in a new virtualenv with the Zoho SDK, runs pytest, lints the
# binding). Nothing is left running. Exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --all-features"
cargo test --all-features

echo "== the Python package"
scripts/test-python.sh
