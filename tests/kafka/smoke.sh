#!/usr/bin/env bash
# smoke.sh: end-to-end check of the test broker (broker.sh) and kcheck against
# a real Kafka broker with librdkafka.
#
# Usage: tests/kafka/smoke.sh
#
# Starts a broker in a temporary directory, creates a 4-partition topic,
# produces 1000 messages, checks that dump returns exactly those, that an
# unknown group lags by 1000, that a bare consumer reads 1000 and commits
# them (its lag becomes 0), then stops the broker, restarts it on the same
# ports and log dir, and checks that the messages and the group's offsets
# survived. Prints "smoke: ok" and exits 0 on success; on failure, says what
# failed on stderr with the tail of the broker log, and exits 1. The broker is
# stopped on every exit.
#
# Needs java, mvn (for the first `broker.sh fetch`), cc and librdkafka-dev.
# Environment: as for broker.sh (DERRD_KAFKA_HOME, BUILD, KCHECK, ...), and
#   DERRD_KAFKA_KEEP=1   keep the temporary broker directory (its path is
#                        printed on stderr).
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
readonly HERE ROOT
readonly BROKER=$HERE/broker.sh
build_dir=${BUILD:-build}
[[ $build_dir == /* ]] || build_dir=$ROOT/$build_dir
readonly KCHECK=${KCHECK:-$build_dir/kcheck}
readonly TOPIC=smoke
readonly COUNT=1000

dir=$(mktemp -d "${TMPDIR:-/tmp}/derrd-kafka-smoke.XXXXXX")
work=$dir/smoke
mkdir -p "$work"

cleanup() {
    local rc=$?
    "$BROKER" stop "$dir/broker" >/dev/null 2>&1 || "$BROKER" stop "$dir/broker" --kill || true
    if [[ ${DERRD_KAFKA_KEEP:-} == 1 ]]; then
        echo "smoke: kept $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "smoke: FAIL: $*" >&2
    if [[ -f $dir/broker/broker.log ]]; then
        echo "--- last lines of the broker log ---" >&2
        tail -n 20 "$dir/broker/broker.log" >&2
    fi
    exit 1
}

kc() { "$KCHECK" "$@" || fail "kcheck $* exited with $?"; }

# total_lag GROUP: the group's total lag on TOPIC.
total_lag() {
    kc lag -b "$bootstrap" -t "$TOPIC" -g "$1" >"$work/lag"
    sed -n 's/^total_lag\t//p' "$work/lag"
}

# check_dump: the topic holds exactly the COUNT messages produced.
check_dump() {
    kc dump -b "$bootstrap" -t "$TOPIC" >"$work/dump"
    local n
    n=$(wc -l <"$work/dump")
    ((n == COUNT)) || fail "dump $1: $n messages, expected $COUNT"
    cut -f3 "$work/dump" | sort >"$work/got"
    cmp -s "$work/sent.sorted" "$work/got" || fail "dump $1: the values differ from those produced"
}

bootstrap=$("$BROKER" start "$dir/broker") || fail "broker.sh start"

kc create-topic -b "$bootstrap" -t "$TOPIC" -p 4
for ((i = 1; i <= COUNT; i++)); do
    printf 'user-%d\titem-%d\t%d\n' $((i % 37)) "$i" $((1700000000000 + i))
done >"$work/sent"
sed 's/\t/\\t/g' "$work/sent" | sort >"$work/sent.sorted" # as dump escapes tabs
kc produce -b "$bootstrap" -t "$TOPIC" <"$work/sent"

check_dump "after produce"

lag=$(total_lag "smoke-unknown-$$")
[[ $lag == "$COUNT" ]] || fail "an unknown group lags by '$lag', expected $COUNT"

kc bare-consume -b "$bootstrap" -t "$TOPIC" -g smoke-bare -n "$COUNT" >"$work/bare"
grep -q "^{\"messages\":$COUNT," "$work/bare" || fail "bare-consume printed: $(cat "$work/bare")"
# The consumer committed on close (enable.auto.commit): nothing left to read.
lag=$(total_lag smoke-bare)
[[ $lag == 0 ]] || fail "after bare-consume the group lags by '$lag', expected 0"

"$BROKER" stop "$dir/broker" || fail "broker.sh stop"
"$BROKER" status "$dir/broker" >/dev/null && fail "the broker still runs after stop"
again=$("$BROKER" restart "$dir/broker") || fail "broker.sh restart"
[[ $again == "$bootstrap" ]] || fail "restart moved the broker from $bootstrap to $again"
kc ready -b "$bootstrap" -t 30

check_dump "after restart"
lag=$(total_lag smoke-bare)
[[ $lag == 0 ]] || fail "after restart the group lags by '$lag', expected 0"

"$BROKER" stop "$dir/broker" || fail "broker.sh stop"
echo "smoke: ok"
