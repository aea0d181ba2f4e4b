#!/usr/bin/env bash
# service.sh: derrd run the way systemd runs it, on the embedded Kafka.
#
#   tests/service.sh           (make test-unit runs it; BUILD selects the build)
#
# One daemon, started from a configuration file with a notify socket and a
# watchdog (tests/notify-listen.py stands in for systemd):
#   1. 20,000 events arrive while the round triggers in the file are out of
#      reach: no round runs.
#   2. The file changes the triggers (and zstd-level, which is not live) and
#      SIGHUP reloads it: rounds start and publish without a restart, and
#      the log names zstd-level as waiting for the next start.
#   3. /metrics passes `promtool check metrics` and has every series the
#      service issue lists; /v1/status is JSON with the rounds and rates.
#   4. The status page (/) in headless Chromium: both charts have data; a
#      screenshot goes to $BUILD/status-page.png.
#   5. SIGTERM: exit 0 well within the unit's TimeoutStopSec; the notify
#      socket got READY, STATUS, WATCHDOG, RELOADING and STOPPING in order.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
BUILD=${BUILD:-build}
PROMTOOL=${PROMTOOL:-$(command -v promtool || echo build/tools/promtool)}
CHROMIUM=${CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}
work=$(mktemp -d /tmp/derrd-service.XXXXXX)
pid= lpid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    [ -n "$lpid" ] && kill "$lpid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "service: FAIL: $*" >&2
    [ -f "$work/derrd.log" ] && tail -15 "$work/derrd.log" >&2
    exit 1
}
[ -x "$PROMTOOL" ] || fail "promtool not found (tools/install-deps.sh puts it in build/tools)"
[ -x "$CHROMIUM" ] || fail "chromium not found (tools/install-deps.sh installs it)"

# metric NAME: its value in the last /metrics scrape ($work/metrics)
metric() { awk -v n="$1" '$1 == n { print $2 }' "$work/metrics"; }
scrape() { curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics"; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s
wait_for() {
    local t=$1 what=$2
    shift 2
    for _ in $(seq 1 $((t * 5))); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || fail "derrd exited while waiting for $what"
        sleep 0.2
    done
    fail "no $what within $t s"
}

python3 tests/notify-listen.py "$work/notify.sock" >"$work/notify.log" &
lpid=$!
for _ in $(seq 1 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
[ -S "$work/notify.sock" ] || fail "the notify listener did not start"

conf() { # round-min-events round-interval-ms zstd-level
    cat >"$work/derrd.conf" <<EOF
embedded-kafka true
topic svc
state-dir $work/state
http-port 0
stats-interval-ms 0
min-interactions 500
teacher-dim 32
settle-patience 2
round-min-events $1
round-interval-ms $2
zstd-level $3
EOF
}
conf 1000000000 86400000 3
NOTIFY_SOCKET=$work/notify.sock WATCHDOG_USEC=2000000 \
    "$BUILD/derrd" --config "$work/derrd.conf" >"$work/derrd.log" 2>&1 &
pid=$!
B=$(embedded_bootstrap "$work/derrd.log" "$pid") || fail "no bootstrap address or HTTP line in the log"
port=$(derrd_port "$work/derrd.log" "$pid") || fail "no HTTP port in the log"

# 1. Events, but no round: the triggers are out of reach.
"$BUILD/derrd-replay" --brokers "$B" --topic svc --synthetic 20000 --format text \
    >/dev/null 2>"$work/replay.log" || fail "derrd-replay: $(cat "$work/replay.log")"
consumed() { scrape && [ "$(metric derrd_events_consumed_total)" = 20000 ]; }
wait_for 60 "20,000 events consumed" consumed
sleep 2
scrape
[ "$(metric derrd_rounds_total)" = 0 ] || fail "a round ran before the reload"

# 2. SIGHUP applies the new triggers.
conf 2000 500 5
kill -HUP "$pid"
rounds() { scrape && [ "$(metric derrd_rounds_total)" -ge 3 ] &&
           [ "$(metric derrd_snapshot_version | cut -d. -f1)" -gt 0 ]; }
wait_for 90 "3 rounds and a snapshot after the reload" rounds
grep -q 'reload: round-min-events 2000 (was: round-min-events 1000000000)' "$work/derrd.log" ||
    fail "the reload did not log the new round-min-events"
grep -q 'reload: "zstd-level 5" takes effect at the next start' "$work/derrd.log" ||
    fail "the reload did not name zstd-level as waiting for the next start"

# 3. /metrics: promtool accepts it, and every listed series is there.
scrape
"$PROMTOOL" check metrics <"$work/metrics" >"$work/promtool.out" 2>&1 ||
    fail "promtool check metrics: $(cat "$work/promtool.out")"
for m in derrd_events_consumed_total derrd_events_invalid_total derrd_events_dead_lettered_total \
         'derrd_consumer_lag{partition="0"}' derrd_rounds_total derrd_teacher_refreshes_total \
         derrd_round_duration_seconds_count derrd_student_hr10 derrd_student_ndcg10 \
         derrd_teacher_hr10 derrd_teacher_ndcg10 derrd_snapshot_version \
         derrd_snapshot_age_seconds derrd_loop_lag_seconds derrd_ready; do
    [ -n "$(metric "$m")" ] || fail "/metrics has no $m"
done
[ "$(metric derrd_teacher_refreshes_total)" -ge 1 ] || fail "no teacher refresh counted"
[ "$(metric derrd_ready)" = 1 ] || fail "derrd_ready is not 1"
[ "$(curl -s "http://127.0.0.1:$port/readyz")" = ready ] || fail "/readyz is not ready"
curl -sf "http://127.0.0.1:$port/v1/status" >"$work/status.json" || fail "/v1/status"
python3 - "$work/status.json" <<'EOF' || fail "/v1/status: $(head -c 300 "$work/status.json")"
import json, sys
st = json.load(open(sys.argv[1]))
assert st["ready"] is True
assert len(st["rounds"]) >= 3, st["rounds"]
assert all(r["student_hr10"] is not None and r["teacher_hr10"] is not None for r in st["rounds"])
assert any(p[1] > 0 for p in st["ingest"]["rate"]), st["ingest"]["rate"]
assert st["snapshot"]["version"] > 0
EOF

# 4. The status page in headless Chromium: both charts drawn with data.
chrome() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$work/chrome" --virtual-time-budget=6000 "$@" 2>>"$work/chrome.log"
}
chrome --dump-dom "http://127.0.0.1:$port/" >"$work/page.html" || fail "chromium --dump-dom"
points() { # svg id -> its data-points
    grep -o "<svg id=\"$1\"[^>]*>" "$work/page.html" | sed -n 's/.*data-points="\([0-9]*\)".*/\1/p'
}
q=$(points quality) i=$(points ingest)
[ -n "$q" ] && [ "$q" -ge 12 ] || fail "quality chart: ${q:-no} points (want >= 3 rounds x 4 series)"
[ -n "$i" ] && [ "$i" -ge 2 ] || fail "ingest chart: ${i:-no} points"
grep -q 'id="ready" class="ok"' "$work/page.html" || fail "the page does not show ready"
chrome --screenshot="$work/shot.png" --window-size=1200,1000 "http://127.0.0.1:$port/" >/dev/null ||
    fail "chromium --screenshot"
[ -s "$work/shot.png" ] || fail "no screenshot"
cp "$work/shot.png" "$BUILD/status-page.png"

# 5. SIGTERM: a clean exit, and the notify messages in order.
stop_limit=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' systemd/derrd.service)
t0=$(date +%s%N)
kill -TERM "$pid"
rc=0
timeout "${stop_limit:-60}" tail --pid="$pid" -f /dev/null || fail "derrd did not stop within TimeoutStopSec"
wait "$pid" || rc=$?
pid=
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" = 0 ] || fail "derrd exited $rc after SIGTERM"
sleep 0.2
order=$(awk -F'|' '{ for (i = 1; i <= NF; i++) { split($i, kv, "=");
                     if (kv[1] ~ /^(READY|STATUS|WATCHDOG|RELOADING|STOPPING)$/) print kv[1] } }' \
        "$work/notify.log" | uniq | tr '\n' ' ')
first() { awk -F'|' -v k="$1=" '{ for (i = 1; i <= NF; i++) if (index($i, k) == 1) { print NR; exit } }' \
          "$work/notify.log"; }
r=$(first READY) s=$(first STATUS) w=$(first WATCHDOG) h=$(first RELOADING) x=$(first STOPPING)
[ -n "$r" ] && [ -n "$s" ] && [ -n "$w" ] && [ -n "$h" ] && [ -n "$x" ] ||
    fail "notify: missing messages (got: $order)"
last_w=$(awk -F'|' '/WATCHDOG=1/ { n = NR } END { print n }' "$work/notify.log")
[ "$r" -lt "$w" ] && [ "$r" -lt "$h" ] && [ "$w" -lt "$x" ] && [ "$last_w" -lt "$x" ] ||
    fail "notify: out of order (READY $r, STATUS $s, WATCHDOG $w..$last_w, RELOADING $h, STOPPING $x)"
# A reload ends with READY=1 again, or systemd leaves the unit "reloading".
last_h=$(awk -F'|' '/RELOADING=1/ { n = NR } END { print n }' "$work/notify.log")
ready_after=$(awk -F'|' -v h="$last_h" 'NR > h && /READY=1/ { print NR; exit }' "$work/notify.log")
[ -n "$ready_after" ] && [ "$ready_after" -lt "$x" ] ||
    fail "notify: no READY=1 after the last RELOADING=1 (line $last_h) before STOPPING ($x)"
echo "service: ok (SIGHUP applied the round triggers; promtool ok; page charts $q + $i points;" \
     "SIGTERM -> exit 0 in $ms ms; notify: READY, STATUS, WATCHDOG, RELOADING, STOPPING)"
