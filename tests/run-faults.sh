#!/usr/bin/env bash
# run-faults.sh: the reliability tests (make test-faults).
#
#   tests/run-faults.sh   (BUILD selects the build; KILLS, LOAD_SECONDS, LOAD_RATE)
#
# Against one real single-node KRaft broker (tests/kafka/broker.sh):
#   crash loop   tests/kafka/ingest.sh with KILLS=20 ROUNDS=1: kill -9 at
#                random moments while events stream and rounds publish
#   outage       tests/kafka/outage.sh: the broker stops for 30 s mid-stream
#   load         tests/kafka/load.sh: LOAD_RATE events/s (100,000, about
#                what derrd sustains here with state growing) for
#                LOAD_SECONDS (30; bench/RELIABILITY.md has a 600 s run)
# Then, without a broker:
#   disk full    tests/diskfull.sh: state and snapshots on a tmpfs that fills
#   mock faults  tests/kafka/faults.sh: librdkafka's mock cluster
#                injecting request errors, a broker down, coordinator moves
#   HTTP abuse   tests/http_abuse.sh
# bench/RELIABILITY.md records the figures. Exits non-zero on the first
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
KILLS=${KILLS:-20}
LOAD_SECONDS=${LOAD_SECONDS:-30}
dir=$(mktemp -d /tmp/derrd-faults.XXXXXX)
cleanup() {
    tests/kafka/broker.sh stop "$dir/broker" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
t0=$(date +%s)
B=$(tests/kafka/broker.sh start "$dir/broker")
echo "fault tests: broker at $B"
KILLS=$KILLS ROUNDS=1 RATE=2000 tests/kafka/ingest.sh "$B" 40000
tests/kafka/outage.sh "$B" "$dir/broker"
RATE=${LOAD_RATE:-100000} IDLE=10 tests/kafka/load.sh "$B" "$LOAD_SECONDS"
tests/kafka/broker.sh stop "$dir/broker" >/dev/null
tests/diskfull.sh
tests/kafka/faults.sh
tests/http_abuse.sh
echo "fault tests: ok ($(( $(date +%s) - t0 )) s)"
