#!/usr/bin/env bash
# The performance table: tokenvault against its peers, in one sitting. A thin wrapper over
# `cargo bench --features peers` (benches/peers.rs does the work):
#
#   scripts/bench.sh                 # N = 10,000 and 100,000
#   scripts/bench.sh 10000           # just N = 10,000
#   SCALE=1 scripts/bench.sh         # also the vault alone at N = 1,000,000
#
# Each (store, N) runs in its own process (so peak RSS is that store's), the stores
# interleaved within each N, SQLCipher from its own package (it cannot link beside SQLite).
# Results: target/bench/results.tsv (raw) and target/bench/report.md (table + ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
exec nice -n 5 cargo bench --features peers --bench peers -- all "$@"
