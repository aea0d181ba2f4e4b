#!/usr/bin/env bash
# backpressure.sh: a full staging queue pauses the partitions, and nothing is
# lost or doubled across the pauses.
#
#   tests/kafka/backpressure.sh BOOTSTRAP
#
# Produces 30,000 events (plus 1% malformed) to a new 4-partition topic, then
# runs derrd with --max-staged 1000, so it must pause and resume its
# partitions many times while it reads the backlog, and lets it stop by itself
# once every event is applied (--exit-after-events). The stored set must equal
# the produced set, the dead-letter topic must hold each malformed event once,
# and the log must show the pauses.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:?usage: backpressure.sh BOOTSTRAP}
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/derrd-backpressure.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "backpressure: FAIL: $*" >&2; exit 1; }
run=$(date +%s%N)
topic=bp-$run dlq=bp-dlq-$run
"$BUILD/kcheck" create-topic -b "$B" -t "$topic" -p 4 >/dev/null
"$BUILD/kcheck" create-topic -b "$B" -t "$dlq" -p 1 >/dev/null
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic 30000 --malformed 0.01 \
    --seed 3 --expect-out "$work/expect.tsv" --malformed-out "$work/malformed.txt" \
    >/dev/null 2>"$work/replay.log" || fail "derrd-replay: $(cat "$work/replay.log")"
timeout 180 "$BUILD/derrd" --brokers "$B" --topic "$topic" --group "bp-$run" \
    --dead-letter-topic "$dlq" --state-dir "$work/state" --max-staged 1000 --http false \
    --exit-after-events 30300 --stats-interval-ms 0 >"$work/derrd.log" 2>&1 ||
    fail "derrd: $(tail -5 "$work/derrd.log")"
pauses=$(grep -c "pausing the partitions" "$work/derrd.log" || true)
[ "$pauses" -ge 2 ] || fail "expected pauses with --max-staged 1000, saw $pauses"
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
cmp -s "$work/expect.tsv" "$work/got.tsv" || fail "stored pairs differ from the produced set"
"$BUILD/kcheck" dump -b "$B" -t "$dlq" | cut -f3 | LC_ALL=C sort >"$work/dlq.txt"
cmp -s "$work/malformed.txt" "$work/dlq.txt" || fail "dead-letter topic differs from the malformed set"
echo "backpressure: ok ($pauses pauses, $(wc -l <"$work/got.tsv") interactions, $(wc -l <"$work/dlq.txt") dead letters)"
