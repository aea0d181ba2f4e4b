#!/usr/bin/env bash
# demo.sh: `make demo` (tools/demo.sh) end to end, non-interactively.
#
#   tests/demo.sh            (BUILD=build/asan under make asan)
#
# Runs the demo on a small synthetic dataset with its output in a file (not
# a terminal, so it stops by itself after the summary) and checks that it
# exits 0, that a snapshot covering every event was published and served,
# that the quality lines and a top-10 recommendation were printed, that
# derrd exited 0, and that nothing is left behind: no derrd or derrd-replay
# process, no scratch directory. When python3 is there, the demo's default
# port is taken first, so the fall-back to a free port is exercised too.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
work=$(mktemp -d /tmp/derrd-test-demo.XXXXXX)
blocker=
cleanup() {
    [ -n "$blocker" ] && kill "$blocker" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "demo: FAIL: $*" >&2
    sed 's/^/    /' "$work/out.txt" >&2 2>/dev/null || true
    exit 1
}

# Occupy a port and hand it to the demo as DEMO_PORT.
port=0
if command -v python3 >/dev/null; then
    python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(300)' >"$work/port" &
    blocker=$!
    for _ in $(seq 1 50); do [ -s "$work/port" ] && break; sleep 0.1; done
    port=$(cat "$work/port")
fi

t0=$(date +%s)
rc=0
BUILD=$BUILD DEMO_DATA=synthetic DEMO_EVENTS=20000 DEMO_RATE=10000 DEMO_SETTLE_SECONDS=10 \
    DEMO_TIMEOUT=150 DEMO_PORT="$port" DEMO_SECONDS=2 TMPDIR="$work" \
    timeout 200 tools/demo.sh >"$work/out.txt" 2>&1 </dev/null || rc=$?
secs=$(($(date +%s) - t0))
out=$work/out.txt
[ "$rc" = 0 ] || fail "tools/demo.sh exited $rc after $secs s"

has() { grep -Eq -- "$1" "$out" || fail "no line matching: $1"; }
[ "$port" = 0 ] || has "^demo: port $port is taken; using a free one$"
has '^  derrd status page:  http://127\.0\.0\.1:[0-9]+/$'
has '^A snapshot covering all 20000 events is published'
has '^  snapshot   student-[0-9]{20}\.dsnap \(version [0-9]+, round [0-9]+\), [0-9]+ bytes$'
has 'served at http://127\.0\.0\.1:[0-9]+/v1/snapshot \(ETag "[0-9]+"\)$'
has '^ +student \(dim 20\) +0\.[0-9]{4} +0\.[0-9]{4}$'
has '^ +teacher \(dim 200\) +0\.[0-9]{4} +0\.[0-9]{4}$'
has '^ +student / teacher +[0-9]+\.[0-9]{2} +[0-9]+\.[0-9]{2}$'
has '^  recommendation for user [0-9]+ \(history: [0-9]+ items: '
n=$(grep -Ec '^ +([1-9]|10)\. item [^ ]+ +score -?[0-9.]+' "$out" || true)
[ "$n" = 10 ] || fail "$n recommendation lines, 10 expected"
has '^derrd keeps running for 2 s \(DEMO_SECONDS\)\.$'
has '^derrd stopped cleanly \(exit status 0\)\.$'

pid=$(sed -n 's/^  derrd pid \([0-9]*\),.*/\1/p' "$out")
[ -n "$pid" ] || fail "no derrd pid in the output"
if kill -0 "$pid" 2>/dev/null && grep -q derrd "/proc/$pid/comm" 2>/dev/null; then
    fail "derrd (pid $pid) still runs"
fi
scratch=$(sed -n 's/.*scratch directory \(.*\)$/\1/p' "$out")
[ -n "$scratch" ] || fail "no scratch directory in the output"
[ ! -e "$scratch" ] || fail "scratch directory $scratch left behind"
echo "demo: ok ($secs s: snapshot published and served, quality and a top-10 printed, derrd exited 0)"
