#!/usr/bin/env bash
# storm.sh: embedded.sh's signal storm, many times (bench/RELIABILITY.md,
# "Signals and the embedded mock cluster"). Not part of make test.
#
#   tests/kafka/storm.sh [DERRD] [RUNS]      default build/derrd, 15
#
# Each run starts derrd --embedded-kafka, waits until it reads, then sends
# SIGTERM, SIGINT and SIGHUP without pause until it is gone (at most 15 s),
# and counts the runs where derrd hung and where librdkafka's mock cluster
# thread died of a signal ("Mock cluster failed to poll").
set -u
cd "$(dirname "$0")/../.."
bin=${1:-build/derrd}
n=${2:-15}
hang=0 died=0
for i in $(seq 1 "$n"); do
    w=$(mktemp -d /tmp/derrd-storm.XXXXXX)
    "$bin" --embedded-kafka --http false --stats-interval-ms 0 --topic "t$i" \
        --state-dir "$w/st" >"$w/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do grep -q "assigned partition" "$w/log" && break; sleep 0.1; done
    kill -TERM "$pid"
    end=$((SECONDS + 15))
    while [ -e "/proc/$pid/stat" ] && [ "$SECONDS" -lt "$end" ]; do
        { read -r _ _ st _ <"/proc/$pid/stat"; } 2>/dev/null || break
        [ "$st" != Z ] || break
        kill -TERM "$pid" 2>/dev/null && kill -INT "$pid" 2>/dev/null &&
            kill -HUP "$pid" 2>/dev/null || break
    done
    if [ -e "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        hang=$((hang + 1))
        kill -9 "$pid"
    fi
    wait "$pid" 2>/dev/null
    grep -q "Mock cluster failed to poll" "$w/log" && died=$((died + 1))
    rm -rf "$w"
done
echo "storm: $bin: $n runs, $hang hung, $died mock-thread deaths"
[ "$hang" = 0 ] && [ "$died" = 0 ]
