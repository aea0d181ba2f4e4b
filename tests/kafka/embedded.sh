#!/usr/bin/env bash
# embedded.sh: derrd --embedded-kafka, the zero-setup mode, end to end.
#
#   tests/kafka/embedded.sh
#
# Starts derrd with librdkafka's in-process mock cluster, reads the bootstrap
# address it logs, produces 20,000 text events plus duplicates and malformed
# ones to it with derrd-replay from another process, and lets derrd stop by
# itself once it has applied them all (--exit-after-events). The checkpoint
# must then hold exactly the distinct valid pairs produced.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/derrd-embedded.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "embedded: FAIL: $*" >&2; [ -f "$work/derrd.log" ] && tail -5 "$work/derrd.log" >&2; exit 1; }

valid=20000 malformed=200 dups=1000
"$BUILD/derrd" --embedded-kafka --topic demo --state-dir "$work/state" --http-port 0 \
    --exit-after-events $((valid + malformed + dups)) --stats-interval-ms 0 \
    >"$work/derrd.log" 2>&1 &
pid=$!
B=
for _ in $(seq 1 100); do
    B=$(sed -n 's/.*embedded Kafka.* at \([^;]*\);.*/\1/p' "$work/derrd.log")
    [ -n "$B" ] && break
    kill -0 "$pid" 2>/dev/null || fail "derrd exited early"
    sleep 0.1
done
[ -n "$B" ] || fail "no bootstrap address in the log"
"$BUILD/derrd-replay" --brokers "$B" --topic demo --synthetic $valid --format text \
    --malformed 0.01 --duplicates 0.05 --expect-out "$work/expect.tsv" \
    >"$work/replay.json" 2>"$work/replay.log" || fail "derrd-replay: $(cat "$work/replay.log")"
rc=0
timeout 120 tail --pid="$pid" -f /dev/null || fail "derrd did not stop within 120 s"
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "derrd exited $rc"
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic demo 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
cmp -s "$work/expect.tsv" "$work/got.tsv" || fail "stored pairs differ from the produced set"
echo "embedded: ok ($(wc -l <"$work/got.tsv") interactions through the mock cluster)"
