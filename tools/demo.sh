#!/usr/bin/env bash
# demo.sh: the zero-setup demo (`make demo`).
#
#   tools/demo.sh                    (make demo builds first, then runs this)
#
# Starts build/derrd on librdkafka's in-process mock cluster (--embedded-kafka)
# with a scratch state directory, replays a dataset into it with derrd-replay,
# shows progress from derrd's /metrics, waits until a snapshot covering every
# event is published and the student has had some settling rounds, then
# prints the student's held-out quality beside the teacher's, the snapshot,
# and a sample recommendation. On a terminal derrd then keeps running (status
# page URL on screen) until Ctrl-C; otherwise it stops at once. Stopping is
# SIGTERM to derrd and a wait for its exit status (0 expected).
#
# Environment (all optional):
#   BUILD=build             where the binaries are (make asan: build/asan)
#   DEMO_DATA=              citeulike | synthetic | PATH (a user<TAB>item TSV,
#                           or a directory holding train.tsv); default:
#                           citeulike when ../shared/data/citeulike exists,
#                           else synthetic
#   DEMO_EVENTS=100000      synthetic interactions (users N/20, items N/5)
#   DEMO_RATE=5000          replay rate, events/s (0 = as fast as possible)
#   DEMO_PORT=8417          HTTP port on 127.0.0.1; a free one when taken
#                           (0: any free port, picked by the kernel)
#   DEMO_SETTLE_SECONDS=60  after the snapshot covering the data, wait at most
#                           this long for derrd's settling rounds to finish
#   DEMO_TIMEOUT=600        bound on reaching that snapshot, from the start
#   DEMO_SECONDS=           after the summary, keep derrd running N seconds,
#                           then stop (default: until Ctrl-C on a terminal,
#                           0 otherwise)
#   DEMO_USER=              the user of the sample recommendation
#   DEMO_KEEP=1             keep the scratch directory (state, snapshots, logs)
#   DEMO_DERRD_OPTS=        extra derrd options, e.g. "--student-dim 32"
# shellcheck disable=SC2317 # the trap handlers are reached indirectly
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
DEMO_EVENTS=${DEMO_EVENTS:-100000}
DEMO_RATE=${DEMO_RATE:-5000}
DEMO_PORT=${DEMO_PORT:-8417}
DEMO_SETTLE_SECONDS=${DEMO_SETTLE_SECONDS:-60}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-600}
DEMO_SECONDS=${DEMO_SECONDS:-}
DEMO_USER=${DEMO_USER:-}
DEMO_KEEP=${DEMO_KEEP:-0}
CITEULIKE=../shared/data/citeulike
TOPIC=demo

tty=0
[ -t 1 ] && tty=1
if [ "$tty" = 1 ]; then
    B=$'\e[1m' N=$'\e[0m'
else
    B='' N=''
fi

say() { printf '%s\n' "$*"; }
num() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in DEMO_EVENTS DEMO_RATE DEMO_PORT DEMO_SETTLE_SECONDS DEMO_TIMEOUT; do
    num "${!v}" || { echo "demo: $v must be a whole number, not \"${!v}\"" >&2; exit 2; }
done
[ -z "$DEMO_SECONDS" ] || num "$DEMO_SECONDS" ||
    { echo "demo: DEMO_SECONDS must be a whole number, not \"$DEMO_SECONDS\"" >&2; exit 2; }
for b in derrd derrd-replay derrd-snap; do
    [ -x "$BUILD/$b" ] || { echo "demo: $BUILD/$b is missing; run make (or make demo)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "demo: curl is missing (tools/install-deps.sh installs it)" >&2; exit 1; }

# ---- the dataset ----------------------------------------------------------------------
data=${DEMO_DATA:-}
if [ -z "$data" ]; then
    if [ -f "$CITEULIKE/train.tsv" ]; then data=citeulike; else data=synthetic; fi
fi
src=() tsv='' heldout='' total=''
case "$data" in
citeulike)
    [ -f "$CITEULIKE/train.tsv" ] ||
        { echo "demo: DEMO_DATA=citeulike but $CITEULIKE/train.tsv is missing" >&2; exit 1; }
    tsv=$CITEULIKE/train.tsv
    [ -f "$CITEULIKE/test.tsv" ] && heldout=$CITEULIKE/test.tsv
    label="CiteULike ($tsv)" ;;
synthetic)
    users=$((DEMO_EVENTS / 20 > 100 ? DEMO_EVENTS / 20 : 100))
    items=$((DEMO_EVENTS / 5 > 500 ? DEMO_EVENTS / 5 : 500))
    src=(--synthetic "$DEMO_EVENTS" --users "$users" --items "$items")
    total=$DEMO_EVENTS
    label="synthetic: $DEMO_EVENTS interactions, $users users, $items Zipf-popular items" ;;
*)
    tsv=$data
    [ -d "$tsv" ] && tsv=$tsv/train.tsv
    [ -f "$tsv" ] || { echo "demo: DEMO_DATA=$data: no such file (or DIR/train.tsv)" >&2; exit 1; }
    label="$tsv" ;;
esac
if [ -n "$tsv" ]; then
    src=(--data "$tsv")
    total=$(grep -c . "$tsv")
fi

# ---- scratch directory, processes, and stopping them ----------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/derrd-demo.XXXXXX") || exit 1
log=$work/derrd.log
dpid='' rpid='' stage=start derrd_rc='' progress_lines=0

# Stops derrd-replay, then derrd (SIGTERM; SIGKILL after 60 s); sets derrd_rc.
stop_all() {
    if [ -n "$rpid" ]; then
        kill -TERM "$rpid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$rpid" 2>/dev/null
        wait "$rpid" 2>/dev/null
        rpid=
    fi
    if [ -n "$dpid" ]; then
        kill -TERM "$dpid" 2>/dev/null
        local waited=0
        while kill -0 "$dpid" 2>/dev/null && [ "$waited" -lt 600 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$dpid" 2>/dev/null; then
            echo "demo: derrd did not stop within 60 s of SIGTERM; killing it" >&2
            kill -KILL "$dpid" 2>/dev/null
        fi
        wait "$dpid" 2>/dev/null
        derrd_rc=$?
        dpid=
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    progress_end
    stop_all
    if [ "$DEMO_KEEP" = 1 ]; then
        say "demo: kept $work (state, snapshots, derrd.log)"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}

on_signal() {
    progress_end
    if [ "$stage" = serving ]; then
        say ""
        say "Stopping derrd ..."
        stop_all
        report_exit
        [ "$derrd_rc" = 0 ] && exit 0
        exit 1
    fi
    [ "$tty" = 1 ] && say ""
    say "demo: interrupted; stopping derrd"
    stop_all
    [ -n "$derrd_rc" ] && say "demo: derrd exited with status $derrd_rc"
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP

die() {
    progress_end
    echo "demo: $*" >&2
    if [ -s "$log" ]; then
        if [ "$DEMO_KEEP" = 1 ]; then
            echo "demo: last lines of derrd's log ($log):" >&2
        else
            echo "demo: last lines of derrd's log (DEMO_KEEP=1 keeps all of it):" >&2
        fi
        tail -n 15 "$log" | cut -c1-300 | sed 's/^/    /' >&2
    fi
    exit 1
}

report_exit() {
    if [ "$derrd_rc" = 0 ]; then
        say "derrd stopped cleanly (exit status 0)."
    else
        echo "demo: derrd exited with status ${derrd_rc:-unknown} (0 expected)" >&2
        tail -n 15 "$log" | cut -c1-300 | sed 's/^/    /' >&2
    fi
}

# ---- metrics and progress -------------------------------------------------------------
# metrics: reads /metrics into m_<name> variables (m_consumer_lag: the sum over
# partitions, -1 when any is unknown). Returns 1 when derrd does not answer.
metrics() {
    local text
    text=$(curl -s -m 2 "http://127.0.0.1:$port/metrics") || return 1
    [ -n "$text" ] || return 1
    eval "$(printf '%s\n' "$text" | awk '
        /^derrd_consumer_lag[{ ]/ { seen = 1; if ($2 < 0) unk = 1; lag += $2; next }
        /^derrd_[a-z0-9_]+ / {
            v = $2
            if (v !~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/) v = "nan"
            print "m_" substr($1, 7) "=" v
        }
        END { print "m_consumer_lag=" (unk || !seen ? -1 : lag + 0) }')"
}

f4() { # a metric value with 4 decimals, "-" when not a number
    case "$1" in '' | nan | NaN) printf -- '-' ;; *) printf '%.4f' "$1" ;; esac
}

t_start=$(date +%s)
# progress: one status (two short lines), redrawn in place on a terminal,
# printed as one line every few seconds otherwise.
progress() {
    metrics || return 0
    local el=$(($(date +%s) - t_start)) sent="-" of=""
    local consumed=${m_events_consumed_total:-0}
    if [ "${m_consumer_lag:--1}" -ge 0 ] 2>/dev/null; then
        sent=$((consumed + m_consumer_lag)) # what the topic holds
    elif [ -n "$produced" ]; then
        sent=$produced
    fi
    [ -n "$total" ] && of=" of $total"
    local l1 l2
    l1=$(printf '[%3ds] events %s read / %s sent%s | rounds %s | snapshots %s' "$el" \
        "$consumed" "$sent" "$of" "${m_rounds_total:-0}" "${m_snapshots_published_total:-0}")
    l2=$(printf '       student HR@10 %s NDCG@10 %s | teacher HR@10 %s NDCG@10 %s' \
        "$(f4 "${m_student_hr10:-}")" "$(f4 "${m_student_ndcg10:-}")" \
        "$(f4 "${m_teacher_hr10:-}")" "$(f4 "${m_teacher_ndcg10:-}")")
    if [ "$tty" = 1 ]; then
        local cols
        cols=$(tput cols 2>/dev/null || echo 80)
        num "$cols" && [ "$cols" -gt 20 ] || cols=80
        [ "$progress_lines" = 2 ] && printf '\e[2A'
        printf '\r\e[K%s\n\r\e[K%s\n' "${l1:0:cols-1}" "${l2:0:cols-1}"
        progress_lines=2
    else
        # Off a terminal: a line when something moved, or every 30 s.
        local key="${l1#*]}${l2}"
        if [ "$key" != "$last_key" ] || [ $((el - last_said)) -ge 30 ]; then
            say "$l1 |${l2#      }"
            last_key=$key last_said=$el
        fi
    fi
}
last_key='' last_said=0
progress_end() { progress_lines=0; }

# ---- start derrd ----------------------------------------------------------------------
# A port that is taken now gives way to 0: derrd then binds a port the
# kernel picks and logs it, so no other process can take it meanwhile.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=$DEMO_PORT
if [ "$port" != 0 ] && port_busy "$port"; then
    say "demo: port $port is taken; using a free one"
    port=0
fi

start_derrd() {
    # setsid: the terminal's Ctrl-C reaches this script only, which then
    # stops derrd in order (SIGTERM, wait for its exit status).
    # shellcheck disable=SC2086
    setsid "$BUILD/derrd" --config "" --embedded-kafka --topic "$TOPIC" --group demo \
        --state-dir "$work/state" --http-address 127.0.0.1 --http-port "$port" \
        --stats-interval-ms 10000 --teacher-refresh-min-ms 5000 \
        ${DEMO_DERRD_OPTS:-} >"$log" 2>&1 </dev/null &
    dpid=$!
}

say "${B}derrd demo${N}: $label"
say "  binaries $BUILD/, scratch directory $work"
brokers=
for attempt in 1 2; do
    start_derrd
    for _ in $(seq 1 150); do
        grep -q "http on " "$log" 2>/dev/null && brokers=$(sed -n \
            's/.*embedded Kafka.* at \([^;]*\);.*/\1/p' "$log" | head -n 1)
        [ -n "$brokers" ] && break
        kill -0 "$dpid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$brokers" ] && break
    # taken between the look and derrd's bind
    if ! kill -0 "$dpid" 2>/dev/null && grep -q "Address already in use" "$log" &&
        [ "$port" != 0 ]; then
        wait "$dpid" 2>/dev/null
        dpid=
        say "demo: port $port is taken; using a free one"
        port=0
        continue
    fi
    kill -0 "$dpid" 2>/dev/null || { wait "$dpid" 2>/dev/null; rc=$?; dpid=; die "derrd exited at start (status $rc)"; }
    die "derrd did not come up within 15 s"
done
[ -n "$brokers" ] || die "derrd could not start"
# the port bound, from derrd's "http on ...: status page http://...:PORT/" line
port=$(sed -n 's/.* status page http:\/\/.*:\([0-9][0-9]*\)\/ .*/\1/p' "$log" | tail -n 1)
[ -n "$port" ] || die "derrd logged no HTTP port"
url="http://127.0.0.1:$port/"

banner() {
    local line="  derrd status page:  $url"
    local bar
    bar=$(printf '%*s' "$((${#line} + 4))" '' | tr ' ' '=')
    say "$bar"
    say "${B}${line}${N}"
    say "$bar"
    say "  (also ${url}metrics, ${url}v1/snapshot)"
}
say "  derrd pid $dpid, embedded Kafka at $brokers, topic $TOPIC"
banner

# ---- replay ---------------------------------------------------------------------------
rate_args=() rate_text="as fast as possible"
if [ "$DEMO_RATE" -gt 0 ]; then
    rate_args=(--rate "$DEMO_RATE") rate_text="at $DEMO_RATE/s"
fi
say "Replaying $total events $rate_text into derrd; its rounds distil the teacher into the student and publish snapshots."
setsid "$BUILD/derrd-replay" --brokers "$brokers" --topic "$TOPIC" "${src[@]}" --format json \
    "${rate_args[@]}" --expect-out "$work/pairs.tsv" \
    >"$work/replay.json" 2>"$work/replay.log" </dev/null &
rpid=$!
stage=replay

tick=5
[ "$tty" = 1 ] && tick=2
settled=0 produced='' replay_rc='' covered='' settled_seen=0 t_covered='' last_pub=-1
deadline=$((t_start + DEMO_TIMEOUT))
last_tick=0
final_progress() { [ "$now" != "$last_tick" ] && progress; progress_end; }
snap_offsets() { # the sum of the Kafka offsets a snapshot covers
    "$BUILD/derrd-snap" info "$1" 2>/dev/null |
        awk '/^offsets/ { for (i = 2; i <= NF; i++) if (split($i, a, ":") == 2) s += a[2] }
             END { print s + 0 }'
}

while :; do
    now=$(date +%s)
    kill -0 "$dpid" 2>/dev/null || { wait "$dpid" 2>/dev/null; rc=$?; dpid=; die "derrd exited unexpectedly (status $rc)"; }
    if [ -n "$rpid" ] && ! kill -0 "$rpid" 2>/dev/null; then
        wait "$rpid"
        replay_rc=$?
        rpid=
        [ "$replay_rc" = 0 ] || die "derrd-replay failed (status $replay_rc): $(tail -n 3 "$work/replay.log")"
        produced=$(sed -n 's/.*"produced":\([0-9]*\).*/\1/p' "$work/replay.json")
        num "$produced" || die "derrd-replay printed no summary: $(cat "$work/replay.json")"
        total=$produced
        progress_end
        say "Replay done: $(sed -n 's/^derrd-replay: //p' "$work/replay.log" | tail -n 1)"
    fi
    if [ $((now - last_tick)) -ge "$tick" ]; then
        progress
        last_tick=$now
    fi
    # A snapshot covering every produced event?
    if [ -n "$produced" ] && [ -z "$covered" ]; then
        metrics || true
        pub=${m_snapshots_published_total:-0}
        if [ "$pub" != "$last_pub" ] && [ -e "$work/state/snapshots/latest" ]; then
            last_pub=$pub
            if [ "$(snap_offsets "$work/state/snapshots")" -ge "$produced" ]; then
                covered=1
                t_covered=$now
                settled_seen=$(grep -c "rounds settled" "$log")
                progress_end
                say "A snapshot covering all $produced events is published; settling rounds refine the student (up to ${DEMO_SETTLE_SECONDS} s) ..."
            fi
        fi
    fi
    if [ -n "$covered" ]; then
        [ "$(grep -c "rounds settled" "$log")" -gt "$settled_seen" ] && { final_progress; settled=1; say "Rounds settled."; break; }
        [ $((now - t_covered)) -ge "$DEMO_SETTLE_SECONDS" ] && { final_progress; say "Settling time is up (DEMO_SETTLE_SECONDS=$DEMO_SETTLE_SECONDS); derrd keeps refining in the background."; break; }
    elif [ "$now" -ge "$deadline" ]; then
        die "no snapshot covering the data within DEMO_TIMEOUT=$DEMO_TIMEOUT s"
    fi
    sleep 0.5
done

# ---- summary --------------------------------------------------------------------------
stage=summary
snap=$work/student.dsnap
hdr=$(curl -s -D - -o "$snap" -m 30 "${url}v1/snapshot") || die "GET ${url}v1/snapshot failed"
code=$(printf '%s' "$hdr" | sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p')
[ "$code" = 200 ] || die "GET ${url}v1/snapshot answered ${code:-nothing}"
etag=$(printf '%s' "$hdr" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p')
info=$("$BUILD/derrd-snap" info "$snap") || die "the served snapshot does not verify: $info"
field() { printf '%s\n' "$info" | sed -n "s/^$1  *//p"; }
version=$(field version)
q=$(field quality)
# quality: "HR@10 A NDCG@10 B on U users (teacher HR@10 C NDCG@10 D)"
read -r s_hr s_ndcg heldout_users t_hr t_ndcg < <(printf '%s\n' "$q" |
    sed -n 's/^HR@10 \([^ ]*\) NDCG@10 \([^ ]*\) on \([0-9]*\) users (teacher HR@10 \([^ ]*\) NDCG@10 \([^ )]*\)).*/\1 \2 \3 \4 \5/p')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
sdim=$(field dim)
# shellcheck disable=SC2086
conf=$("$BUILD/derrd" --config "" --embedded-kafka ${DEMO_DERRD_OPTS:-} --print-config 2>/dev/null)
tdim=$(printf '%s\n' "$conf" | awk '$1 == "teacher-dim" { print $2 }')
cands=$(printf '%s\n' "$conf" | awk '$1 == "eval-candidates" { print $2 }')
num "${cands:-x}" || cands=99
size=$(stat -c %s "$snap")
file=$(readlink "$work/state/snapshots/latest")
say ""
say "${B}== derrd demo: summary ==${N}"
say "  data       $label: $produced events in $(sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p' "$work/replay.json") s"
say "  snapshot   $file (version $version, round $(field round)), $size bytes"
say "             $(field users | cut -d" " -f1) users, $(field items | cut -d" " -f1) items, dim $sdim; served at ${url}v1/snapshot (ETag $etag)"
if [ -n "${s_hr:-}" ]; then
    say "  held-out quality (latest interaction of $heldout_users users, ranked among $((1 + cands)) items):"
    printf '               %-20s %8s %9s\n' "" "HR@10" "NDCG@10"
    printf '               %-20s %8s %9s\n' "student (dim $sdim)" "$s_hr" "$s_ndcg"
    printf '               %-20s %8s %9s\n' "teacher (dim ${tdim:-200})" "$t_hr" "$t_ndcg"
    printf '               %-20s %8s %9s\n' "student / teacher" "$(ratio "$s_hr" "$t_hr")" "$(ratio "$s_ndcg" "$t_ndcg")"
    [ "$settled" = 1 ] || say "               (not settled yet: the settling rounds go on while derrd runs)"
else
    say "  quality    $q"
fi

# The sample user: DEMO_USER, else the first (by id) with 5 to 15 items.
pairs=$work/pairs.tsv
user=$DEMO_USER
if [ -z "$user" ]; then
    user=$(awk -F'\t' '{ n[$1]++ } END { for (u in n) if (n[u] >= 5 && n[u] <= 15) print u }' "$pairs" |
        LC_ALL=C sort | head -n 1)
    [ -n "$user" ] || user=$(head -n 1 "$pairs" | cut -f1)
fi
mapfile -t hist < <(awk -F'\t' -v u="$user" '$1 == u { print $2 }' "$pairs")
excl=()
if [ "${#hist[@]}" -gt 0 ] && [ "${#hist[@]}" -le 200 ] && ! printf '%s\n' "${hist[@]}" | grep -q ,; then
    excl=(--exclude "$(IFS=,; printf '%s' "${hist[*]}")")
fi
recs=$("$BUILD/derrd-snap" recommend "$snap" --user "$user" -k 10 "${excl[@]}" 2>&1) ||
    die "derrd-snap recommend --user $user failed: $recs"
shown=$(printf '%s\n' "${hist[@]:0:8}" | paste -sd, - | sed 's/,/, /g')
[ "${#hist[@]}" -gt 8 ] && shown="$shown, ..."
say "  recommendation for user $user (history: ${#hist[@]} items: $shown)"
say "  top 10 from the student snapshot, history excluded:"
printf '%s\n' "$recs" | awk -F'\t' '{ printf "      %2s. item %-12s score %s\n", $1, $2, $3 }'
n_items=$(field items | awk '{ print $1 }')
if [ -n "$heldout" ]; then
    test_item=$(awk -F'\t' -v u="$user" '$1 == u { print $2; exit }' "$heldout")
    if [ -n "$test_item" ]; then
        rank=$("$BUILD/derrd-snap" recommend "$snap" --user "$user" -k "$n_items" "${excl[@]}" 2>/dev/null |
            awk -F'\t' -v i="$test_item" '$2 == i { print $1; exit }')
        say "  the user's test item $test_item (held out of train.tsv, never sent) ranks ${rank:-?} of $n_items items$(
            [ -n "$rank" ] && awk -v r="$rank" -v n="$n_items" 'BEGIN { printf " (top %.1f%%)", 100 * r / n }')"
    fi
fi

# ---- keep serving, or stop --------------------------------------------------------------
run_for=$DEMO_SECONDS
if [ -z "$run_for" ]; then
    if [ "$tty" = 1 ]; then run_for=forever; else run_for=0; fi
fi
if [ "$run_for" != 0 ]; then
    # Only while derrd still serves can the reader try it.
    say "  yourself: curl -s -o s.dsnap ${url}v1/snapshot && $BUILD/derrd-snap recommend s.dsnap --user $user"
    stage=serving
    say ""
    banner
    if [ "$run_for" = forever ]; then
        say "derrd keeps running (settling, serving). Press Ctrl-C to stop it."
    else
        say "derrd keeps running for $run_for s (DEMO_SECONDS)."
    fi
    say "More events meanwhile, from another terminal:"
    say "  $BUILD/derrd-replay --brokers $brokers --topic $TOPIC --synthetic 1000 --seed 7"
    t_end=$(($(date +%s) + ${run_for/forever/0}))
    while [ "$run_for" = forever ] || [ "$(date +%s)" -lt "$t_end" ]; do
        kill -0 "$dpid" 2>/dev/null || { wait "$dpid" 2>/dev/null; rc=$?; dpid=; die "derrd exited unexpectedly (status $rc)"; }
        progress
        for _ in $(seq 1 $((tick * 2))); do sleep 0.5; done
    done
fi
stage=stopping
progress_end
say ""
say "Stopping derrd (SIGTERM) ..."
stop_all
report_exit
[ "$derrd_rc" = 0 ] || exit 1
exit 0
