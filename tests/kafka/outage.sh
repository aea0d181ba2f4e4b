#!/usr/bin/env bash
# outage.sh: the broker stops for OUTAGE seconds (default 30) mid-stream.
#
#   tests/kafka/outage.sh BOOTSTRAP BROKER_DIR
#
# BROKER_DIR is the broker.sh directory of BOOTSTRAP: the test stops that
# broker and starts it again on the same ports. Events stream in at a fixed
# rate while derrd runs rounds; once a snapshot is out, the broker stops.
# During the outage:
#   - /readyz turns 503 with the reason; /healthz stays 200;
#   - /v1/snapshot keeps serving the last snapshot, which verifies.
# After the restart: /readyz is 200 again, derrd reads on, the group's
# committed offsets reach the log end; a SIGTERM in a second outage exits
# 0 without waiting for the unreachable group; the checkpoint's interaction set
# equals the produced set exactly; or, when some acknowledged messages never
# reached the topic (the producer's or the broker's loss, not derrd's; a
# warning), the set the topic holds exactly.
# Needs build/derrd, build/derrd-replay, build/derrd-snap, build/kcheck.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
B=${1:?usage: outage.sh BOOTSTRAP BROKER_DIR}
BDIR=${2:?usage: outage.sh BOOTSTRAP BROKER_DIR}
BUILD=${BUILD:-build}
OUTAGE=${OUTAGE:-30}
work=$(mktemp -d /tmp/derrd-outage.XXXXXX)
run=$(date +%s%N)
topic=outage-$run group=outage-$run
pid= replay_pid=
say() { echo "outage: $*" >&2; }
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    [ -n "$replay_pid" ] && kill "$replay_pid" 2>/dev/null || true
    # Never leave the shared broker down.
    tests/kafka/broker.sh status "$BDIR" >/dev/null 2>&1 ||
        tests/kafka/broker.sh restart "$BDIR" >/dev/null 2>&1 || true
    if [ "${keep:-0}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { say "FAIL: $*"; [ -f "$work/derrd.log" ] && tail -8 "$work/derrd.log" >&2; keep=1; exit 1; }
alive() {
    kill -0 "$pid" 2>/dev/null && return 0
    local how
    how=$(exit_how "$pid")
    pid=
    fail "derrd exited $1 ($how)"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# The HTTP status of GET $1 (000 when none came), the body in $work/body;
# a transfer curl gave up on (error, 5 s timeout) adds its exit code.
code() {
    local rc=0 st
    st=$(curl -s -o "$work/body" -w '%{http_code}' --max-time 5 "$url$1") || rc=$?
    if [ "$rc" = 0 ]; then echo "$st"; else echo "$st (curl exit $rc)"; fi
}
# await STATUS PATH SECONDS WHEN: polls GET PATH every 0.1 s until it
# answers STATUS; fails when derrd exits (WHEN says when) or time runs out.
await() {
    for _ in $(seq 1 $(($3 * 10))); do
        [ "$(code "$2")" = "$1" ] && return 0
        alive "$4"
        sleep 0.1
    done
    [ "$(code "$2")" = "$1" ] || fail "$2 did not answer $1 within $3 s $4"
}

"$BUILD/kcheck" create-topic -b "$B" -t "$topic" -p 4 >/dev/null
"$BUILD/derrd" --brokers "$B" --topic "$topic" --group "$group" --state-dir "$work/state" \
    --http-port 0 --stats-interval-ms 5000 --checkpoint-interval-ms 500 --shutdown-timeout-ms 4000 \
    --round-min-events 3000 --min-interactions 1000 --teacher-dim 32 \
    --kafka.reconnect.backoff.max.ms 1000 >"$work/derrd.log" 2>&1 &
pid=$!
port=$(derrd_port "$work/derrd.log" "$pid" 300) || fail "no HTTP port in the log"
url=http://127.0.0.1:$port
# 45,000 events at 1,000/s: the stream runs before, during and after the outage.
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic 45000 --users 3000 \
    --items 6000 --rate 1000 --expect-out "$work/expect.tsv" \
    --delivered-out "$work/delivered.tsv" \
    >"$work/replay.json" 2>"$work/replay.log" &
replay_pid=$!

await 200 /v1/snapshot 60 "before the outage"
[ "$(code /readyz)" = 200 ] || fail "not ready before the outage: $(cat "$work/body")"

say "stopping the broker for $OUTAGE s"
tests/kafka/broker.sh stop "$BDIR" >/dev/null
t_down=$(now_ms)
not_ready_ms= served=0 verified=0 checks=0
while [ $(($(now_ms) - t_down)) -lt $((OUTAGE * 1000)) ]; do
    alive "during the outage"
    checks=$((checks + 1))
    if [ "$(code /readyz)" = 503 ]; then
        grep -q "no Kafka broker reachable" "$work/body" || fail "503 without the reason: $(cat "$work/body")"
        [ -n "$not_ready_ms" ] || not_ready_ms=$(($(now_ms) - t_down))
    fi
    [ "$(code /healthz)" = 200 ] || fail "/healthz failed during the outage"
    got=$(code /v1/snapshot)
    if [ "$got" = 200 ]; then
        served=$((served + 1))
        cp "$work/body" "$work/during.dsnap"
        "$BUILD/derrd-snap" verify "$work/during.dsnap" >/dev/null || fail "a snapshot served during the outage does not verify"
        verified=$((verified + 1))
    else
        fail "/v1/snapshot not served during the outage (HTTP status $got, $(wc -c <"$work/body") bytes)"
    fi
    sleep 1
done
[ -n "$not_ready_ms" ] || fail "/readyz never said not ready during the outage"
tests/kafka/broker.sh restart "$BDIR" >/dev/null || fail "the broker did not start again"
t_up=$(now_ms)
say "broker back after $(((t_up - t_down) / 1000)) s; /readyz said 503 after $not_ready_ms ms;" \
    "$verified snapshot downloads verified during the outage"
ready_ms=
for _ in $(seq 1 600); do
    if [ "$(code /readyz)" = 200 ]; then ready_ms=$(($(now_ms) - t_up)); break; fi
    alive "after the outage"
    sleep 0.1
done
[ -n "$ready_ms" ] || fail "/readyz not ready 60 s after the broker came back: $(cat "$work/body")"

wait "$replay_pid" || fail "derrd-replay failed: $(cat "$work/replay.log")"
replay_pid=
lag=$(wait_committed "$B" "$topic" "$group" "$pid") ||
    fail "committed offsets never reached the log end after the outage (lag $lag)"
# A stop as a second outage begins, before derrd's statistics can show it:
# the final commit goes unanswered (4 s, --shutdown-timeout-ms), derrd does
# not leave the group, and librdkafka's teardown, which would wait for the
# unanswered commits until the session timed out (45-57 s measured), is cut
# at 4 s too.
tests/kafka/broker.sh stop "$BDIR" >/dev/null
t_term=$(now_ms)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
stop_ms=$(($(now_ms) - t_term))
tests/kafka/broker.sh restart "$BDIR" >/dev/null || fail "the broker did not start again"
[ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM during the outage"
grep -q "not leaving the group" "$work/derrd.log" ||
    fail "derrd did not see the outage at its stop: $(grep -i kafka "$work/derrd.log" | tail -3)"
# Generous: the commit's and the teardown's 4 s each, a round's epoch.
[ "$stop_ms" -le 25000 ] || fail "SIGTERM during the outage took $stop_ms ms"
say "SIGTERM during a second outage: exit 0 in $stop_ms ms"
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
produced=$(wc -l <"$work/expect.tsv") stored=$(wc -l <"$work/got.tsv")
if cmp -s "$work/expect.tsv" "$work/got.tsv"; then
    say "ok: ready again $ready_ms ms after the restart; $produced pairs produced = stored, 0 lost, lag 0"
    exit 0
fi
# derrd can only store what the topic holds. Tell a consumer that skipped
# messages (derrd's failure) from acknowledged messages that never reached
# the topic (the producer's or the broker's): every message the topic holds,
# its pairs, and each acknowledgement against the offset it names.
keep=1
cp "$BDIR/broker.log" "$work/broker.log" 2>/dev/null || true
"$BUILD/kcheck" dump -b "$B" -t "$topic" >"$work/topic.dump" ||
    fail "stored $stored of $produced produced pairs, and the topic could not be read back"
# derrd-replay --synthetic writes {"user":"U","item":"I","ts":MS} only.
sed -n 's/^[0-9]*	[0-9]*	{"user":"\([^"]*\)","item":"\([^"]*\)".*/\1\t\2/p' "$work/topic.dump" |
    LC_ALL=C sort -u >"$work/held.tsv"
held=$(wc -l <"$work/held.tsv")
absent=$(awk -F'\t' 'NR == FNR { held[$1 "\t" $2] = $3; next }
    { k = $1 "\t" $2
      if (!(k in held)) { if (absent++ < 5) ex = ex " p" $1 "@" $2 " " $3 }
      else if (held[k] != $3) { if (moved++ < 5) ex = ex " p" $1 "@" $2 " acked " $3 " holds " held[k] } }
    END { printf "%d acknowledged messages absent from the topic, %d with another payload at their offset;%s\n",
          absent, moved, ex }' "$work/topic.dump" "$work/delivered.tsv")
cmp -s "$work/held.tsv" "$work/got.tsv" ||
    fail "derrd stored $stored pairs, the topic holds $held ($(LC_ALL=C comm -23 "$work/held.tsv" \
        "$work/got.tsv" | wc -l) of them not stored) of $produced produced; $absent"
# What is left is upstream of derrd: messages acknowledged to derrd-replay's
# producer (librdkafka 2.0.2, idempotent, acks=all) that the restarted
# broker does not hold. Seen twice in this project's CI runs before this
# check (4 and 6 of 45,000; librdkafka issue #4134 reports such gaps after
# broker outages). A warning with the evidence kept, not derrd's failure:
# derrd's own guarantee, everything the topic holds is stored, held above.
# Only when the evidence accounts for it: the missing pairs are pairs of
# acknowledged messages the topic does not hold, and few (0.1%); anything
# else (a replay tool that counts a lost message as delivered) fails.
n_absent=${absent%% *}
missing=$((produced - held))
[ "$missing" -ge 1 ] && [ "$n_absent" -ge "$missing" ] && [ $((missing * 1000)) -le "$produced" ] ||
    fail "$missing of $produced produced pairs are not in the topic, and the acknowledgements" \
        "do not account for it: $absent"
say "WARNING: $((produced - held)) of $produced produced pairs never reached the topic" \
    "(producer or broker, not derrd): $absent evidence kept in $work"
say "ok: ready again $ready_ms ms after the restart; derrd stored all $held pairs the topic holds, lag 0"
