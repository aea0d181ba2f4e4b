#!/usr/bin/env bash
# tsan.sh: the derrd binary end to end under ThreadSanitizer (make tsan).
#
#   BUILD=build/tsan tests/tsan.sh
#
# derrd, built with -fsanitize=thread, runs on its embedded Kafka (librdkafka's
# mock cluster) with rounds on (small models, so rounds are quick even under
# TSan), a dead-letter topic and HTTP. derrd-replay (also instrumented)
# produces EVENTS synthetic events plus malformed ones, duplicates and
# forgets at 1000 a second, so while the loop thread decodes and stages
# (pausing the partitions at --max-staged), the trainer thread applies,
# checkpoints and runs rounds on the worker pool, and the dead-letter
# producer reports back to the loop. Meanwhile a client keeps asking
# /metrics, /v1/snapshot (plain and If-None-Match), /healthz, /readyz and
# /v1/status from libmicrohttpd's threads, and (with python3) a notify socket
# with the watchdog on has the loop weigh the trainer's heartbeats. Then:
#   - a SIGHUP while events arrive applies the changed round triggers of the
#     configuration file;
#   - at least one round ends and a snapshot is published, and a published
#     snapshot covers every message produced (its offsets add up to them);
#   - /metrics and /v1/snapshot answered 200 during the run;
#   - SIGTERM stops derrd with exit 0 within 60 s (READY=1, WATCHDOG=1 and
#     STOPPING=1 were notified), and its stored set
#     (--dump-state) is the distinct valid pairs produced, less the forgotten;
#   - no ThreadSanitizer report, from derrd or derrd-replay: with
#     halt_on_error=1 the first one ends the process with status 66, and
#     the logs are searched too. A report is printed whole.
# Needs curl. OPENBLAS_NUM_THREADS, TSAN_OPTIONS and LD_PRELOAD (the C11
# threads shim, tests/tsan/c11threads.c) default to what `make tsan` passes.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
BUILD=${BUILD:-build/tsan}
EVENTS=${EVENTS:-4000}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-"halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"}
export LD_PRELOAD=${LD_PRELOAD:-$PWD/$BUILD/c11threads.so}
work=$(mktemp -d /tmp/derrd-tsan.XXXXXX)
pid= client_pid= replay_pid= listener_pid= keep=${KEEP:-0}
t_start=$(date +%s)
say() { echo "tsan: $*" >&2; }
cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
    [ -n "$replay_pid" ] && kill "$replay_pid" 2>/dev/null || true
    [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null || true
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    if [ "$keep" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
# Prints every ThreadSanitizer report in the logs; true when there was one.
reports() {
    local f found=1
    for f in "$work"/*.log; do
        if [ -f "$f" ] && grep -qE "(WARNING|ERROR|FATAL): ThreadSanitizer|ThreadSanitizer:DEADLY" "$f"; then
            say "ThreadSanitizer report in $(basename "$f"):"
            sed -n '/^==================$/,/^==================$/p;/ThreadSanitizer/p' "$f" >&2
            found=0
        fi
    done
    return $found
}
fail() {
    say "FAIL: $*"
    reports || { [ -f "$work/derrd.log" ] && tail -20 "$work/derrd.log" >&2; }
    keep=1
    exit 1
}
command -v curl >/dev/null || fail "curl is not installed"
[ -f "${LD_PRELOAD%% *}" ] || fail "no ${LD_PRELOAD%% *} (make tsan builds it)"
case $(nm -u "$BUILD/derrd" 2>/dev/null) in *__tsan_init*) ;; *) false ;; esac ||
    fail "$BUILD/derrd is not built with -fsanitize=thread (make tsan builds build/tsan)"
snap() { "$BUILD/derrd-snap" "$@"; }
# The sum of the offsets of snapshot $1 (the messages it covers).
snap_offsets() {
    snap info "$1" --json 2>>"$work/snap.log" | grep -o '"partition": *[0-9]*, *"offset": *[0-9]*' |
        awk -F: '{ s += $NF } END { print s + 0 }'
}

# ---- a service manager's notify socket (sd_notify), with the watchdog on ----------------
# So the loop's watchdog timer reads the trainer's heartbeats, and both send.
notify_env=()
if command -v python3 >/dev/null; then
    python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    m = s.recv(4096)
    if not m: continue
    print(m.decode("utf-8", "replace").replace("\n", " "), flush=True)
' "$work/notify.sock" >"$work/notify.txt" 2>&1 &
    listener_pid=$!
    for _ in $(seq 1 50); do
        [ -S "$work/notify.sock" ] && break
        sleep 0.1
    done
    [ -S "$work/notify.sock" ] || fail "the notify listener did not start: $(cat "$work/notify.txt")"
    notify_env=(NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=2000000)
fi

# ---- derrd -----------------------------------------------------------------------
# The live options (SIGHUP applies them) come from a file, changed mid-run.
conf() {
    printf 'round-min-events %s\nround-interval-ms %s\nsettle-patience 2\ngate-margin 1\n' \
        "$1" "$2" >"$work/derrd.conf"
}
conf 1000 500
env "${notify_env[@]}" "$BUILD/derrd" --config "$work/derrd.conf" --embedded-kafka \
    --topic tsan --dead-letter-topic tsan-dlq --state-dir "$work/state" --http-port 0 \
    --teacher-dim 16 --student-dim 4 --teacher-epochs 2 --student-epochs 1 \
    --settle-epochs 1 --min-interactions 500 --threads 2 --eval-candidates 20 \
    --checkpoint-interval-ms 300 --stats-interval-ms 1000 --max-staged 2000 \
    >"$work/derrd.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q "running:" "$work/derrd.log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
grep -q "running:" "$work/derrd.log" || fail "derrd did not start"
port=$(derrd_port "$work/derrd.log" "$pid") || fail "no HTTP port in the log"
url=http://127.0.0.1:$port
B=$(sed -n 's/.*embedded Kafka.* at \([^;]*\);.*/\1/p' "$work/derrd.log")
[ -n "$B" ] || fail "no bootstrap address in the log"
say "derrd on $url, embedded Kafka at $B ($(( $(date +%s) - t_start )) s)"

# ---- the HTTP client, all along ------------------------------------------------------
client() {
    local etag= code n=0 inm p
    while [ ! -e "$work/stop-client" ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$url/metrics") || code=000
        echo "metrics $code"
        inm=()
        [ -z "$etag" ] || inm=(-H "If-None-Match: $etag")
        rm -f "$work/client.hdr"
        code=$(curl -s -D "$work/client.hdr" -o "$work/client.body" -w '%{http_code}' \
            "${inm[@]}" "$url/v1/snapshot") || code=000
        echo "snapshot $code"
        etag=$(tr -d '\r' <"$work/client.hdr" 2>/dev/null | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p')
        if [ $((n++ % 4)) = 0 ]; then
            for p in /healthz /readyz /v1/status; do
                code=$(curl -s -o /dev/null -w '%{http_code}' "$url$p") || code=000
                echo "${p#/} $code"
            done
        fi
        sleep 0.05
    done
}
client >"$work/client.txt" 2>&1 &
client_pid=$!

# ---- events ------------------------------------------------------------------------
# In the background: if derrd stops (a report), the replay would wait 60 s
# for its deliveries.
"$BUILD/derrd-replay" --brokers "$B" --topic tsan --synthetic "$EVENTS" --users 300 --items 600 \
    --seed 5 --rate 1000 --malformed 0.02 --duplicates 0.05 --forget 0.01 \
    --expect-out "$work/expect.tsv" >"$work/replay.json" 2>"$work/replay.log" &
replay_pid=$!
# A reload while events arrive: the loop hands new round triggers to the trainer.
for _ in $(seq 1 300); do
    grep -q "ingest: assigned partition" "$work/derrd.log" && break
    sleep 0.1
done
sleep 0.5
conf 800 400
kill -HUP "$pid"
while kill -0 "$replay_pid" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
        kill "$replay_pid" 2>/dev/null || true
        fail "derrd exited while events were produced"
    fi
    sleep 0.2
done
wait "$replay_pid" || fail "derrd-replay: $(cat "$work/replay.log")"
replay_pid=
for _ in $(seq 1 100); do
    grep -q "reload: done" "$work/derrd.log" && break
    sleep 0.1
done
grep -q "reload: done; 2 changes applied" "$work/derrd.log" ||
    fail "SIGHUP did not apply the 2 changed options: $(grep reload "$work/derrd.log")"
produced=$(grep -o '"produced": *[0-9]*' "$work/replay.json" | grep -o '[0-9]*$')
[ -n "$produced" ] || fail "derrd-replay printed no count: $(cat "$work/replay.json")"
say "$produced messages produced ($(( $(date +%s) - t_start )) s)"

# ---- a round, a snapshot, and one that covers every message ----------------------------
covered=
for _ in $(seq 1 1200); do
    kill -0 "$pid" 2>/dev/null || fail "derrd exited"
    if cp "$work/state/snapshots/latest" "$work/latest.dsnap" 2>/dev/null &&
        [ "$(snap_offsets "$work/latest.dsnap")" = "$produced" ]; then
        covered=1
        break
    fi
    sleep 0.25
done
[ -n "$covered" ] || fail "no snapshot covers the $produced messages after 300 s: $(grep -E " round [0-9]+" "$work/derrd.log" | tail -3)"
rounds=$(grep -cE " round [0-9]+: " "$work/derrd.log" || true)
[ "$rounds" -ge 1 ] || fail "a snapshot but no round in the log"
say "snapshot $(snap info "$work/latest.dsnap" --json | grep -o '"version": *[0-9]*' | head -1 | grep -o '[0-9]*$') covers all $produced messages; $rounds rounds ($(( $(date +%s) - t_start )) s)"

# A few more requests on the settled snapshot, then the client stops.
sleep 1
touch "$work/stop-client"
wait "$client_pid" || true
client_pid=
for p in metrics snapshot; do
    grep -q "^$p 200$" "$work/client.txt" || fail "no 200 from /$p: $(sort "$work/client.txt" | uniq -c | tr '\n' ';')"
done
# Every answer is one its endpoint may give: a 5xx, or a reset (000),
# is what a race looks like from outside.
bad=$(grep -vE '^(metrics 200|snapshot (200|304|404)|healthz 200|readyz (200|503)|v1/status 200)$' \
      "$work/client.txt" | sort | uniq -c | tr '\n' ';' || true)
[ -z "$bad" ] || fail "unexpected HTTP answers: $bad"
say "HTTP: $(sort "$work/client.txt" | uniq -c | awk '{ printf "%s/%s %s x%s", (NR > 1 ? ", " : ""), $2, $3, $1 }')"

# ---- SIGTERM -----------------------------------------------------------------------
kill -TERM "$pid"
for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "derrd still running 60 s after SIGTERM"
rc=0
wait "$pid" || rc=$?
pid=
reports && fail "ThreadSanitizer reported (derrd exited $rc)"
[ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM"
if [ -n "$listener_pid" ]; then
    for m in READY=1 WATCHDOG=1 STOPPING=1; do
        grep -q "$m" "$work/notify.txt" || fail "no $m on the notify socket: $(tail -3 "$work/notify.txt")"
    done
fi
"$BUILD/derrd" --config "" --dump-state --state-dir "$work/state" --topic tsan 2>"$work/dump.log" |
    LC_ALL=C sort >"$work/got.tsv"
cmp -s "$work/expect.tsv" "$work/got.tsv" ||
    fail "the stored pairs differ from those produced: $(diff "$work/expect.tsv" "$work/got.tsv" | head -5)"
reports && fail "ThreadSanitizer reported"
say "ok: SIGTERM -> exit 0; $(wc -l <"$work/got.tsv") pairs stored; no ThreadSanitizer report ($(( $(date +%s) - t_start )) s)"
