#!/usr/bin/env bash
# Checks derrd's configuration surface from the command line:
#   - `derrd --dump-config` is byte for byte systemd/derrd.conf.example (so
#     the example never drifts from the option table), the same every run,
#     no line over 78 columns, and loads as the defaults;
#   - --check-config: a good file exits 0 with "derrd: configuration ok";
#     a bad one exits 78 with "FILE:LINE: key: reason" on stderr (range,
#     type, unknown key, a key set twice, an unknown or invalid kafka.*
#     property with librdkafka's reason, syntax, size); a missing file 78;
#   - flags override file keys wherever they stand (seen with --print-config),
#     a bad flag exits 78 with "derrd: --name: reason", usage errors stay 2;
#   - --print-config hides secrets and its output reads back as the same.
# Every run passes --config, so a /etc/derrd/derrd.conf on this machine
# plays no part.
#
#   BUILD=build tests/config.sh      (regenerate the example after changing
#                                     the option table: build/derrd
#                                     --dump-config > systemd/derrd.conf.example)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DERRD=$BUILD/derrd
EXAMPLE=systemd/derrd.conf.example

passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "config: FAIL: $*" >&2; failed=$((failed + 1)); }
finish() {
    echo "config: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

[ -x "$DERRD" ] || { bad "$DERRD is not built"; finish; }
tmp=$(mktemp -d /tmp/derrd-test-config-XXXXXX) || { bad "mktemp failed"; finish; }
trap 'rm -rf "$tmp"' EXIT

# run STATUS ARGS...: runs derrd; stdout in $tmp/out, stderr in $tmp/err;
# fails the check unless it exits STATUS. Returns 0 when it did.
run() {
    local want=$1 rc
    shift
    "$DERRD" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        bad "derrd $* exited $rc, not $want; stderr: $(head -c 300 "$tmp/err")"
        return 1
    fi
    return 0
}

# expect_err STATUS TEXT ARGS...: exits STATUS and stderr is exactly TEXT.
expect_err() {
    local want=$1 text=$2
    shift 2
    run "$want" "$@" || return
    if [ "$(cat "$tmp/err")" != "$text" ]; then
        bad "derrd $*: stderr is \"$(head -c 300 "$tmp/err")\", not \"$text\""
        return
    fi
    ok
}

# expect_err_prefix STATUS TEXT ARGS...: exits STATUS, stderr starts with TEXT.
expect_err_prefix() {
    local want=$1 text=$2
    shift 2
    run "$want" "$@" || return
    if [[ "$(cat "$tmp/err")" != "$text"* ]]; then
        bad "derrd $*: stderr is \"$(head -c 300 "$tmp/err")\", not \"$text...\""
        return
    fi
    ok
}

# value KEY: the value of KEY in the last --print-config output.
value() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; exit }' "$tmp/out"; }

# expect_value KEY VALUE ARGS...: derrd ARGS --print-config shows KEY VALUE.
expect_value() {
    local key=$1 want=$2
    shift 2
    run 0 "$@" --print-config || return
    local got
    got=$(value "$key")
    [ "$got" = "$want" ] && ok || bad "derrd $* --print-config: $key is \"$got\", not \"$want\""
}

# ---- the example file -----------------------------------------------------------
if run 0 --dump-config; then
    cp "$tmp/out" "$tmp/dump1"
    if cmp -s "$tmp/dump1" "$EXAMPLE"; then
        ok
    else
        bad "$EXAMPLE differs from derrd --dump-config (regenerate it:" \
            "$DERRD --dump-config > $EXAMPLE)"
        diff "$EXAMPLE" "$tmp/dump1" | head -20 >&2
    fi
    [ -s "$tmp/err" ] && bad "--dump-config wrote to stderr: $(cat "$tmp/err")" || ok
    long=$(awk 'length > 78 { print NR ": " $0 }' "$tmp/dump1")
    [ -z "$long" ] && ok || bad "--dump-config lines over 78 columns: $long"
    run 0 --dump-config && cmp -s "$tmp/out" "$tmp/dump1" && ok ||
        bad "--dump-config differs between two runs"
    # it prints the defaults and reads no file
    run 0 --dump-config --config "$tmp/missing.conf" && cmp -s "$tmp/out" "$tmp/dump1" && ok ||
        bad "--dump-config read --config"
    for opt in brokers topic group dead-letter-topic state-dir snapshot-dir round-min-events \
        round-interval-ms teacher-refresh-ms teacher-refresh-growth teacher-dim student-dim \
        lambda-de lambda-rrd gate-margin http-address http-port http-token log-level; do
        grep -qE "^# $opt " "$tmp/dump1" && ok || bad "--dump-config lacks # $opt"
    done
    for kv in "kafka.security.protocol SASL_SSL" "kafka.sasl.mechanisms" "kafka.sasl.username" \
        "kafka.sasl.password" "kafka.ssl.ca.location"; do
        grep -q "^# $kv" "$tmp/dump1" && ok || bad "--dump-config lacks the example # $kv"
    done
fi

# The example as it is (all commented) is valid and means the defaults.
: >"$tmp/empty.conf"
if run 0 --config "$EXAMPLE" --check-config; then
    [ "$(cat "$tmp/out")" = "derrd: configuration ok" ] && [ ! -s "$tmp/err" ] && ok ||
        bad "--check-config on the example printed \"$(cat "$tmp/out" "$tmp/err")\""
fi
run 0 --config "$tmp/empty.conf" --print-config && cp "$tmp/out" "$tmp/defaults"
run 0 --config "$EXAMPLE" --print-config && cmp -s "$tmp/out" "$tmp/defaults" && ok ||
    bad "the example does not load as the defaults"
# Uncommenting every setting (a "# name value" line of a known option right
# before a blank line; not the kafka.* examples) gives the defaults too.
awk 'NR == FNR { if ($1 !~ /^#/) name[$1] = 1; next }
     FNR > 1 && prev ~ /^# / && $0 == "" { split(prev, w, " "); if (w[2] in name) sub(/^# /, "", prev) }
     FNR > 1 { print prev } { prev = $0 } END { print prev }' \
    "$tmp/defaults" "$EXAMPLE" >"$tmp/uncommented.conf"
n_set=$(grep -cE '^[a-z]' "$tmp/uncommented.conf")
n_opt=$(grep -cE '^[a-z]' "$tmp/defaults")
[ "$n_set" -eq "$n_opt" ] && ok || bad "the example sets $n_set options when uncommented, not $n_opt"
run 0 --config "$tmp/uncommented.conf" --print-config && cmp -s "$tmp/out" "$tmp/defaults" && ok ||
    bad "the uncommented example does not give the defaults"

# ---- a good file, and flags over it ---------------------------------------------
cat >"$tmp/good.conf" <<'EOF'
# derrd test configuration
brokers 10.0.0.1:9092,10.0.0.2:9092   # two brokers
topic events
group   derrd-test
dead-letter-topic events-dlq
state-dir "/nonexistent/derrd state"
round-min-events 5000
teacher-refresh-growth 0.5
lambda-de 0.02
gate-margin 0.05
http-address 0.0.0.0
http-port 9000
http-token "tok en#1"
log-level debug
rounds no
kafka.security.protocol SASL_PLAINTEXT
kafka.sasl.mechanisms PLAIN
kafka.sasl.username derrd
kafka.sasl.password hunter#2
EOF
if run 0 --config "$tmp/good.conf" --check-config; then
    [ "$(cat "$tmp/out")" = "derrd: configuration ok" ] && ok ||
        bad "--check-config printed \"$(cat "$tmp/out")\""
fi
[ -e "/nonexistent" ] && bad "--check-config created the state directory" || ok
expect_value brokers 10.0.0.1:9092,10.0.0.2:9092 --config "$tmp/good.conf"
expect_value group derrd-test --config "$tmp/good.conf"
expect_value state-dir '"/nonexistent/derrd state"' --config "$tmp/good.conf"
expect_value gate-margin 0.05 --config "$tmp/good.conf"
expect_value rounds false --config "$tmp/good.conf"
expect_value http-token '<set>' --config "$tmp/good.conf"
expect_value kafka.sasl.username derrd --config "$tmp/good.conf"
expect_value kafka.sasl.password '<set>' --config "$tmp/good.conf"
grep -qE 'hunter|tok en' "$tmp/out" && bad "--print-config shows a secret" || ok
# flags win over the file wherever they stand, --config=FILE works too
expect_value topic from-flag --topic from-flag --config "$tmp/good.conf"
expect_value topic from-flag --config "$tmp/good.conf" --topic from-flag
expect_value topic from-flag --config="$tmp/good.conf" --topic=from-flag
expect_value http-port 0 --http-port 0 --config "$tmp/good.conf"
expect_value rounds true --rounds --config "$tmp/good.conf"
expect_value kafka.sasl.username other --kafka.sasl.username other --config "$tmp/good.conf"
expect_value kafka.client.id cli --config "$tmp/good.conf" --kafka.client.id cli
expect_value topic events --config "$tmp/good.conf"
# the last --config counts; --config "" reads no file
expect_value topic derrd-events --config "$tmp/good.conf" --config "$tmp/empty.conf"
expect_value topic derrd-events --config "$tmp/good.conf" --config ""

# --print-config reads back as the same values (no secrets set here)
grep -vE '^(http-token|kafka\.sasl\.password) ' "$tmp/good.conf" >"$tmp/nosecret.conf"
if run 0 --config "$tmp/nosecret.conf" --print-config; then
    cp "$tmp/out" "$tmp/printed.conf"
    run 0 --config "$tmp/printed.conf" --print-config && cmp -s "$tmp/out" "$tmp/printed.conf" &&
        ok || bad "--print-config output does not read back as the same values"
fi

# ---- bad files: 78 and FILE:LINE: key: reason -------------------------------------
# bad_file LINE... -- EXPECTED: writes the lines to bad.conf; expects 78 and
# stderr "bad.conf:EXPECTED" (exact; EXPECTED starts with the line number).
bad_file() {
    local lines=() want
    while [ "$1" != "--" ]; do lines+=("$1"); shift; done
    want=$2
    printf '%s\n' "${lines[@]}" >"$tmp/bad.conf"
    expect_err 78 "$tmp/bad.conf:$want" --config "$tmp/bad.conf" --check-config
}
bad_file "brokers a" "" "http-port 99999" -- "3: http-port: 99999 is outside [0, 65535]"
bad_file "rounds maybe" -- '1: rounds: "maybe" is not a boolean (true/false)'
bad_file "lambda-de heavy" -- '1: lambda-de: "heavy" is not a number'
bad_file "gate-margin 2" -- '1: gate-margin: 2 is outside [0, 1]'
bad_file "log-level loud" -- \
    '1: log-level: "loud" is not one of err, warning, notice, info, debug'
bad_file 'topic ""' -- '1: topic: must not be empty'
bad_file "http-address localhost" -- \
    '1: http-address: "localhost" is not a numeric IPv4 or IPv6 address'
bad_file "# ok" "frobnicate 1" -- '2: frobnicate: unknown option (derrd --help lists them)'
bad_file "topic a" "group g" "topic b" -- '3: topic: set again (first set on line 1)'
bad_file "brokers" -- '1: brokers: no value (write "" for an empty one)'
bad_file "--brokers x" -- '1: a key is written without the leading "--" of its flag'
bad_file "brokers=x" -- "1: '=' where a key character should be (a line is \"key value\")"
bad_file 'topic "events' -- "1: topic: the quoted value has no closing '\"'"
bad_file 'topic "a" b' -- '1: topic: text after the quoted value'
bad_file 'topic a' $'group \x01' -- '2: control character 0x01 in column 7'
bad_file $'topic caf\xe9' -- '1: invalid UTF-8 in column 10'
bad_file "topic $(head -c 5000 /dev/zero | tr '\0' x)" -- '1: line longer than 4096 bytes'
# kafka.* goes through librdkafka, whose reason follows
printf 'kafka.no.such.property 1\n' >"$tmp/bad.conf"
expect_err 78 "$tmp/bad.conf:1: kafka.no.such.property: No such configuration property: \"no.such.property\"" \
    --config "$tmp/bad.conf" --check-config
printf 'kafka.security.protocol carrier-pigeon\n' >"$tmp/bad.conf"
expect_err_prefix 78 "$tmp/bad.conf:1: kafka.security.protocol: Invalid value \"carrier-pigeon\"" \
    --config "$tmp/bad.conf" --check-config
# the file is read whatever derrd is asked to do
printf 'http-port -1\n' >"$tmp/bad.conf"
expect_err 78 "$tmp/bad.conf:1: http-port: -1 is outside [0, 65535]" --config "$tmp/bad.conf"
expect_err 78 "$tmp/bad.conf:1: http-port: -1 is outside [0, 65535]" --config "$tmp/bad.conf" \
    --print-config
expect_err 78 "$tmp/bad.conf:1: http-port: -1 is outside [0, 65535]" --config "$tmp/bad.conf" \
    --dump-state
# a flag does not excuse a bad file line
expect_err 78 "$tmp/bad.conf:1: http-port: -1 is outside [0, 65535]" --config "$tmp/bad.conf" \
    --http-port 80 --check-config
# missing, a directory, too big
expect_err 78 "$tmp/missing.conf: No such file or directory" --config "$tmp/missing.conf" \
    --check-config
expect_err 78 "$tmp: not a regular file" --config "$tmp" --check-config
head -c 1100000 /dev/zero | tr '\0' '#' >"$tmp/big.conf"
expect_err_prefix 78 "$tmp/big.conf: 1100000 bytes, over the limit" --config "$tmp/big.conf" \
    --check-config

# ---- bad flags: 78 and derrd: --name: reason; usage errors 2 ----------------------
expect_err 78 'derrd: --http-port: "x" is not an integer' --config "$tmp/good.conf" \
    --http-port x --check-config
expect_err 78 'derrd: --rounds: "maybe" is not a boolean (true/false)' --config "$tmp/empty.conf" \
    --rounds=maybe
expect_err 78 'derrd: --frobnicate: unknown option (derrd --help lists them)' \
    --config "$tmp/empty.conf" --frobnicate 1
expect_err 78 'derrd: --kafka.no.such: No such configuration property: "no.such"' \
    --config "$tmp/empty.conf" --kafka.no.such 1 --check-config
expect_err 2 'derrd: unexpected argument "extra" (see --help)' --config "$tmp/empty.conf" extra
expect_err 2 'derrd: --topic needs a value' --config "$tmp/empty.conf" --topic
expect_err 2 'derrd: --config needs a value' --config
expect_err 2 'derrd: --check-config and --print-config exclude each other' \
    --check-config --print-config

# ---- --help documents it all -------------------------------------------------------
if run 0 --help; then
    for w in "--config FILE" "--check-config" "--dump-config" "--print-config" "78" \
        "/etc/derrd/derrd.conf" "--kafka.KEY VALUE"; do
        grep -qF -- "$w" "$tmp/out" && ok || bad "--help does not mention $w"
    done
fi

finish
