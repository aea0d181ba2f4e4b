#!/usr/bin/env bash
# embedded.sh: derrd --embedded-kafka, the zero-setup mode, end to end.
#
#   tests/kafka/embedded.sh
#
# Starts derrd with librdkafka's in-process mock cluster, reads the bootstrap
# address it logs, produces 20,000 text events plus duplicates and malformed
# ones to it with derrd-replay from another process, and lets derrd stop by
# itself once it has applied them all (--exit-after-events). The checkpoint
# must then hold exactly the distinct valid pairs produced, and the
# dead-letter topic every malformed one, including a 300,000-byte message
# (over a producer's default message.max.bytes when copied whole) cut to
# 64 KiB with a derrd.truncated header. Then: an unsendable dead letter
# stops derrd with exit 1; a storm of signals during a shutdown does not
# kill it.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/derrd-embedded.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "embedded: FAIL: $*" >&2; [ -f "$work/derrd.log" ] && tail -5 "$work/derrd.log" >&2; exit 1; }

# start_derrd LOG ARGS...: derrd --embedded-kafka ARGS in the background
# (pid), logging to LOG; B gets the mock cluster's address from the log.
start_derrd() {
    local log=$1
    shift
    "$BUILD/derrd" --embedded-kafka --http false --stats-interval-ms 0 "$@" >"$log" 2>&1 &
    pid=$!
    B=
    for _ in $(seq 1 100); do
        B=$(sed -n 's/.*embedded Kafka.* at \([^;]*\);.*/\1/p' "$log")
        [ -n "$B" ] && return 0
        kill -0 "$pid" 2>/dev/null || fail "derrd exited early"
        sleep 0.1
    done
    fail "no bootstrap address in the log"
}

valid=20000 malformed=200 dups=1000 big=300000
start_derrd "$work/derrd.log" --topic demo --state-dir "$work/state" \
    --dead-letter-topic demo-dlq --exit-after-events $((valid + malformed + dups + 2))
# Still named derrd, whether or not it started again for the BLAS kernels
# (ps, pgrep and journald go by this name).
[ "$(cat "/proc/$pid/comm")" = derrd ] || fail "process name $(cat "/proc/$pid/comm"), not derrd"
"$BUILD/derrd-replay" --brokers "$B" --topic demo --synthetic $valid --format text \
    --malformed 0.01 --duplicates 0.05 --expect-out "$work/expect.tsv" \
    >"$work/replay.json" 2>"$work/replay.log" || fail "derrd-replay: $(cat "$work/replay.log")"
head -c $big /dev/zero | tr '\0' x | "$BUILD/kcheck" produce -b "$B" -t demo \
    -X message.max.bytes=10000000 >/dev/null 2>"$work/big.log" ||
    fail "kcheck produce of the $big-byte message: $(cat "$work/big.log")"
# While derrd waits for its last event, the mock cluster still runs: the
# dead-letter topic must come to hold every malformed message, the big one
# cut to 64 KiB and saying so.
n=0
for _ in $(seq 1 300); do
    "$BUILD/kcheck" dump -b "$B" -t demo-dlq >"$work/dlq.dump" 2>/dev/null || true
    n=$(wc -l <"$work/dlq.dump")
    [ "$n" -ge $((malformed + 1)) ] && break
    kill -0 "$pid" 2>/dev/null || fail "derrd exited early"
    sleep 0.1
done
[ "$n" = $((malformed + 1)) ] || fail "the dead-letter topic holds $n messages, not $((malformed + 1))"
awk -F'\t' -v big=$big 'length($3) == 65536 && $0 ~ "\tderrd.truncated=value " big " key 0" { n++ }
    END { exit n == 1 ? 0 : 1 }' "$work/dlq.dump" ||
    fail "no dead letter of the $big-byte message cut to 65536 bytes with its derrd.truncated header"
# The last event: derrd stops after it.
printf 'last\tone\n' | "$BUILD/kcheck" produce -b "$B" -t demo >/dev/null 2>&1 ||
    fail "kcheck produce of the last event"
printf 'last\tone\n' >>"$work/expect.tsv"
LC_ALL=C sort -o "$work/expect.tsv" "$work/expect.tsv"
rc=0
timeout 120 tail --pid="$pid" -f /dev/null || fail "derrd did not stop within 120 s"
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "derrd exited $rc"
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic demo 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
cmp -s "$work/expect.tsv" "$work/got.tsv" || fail "stored pairs differ from the produced set"
grep -q "invalid=$((malformed + 1)) dead_lettered=$((malformed + 1)) " "$work/derrd.log" ||
    fail "derrd's summary: $(grep -o 'invalid=[0-9]* dead_lettered=[0-9]*' "$work/derrd.log")"
# It says which BLAS kernels it runs, and runs no generic ones on a CPU
# with better (main's restart with OPENBLAS_CORETYPE; model/gemm.h).
grep -Eq "BLAS kernels [A-Za-z0-9]+" "$work/derrd.log" || fail "no BLAS kernels line in the log"
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    ! grep -q "BLAS kernels Prescott" "$work/derrd.log" ||
        fail "OpenBLAS's generic kernels on an AVX2 CPU: $(grep 'BLAS kernels' "$work/derrd.log")"
fi
echo "embedded: ok ($(wc -l <"$work/got.tsv") interactions through the mock cluster," \
    "$((malformed + 1)) dead letters, one of them cut from $big bytes)"

# A dead letter the producer cannot take at all (its message.max.bytes set
# below the 64 KiB copy): derrd stops with the reason and exit status 1,
# promptly; it once hung here, shutting the consumer down from inside its
# own callback.
start_derrd "$work/derrd2.log" --topic demo2 --state-dir "$work/state2" \
    --dead-letter-topic demo2-dlq --kafka.message.max.bytes 30000
head -c 100000 /dev/zero | tr '\0' x | "$BUILD/kcheck" produce -b "$B" -t demo2 \
    -X message.max.bytes=10000000 >/dev/null 2>&1 || fail "kcheck produce of the 100,000-byte message"
timeout 30 tail --pid="$pid" -f /dev/null || fail "derrd did not stop within 30 s of an unsendable dead letter"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 1 ] || fail "derrd exited $rc after an unsendable dead letter, not 1"
grep -q "cannot queue a dead letter of 65536 bytes: Message too long (kafka.message.max.bytes is below it); stopping" \
    "$work/derrd2.log" || fail "no reason logged for the unsendable dead letter"
echo "embedded: ok (an unsendable dead letter stops derrd with exit 1 and the reason)"

# Signals during the whole shutdown: SIGTERM, SIGINT and SIGHUP sent without
# pause from the first SIGTERM until derrd is gone. libuv gives a signal its
# default action back when its handle closes, late in the shutdown; a signal
# then killed derrd before it ignored them there. Exit 0 is required.
start_derrd "$work/derrd3.log" --topic demo3 --state-dir "$work/state3"
for _ in $(seq 1 300); do
    grep -q "assigned partition" "$work/derrd3.log" && break
    sleep 0.1
done
grep -q "assigned partition" "$work/derrd3.log" || fail "derrd never read: $(tail -3 "$work/derrd3.log")"
sent=0
kill -TERM "$pid"
# Until it has exited (a zombie, state Z, still takes kill without error).
state=
end=$((SECONDS + 60))
while [ -e "/proc/$pid/stat" ]; do
    [ "$SECONDS" -lt "$end" ] ||
        fail "derrd still runs 60 s into a shutdown under a signal storm ($sent signals)"
    { read -r _ _ state _ <"/proc/$pid/stat"; } 2>/dev/null || break
    [ "$state" != Z ] || break
    # (reaped between the check and here: kill fails, which ends the loop)
    kill -TERM "$pid" 2>/dev/null && kill -INT "$pid" 2>/dev/null &&
        kill -HUP "$pid" 2>/dev/null || break
    sent=$((sent + 3))
done
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -le 128 ] || fail "derrd killed by SIG$(kill -l $((rc - 128))) during its shutdown, after $sent signals"
[ "$rc" = 0 ] || fail "derrd exited $rc under a signal storm at shutdown, after $sent signals"
[ "$sent" -gt 0 ] || fail "derrd was gone before the signal storm began"
grep -q "stopped cleanly" "$work/derrd3.log" || fail "no clean stop under the signal storm"
# The mock cluster's thread must not take the signals: librdkafka lets it
# die when one interrupts its poll, and destroying the cluster then waits
# for it forever (a hang after "stopped cleanly", before io/kafka.c blocked
# signals in it).
! grep -q "Mock cluster failed to poll" "$work/derrd3.log" ||
    fail "the mock cluster's thread died of a signal: $(grep -m1 'Mock cluster failed' "$work/derrd3.log")"
echo "embedded: ok (a clean stop under $sent signals sent during the shutdown)"
