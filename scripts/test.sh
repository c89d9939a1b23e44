#!/usr/bin/env bash
# Every test, on a fresh machine: the Rust suites (`cargo test --all-features`: the
# library, the CLI, crash, tamper, compaction, fuzz regressions, both local engines, and
# the etcd vault against a real 3-member etcd cluster on loopback, which
# scripts/etcd-cluster.sh installs (Debian's etcd, and protoc for the etcd client's
# build), starts for the run and stops after it), the vendored redb's unit tests (its
# patches' tests among them), the vendored sled's flush race under
# AddressSanitizer (tests/sled-race), then the Python package's
# (scripts/test-python.sh: installs python3-venv if missing, builds the package with pip
# and maturin, with the feature etcd, in a new virtualenv with the Zoho SDK, runs pytest
# with the etcd tests on a second cluster, lints the binding).
# Nothing is left running. Exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== etcd and protoc (for the etcd feature's build and tests)"
scripts/etcd-cluster.sh install

echo "== cargo test --all-features, beside a 3-member etcd cluster"
mkdir -p target
scripts/etcd-cluster.sh run target/etcd-test -- cargo test --all-features

# The vendored redb (vendor/redb/PATCHES.md): its own unit tests, the tests of its patches
# among them (a member of this workspace, so `cargo test` above does not run them). One
# patch changes how its B-tree inserts, so all of them run, not only the patches' own.
echo "== the vendored redb's unit tests, its patches' tests among them"
cargo test -p tokenvault-redb --lib

# The vendored sled's flush racing its writer thread (vendor/sled/PATCHES.md): its own
# package, built with AddressSanitizer (the stable toolchain takes -Zsanitizer when told
# it may), crossbeam's sanitize mode (deferred drops run soon) and sled's test-only window
# between reading the current I/O buffer and taking a reference to it.
echo "== sled's flush racing its writer, under AddressSanitizer (tests/sled-race)"
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="-Zsanitizer=address --cfg crossbeam_sanitize --cfg tokenvault_iobuf_race_window" \
    cargo test --manifest-path tests/sled-race/Cargo.toml --target "$host" \
    --target-dir target/sled-race-asan

# With the cluster's endpoints exported, test-python.sh builds the package with etcd and
# runs its etcd tests on that cluster.
echo "== the Python package (built with etcd), beside a new 3-member etcd cluster"
scripts/etcd-cluster.sh run target/etcd-test-python -- scripts/test-python.sh
