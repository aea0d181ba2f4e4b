#!/usr/bin/env bash
# load.sh: events as fast as this machine produces them, for SECONDS.
#
#   tests/kafka/load.sh BOOTSTRAP [SECONDS]     (default 60; 600 for the record)
#
# derrd-replay produces synthetic events (50,000 users, 20,000 items) with no
# rate limit (or at RATE/s) for SECONDS, then stops; derrd ingests them, with
# rounds off unless ROUNDS=1 (a round's epochs run over all interactions, so
# at these rates rounds fall behind the stream: docs/ROUNDS.md). Every 5 s:
# derrd's RSS, interactions, lag and loop stall. Then:
#   - the loop's longest stall of its own (derrd_loop_lag_own_max_seconds:
#     the stall less the time the loop thread waited for a CPU, which on two
#     cores shared with the broker and the producer is the machine's doing)
#     is under 100 ms. derrd runs at debug level, so a failure shows its
#     stall lines beside the checkpoints' times;
#   - the group's committed offsets reach the log end within 120 s after the
#     replay (lag 0);
#   - RSS is bounded apart from data growth: once the stream stops, IDLE s
#     more (30; rounds settling, with ROUNDS=1) grow it by under 5%.
# Prints the samples and one summary line (rates, RSS per interaction).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
B=${1:?usage: load.sh BOOTSTRAP [SECONDS]}
SECONDS_RUN=${2:-60}
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-0}
RATE=${RATE:-0}
IDLE=${IDLE:-30}
work=$(mktemp -d /tmp/derrd-load.XXXXXX)
run=$(date +%s%N)
topic=load-$run group=load-$run
pid= replay_pid=
say() { echo "load: $*" >&2; }
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    [ -n "$replay_pid" ] && kill "$replay_pid" 2>/dev/null || true
    if [ "${keep:-0}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { say "FAIL: $*"; keep=1; exit 1; }
metric() { awk -v n="$1" '$1 == n { print $2 }' "$work/metrics"; }
scrape() { curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }

"$BUILD/kcheck" create-topic -b "$B" -t "$topic" -p 4 >/dev/null
"$BUILD/derrd" --brokers "$B" --topic "$topic" --group "$group" --state-dir "$work/state" \
    --http-port 0 --stats-interval-ms 10000 --settle-patience 2 \
    --log-level debug --rounds "$([ "$ROUNDS" = 1 ] && echo true || echo false)" >"$work/derrd.log" 2>&1 &
pid=$!
port=$(derrd_port "$work/derrd.log" "$pid") || fail "no HTTP port in the log: $(tail -5 "$work/derrd.log")"
scrape || fail "no /metrics"
rss0=$(rss_kib)
# More events than SECONDS can take; the replay is stopped at SECONDS.
nice -n 10 "$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic 500000000 --users 50000 \
    --items 20000 --rate "$RATE" >"$work/replay.json" 2>"$work/replay.log" &
replay_pid=$!
t0=$(date +%s)
printf 'load: %6s %10s %12s %10s %8s %9s\n' t_s consumed interactions lag rss_mib stall_ms >&2
sample() {
    scrape || return 0
    printf 'load: %6s %10s %12s %10s %8s %9s\n' "$(($(date +%s) - t0))" \
        "$(metric derrd_events_consumed_total)" "$(metric derrd_interactions)" \
        "$(awk '/^derrd_consumer_lag\{/ { s += $2 } END { print s + 0 }' "$work/metrics")" \
        "$(($(rss_kib) / 1024))" \
        "$(awk '$1 == "derrd_loop_lag_seconds" { printf "%.1f", $2 * 1000 }' "$work/metrics")" >&2
}
while [ $(($(date +%s) - t0)) -lt "$SECONDS_RUN" ]; do
    kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")): $(tail -5 "$work/derrd.log")"
    kill -0 "$replay_pid" 2>/dev/null || fail "derrd-replay exited: $(cat "$work/replay.log")"
    sleep 5
    sample
done
kill -INT "$replay_pid" 2>/dev/null || true
wait "$replay_pid" 2>/dev/null || true
replay_pid=
t_stop=$(date +%s)
lag=$(wait_committed "$B" "$topic" "$group" "$pid") ||
    fail "committed offsets did not reach the log end within 120 s (lag $lag): $(tail -5 "$work/derrd.log")"
drain_s=$(($(date +%s) - t_stop))
sample
scrape
produced=$(metric derrd_events_consumed_total) inter=$(metric derrd_interactions)
# Every message the topic holds was read once: the consumed count is the
# sum of the partitions' log ends (the topic is this run's own).
"$BUILD/kcheck" lag -b "$B" -t "$topic" -g "$group" >"$work/lag.txt" ||
    fail "kcheck lag failed"
held=$(awk '$1 ~ /^[0-9]+$/ { s += $3 } END { print s + 0 }' "$work/lag.txt")
[ -n "$produced" ] && [ "$produced" = "$held" ] ||
    fail "derrd consumed ${produced:-?} messages, the topic holds $held"
rss1=$(rss_kib)
sleep "$IDLE" # nothing new arrives (with ROUNDS=1, rounds settle)
sample
rss2=$(rss_kib)
scrape
ms() { metric "$1" | awk '{ printf "%.1f", $1 * 1000 }'; }
stall=$(ms derrd_loop_lag_max_seconds) own=$(ms derrd_loop_lag_own_max_seconds)
[ -n "$stall" ] && [ -n "$own" ] || fail "no loop stall figures in /metrics"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM"
awk -v s="$own" 'BEGIN { exit !(s < 100) }' ||
    fail "the loop's own longest stall $own ms (limit 100 ms; longest stall $stall ms):" \
        "$(grep -E 'stalled|checkpoint' "$work/derrd.log" | tail -8)"
awk -v a="$rss1" -v b="$rss2" 'BEGIN { exit !(b <= a * 1.05) }' ||
    fail "RSS grew from $((rss1 / 1024)) to $((rss2 / 1024)) MiB over $IDLE s of unchanged data"
say "ok (rounds $([ "$ROUNDS" = 1 ] && echo on || echo off), rate ${RATE/#0/unlimited}):" \
    "$produced events in ${SECONDS_RUN} s ($((produced / SECONDS_RUN))/s), $inter interactions;" \
    "lag 0 ${drain_s} s after the replay; longest loop stall $stall ms ($own ms its own);" \
    "RSS $((rss0 / 1024)) MiB" \
    "at start, $((rss1 / 1024)) MiB at the end of the stream" \
    "($(awk -v a="$rss0" -v b="$rss1" -v n="$inter" 'BEGIN { printf "%.0f", (b - a) * 1024 / (n > 0 ? n : 1) }') B per interaction)," \
    "$((rss2 / 1024)) MiB after $IDLE s idle"
