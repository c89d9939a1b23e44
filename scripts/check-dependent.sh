#!/usr/bin/env bash
# Proves that an application depending on tokenvault builds the patched storage engine
# (vendor/sled, the package tokenvault-sled), not crates.io's sled: a throwaway crate
# outside this workspace depends on tokenvault by path, and `cargo tree` from it must show
# tokenvault-sled from vendor/sled and no package named sled.
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
tokenvault = { path = "$root" }
TOML
echo 'fn main() {}' > "$app/src/main.rs"
cd "$app"
tree="$(cargo tree -e normal --prefix none)"
engine="$(grep -E '^tokenvault-sled v' <<<"$tree" | sort -u || true)"
echo "the app builds: $engine"
if ! grep -q "($root/vendor/sled)" <<<"$engine"; then
    echo "error: the app does not build tokenvault-sled from vendor/sled" >&2
    exit 1
fi
if grep -E '^sled v' <<<"$tree"; then
    echo "error: the app also builds crates.io's sled" >&2
    exit 1
fi
echo "ok: an application depending on tokenvault builds the patched engine"
