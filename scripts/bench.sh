#!/usr/bin/env bash
# The performance table: tokenvault against its peers, in one sitting.
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
root=$PWD
out=${OUT:-$root/target/bench}
mkdir -p "$out"
export BENCH_DIR=${BENCH_DIR:-$out/tmp}
ns=("$@")
[ ${#ns[@]} -gt 0 ] || ns=(10000 100000)

echo "== building (release)" >&2
bin=$(nice -n 10 cargo bench --features peers --bench peers --no-run 2>&1 \
    | tee "$out/build.log" | sed -n 's/.*(\(.*target\/release\/deps\/peers-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not find the peers bench binary; see $out/build.log" >&2; exit 1; }
(cd benches/sqlcipher && CARGO_TARGET_DIR="$root/target/sqlcipher" nice -n 10 cargo build --release -q)
cipher=$root/target/sqlcipher/release/sqlcipher-bench

results=$out/results.tsv
: > "$results"
{
    echo "# $(date -u +%FT%TZ) nproc=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "# rustc: $(rustc --version)"
} >> "$results"

run() { # store n
    echo "== $1 N=$2" >&2
    local cmd=("$bin" run "$1" --n "$2")
    [ "$1" = sqlcipher ] && cmd=("$cipher" run sqlcipher --n "$2")
    "${cmd[@]}" | tee -a "$results" | grep -E 'insert|find_user|get_tokens' >&2 || true
    rm -rf "${BENCH_DIR:?}"/*
}

"$bin" kdf | tee -a "$results" >&2
for n in "${ns[@]}"; do
    for store in vault sled-plain sled-crypto sqlite sqlcipher; do
        run "$store" "$n"
    done
    # Default options (the recommended KDF too): the peak-RSS figure.
    if [ "$n" -ge 100000 ]; then run vault-default "$n"; fi
done
if [ "${SCALE:-0}" = 1 ]; then
    run vault 1000000
fi

"$bin" report "$results" > "$out/report.md"
cat "$out/report.md"
echo "raw: $results; table: $out/report.md" >&2
