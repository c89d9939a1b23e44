#!/usr/bin/env bash
# Runs the fuzz targets one after another for SECONDS each, one libFuzzer job at a time,
# then prints per target: executions, time, final coverage (cov/ft) and whether it crashed.
#
#   fuzz/run.sh SECONDS [TARGET...]        (default: every target)
#
# Sanitizer: AddressSanitizer when `RUSTC_BOOTSTRAP=1 cargo fuzz build` works on this
# toolchain, else none. FUZZ_SANITIZER=none|address forces one.
# Each target starts from a copy of its committed seeds (fuzz/corpus/TARGET stays
# untouched). The working corpora, libFuzzer logs and crash artifacts go to $FUZZ_WORK
# (default: a new temp dir, removed after a run without crashes, else printed). Exits 1 if
# any target crashed.
set -euo pipefail

usage="usage: fuzz/run.sh SECONDS [TARGET...]"
secs=${1:?$usage}
shift
[[ $secs =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(header record token_decode vault_files differential generation_pointer quarantine_entry
        import_csv import_sqlite save_json import_differential etcd_responses sled_log redb_journal)
fi

# libFuzzer options of a target beyond the common ones. The command line's parsers promise
# memory bounded by their caps: their targets measure each call against a bound from its
# input, and here libFuzzer stops a process whose RSS passes 1 GiB (AddressSanitizer's
# quarantine included) or, with a sanitizer, that makes one allocation over 128 MiB (the
# largest input a target builds is 24 MiB).
target_options() {
    case $1 in
    import_csv | import_sqlite | save_json | import_differential)
        echo "-rss_limit_mb=1024 -malloc_limit_mb=128"
        ;;
    # Longer than one frame can be (64 KiB), so that the rule for a damaged end is reached.
    redb_journal)
        echo "-max_len=140000"
        ;;
    esac
}
keep_work=${FUZZ_WORK:+yes}
work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/tokenvault-fuzz.XXXXXX")}
mkdir -p "$work"
work=$(cd "$work" && pwd)

sanitizer=${FUZZ_SANITIZER:-}
if [ -z "$sanitizer" ]; then
    if RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir "$here" "${targets[@]:0:1}" >"$work/build-asan.log" 2>&1; then
        sanitizer=address
    else
        sanitizer=none
    fi
fi
if [ "$sanitizer" = address ]; then
    # The stable toolchain accepts -Zsanitizer only when told it may use unstable flags.
    export RUSTC_BOOTSTRAP=1
    # LeakSanitizer's check at exit reports sled's detached I/O threads (see lsan.supp).
    export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/lsan.supp}
fi
echo "== fuzz: ${targets[*]}; ${secs}s each; sanitizer: $sanitizer; work dir: $work"
for t in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir "$here" --sanitizer "$sanitizer" "$t" >"$work/build-$t.log" 2>&1 || {
        cat "$work/build-$t.log" >&2
        echo "fuzz: building $t failed" >&2
        exit 1
    }
done

summary="$work/summary.txt"
printf '%-20s %-9s %12s %8s %7s %7s %s\n' target sanitizer executions seconds cov ft crashed | tee "$summary"
failed=0
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    artifacts="$work/artifacts/$t"
    logs="$work/logs/$t"
    mkdir -p "$corpus" "$artifacts" "$logs"
    if [ -d "$here/corpus/$t" ]; then
        cp -n "$here/corpus/$t/"* "$corpus/" 2>/dev/null || true
    fi
    start=$(date +%s)
    # -jobs=1 -workers=1: one fuzzing process, its output in $logs/fuzz-0.log. Run from
    # $logs so that log never lands in the source tree.
    set +e
    read -r -a options <<<"$(target_options "$t")"
    (cd "$logs" && nice -n 10 cargo fuzz run --fuzz-dir "$here" --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -print_final_stats=1 -timeout=60 \
        "${options[@]}" -artifact_prefix="$artifacts/") >"$logs/cargo-fuzz.log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    log="$logs/fuzz-0.log"
    [ -f "$log" ] || log="$logs/cargo-fuzz.log"
    execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
    last=$(grep -aE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
    if [ -z "$execs" ]; then
        # A crash ends the run before the final stats: take the last status line's count.
        execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
    fi
    found=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    crashed=no
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        crashed="YES (exit $rc; $found artifact(s) in $artifacts)"
        failed=1
    fi
    printf '%-20s %-9s %12s %8s %7s %7s %s\n' "$t" "$sanitizer" "${execs:-?}" "$elapsed" "${cov:-?}" "${ft:-?}" "$crashed" |
        tee -a "$summary"
    if [ "$crashed" != no ]; then
        grep -aE -A30 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" | head -60 >&2 || true
    fi
done
# Each fuzzing process keeps its scratch files (template vaults, per-input copies) in
# tokenvault-fuzz-<pid> (libFuzzer exits without running destructors): remove those of
# finished processes.
for d in /dev/shm/tokenvault-fuzz-* "${TMPDIR:-/tmp}"/tokenvault-fuzz-*; do
    [ -d "$d" ] || continue
    pid=${d##*-}
    [[ $pid =~ ^[0-9]+$ ]] || continue
    [ -d "/proc/$pid" ] || rm -rf "$d"
done
if [ "$failed" -eq 0 ] && [ -z "$keep_work" ]; then
    rm -rf "$work"
else
    echo "== fuzz: logs, corpora and artifacts in $work"
fi
exit "$failed"
