#!/usr/bin/env bash
# run.sh: the integration tests against a real Apache Kafka broker.
#
#   tests/kafka/run.sh          (make test runs it after the unit tests)
#
# Starts one single-node KRaft broker (broker.sh, jars from Maven Central,
# cached) on 127.0.0.1 and runs, against it:
#   replay.sh   derrd-replay produces exactly what it says it produced
#   ingest.sh   derrd, killed with SIGKILL mid-stream, loses nothing
#   backpressure.sh  a full staging queue pauses the partitions, losslessly
#   rounds.sh   rounds publish new users, snapshots pull over HTTP, teacher file
#   shutdown.sh SIGTERM mid-round exits 0, loses nothing; a restart resumes
# then embedded.sh (derrd --embedded-kafka, librdkafka's mock cluster) and
# smoke.sh, which checks the broker script itself, restart included, on
# a broker of its own (SKIP_SMOKE=1 skips it, as make asan does). Stops
# every broker on exit. Exits non-zero on the
# first failure. Environment: BUILD (default build), as for broker.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
export BUILD=${BUILD:-build}
dir=$(mktemp -d /tmp/derrd-kafka.XXXXXX)
cleanup() {
    tests/kafka/broker.sh stop "$dir/broker" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
t0=$(date +%s)
B=$(tests/kafka/broker.sh start "$dir/broker")
echo "kafka tests: broker at $B (started in $(( $(date +%s) - t0 )) s)"
tests/kafka/replay.sh "$B"
tests/kafka/ingest.sh "$B"
tests/kafka/backpressure.sh "$B"
tests/kafka/rounds.sh "$B"
tests/kafka/shutdown.sh "$B"
tests/kafka/embedded.sh
# The sanitizer builds skip it: it checks the broker script, not derrd.
[ "${SKIP_SMOKE:-0}" = 1 ] || tests/kafka/smoke.sh
echo "kafka tests: ok ($(( $(date +%s) - t0 )) s)"
