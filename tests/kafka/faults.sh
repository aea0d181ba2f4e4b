#!/usr/bin/env bash
# faults.sh: derrd against a 3-broker librdkafka mock cluster that misbehaves
# on purpose while events stream in. No loss, no duplicate dead letter, no
# stall.
#
#   tests/kafka/faults.sh            (BUILD=, EVENTS=, RATE=, SEED= to change)
#
# build/kafka-mockctl (tests/kafka/kafka_mockctl.c) owns the cluster in its
# own process and takes fault commands on a pipe, so the real build/derrd
# runs unchanged against it. Topic: 4 partitions, replication 3, leaders on
# brokers 1 and 2; dead-letter topic: 1 partition, leader on broker 3. While
# derrd-replay produces EVENTS events (plus 1% malformed, 5% duplicates, 0.2%
# forgets) at RATE/s, the test injects, in order:
#   commit   OffsetCommit errors at the coordinator (NOT_COORDINATOR,
#            COORDINATOR_LOAD_IN_PROGRESS, REQUEST_TIMED_OUT,
#            COORDINATOR_NOT_AVAILABLE)
#   coord    coordinator moves between brokers while commits run
#   fetch    Fetch errors at the leaders (NOT_LEADER_OR_FOLLOWER,
#            KAFKA_STORAGE_ERROR, UNKNOWN_TOPIC_OR_PART, REQUEST_TIMED_OUT,
#            a disconnect, OFFSET_OUT_OF_RANGE: a reset to the earliest offset)
#   produce  Produce errors on the dead-letter path (NOT_LEADER_OR_FOLLOWER,
#            NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT delayed 300 ms, a
#            disconnect)
#   kill     SIGKILL of derrd with slow dead-letter acks and commit errors
#            pending, then a restart
#   leader   leader moves of every partition, dead-letter one included
#   down     a leader broker down 5 s; then the coordinator's broker, also
#            leader of two partitions, down 8 s (> session.timeout.ms: the
#            member is expelled and rejoins)
#   rtt      1 s round trip on the coordinator and a leader for 4 s
#   tail     (TAIL=1, default) once the stream is over and committed: the
#            coordinator moves to a broker that leads nothing and goes down
#            for 8 s while a 510-message burst is read and checkpointed, so
#            the burst's commit fails and the member is expelled and rejoins
#            with nothing new to checkpoint. It also (TAIL_KILL=1, default)
#            kills derrd after the burst's checkpoint and restarts it during
#            the outage: the restart commits the checkpoint it loaded.
#   stop     the coordinator's broker down (the others up), then SIGTERM:
#            exit 0 within 8 s, without waiting for the group
# Every request error is pushed on one broker's error stack and the test
# waits until that stack is empty, so each counted fault was served.
# Then, exactly as ingest.sh: the checkpoint's interaction set equals the
# expected set; the dead-letter topic holds each malformed payload once; the
# group's committed offsets reach the log end, after the stream and after the
# burst (60 s each at most). No stall: derrd's derrd_events_consumed_total
# (sampled from /metrics every 0.5 s) never stays flat for more than STALL_S
# seconds (default 25) before its last rise, and the whole run ends within
# LIMIT_S seconds (default 150). KEEP=1 keeps the logs; MOCK_DEBUG=1 logs
# every mock append in mockctl.log.
# Prints one summary line. Needs build/derrd, build/derrd-replay, build/kcheck,
# build/kafka-mockctl (make build/kcheck build/kafka-mockctl).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BUILD=${BUILD:-build}
EVENTS=${EVENTS:-60000}
RATE=${RATE:-1200}
SEED=${SEED:-$RANDOM}
STALL_S=${STALL_S:-25}
LIMIT_S=${LIMIT_S:-150}
# The 2.0.2 mock checks idempotent sequence numbers only for transactional
# producers: with several requests in flight, it appends batch N+1 after
# refusing batch N with an injected error, and librdkafka then counts batch N
# as "implicitly acked by subsequent batch success" (debug IMPLICITACK) and
# reports it delivered, though it is in no log. A real broker refuses N+1
# (OUT_OF_ORDER_SEQUENCE_NUMBER), so this loss exists only in the mock. One
# request in flight keeps the injected Produce errors faithful; INFLIGHT=5
# (librdkafka's default) shows the artefact: dead letters go missing.
INFLIGHT=${INFLIGHT:-1}
work=$(mktemp -d /tmp/derrd-faults.XXXXXX)
topic=events dlq=events-dlq group=faults
pid= replay_pid= sampler_pid= mock_pid=
t_start=$(date +%s%N)
now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { echo $((($(date +%s%N) - t_start) / 1000000000)); }
say() { echo "faults: [$(elapsed) s] $*" >&2; }
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    [ -n "$replay_pid" ] && kill "$replay_pid" 2>/dev/null || true
    [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
    if [ -n "$mock_pid" ]; then
        echo quit >&"${MOCK[1]}" 2>/dev/null || true
        sleep 0.2
        kill "$mock_pid" 2>/dev/null || true
    fi
    if [ "${keep:-${KEEP:-0}}" = 1 ]; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'say "FAIL: line $LINENO: a command failed (status $?)"; keep=1' ERR
fail() {
    say "FAIL: $*"
    for f in "$work"/derrd.*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -6 "$f" >&2; }; done
    keep=1
    exit 1
}

for b in derrd derrd-replay kcheck kafka-mockctl; do
    [ -x "$BUILD/$b" ] || fail "$BUILD/$b missing (make all $BUILD/kcheck $BUILD/kafka-mockctl)"
done

# ---- the cluster ------------------------------------------------------------------
coproc MOCK { exec "$BUILD/kafka-mockctl" -n 3 ${MOCK_DEBUG:+-d} 2>"$work/mockctl.log"; }
mock_pid=$MOCK_PID
read -r -t 10 -u "${MOCK[0]}" word B || fail "kafka-mockctl did not start"
[ "$word" = bootstrap ] || fail "kafka-mockctl said: $word $B"
mock() { # command... -> the answer's value; fails on "error"
    local ans
    echo "$*" >&"${MOCK[1]}"
    read -r -t 10 -u "${MOCK[0]}" ans || fail "kafka-mockctl: no answer to: $*"
    [[ $ans == ok* ]] || fail "kafka-mockctl: $*: $ans"
    echo "${ans#ok}" | sed 's/^ //'
}
mock topic "$topic" 4 3 >/dev/null
mock topic "$dlq" 1 3 >/dev/null
declare -A leader=([0]=1 [1]=2 [2]=1 [3]=2)
for p in 0 1 2 3; do mock leader "$topic" "$p" "${leader[$p]}" >/dev/null; done
mock leader "$dlq" 0 3 >/dev/null
coord=3
mock coord "$group" $coord >/dev/null

# ---- fault helpers ------------------------------------------------------------------
declare -A injected=([commit]=0 [coord]=0 [fetch]=0 [produce]=0 [leader]=0 [down]=0
                     [rtt]=0 [kill]=0)
pending_at=() # "broker api" pairs with errors pushed
inject() { # KIND BROKER API ERR [COUNT [RTT_MS]]
    local kind=$1 n=${5:-1}
    mock berr "$2" "$3" "$4" "$n" ${6:+"$6"} >/dev/null
    injected[$kind]=$((${injected[$kind]} + n))
    [[ " ${pending_at[*]} " == *" $2:$3 "* ]] || pending_at+=("$2:$3")
}
served() { # wait up to SECONDS for every pushed error to be served
    local limit=$(($(now_ms) + $1 * 1000)) left
    while :; do
        left=0
        for ba in "${pending_at[@]}"; do left=$((left + $(mock pending ${ba/:/ }))); done
        [ "$left" = 0 ] && { pending_at=(); return 0; }
        [ "$(now_ms)" -lt "$limit" ] || fail "$left injected errors not served within $1 s ($(
            for ba in "${pending_at[@]}"; do echo -n "[$ba: $(mock pending ${ba/:/ })] "; done))"
        alive
        sleep 0.2
    done
}
alive() { kill -0 "$pid" 2>/dev/null || fail "derrd exited ($(exit_how "$pid")): $(tail -3 "$work/derrd.$run.log")"; }

# ---- derrd --------------------------------------------------------------------------
run=0
start_derrd() { # [nowait]: do not wait for partitions
    run=$((run + 1))
    "$BUILD/derrd" --config "" --brokers "$B" --topic "$topic" --group "$group" \
        --dead-letter-topic "$dlq" --state-dir "$work/state" --http-port 0 \
        --rounds false --checkpoint-interval-ms 300 --stats-interval-ms 2000 \
        --kafka.session.timeout.ms 6000 --kafka.heartbeat.interval.ms 500 \
        --kafka.max.in.flight.requests.per.connection "$INFLIGHT" \
        >"$work/derrd.$run.log" 2>&1 &
    pid=$!
    # The sampler reads the port of each run from the file, swapped whole.
    derrd_port "$work/derrd.$run.log" "$pid" 300 >"$work/port.new" ||
        fail "derrd run $run logged no HTTP port: $(tail -3 "$work/derrd.$run.log")"
    mv "$work/port.new" "$work/port"
    [ "${1:-}" = nowait ] && return 0
    local k
    for k in $(seq 1 300); do
        grep -qs "assigned partition" "$work/derrd.$run.log" && return 0
        alive
        sleep 0.1
    done
    fail "derrd run $run got no partitions within 30 s"
}
# /metrics sampler: "ms value" lines, value "-" when derrd does not answer.
sampler() {
    while :; do
        local v
        v=$(curl -s --max-time 1 "http://127.0.0.1:$(cat "$work/port")/metrics" 2>/dev/null |
            awk '$1 == "derrd_events_consumed_total" { print $2 }') || true
        echo "$(now_ms) ${v:--}"
        sleep 0.5
    done >>"$work/samples"
}

say "seed $SEED: $EVENTS events at $RATE/s; mock cluster $B"
start_derrd
sampler &
sampler_pid=$!
"$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic "$EVENTS" \
    --users 3000 --items 8000 --seed "$SEED" --rate "$RATE" \
    --malformed 0.01 --duplicates 0.05 --forget 0.002 \
    --expect-out "$work/expect.tsv" --malformed-out "$work/malformed.txt" \
    >"$work/replay.json" 2>"$work/replay.log" &
replay_pid=$!
sleep 3

say "commit: OffsetCommit errors at coordinator $coord"
inject commit $coord OffsetCommit NOT_COORDINATOR 2
inject commit $coord OffsetCommit COORDINATOR_LOAD_IN_PROGRESS 2
inject commit $coord OffsetCommit REQUEST_TIMED_OUT 2
inject commit $coord OffsetCommit COORDINATOR_NOT_AVAILABLE 1
served 20

say "coord: coordinator moves during commits"
for c in 1 2 1 3; do
    mock coord "$group" $c >/dev/null
    coord=$c
    injected[coord]=$((${injected[coord]} + 1))
    sleep 1.5
    alive
done
inject commit $coord OffsetCommit NOT_COORDINATOR 1
served 20

say "fetch: Fetch errors at the leaders"
inject fetch 1 Fetch NOT_LEADER_OR_FOLLOWER 2
inject fetch 2 Fetch KAFKA_STORAGE_ERROR 2
inject fetch 1 Fetch UNKNOWN_TOPIC_OR_PART 1
inject fetch 2 Fetch REQUEST_TIMED_OUT 1
inject fetch 1 Fetch _TRANSPORT 1
inject fetch 2 Fetch OFFSET_OUT_OF_RANGE 1
served 20

say "produce: Produce errors on the dead-letter leader (broker 3)"
inject produce 3 Produce NOT_LEADER_OR_FOLLOWER 2
inject produce 3 Produce NOT_ENOUGH_REPLICAS 2
inject produce 3 Produce REQUEST_TIMED_OUT 2 300
inject produce 3 Produce _TRANSPORT 1
served 30

say "kill: SIGKILL with slow dead-letter acks and commit errors pending"
inject produce 3 Produce NOT_ENOUGH_REPLICAS 3 700
inject commit $coord OffsetCommit COORDINATOR_LOAD_IN_PROGRESS 2
sleep 1.2
alive
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
injected[kill]=1
say "restarting derrd"
start_derrd
served 30

say "leader: every partition's leader moves"
declare -A moved=([0]=2 [1]=3 [2]=3 [3]=1)
for p in 0 1 2 3; do
    mock leader "$topic" "$p" "${moved[$p]}" >/dev/null
    leader[$p]=${moved[$p]}
    injected[leader]=$((${injected[leader]} + 1))
    sleep 0.5
done
mock leader "$dlq" 0 1 >/dev/null
injected[leader]=$((${injected[leader]} + 1))
sleep 2
alive

say "down: broker 2 (leader of partition 0) for 5 s"
mock down 2 >/dev/null
injected[down]=$((${injected[down]} + 1))
sleep 5
mock up 2 >/dev/null
sleep 2
say "down: broker $coord (coordinator, leader of partitions 1, 2) for 8 s"
mock down $coord >/dev/null
injected[down]=$((${injected[down]} + 1))
sleep 8
mock up $coord >/dev/null
sleep 3
alive

say "rtt: 1 s round trip at the coordinator and broker 1 for 4 s"
mock rtt $coord 1000 >/dev/null
mock rtt 1 1000 >/dev/null
injected[rtt]=2
sleep 4
mock rtt $coord 0 >/dev/null
mock rtt 1 0 >/dev/null
alive

say "faults done; waiting for derrd-replay"
wait "$replay_pid" || { replay_pid=; fail "derrd-replay failed: $(tail -3 "$work/replay.log")"; }
replay_pid=
produced=$(cat "$work/replay.json")
say "replay done: $produced"

lag0() { # SECONDS WHY: wait until the committed offsets reach the log end
    local t=$(now_ms) lag=unknown
    while [ $(($(now_ms) - t)) -lt $(($1 * 1000)) ]; do
        alive
        lag=$("$BUILD/kcheck" lag -b "$B" -t "$topic" -g "$group" -T 10 2>/dev/null |
              awk '$1 == "total_lag" { print $2 }') || true
        [ "$lag" = 0 ] && { lag_ms=$(($(now_ms) - t)); return 0; }
        sleep 0.5
    done
    fail "committed offsets did not reach the log end within $1 s $2 (lag $lag): $(
        "$BUILD/kcheck" lag -b "$B" -t "$topic" -g "$group" 2>/dev/null | tr '\n' ' ')"
}
lag0 60 "after the stream"
lag_wait_ms=$lag_ms
say "committed offsets at the log end ${lag_wait_ms} ms after the stream"

tail_events=0 tail_lag_ms=-
if [ "${TAIL:-1}" = 1 ]; then
    # A quiet stream, then a short burst whose checkpoint commit meets a
    # coordinator that is down for longer than the session: the member is
    # expelled, rejoins, and nothing new arrives to checkpoint. The burst's
    # offsets must still be committed. Broker 2 leads nothing here, so
    # fetching goes on while it is down.
    mock leader "$topic" 0 1 >/dev/null
    injected[leader]=$((${injected[leader]} + 1))
    mock coord "$group" 2 >/dev/null
    coord=2
    injected[coord]=$((${injected[coord]} + 1))
    sleep 2
    say "tail: coordinator 2 down 8 s while a 500-event burst is read and checkpointed"
    mock down 2 >/dev/null
    injected[down]=$((${injected[down]} + 1))
    "$BUILD/derrd-replay" --brokers "$B" --topic "$topic" --synthetic 500 \
        --users 3000 --items 8000 --seed $((SEED + 1)) --malformed 0.02 \
        --expect-out "$work/expect2.tsv" --malformed-out "$work/malformed2.txt" \
        >"$work/replay2.json" 2>"$work/replay2.log" || fail "derrd-replay (burst): $(tail -3 "$work/replay2.log")"
    tail_events=$(sed -n 's/.*"produced": *\([0-9]*\).*/\1/p' "$work/replay2.json")
    if [ "${TAIL_KILL:-1}" = 1 ]; then
        # The burst is checkpointed but not committed; derrd dies and comes
        # back to a checkpoint with nothing new after it.
        sleep 2
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        injected[kill]=$((${injected[kill]} + 1))
        say "tail: derrd killed after the burst's checkpoint; restarted"
        start_derrd nowait
        sleep 6
    else
        sleep 8
    fi
    mock up 2 >/dev/null
    LC_ALL=C sort -u "$work/expect.tsv" "$work/expect2.tsv" -o "$work/expect.tsv"
    LC_ALL=C sort "$work/malformed.txt" "$work/malformed2.txt" -o "$work/malformed.txt"
    lag0 60 "after the burst"
    tail_lag_ms=$lag_ms
    say "committed offsets at the log end ${lag_ms} ms after the coordinator came back"
fi
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=
# The stop, while only the group's coordinator is unreachable (the other
# brokers up, everything committed): derrd neither commits nor leaves the
# group then, where librdkafka would hold the exit for the unanswered
# commits until the session timed out (55 s at the default session, 6 s
# here, on top of derrd's own 10 s waits for the commit and the close).
mock coord "$group" 2 >/dev/null
injected[coord]=$((${injected[coord]} + 1))
sleep 2
mock down 2 >/dev/null
injected[down]=$((${injected[down]} + 1))
sleep 3 # librdkafka's statistics (each second) see it
t_term=$(now_ms)
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
stop_ms=$(($(now_ms) - t_term))
mock up 2 >/dev/null
[ "$rc" = 0 ] || fail "derrd exited $rc on SIGTERM"
grep -q "no group coordinator reachable: not leaving the group" "$work/derrd.$run.log" ||
    fail "derrd did not see its coordinator down at the stop: $(tail -3 "$work/derrd.$run.log")"
[ "$stop_ms" -le 8000 ] || fail "SIGTERM with the coordinator down took $stop_ms ms"
say "stop with the coordinator down: exit 0 in $stop_ms ms"

# ---- checks ----------------------------------------------------------------------------
"$BUILD/derrd" --dump-state --state-dir "$work/state" --topic "$topic" 2>/dev/null |
    LC_ALL=C sort >"$work/got.tsv"
LC_ALL=C sort -c -u "$work/got.tsv" 2>/dev/null || fail "the state holds a pair twice"
lost=$(LC_ALL=C comm -23 "$work/expect.tsv" "$work/got.tsv" | wc -l)
extra=$(LC_ALL=C comm -13 "$work/expect.tsv" "$work/got.tsv" | wc -l)
if [ "$lost" != 0 ] || [ "$extra" != 0 ]; then
    diff "$work/expect.tsv" "$work/got.tsv" | head -10 >&2
    fail "stored interactions differ from the produced set: $lost lost, $extra extra"
fi
"$BUILD/kcheck" dump -b "$B" -t "$dlq" >"$work/dlq.dump" 2>"$work/kcheck.log" ||
    fail "kcheck dump: $(tail -3 "$work/kcheck.log")"
cut -f3 "$work/dlq.dump" | LC_ALL=C sort >"$work/dlq.txt"
dl_dup=$(uniq -d "$work/dlq.txt" | wc -l)
if ! cmp -s "$work/malformed.txt" "$work/dlq.txt"; then
    diff "$work/malformed.txt" "$work/dlq.txt" | head -10 >&2
    fail "the dead-letter topic differs from the malformed events ($(wc -l <"$work/dlq.txt") vs $(wc -l <"$work/malformed.txt"), $dl_dup repeated)"
fi
"$BUILD/kcheck" lag -b "$B" -t "$topic" -g "$group" >"$work/lag.txt" 2>>"$work/kcheck.log"
awk '$1 == "total_lag" && $2 != 0 { exit 1 }' "$work/lag.txt" || fail "lag after shutdown: $(cat "$work/lag.txt")"

# No stall: the longest flat stretch of the consumed counter before its last rise.
# The samples must be there to judge: a metric never read (renamed, no
# HTTP) would otherwise show no flat stretch at all.
read -r max_gap_ms at_s n_samples n_values < <(awk -v t0=$((t_start / 1000000)) '
    $2 == "-" { next }
    { v = $2; n++ }
    v != prev { if (last_t && $1 - last_t > max) { max = $1 - last_t; at = last_t }
                last_t = $1; prev = v; changes++ }
    END { printf "%d %.0f %d %d\n", max, (at - t0) / 1000, n, changes }' "$work/samples")
[ "$n_samples" -ge 20 ] && [ "$n_values" -ge 5 ] ||
    fail "too few samples of derrd_events_consumed_total to judge stalls: $n_samples read," \
        "$n_values distinct"
[ "$max_gap_ms" -le $((STALL_S * 1000)) ] ||
    fail "derrd_events_consumed_total stayed flat for $((max_gap_ms / 1000)) s from t=$at_s s"
total_s=$(elapsed)
[ "$total_s" -le "$LIMIT_S" ] || fail "the run took $total_s s (limit $LIMIT_S s)"

commit_warn=$(cat "$work"/derrd.*.log | grep -c "offset commit failed" || true)
revokes=$(cat "$work"/derrd.*.log | grep -c "partitions revoked" || true)
msgs=$(sed -n 's/.*"produced": *\([0-9]*\).*/\1/p' "$work/replay.json")
echo "faults: ok: seed $SEED, $((msgs + tail_events)) messages produced ($EVENTS events + a $tail_events-message burst), $(wc -l <"$work/got.tsv") interactions stored = expected, 0 lost, $(wc -l <"$work/dlq.txt") dead letters = malformed (0 repeated), lag 0 ${lag_wait_ms} ms after the stream and ${tail_lag_ms} ms after the tail outage; faults: commit errors ${injected[commit]}, coordinator moves ${injected[coord]}, fetch errors ${injected[fetch]}, dead-letter produce errors ${injected[produce]}, leader moves ${injected[leader]}, brokers down ${injected[down]}, rtt ${injected[rtt]}, SIGKILL ${injected[kill]}; $revokes revocations, $commit_warn commit-failure log lines; longest consumed-counter plateau $(awk -v g="$max_gap_ms" 'BEGIN { printf "%.1f", g / 1000 }') s (at t=$at_s s); $total_s s"
