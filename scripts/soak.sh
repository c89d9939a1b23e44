#!/usr/bin/env bash
# The soak run: a million mixed operations with a reopen every 100,000, then verify().
# Usage: scripts/soak.sh [OPS]   (default 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENVAULT_SOAK_OPS="${1:-1000000}" cargo test --release --test soak -- --ignored --nocapture
