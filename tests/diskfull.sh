#!/usr/bin/env bash
# diskfull.sh: the state and snapshot directories on a small tmpfs that fills.
#
#   tests/diskfull.sh          (root: it mounts a tmpfs; BUILD selects the build)
#
# derrd (embedded Kafka, rounds on) publishes a snapshot; then the tmpfs is
# filled to the last byte and more events arrive. While the disk is full:
#   - checkpoints and publishes fail with "No space left on device" in the
#     log and in derrd_checkpoint_failures_total /
#     derrd_snapshot_publish_failures_total;
#   - the last good snapshot is still served and verifies; events are still
#     read and rounds still train;
#   - no torn file: no temp file stays, every snapshot and the checkpoint
#     that a restart would load verify.
# Once space returns, a checkpoint and a snapshot follow, and after SIGTERM
# the checkpoint holds every event produced.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/derrd-diskfull.XXXXXX)
disk=$work/disk
pid= mounted=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    [ -n "$mounted" ] && umount "$disk" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "diskfull: FAIL: $*" >&2
    [ -f "$work/derrd.log" ] && tail -10 "$work/derrd.log" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root to mount a tmpfs"
mkdir -p "$disk"
mount -t tmpfs -o size=48m,mode=0755 tmpfs "$disk" || fail "cannot mount a tmpfs"
mounted=1

metric() { curl -sf "$url/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
wait_for() { # SECONDS DESCRIPTION COMMAND...
    local t=$1 what=$2
    shift 2
    for _ in $(seq 1 $((t * 5))); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")) while waiting for $what"
        sleep 0.2
    done
    fail "no $what within $t s"
}
"$BUILD/derrd" --embedded-kafka --topic full --state-dir "$disk/state" --http-port 0 \
    --stats-interval-ms 0 --checkpoint-interval-ms 500 --round-min-events 2000 \
    --round-interval-ms 500 --min-interactions 1000 --teacher-dim 32 --settle-patience 2 \
    >"$work/derrd.log" 2>&1 &
pid=$!
B=$(embedded_bootstrap "$work/derrd.log" "$pid") || fail "no bootstrap address or HTTP line in the log"
port=$(derrd_port "$work/derrd.log" "$pid") || fail "no HTTP port in the log"
url=http://127.0.0.1:$port
produce() { # N SEED
    "$BUILD/derrd-replay" --brokers "$B" --topic full --synthetic "$1" --users 4000 \
        --items 6000 --seed "$2" --format text --expect-out "$work/expect.$2.tsv" \
        >/dev/null 2>"$work/replay.log" || fail "derrd-replay: $(cat "$work/replay.log")"
}
produce 20000 1
published() { v=$(metric derrd_snapshot_version); [ -n "$v" ] && [ "${v%.*}" != 0 ]; }
wait_for 60 "first snapshot" published
curl -sf -o "$work/before.dsnap" "$url/v1/snapshot" || fail "no snapshot served"

# Fill the disk to the last byte.
dd if=/dev/zero of="$disk/fill" bs=64k 2>/dev/null || true
[ "$(df --output=avail "$disk" | tail -1)" -lt 64 ] || fail "the tmpfs did not fill"
ck0=$(metric derrd_checkpoint_failures_total) consumed0=$(metric derrd_events_consumed_total)
rounds0=$(( $(metric derrd_rounds_total) + $(metric derrd_rounds_failed_total) ))
produce 20000 2
ck_failed() { [ "$(metric derrd_checkpoint_failures_total)" -gt "$ck0" ]; }
wait_for 60 "failed checkpoint while full" ck_failed
pub_failed() { [ "$(metric derrd_snapshot_publish_failures_total)" -gt 0 ]; }
wait_for 60 "failed publish while full" pub_failed
grep -q "checkpoint failed: .*No space left on device" "$work/derrd.log" ||
    fail "no logged reason for the failed checkpoint"
grep -q "round [0-9]* failed: .*No space left on device" "$work/derrd.log" ||
    fail "no logged reason for the failed publish"
[ "$(metric derrd_events_consumed_total)" -gt "$consumed0" ] || fail "ingestion stopped while full"
[ $(( $(metric derrd_rounds_total) + $(metric derrd_rounds_failed_total) )) -gt "$rounds0" ] ||
    fail "no round ran while full"
served=0
for _ in 1 2 3; do
    curl -sf -o "$work/during.dsnap" "$url/v1/snapshot" || fail "/v1/snapshot failed while full"
    "$BUILD/derrd-snap" verify "$work/during.dsnap" >/dev/null || fail "a snapshot served while full does not verify"
    served=$((served + 1))
    sleep 0.5
done
# No torn file: no temp file, every snapshot verifies, the checkpoint loads.
torn=$(find "$disk/state" -name '*.tmp.*' | wc -l)
[ "$torn" = 0 ] || fail "temp files left while full: $(find "$disk/state" -name '*.tmp.*')"
for f in "$disk"/state/snapshots/student-*.dsnap; do
    "$BUILD/derrd-snap" verify "$f" >/dev/null || fail "$f does not verify"
done
# What a restart would load now: the newest checkpoint that verifies, a copy
# read while the disk is full (the live directory is derrd's, locked).
mkdir -p "$work/ckcopy"
cp "$disk"/state/checkpoint-*.dckpt "$work/ckcopy/" ||
    fail "no checkpoint to copy while full"
"$BUILD/derrd" --config "" --dump-state --state-dir "$work/ckcopy" --topic full \
    2>"$work/ckcopy.log" | LC_ALL=C sort >"$work/ckcopy.tsv" ||
    fail "the checkpoint a restart would load while full does not: $(cat "$work/ckcopy.log")"
grep -q "^derrd: checkpoint [0-9]*:" "$work/ckcopy.log" ||
    fail "no checkpoint loaded from the copy: $(cat "$work/ckcopy.log")"
# It holds what was applied before (the first round's data at least), and
# only pairs that were produced.
LC_ALL=C sort -u "$work/expect.1.tsv" "$work/expect.2.tsv" >"$work/expect.both.tsv"
[ "$(wc -l <"$work/ckcopy.tsv")" -ge 1000 ] &&
    [ -z "$(LC_ALL=C comm -23 "$work/ckcopy.tsv" "$work/expect.both.tsv")" ] ||
    fail "the checkpoint a restart would load while full holds $(wc -l <"$work/ckcopy.tsv")" \
        "pairs, not all of them produced"
failures=$(metric derrd_checkpoint_failures_total) pubfail=$(metric derrd_snapshot_publish_failures_total)

# Space returns: everything recovers.
rm -f "$disk/fill"
ck1=$(metric derrd_checkpoints_total) v1=$(metric derrd_snapshot_version)
ck_ok() { [ "$(metric derrd_checkpoints_total)" -gt "$ck1" ]; }
wait_for 60 "checkpoint after space returned" ck_ok
pub_ok() { local v; v=$(metric derrd_snapshot_version); [ -n "$v" ] && [ "$v" != "$v1" ]; }
wait_for 90 "snapshot after space returned" pub_ok
curl -sf -o "$work/after.dsnap" "$url/v1/snapshot" && "$BUILD/derrd-snap" verify "$work/after.dsnap" >/dev/null ||
    fail "the snapshot after recovery does not verify"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM"
LC_ALL=C sort -u "$work/expect.1.tsv" "$work/expect.2.tsv" >"$work/expect.tsv"
"$BUILD/derrd" --dump-state --state-dir "$disk/state" --topic full 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
cmp -s "$work/expect.tsv" "$work/got.tsv" ||
    fail "stored $(wc -l <"$work/got.tsv") pairs, produced $(wc -l <"$work/expect.tsv")"
[ "$(find "$disk/state" -name '*.tmp.*' | wc -l)" = 0 ] || fail "temp files left at the end"
echo "diskfull: ok (while full: $failures failed checkpoints, $pubfail failed publishes, logged;" \
     "$served downloads of the last snapshot verified; 0 torn files; recovered; $(wc -l <"$work/got.tsv")" \
     "pairs stored = produced)"
