#!/usr/bin/env bash
# ingest.sh: derrd against a real broker, killed with SIGKILL mid-stream.
#
#   tests/kafka/ingest.sh BOOTSTRAP [EVENTS]
#
# Produces EVENTS (default 100000) valid JSON events plus 1% malformed, 5%
# duplicate and 0.2% erasure ("forget") ones with derrd-replay, at a steady
# rate, while derrd runs. Once
# derrd has partitions and is reading, it is killed with SIGKILL at a random
# moment, and restarted, KILLS times (default 4). The last run is stopped with
# SIGTERM after the group's committed offsets reach the end of the log.
# Then, exactly:
#   - the checkpoint's interaction set equals the distinct valid pairs produced,
#     minus those of a user that a later forget erased;
#   - the dead-letter topic holds each malformed payload once, no more (an
#     aborted transaction of another producer comes first in it);
#   - every partition's committed offset equals its log end offset.
# With ROUNDS=1 (the crash loop of make test-faults: KILLS=20 ROUNDS=1),
# derrd also runs short rounds and publishes snapshots all along, so kills
# land in training, publishing and checkpointing; after every kill, `latest`
# must point to a snapshot that verifies, and so must every snapshot file;
# temp files a kill leaves are swept by the next start (none at the end).
# Needs build/derrd, build/derrd-replay and build/kcheck (BUILD= to change).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
B=${1:?usage: ingest.sh BOOTSTRAP [EVENTS]}
EVENTS=${2:-100000}
KILLS=${KILLS:-4}
RATE=${RATE:-8000}
ROUNDS=${ROUNDS:-0}
BUILD=${BUILD:-build}
SEED=${SEED:-$RANDOM}
work=$(mktemp -d /tmp/derrd-ingest.XXXXXX)
run=$(date +%s%N)
topic=ingest-$run dlq=ingest-dlq-$run group=ingest-$run
pid=
say() { echo "ingest: $*" >&2; }
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    [ -n "${replay_pid:-}" ] && kill "$replay_pid" 2>/dev/null || true
    if [ "${keep:-0}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { say "FAIL: $*"; keep=1; exit 1; }

"$BUILD/kcheck" create-topic -b "$B" -t "$topic" -p 4 >/dev/null
"$BUILD/kcheck" create-topic -b "$B" -t "$dlq" -p 1 >/dev/null
# Another producer's aborted transaction: the dead-letter topic's last
# offsets are then no message (an aborted one and the marker), which the
# read-back at start must not wait for (it did, 60 s, then refused to start).
echo "aborted, never a dead letter" | "$BUILD/kcheck" produce -b "$B" -t "$dlq" -x abort >/dev/null

if [ "$ROUNDS" = 1 ]; then
    # Static membership: a restarted derrd takes its partitions back at once
    # instead of waiting out the killed one's session, so 20 kills fit.
    round_flags=(--rounds true --round-min-events 2000 --round-interval-ms 500
                 --min-interactions 1000 --teacher-dim 32 --settle-patience 2
                 --kafka.group.instance.id "derrd-$run")
else
    round_flags=(--rounds false)
fi
derrd() {
    # exec: $! must be derrd itself, so that kill -9 hits it, not a subshell.
    exec "$BUILD/derrd" --brokers "$B" --topic "$topic" --group "$group" \
        --dead-letter-topic "$dlq" --state-dir "$work/state" --http false \
        --checkpoint-interval-ms 300 --stats-interval-ms 1000 "${round_flags[@]}" \
        --kafka.session.timeout.ms 6000 --kafka.heartbeat.interval.ms 500 "$@"
}
snaps="$work/state/snapshots" verified=0 temps=0
# After a kill: latest and every snapshot file verify; count the temp files.
check_snapshots() {
    [ "$ROUNDS" = 1 ] && [ -d "$snaps" ] || return 0
    if [ -e "$snaps/latest" ] || [ -L "$snaps/latest" ]; then
        "$BUILD/derrd-snap" verify "$snaps" >/dev/null 2>"$work/verify.err" ||
            fail "after kill $1, latest does not verify: $(cat "$work/verify.err")"
        verified=$((verified + 1))
    fi
    for f in "$snaps"/student-*.dsnap; do
        [ -e "$f" ] || continue
        "$BUILD/derrd-snap" verify "$f" >/dev/null 2>"$work/verify.err" ||
            fail "after kill $1, $f does not verify: $(cat "$work/verify.err")"
        verified=$((verified + 1))
    done
    temps=$((temps + $(find "$snaps" -name '*.tmp.*' | wc -l)))
}

say "seed $SEED: $EVENTS events at $RATE/s to $topic, killing derrd $KILLS times"
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic "$EVENTS" \
    --users 3000 --items 8000 --seed "$SEED" --rate "$RATE" \
    --malformed 0.01 --duplicates 0.05 --forget 0.002 \
    --expect-out "$work/expect.tsv" --malformed-out "$work/malformed.txt" \
    >"$work/replay.json" 2>"$work/replay.log" &
replay_pid=$!

for k in $(seq 1 "$KILLS"); do
    derrd >"$work/derrd.$k.log" 2>&1 &
    pid=$!
    # Wait until it reads (partitions assigned), then let it run a random
    # 0.3-2.3 s so the kill lands mid-batch, mid-checkpoint or mid-commit.
    for _ in $(seq 1 300); do
        grep -q "assigned partition" "$work/derrd.$k.log" && break
        kill -0 "$pid" 2>/dev/null || fail "derrd run $k exited early: $(tail -5 "$work/derrd.$k.log")"
        sleep 0.1
    done
    grep -q "assigned partition" "$work/derrd.$k.log" || fail "run $k never got partitions"
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + 2.0 * r / 32767 }')"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    check_snapshots "$k"
    say "run $k killed with SIGKILL: $(grep -o "consumed [0-9]*" "$work/derrd.$k.log" | tail -1)" \
        "$([ "$ROUNDS" = 1 ] && echo "; $(grep -c "published;" "$work/derrd.$k.log" || true) published")"
done

wait "$replay_pid" || fail "derrd-replay failed: $(cat "$work/replay.log")"
replay_pid=
say "replay done: $(cat "$work/replay.json")"

derrd >"$work/derrd.final.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    grep -q "running:" "$work/derrd.final.log" && break
    sleep 0.1
done
lag=$(wait_committed "$B" "$topic" "$group" "$pid") ||
    fail "committed offsets never reached the log end (lag $lag): $(tail -5 "$work/derrd.final.log")"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM: $(tail -5 "$work/derrd.final.log")"

# The stored set equals the expected set, exactly.
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" \
    2>/dev/null | LC_ALL=C sort >"$work/got.tsv"
LC_ALL=C sort -c -u "$work/got.tsv" 2>/dev/null || fail "the state holds a pair twice"
if ! cmp -s "$work/expect.tsv" "$work/got.tsv"; then
    diff "$work/expect.tsv" "$work/got.tsv" | head -10 >&2
    fail "stored interactions differ from the produced set"
fi
# The dead-letter topic holds exactly the malformed payloads, once each.
"$BUILD/kcheck" dump -b "$B" -t "$dlq" | cut -f3 | LC_ALL=C sort >"$work/dlq.txt"
if ! cmp -s "$work/malformed.txt" "$work/dlq.txt"; then
    diff "$work/malformed.txt" "$work/dlq.txt" | head -10 >&2
    fail "the dead-letter topic differs from the malformed events produced"
fi
"$BUILD/kcheck" lag -b "$B" -t "$topic" -g "$group" >"$work/lag.txt"
awk '$1 == "total_lag" && $2 != 0 { exit 1 }' "$work/lag.txt" || fail "lag after shutdown: $(cat "$work/lag.txt")"

if [ "$ROUNDS" = 1 ]; then
    check_snapshots final
    left=$(find "$snaps" -name '*.tmp.*' | wc -l)
    [ "$left" = 0 ] || fail "$left temp files left in $snaps after a clean start and stop"
    [ -L "$snaps/latest" ] || fail "no snapshot published"
    rounds_msg="; $verified snapshot checks passed, $temps temp files left by kills, all swept"
fi
say "ok: $(wc -l <"$work/got.tsv") interactions stored = expected, $(wc -l <"$work/dlq.txt") dead letters = malformed, lag 0, $KILLS kills${rounds_msg:-}"
