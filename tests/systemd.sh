#!/usr/bin/env bash
# Checks systemd/derrd.service offline (no running systemd needed):
#   1. `systemd-analyze verify` on a copy whose ExecStart= is the built
#      binary (verify refuses an ExecStart= that does not exist, and
#      /usr/local/bin/derrd is not installed here); any warning about the
#      unit fails too;
#   2. `systemd-analyze security --offline=true --threshold=20`: exposure
#      at most 2.0 (the threshold is the exposure times 10).
# systemd-analyze comes with Debian's systemd package, which
# tools/install-deps.sh installs: missing, the test fails rather than skips.
#
#   BUILD=build tests/systemd.sh      (UNIT=path checks another unit file)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
UNIT=${UNIT:-systemd/derrd.service}
MAX_EXPOSURE=2.0
THRESHOLD=20

passed=0 failed=0
ok() { echo "systemd: ok: $*"; passed=$((passed + 1)); }
bad() { echo "systemd: FAIL: $*" >&2; failed=$((failed + 1)); }
finish() {
    echo "systemd: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

if ! command -v systemd-analyze >/dev/null; then
    bad "systemd-analyze not found: install Debian's systemd package (tools/install-deps.sh)"
    finish
fi
[ -f "$UNIT" ] || { bad "$UNIT is missing"; finish; }

tmp=$(mktemp -d /tmp/derrd-test-systemd-XXXXXX) || { bad "mktemp failed"; finish; }
trap 'rm -rf "$tmp"' EXIT

# ---- 1. systemd-analyze verify ---------------------------------------------
bin=$(realpath -e "$BUILD/derrd" 2>/dev/null)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    bad "$BUILD/derrd is not built (make BUILD=$BUILD)"
elif ! grep -q '^ExecStart=/usr/local/bin/derrd ' "$UNIT"; then
    bad "$UNIT: no 'ExecStart=/usr/local/bin/derrd ...' line to point at $bin"
else
    sed "s|^ExecStart=/usr/local/bin/derrd |ExecStart=$bin |" "$UNIT" >"$tmp/derrd.service"
    # ExecReload= must exist too: /bin/kill comes with procps.
    [ -x /bin/kill ] || echo "systemd: /bin/kill is missing (Debian's procps package)" >&2
    out=$(systemd-analyze verify --man=no "$tmp/derrd.service" 2>&1)
    rc=$?
    # Lines about other units (the host's own) are not ours to judge.
    ours=$(printf '%s\n' "$out" | grep -E 'derrd' || true)
    if [ $rc -ne 0 ] || [ -n "$ours" ]; then
        bad "systemd-analyze verify (exit $rc):"$'\n'"$out"
    else
        ok "systemd-analyze verify $UNIT (ExecStart=$bin)"
    fi
fi

# ---- 2. systemd-analyze security --------------------------------------------
out=$(systemd-analyze security --offline=true --threshold=$THRESHOLD "$UNIT" 2>&1)
rc=$?
exposure=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$exposure" ]; then
    bad "systemd-analyze security printed no exposure (exit $rc):"$'\n'"$out"
elif [ $rc -ne 0 ] || ! awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    printf '%s\n' "$out" | grep -F '✗' >&2
    bad "exposure $exposure of $UNIT is above $MAX_EXPOSURE (exit $rc)"
else
    ok "systemd-analyze security --offline=true: exposure $exposure (at most $MAX_EXPOSURE)"
fi

finish
