#!/usr/bin/env bash
# shutdown.sh: SIGTERM in the middle of a round, against a real broker.
#
#   tests/kafka/shutdown.sh BOOTSTRAP
#
# 30,000 events are produced; derrd reads them with long rounds (many
# student epochs), and gets SIGTERM while a round runs. Then:
#   - it exits 0, well within the unit's TimeoutStopSec, having abandoned
#     the round (it waits for one epoch at most);
#   - the group's committed offsets equal the log end, and the checkpoint's
#     interaction set equals the produced set: no event lost;
#   - a restart resumes from that checkpoint (models restored, the round
#     count goes on), publishes again, and stops cleanly with SIGTERM.
# Needs build/derrd, build/derrd-replay and build/kcheck (BUILD= to change).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
B=${1:?usage: shutdown.sh BOOTSTRAP}
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/derrd-shutdown.XXXXXX)
run=$(date +%s%N)
topic=shutdown-$run group=shutdown-$run
pid=
say() { echo "shutdown: $*" >&2; }
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    if [ "${keep:-0}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { say "FAIL: $*"; keep=1; exit 1; }
stop_limit=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' systemd/derrd.service)
[ -n "$stop_limit" ] || fail "no TimeoutStopSec in systemd/derrd.service"

"$BUILD/kcheck" create-topic -b "$B" -t "$topic" -p 4 >/dev/null
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic 30000 --users 2000 \
    --items 5000 --expect-out "$work/expect.tsv" >/dev/null 2>"$work/replay.log" ||
    fail "derrd-replay: $(cat "$work/replay.log")"

derrd() {
    exec "$BUILD/derrd" --brokers "$B" --topic "$topic" --group "$group" \
        --state-dir "$work/state" --http-port 0 --stats-interval-ms 0 --log-level debug \
        --round-min-events 5000 --min-interactions 1000 --teacher-dim 64 \
        --student-epochs 400 --settle-epochs 400 "$@"
}
# wait_log FILE PATTERN SECONDS
wait_log() {
    for _ in $(seq 1 $(($3 * 10))); do
        grep -q "$2" "$1" && return 0
        kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")) while waiting for \"$2\": $(tail -5 "$1")"
        sleep 0.1
    done
    fail "no \"$2\" in $1 within $3 s"
}
# stop LOG: SIGTERM, wait, require exit 0 within TimeoutStopSec; sets stop_ms
stop() {
    local t0 rc=0
    t0=$(date +%s%N)
    kill -TERM "$pid"
    timeout "$stop_limit" tail --pid="$pid" -f /dev/null ||
        fail "derrd did not stop within TimeoutStopSec=${stop_limit}s"
    wait "$pid" || rc=$?
    pid=
    [ "$rc" = 0 ] || fail "derrd exited $rc after SIGTERM: $(tail -5 "$1")"
    stop_ms=$((($(date +%s%N) - t0) / 1000000))
}

# Run 1: every event read, then SIGTERM while a long round trains (its
# epochs hold the trainer, so batches wait in the staging queue too).
derrd >"$work/derrd.1.log" 2>&1 &
pid=$!
port=$(derrd_port "$work/derrd.1.log" "$pid" 300) ||
    fail "no HTTP port in the log: $(tail -5 "$work/derrd.1.log")"
consumed=
for _ in $(seq 1 600); do
    consumed=$(curl -sf "http://127.0.0.1:$port/metrics" |
               awk '$1 == "derrd_events_consumed_total" { print $2 }')
    [ "$consumed" = 30000 ] && break
    kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")): $(tail -5 "$work/derrd.1.log")"
    sleep 0.1
done
[ "$consumed" = 30000 ] || fail "derrd consumed ${consumed:-?} of 30000 events"
# A round with events (not the idle attempt at start) that is still
# running 1 s after it started: a short first round (a few thousand events)
# can end just before a fixed delay would, as it once did in CI.
# round_running LOG: prints how many rounds with events have started when
# the last such start has no end line yet; fails otherwise.
round_running() {
    awk '/round starting: [1-9]/ { n++; open = 1 }
         / round [0-9]+(: | abandoned| failed)/ { open = 0 }
         END { if (open) print n; exit !open }' "$1"
}
t_wait=$(date +%s)
while :; do
    kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")): $(tail -5 "$work/derrd.1.log")"
    [ $(($(date +%s) - t_wait)) -lt 120 ] || fail "no round with events ran for 1 s within 120 s"
    if n=$(round_running "$work/derrd.1.log"); then
        sleep 1
        [ "$(round_running "$work/derrd.1.log" || true)" = "$n" ] && break
    fi
    sleep 0.1
done
stop "$work/derrd.1.log"
ms=$stop_ms
grep -q "abandoned: shutting down" "$work/derrd.1.log" ||
    fail "SIGTERM did not land in a round (no \"abandoned\" line): $(tail -5 "$work/derrd.1.log")"
say "run 1: SIGTERM mid-round -> exit 0 in $ms ms (TimeoutStopSec ${stop_limit}s)"

# Nothing lost: committed = log end, stored = produced.
"$BUILD/kcheck" lag -b "$B" -t "$topic" -g "$group" >"$work/lag.txt"
awk '$1 == "total_lag" && $2 != 0 { exit 1 }' "$work/lag.txt" ||
    fail "committed offsets short of the log end: $(cat "$work/lag.txt")"
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
cmp -s "$work/expect.tsv" "$work/got.tsv" || fail "the checkpoint differs from the produced set"

# Run 2: resumes from the checkpoint, models included.
derrd --student-epochs 2 --settle-epochs 2 >"$work/derrd.2.log" 2>&1 &
pid=$!
wait_log "$work/derrd.2.log" "rounds: resuming after round" 60
last=$(sed -n 's/.*rounds: resuming after round \([0-9]*\) .*/\1/p' "$work/derrd.2.log")
[ "$last" -ge 1 ] || fail "resumed after round ${last:-?}"
wait_log "$work/derrd.2.log" "round $((last + 1)): " 120
grep -q "no checkpoint in" "$work/derrd.2.log" && fail "run 2 started empty"
stop "$work/derrd.2.log"
ms2=$stop_ms
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" 2>/dev/null |
    LC_ALL=C sort >"$work/got2.tsv"
cmp -s "$work/expect.tsv" "$work/got2.tsv" || fail "after the restart the state differs"
say "ok: $(wc -l <"$work/got.tsv") interactions = produced, lag 0; restart resumed after" \
    "round $last with its models and ran round $((last + 1)); stopped in $ms2 ms"
