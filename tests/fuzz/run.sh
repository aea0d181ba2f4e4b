#!/usr/bin/env bash
# Runs libFuzzer targets (FUZZ_JOBS at a time, default 1), each for SECONDS on a scratch copy of
# its seed corpus (FUZZ_DIR/work/<target>/, wiped first; the seeds in
# tests/fuzz/corpus/<target>/ are only read), and prints one summary line per
# target. Exits 1 when any target crashed, leaked, timed out, ran out of
# memory or printed a sanitizer report; the input that did it is kept as
# FUZZ_DIR/artifacts/<target>-*, the log as FUZZ_DIR/<target>.log.
#   tests/fuzz/run.sh FUZZ_DIR SECONDS TARGET...
set -u
cd "$(dirname "$0")/../.."
if [ $# -lt 3 ]; then
    echo "usage: tests/fuzz/run.sh FUZZ_DIR SECONDS TARGET..." >&2
    exit 2
fi
dir=$1 secs=$2
shift 2
failed=()
mkdir -p "$dir/artifacts"
# fuzz_one TARGET: runs it, prints its summary line; exit 1 when it failed.
fuzz_one() {
    local t=$1
    local bin=$dir/fuzz_$t seeds=tests/fuzz/corpus/$t work=$dir/work/$t log=$dir/$t.log
    [ -x "$bin" ] || { echo "fuzz: $bin is missing (make fuzz-build)" >&2; return 2; }
    [ -d "$seeds" ] || { echo "fuzz: $seeds is missing" >&2; return 2; }
    rm -rf "$work"
    mkdir -p "$work"
    cp -R "$seeds/." "$work/"
    local opts=(-max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
                -artifact_prefix="$dir/artifacts/$t-")
    [ -f "tests/fuzz/$t.dict" ] && opts+=(-dict="tests/fuzz/$t.dict")
    case $t in
    event) opts+=(-max_len=4200) ;;   # just past EVENT_MAX_BYTES
    config) opts+=(-max_len=9000) ;;  # lines past CONFIG_MAX_LINE
    http) opts+=(-max_len=34000) ;;   # headers past the server's 32 KiB a connection
    esac
    echo "fuzz: $bin ${opts[*]} $work" >&2
    local stamp=$dir/work/$t.start
    touch "$stamp"
    local start=$SECONDS rc=0
    "$bin" "${opts[@]}" "$work" >"$log" 2>&1 || rc=$?
    local took=$((SECONDS - start)) runs corp files reports crashes
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 | cut -d' ' -f2)
    files=$(find "$work" -type f | wc -l)
    reports=$(grep -cE '^==[0-9]+==ERROR|^SUMMARY: [A-Za-z]*Sanitizer|runtime error:|invariant broken|^==[0-9]+== ERROR: libFuzzer' "$log")
    crashes=$(find "$dir/artifacts" -name "$t-*" -newer "$stamp" -type f | wc -l)
    echo "fuzz_$t: ${took} s, ${runs:-?} executions, corpus ${corp:-?} (units/bytes), ${files} files, exit ${rc}, ${crashes} crash inputs, ${reports} sanitizer/invariant reports"
    if [ "$rc" -ne 0 ] || [ "$reports" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        tail -n 40 "$log" >&2
        return 1
    fi
}
# FUZZ_JOBS targets at a time (default: one; CI runs one per core). Each
# still runs SECONDS; only the executions per second change.
jobs=${FUZZ_JOBS:-1}
pids=() names=()
for t in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    fuzz_one "$t" &
    pids+=($!)
    names+=("$t")
done
for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || failed+=("${names[$k]}")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in $dir/artifacts/, logs in $dir/<target>.log)" >&2
    exit 1
fi
echo "fuzz: ok ($*)"
