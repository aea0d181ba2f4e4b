#!/usr/bin/env bash
# bench-ingest.sh: derrd's ingest rate against a bare librdkafka consumer
# reading the same messages from the same real broker, in the same run.
#
#   tools/bench-ingest.sh            (make bench-ingest)
#
# Starts a broker (tests/kafka/broker.sh), produces N (default 1,000,000)
# JSON events to a 4-partition topic with derrd-replay, then alternates
# ROUNDS (default 3) times:
#   bare   kcheck bare-consume: a high-level consumer that only reads the
#          messages (first message to the N-th);
#   derrd  derrd with a fresh group and state dir, --exit-after-events N: every
#          event decoded, validated, stored, and covered by a durable
#          checkpoint (first message to the final checkpoint's fsync).
# Prints one line per round and the median ratio derrd / bare, plus derrd's
# peak RSS and longest loop stall. Output also goes to bench/out/ingest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d /tmp/derrd-bench-ingest.XXXXXX)
cleanup() { tests/kafka/broker.sh stop "$dir/broker" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
mkdir -p bench/out
out=bench/out/ingest.txt
B=$(tests/kafka/broker.sh start "$dir/broker")
"$BUILD/kcheck" create-topic -b "$B" -t bench -p 4 >/dev/null
"$BUILD/derrd-replay" --brokers "$B" --topic bench --synthetic "$N" --users 100000 \
    --items 200000 --format json --seed 1 >"$dir/replay.json" 2>/dev/null
{
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores; $N JSON events, 4 partitions"
echo "# replay: $(cat "$dir/replay.json")"
printf '%-6s %12s %12s %7s %14s %14s %10s %16s\n' round bare/s derrd/s ratio interactions peak_rss_MiB state_MiB loop_stall_ms
} | tee "$out"
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    # The same fetch-queue setting derrd uses (io/kafka.c), so the two differ
    # only in what they do with a message.
    bare=$("$BUILD/kcheck" bare-consume -b "$B" -t bench -g "bare-$r" -n "$N" \
           -X queued.min.messages=1000000 |
           sed -n 's/.*"rate":\([0-9.]*\).*/\1/p')
    "$BUILD/derrd" --brokers "$B" --topic bench --group "derrd-$r" \
        --state-dir "$dir/state-$r" --exit-after-events "$N" \
        --checkpoint-interval-ms 1000 --stats-interval-ms 0 2>"$dir/derrd-$r.log"
    s=$(grep -o 'summary: .*' "$dir/derrd-$r.log")
    get() { echo "$s" | sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
    rate=$(get rate) inter=$(get interactions) rss=$(get peak_rss_kib) stall=$(get loop_stall_max_ms)
    state=$(get state_kib)
    ratio=$(awk -v a="$rate" -v b="$bare" 'BEGIN { printf "%.2f", a / b }')
    ratios+=("$ratio")
    printf '%-6s %12.0f %12.0f %7s %14s %14.1f %10.1f %16s\n' "$r" "$bare" "$rate" "$ratio" \
        "$inter" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="$state" 'BEGIN { print k / 1024 }')" "$stall" | tee -a "$out"
    rm -rf "$dir/state-$r"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
echo "median derrd/bare: $median (target >= 0.80)" | tee -a "$out"
