#!/usr/bin/env bash
# Proves that an application depending on tokenvault builds the patched storage engines
# (vendor/sled, the package tokenvault-sled; vendor/redb, the package tokenvault-redb, with
# the feature redb), not crates.io's sled or redb: a throwaway crate outside this workspace
# depends on tokenvault by path, and `cargo tree` from it must show each patched package
# from its vendor directory and no package named sled or redb.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
app="$(mktemp -d)"
trap 'rm -rf "$app"' EXIT
mkdir -p "$app/src"
cat > "$app/Cargo.toml" <<TOML
[package]
name = "an-app"
version = "0.1.0"
edition = "2021"

[dependencies]
tokenvault = { path = "$root", features = ["redb"] }
TOML
echo 'fn main() {}' > "$app/src/main.rs"
cd "$app"
tree="$(cargo tree -e normal --prefix none)"
for engine in sled redb; do
    built="$(grep -E "^tokenvault-$engine v" <<<"$tree" | sort -u || true)"
    echo "the app builds: $built"
    if ! grep -q "($root/vendor/$engine)" <<<"$built"; then
        echo "error: the app does not build tokenvault-$engine from vendor/$engine" >&2
        exit 1
    fi
    if grep -E "^$engine v" <<<"$tree"; then
        echo "error: the app also builds crates.io's $engine" >&2
        exit 1
    fi
done
echo "ok: an application depending on tokenvault builds the patched engines"
