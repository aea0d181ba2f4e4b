#!/usr/bin/env bash
# replay.sh: end-to-end checks of build/derrd-replay against a Kafka broker.
#
# Usage: tests/kafka/replay.sh [BOOTSTRAP]
#
# With BOOTSTRAP (or $DERRD_KAFKA_BOOTSTRAP) it uses that broker; otherwise it
# starts one with tests/kafka/broker.sh in a temporary directory and stops it
# on every exit. Topic names carry the pid, so reruns do not collide.
#
# Checks: --help and usage errors (exit 0 / 2); a TSV error names file:line
# (exit 2); then the CiteULike train split (text and JSON) with --malformed and
# --duplicates into a fresh topic with --partitions 3: the JSON summary
# counts, --expect-out equal to `LC_ALL=C sort -u train.tsv`, the topic
# holding exactly `produced` messages, the distinct valid pairs read back equal to --expect-out, and the malformed
# messages read back, escaped as --help documents, equal to --malformed-out;
# a synthetic run twice with one seed gives the same outputs; an unreachable
# broker gives exit 1. (Message keys are not checked: kcheck dump does not
# print them.) Prints "test_replay: ok" on success, exits 1 on failure.
#
# Needs: $BUILD/derrd-replay (make), perl, and what broker.sh needs (java,
# mvn, cc, librdkafka-dev). Environment: BUILD, KCHECK as for broker.sh.
set -euo pipefail
export LC_ALL=C

readonly HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly ROOT=$(cd "$HERE/../.." && pwd)
build_dir=${BUILD:-build}
[[ $build_dir == /* ]] || build_dir=$ROOT/$build_dir
readonly REPLAY=$build_dir/derrd-replay
export KCHECK=${KCHECK:-$build_dir/kcheck} # built below when missing, for broker.sh too
readonly DATA=$ROOT/../shared/data/citeulike/train.tsv
readonly TAG=rp$$

fail() {
    echo "test_replay: FAIL: $*" >&2
    exit 1
}

[[ -x $REPLAY ]] || fail "$REPLAY not built (make BUILD=$build_dir)"
[[ -r $DATA ]] || fail "$DATA not found"
command -v perl >/dev/null || fail "perl is needed"

work=$(mktemp -d "${TMPDIR:-/tmp}/test_replay.XXXXXX")
broker_dir=
cleanup() {
    if [[ -n $broker_dir ]]; then
        "$HERE/broker.sh" stop "$broker_dir" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ ! -x $KCHECK || $HERE/kcheck.c -nt $KCHECK ]]; then
    mkdir -p "$(dirname "$KCHECK")"
    "${CC:-cc}" -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE "$HERE/kcheck.c" \
        -lrdkafka -o "$KCHECK" || fail "cannot build kcheck"
fi
bootstrap=${1:-${DERRD_KAFKA_BOOTSTRAP:-}}
if [[ -z $bootstrap ]]; then
    broker_dir=$work/broker
    bootstrap=$(BUILD=$build_dir "$HERE/broker.sh" start "$broker_dir") ||
        fail "cannot start a broker"
fi

# expect CMD... : the exit status of CMD must be $want
expect_status() {
    local want=$1
    shift
    local rc=0
    "$@" >"$work/out" 2>"$work/err" || rc=$?
    [[ $rc == "$want" ]] || fail "exit $rc, want $want: $* ($(head -c 300 "$work/err"))"
}

# --- usage -------------------------------------------------------------------
expect_status 0 "$REPLAY" --help
grep -q -- '--malformed-out' "$work/out" || fail "--help lacks --malformed-out"
expect_status 2 "$REPLAY"
expect_status 2 "$REPLAY" --brokers "$bootstrap" --topic t --synthetic 1 --bogus
expect_status 2 "$REPLAY" --brokers "$bootstrap" --topic t --synthetic 1 --data "$DATA"
expect_status 2 "$REPLAY" --brokers "$bootstrap" --topic t --synthetic 1 --format xml
expect_status 2 "$REPLAY" --brokers "$bootstrap" --topic t --synthetic 1 --kafka no.such=1
printf 'u1\ti1\nu2\ti2\tx\n' >"$work/bad.tsv"
expect_status 2 "$REPLAY" --brokers "$bootstrap" --topic t --data "$work/bad.tsv"
grep -q "bad.tsv:2: 3 fields" "$work/err" || fail "no file:line in: $(cat "$work/err")"

# --- the summary, the outputs, and what the topic holds -----------------------
# dump TOPIC > file: "partition<TAB>offset<TAB>value" with kcheck's escapes
dump() { "$KCHECK" dump -b "$bootstrap" -t "$1" 2>/dev/null; }

# kcheck dump escapes values exactly as --malformed-out does (\\ \n \t, other
# bytes < 0x20 or >= 0x7f as \xhh): the value is the third field as it is.
values='chomp; my @f = split /\t/, $_, 4; print(($f[2] // ""), "\n");'

check_run() { # FORMAT VALID_REGEX (the exact shape of a valid CiteULike event)
    local format=$1 valid_re=$2 topic=$TAG-$1
    expect_status 0 "$REPLAY" --brokers "$bootstrap" --topic "$topic" --partitions 3 \
        --data "$DATA" --format "$format" --malformed 0.01 --duplicates 0.02 \
        --expect-out "$work/expect" --malformed-out "$work/malformed"
    local n m d
    n=$(wc -l <"$DATA")
    m=$(perl -e "printf '%.0f', $n * 0.01")
    d=$(perl -e "printf '%.0f', $n * 0.02")
    local want="{\"produced\":$((n + m + d)),\"valid\":$n,\"malformed\":$m,\"duplicates\":$d,\"delivered\":$((n + m + d)),\"failed\":0,"
    [[ $(cat "$work/out") == "$want"* ]] || fail "$format summary: $(cat "$work/out"), want $want..."
    sort -u "$DATA" | cmp -s - "$work/expect" || fail "$format: --expect-out is not sort -u train.tsv"
    [[ $(wc -l <"$work/malformed") == "$m" ]] || fail "$format: --malformed-out has not $m lines"

    dump "$topic" >"$work/dump"
    [[ $(wc -l <"$work/dump") == $((n + m + d)) ]] ||
        fail "$format: the topic holds $(wc -l <"$work/dump") messages, want $((n + m + d))"
    perl -ne "$values" "$work/dump" >"$work/values"
    grep -E "$valid_re" "$work/values" >"$work/valid" || true
    grep -v -E "$valid_re" "$work/values" | sort >"$work/bad" || true
    [[ $(wc -l <"$work/valid") == $((n + d)) ]] || fail "$format: $(wc -l <"$work/valid") valid messages read back, want $((n + d))"
    cmp -s "$work/bad" "$work/malformed" || fail "$format: the malformed messages read back differ from --malformed-out"
    perl -ne 'print "$1\t$2\n" if /^\{"user":"([^"]*)","item":"([^"]*)"/ || /^([^\\]*)\\t([^\\]*)\\t\d+$/' \
        "$work/valid" | sort -u | cmp -s - "$work/expect" ||
        fail "$format: the valid pairs read back differ from --expect-out"
}
check_run text '^[0-9]+\\t[0-9]+\\t[0-9]+$'
check_run json '^\{"user":"[0-9]+","item":"[0-9]+","ts":[0-9]+\}$'

# --- reproducibility and failure ---------------------------------------------
for k in 1 2; do
    expect_status 0 "$REPLAY" --brokers "$bootstrap" --topic "$TAG-syn$k" --synthetic 5000 \
        --seed 42 --malformed 0.1 --duplicates 0.1 --expect-out "$work/e$k" \
        --malformed-out "$work/m$k"
done
cmp -s "$work/e1" "$work/e2" && cmp -s "$work/m1" "$work/m2" || fail "--seed does not reproduce"
expect_status 1 "$REPLAY" --brokers 127.0.0.1:1 --topic t --synthetic 10 \
    --kafka message.timeout.ms=1000
grep -q '"failed":10' "$work/out" || fail "unreachable broker: $(cat "$work/out")"

echo "test_replay: ok"
