#!/usr/bin/env bash
# http_abuse.sh: derrd's HTTP server under abuse, against a live daemon.
#
#   tests/http_abuse.sh        (BUILD selects the build directory, default build)
#
# One derrd on the embedded Kafka, with rounds on (small settings: a
# snapshot within seconds) and an http-token, then:
#   1. Default bind: without http-address the port listens on 127.0.0.1
#      only (ss, or /proc/net/tcp{,6}); a connect to each non-loopback
#      address of the machine is refused.
#   2. Token: every path but /healthz and / without the token, or with a
#      wrong one (GET and HEAD), gets 401 with a small answer holding no
#      64-byte slice of any snapshot file; with the token, /v1/snapshot and
#      /v1/snapshot/<version> are 200 and pass derrd-snap verify.
#   3. Malformed requests (tests/http_abuse.py malformed): some 350 raw
#      requests (garbage, bad request lines, HTTP/0.9, no Host, two Hosts,
#      bad percent-escapes, NUL bytes, URLs up to 1 MiB, bad methods, bodies
#      on GET, broken header lines, pipelined junk): each gets a 4xx (505
#      for an unknown HTTP version) or a closed connection; what the server
#      still waits on is closed by its 10 s header deadline. A few that HTTP
#      allows a server to accept are counted apart.
#   4. Oversized headers (64 KiB to 8 MiB): 431 or a closed connection.
#   5. Slow clients: 72 connections (more than the 64 derrd allows) send a
#      header byte every 2 s; a normal request meanwhile is served within
#      the deadline, and the server closes every slow one (times measured).
#   6. 64 threads download /v1/snapshot over and over for 8 s while events
#      flow and rounds publish; every body is one version (ETag = header)
#      and every distinct body passes derrd-snap verify; /healthz is probed
#      throughout.
#   7. A slow reader (tests/http_abuse.py slowread, from 127.0.0.3 while 3
#      to 6 run): a snapshot download read 4 KiB every 2 s, never idle for
#      the 30 s timeout, is reset once past the header deadline plus its
#      size at http-min-rate-kibps (set to 128 here so that the ~1 MB
#      snapshot is still being sent then), and counted in /metrics.
#   After 3, 4, 5 and 6: /healthz is 200 and /v1/snapshot verifies. At the
#   end no 5xx was counted in /metrics, and SIGTERM makes derrd exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
BUILD=${BUILD:-build}
MAX_CONNECTIONS=64   # derrd's defaults: http-max-connections, http-per-ip-limit
PER_IP_LIMIT=16
HEADER_DEADLINE_S=10 # daemon/http.c HTTP_HEADER_DEADLINE_S (the idle timeout, 30 s, is longer)
MIN_RATE_KIBPS=128   # http-min-rate-kibps below
t_start=$(date +%s%N)
work=$(mktemp -d /tmp/derrd-http-abuse.XXXXXX)
pid= rpid= spid=
cleanup() {
    [ -n "$rpid" ] && kill "$rpid" 2>/dev/null
    [ -n "$spid" ] && kill "$spid" 2>/dev/null
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "http_abuse: FAIL: $*" >&2
    [ -f "$work/derrd.log" ] && tail -8 "$work/derrd.log" >&2
    exit 1
}
for t in derrd derrd-replay derrd-snap; do
    [ -x "$BUILD/$t" ] || fail "$BUILD/$t not built (make)"
done
# json FILE EXPR: a Python expression over the JSON object j in FILE
json() { python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
abuse() { # abuse NAME ARGS...: tests/http_abuse.py, its JSON in $work/NAME.json
    local name=$1
    shift
    python3 tests/http_abuse.py "$@" >"$work/$name.json" 2>"$work/$name.err" ||
        fail "$name: $(head -c 1500 "$work/$name.err")"
}

token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
snaps=$work/state/snapshots
# The token in a file, not on the command line; no http-address: the default.
cat >"$work/derrd.conf" <<EOF
embedded-kafka true
topic abuse
state-dir $work/state
http-port 0
http-token "$token"
http-min-rate-kibps $MIN_RATE_KIBPS
stats-interval-ms 0
min-interactions 500
teacher-dim 32
settle-patience 1
settle-epochs 2
round-min-events 2000
round-interval-ms 500
gate-margin 1
EOF
chmod 600 "$work/derrd.conf"
"$BUILD/derrd" --config "$work/derrd.conf" >"$work/derrd.log" 2>&1 &
pid=$!
B=$(embedded_bootstrap "$work/derrd.log" "$pid") || fail "no bootstrap address or HTTP line in the log"
port=$(derrd_port "$work/derrd.log" "$pid") || fail "no HTTP port in the log"
alive() { kill -0 "$pid" 2>/dev/null || fail "derrd died (during $1)"; }

# 1. Default bind: loopback only.
if command -v ss >/dev/null; then
    listen=$(ss -Hltn "sport = :$port" | awk '{ print $4 }' | sort -u | tr '\n' ' ')
else
    listen=$(python3 - "$port" <<'EOF'
import socket, struct, sys
port = int(sys.argv[1])
out = []
for f, fam in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
    try:
        lines = open(f).read().splitlines()[1:]
    except OSError:
        continue
    for l in lines:
        local, st = l.split()[1], l.split()[3]
        a, p = local.split(":")
        if st != "0A" or int(p, 16) != port:
            continue
        raw = bytes.fromhex(a)
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        out.append("%s:%d" % (socket.inet_ntop(fam, raw), port) if fam == socket.AF_INET
                   else "[%s]:%d" % (socket.inet_ntop(fam, raw), port))
print(" ".join(out))
EOF
)
fi
[ "$listen" = "127.0.0.1:$port " ] || [ "$listen" = "127.0.0.1:$port" ] ||
    fail "listening on '$listen', want 127.0.0.1:$port only"
if command -v ip >/dev/null; then
    addrs=$(ip -o addr show scope global | awk '{ print $4 }' | cut -d/ -f1)
else
    addrs=$(hostname -I 2>/dev/null || true)
fi
refused=
for a in $addrs; do
    r=$(python3 - "$a" "$port" <<'EOF'
import socket, sys
a, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET)
s.settimeout(2)
try:
    s.connect((a, port))
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error: %s" % e)
EOF
)
    [ "$r" = refused ] || fail "connect to $a:$port (a non-loopback address): $r, want refused"
    refused="$refused $a"
done
bind_note="127.0.0.1 only; refused on${refused:- (no non-loopback address)}"

# 2. A snapshot, then the token.
"$BUILD/derrd-replay" --brokers "$B" --topic abuse --synthetic 20000 --format text \
    >/dev/null 2>"$work/replay.log" || fail "derrd-replay: $(cat "$work/replay.log")"
for _ in $(seq 1 600); do
    [ -L "$snaps/latest" ] && break
    alive "the first snapshot"
    sleep 0.1
done
[ -L "$snaps/latest" ] || fail "no snapshot within 60 s"
t_snap=$(( ($(date +%s%N) - t_start) / 1000000 ))
# get PATH OUT: GET with the token; prints the status
get() { curl -s -o "$2" -w '%{http_code}' -m 30 -H "Authorization: Bearer $token" \
            "http://127.0.0.1:$port$1" || true; }
healthy() { # after WHAT: /healthz 200 and a snapshot that verifies
    local c
    c=$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$port/healthz" || true)
    [ "$c" = 200 ] || fail "/healthz answered '$c' after $1"
    c=$(get /v1/snapshot "$work/check.dsnap")
    [ "$c" = 200 ] || fail "/v1/snapshot answered '$c' after $1"
    "$BUILD/derrd-snap" verify "$work/check.dsnap" >/dev/null 2>"$work/verify.err" ||
        fail "the snapshot served after $1 does not verify: $(cat "$work/verify.err")"
    alive "$1"
}
abuse token token "$port" "$token" "$snaps"
c=$(get /v1/snapshot "$work/latest.dsnap")
[ "$c" = 200 ] || fail "/v1/snapshot with the token: $c"
"$BUILD/derrd-snap" verify "$work/latest.dsnap" >"$work/verify.out" 2>&1 ||
    fail "derrd-snap verify: $(cat "$work/verify.out")"
ver=$(sed -n 's/.*version \([0-9]*\),.*/\1/p' "$work/verify.out")
c=$(get "/v1/snapshot/$ver" "$work/byver.dsnap")
[ "$c" = 200 ] || [ "$c" = 404 ] || fail "/v1/snapshot/$ver with the token: $c"
if [ "$c" = 200 ]; then # (404: pruned meanwhile by newer rounds)
    "$BUILD/derrd-snap" verify "$work/byver.dsnap" >/dev/null 2>&1 || fail "/v1/snapshot/$ver does not verify"
    cmp -s "$work/latest.dsnap" "$work/byver.dsnap" || fail "/v1/snapshot/$ver differs from the latest it was"
fi
token_note="$(json "$work/token.json" 'j["requests"]') without or with a wrong token: all 401, no model bytes; with it 200 + verify"

# 7. A slow reader, in the background while 3 to 6 run.
size=$(stat -L -c %s "$snaps/latest")
python3 tests/http_abuse.py slowread "$port" "$token" 4096 2 $((HEADER_DEADLINE_S - 1)) \
    $((HEADER_DEADLINE_S + size / (MIN_RATE_KIBPS * 1024) + 60)) 127.0.0.3 \
    >"$work/slowread.json" 2>"$work/slowread.err" &
spid=$!

# 3. Malformed requests.
abuse malformed malformed "$port" "$token" "$snaps" "$HEADER_DEADLINE_S"
healthy "the malformed requests"
mal_note=$(json "$work/malformed.json" '"%d requests: %d 4xx, %d 505, %d closed at once, %d closed by the header deadline (%s s), %d lenient 200 (%s)" % (j["requests"], j["outcomes"].get("4xx", 0), j["outcomes"].get("505", 0), j["outcomes"].get("closed", 0), j["outcomes"].get("closed-by-deadline", 0), "-".join(str(x) for x in j["pending_closed_after_s"]) or "-", len(j["lenient_200"]), ", ".join(j["lenient_200"]))')

# 4. Oversized headers.
abuse oversized oversized "$port" "$snaps"
healthy "oversized headers"
over_note=$(json "$work/oversized.json" '"%d requests (64 KiB to 8 MiB of headers): %s" % (len(j), ", ".join(sorted(set(v.split()[0] for v in j.values()))))')

# 5. Slow clients.
abuse slowloris slowloris "$port" $((MAX_CONNECTIONS + 8)) "$HEADER_DEADLINE_S" "$PER_IP_LIMIT"
healthy "the slow clients"
slow_note=$(json "$work/slowloris.json" '"%d connections from one address (per-address limit %d): %d closed at once, the rest closed by the server after %s-%s s (median %s); a request from another address meanwhile: %s after %s s" % (j["slow_connections"], '"$PER_IP_LIMIT"', j["closed_at_once"], j["held_s"]["min"], j["held_s"]["max"], j["held_s"]["median"], j["normal_client"]["status"], j["normal_client"]["seconds"])')

# 6. Parallel downloads while rounds publish.
mkdir -p "$work/dl"
"$BUILD/derrd-replay" --brokers "$B" --topic abuse --synthetic 20000 --seed 7 --rate 2500 \
    --format text >/dev/null 2>"$work/replay2.log" &
rpid=$!
abuse parallel parallel "$port" "$token" "$work/dl" 64 8
wait "$rpid" || fail "derrd-replay (during the downloads): $(cat "$work/replay2.log")"
rpid=
nverified=0
for f in "$work"/dl/*.dsnap; do
    "$BUILD/derrd-snap" verify "$f" >/dev/null 2>"$work/verify.err" ||
        fail "a downloaded body does not verify: $(basename "$f"): $(cat "$work/verify.err")"
    nverified=$((nverified + 1))
done
[ "$nverified" = "$(json "$work/parallel.json" 'j["distinct_bodies"]')" ] || fail "downloaded bodies went missing"
healthy "the parallel downloads"
par_note=$(json "$work/parallel.json" '"%d threads x %s s: %d downloads (%s MiB) of %d versions, all verify; /healthz meanwhile %d probes, p50 %s ms, max %s ms" % (j["threads"], j["seconds"], j["downloads"], j["mib"], j["versions"], j["healthz_probes"], j["healthz_ms"]["p50"], j["healthz_ms"]["max"])')

# 7. The slow reader's end.
wait "$spid" || { spid=; fail "slowread: $(head -c 1500 "$work/slowread.err")"; }
spid=
json "$work/slowread.json" 'j["how"]' | grep -q '^reset' ||
    fail "the slow reader's connection ended by $(json "$work/slowread.json" 'j["how"]'), not a reset"
sread_note=$(json "$work/slowread.json" '"%d of %d bytes read at %.0f B/s (the whole at that rate: %d s); reset after %s s" % (j["received"], j["response_bytes"], j["bytes_per_s"], j["whole_response_at_this_rate_s"], j["ended_s"])')

# The counters, then SIGTERM.
c=$(get /metrics "$work/metrics")
[ "$c" = 200 ] || fail "/metrics with the token: $c"
m5=$(awk '$1 == "derrd_http_requests_total{code=\"5xx\"}" { print $2 }' "$work/metrics")
m4=$(awk '$1 == "derrd_http_requests_total{code=\"4xx\"}" { print $2 }' "$work/metrics")
m2=$(awk '$1 == "derrd_http_requests_total{code=\"2xx\"}" { print $2 }' "$work/metrics")
[ "$m5" = 0 ] || fail "/metrics counts ${m5:-no} 5xx answers"
cut=$(awk '$1 == "derrd_http_connections_cut_total{reason=\"min_rate\"}" { print $2 }' "$work/metrics")
[ "${cut:-0}" -ge 1 ] || fail "/metrics counts ${cut:-no} connections cut for the minimum rate"
t0=$(date +%s%N)
kill -TERM "$pid"
rc=0
timeout 60 tail --pid="$pid" -f /dev/null || fail "derrd did not stop within 60 s of SIGTERM"
wait "$pid" || rc=$?
pid=
stop_ms=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" = 0 ] || fail "derrd exited $rc after SIGTERM"
total_s=$(python3 -c "print(round(($(date +%s%N) - $t_start) / 1e9, 1))")
echo "http_abuse: ok in $total_s s (first snapshot after $((t_snap / 1000)) s). bind: $bind_note." \
     "token: $token_note. malformed: $mal_note. oversized: $over_note. slow clients: $slow_note." \
     "parallel: $par_note. slow reader: $sread_note. counters: ${m2} 2xx, ${m4} 4xx, 0 5xx," \
     "$cut cut for the minimum rate. SIGTERM: exit 0 in $stop_ms ms."
