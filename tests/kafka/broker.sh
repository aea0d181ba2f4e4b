#!/usr/bin/env bash
# broker.sh: a real single-node Apache Kafka broker (KRaft, combined broker and
# controller) on 127.0.0.1 for derrd's tests. No Docker: the jars come from
# Maven Central through mvn, and the broker runs as a plain JVM process.
#
# Usage:
#   tests/kafka/broker.sh fetch
#       Fetch Kafka and its runtime jars (tests/kafka/pom.xml) into
#       $DERRD_KAFKA_HOME/<version>/jars (default ~/.cache/derrd-kafka). mvn
#       caches under ~/.m2. Quick and quiet once done; redone when pom.xml
#       changes.
#   tests/kafka/broker.sh start DIR
#       Create DIR (it must not hold a broker yet), pick two free loopback
#       ports (PLAINTEXT and CONTROLLER), format the KRaft storage, start the
#       broker in the background, wait until it answers a metadata request,
#       then print its bootstrap address 127.0.0.1:PORT (also in DIR/bootstrap).
#       Runs `fetch` and builds kcheck first when needed.
#   tests/kafka/broker.sh stop DIR [--kill]
#       Stop the broker of DIR by its own pid: SIGTERM (a clean shutdown), up
#       to 30 s, then SIGKILL. --kill sends SIGKILL at once (a crash). Nothing
#       to do when it is not running.
#   tests/kafka/broker.sh restart DIR
#       Start the broker of DIR again (stopping it first if it runs) on the same
#       ports and log dir, without reformatting; print the bootstrap address.
#   tests/kafka/broker.sh status DIR
#       Print "running PID BOOTSTRAP" and exit 0, or "stopped" and exit 1.
#
# DIR holds: server.properties, log4j.properties, data/ (topic and metadata
# logs), broker.log (the broker's console log), broker.pid, bootstrap.
#
# Environment:
#   DERRD_KAFKA_VERSION        Kafka version (default 3.9.2, see below)
#   DERRD_KAFKA_HOME           jar cache root (default ~/.cache/derrd-kafka)
#   DERRD_KAFKA_START_TIMEOUT  seconds to wait for readiness (default 60)
#   DERRD_KAFKA_HEAP           JVM heap options (default -Xms128m -Xmx512m)
#   DERRD_KAFKA_JAVA_OPTS      extra JVM options
#   JAVA_HOME, MVN, CC         the JVM, Maven and C compiler to use
#   BUILD, KCHECK              kcheck is $KCHECK, else ${BUILD:-build}/kcheck
#                              (built from tests/kafka/kcheck.c when missing
#                              or older than its source)
#
# Why Kafka 3.9.2: the last 3.x release; it still serves every protocol
# version librdkafka 2.0.2 (Debian 12) may pick, and smoke.sh checks the calls
# derrd makes with it (Metadata, CreateTopics, Produce acks=all, Fetch,
# ListOffsets, classic group join with the range assignor, OffsetCommit,
# OffsetFetch). Kafka 4.x removed old protocol versions (KIP-896); the same
# calls passed against 4.1.1 in a one-off check, but 3.9 leaves no old API a
# 2.0.2 client might reach for unserved. 4.x also logs through log4j2, which
# pom.xml does not carry.
#
# Output: only what is described above goes to stdout; errors go to stderr
# with a nonzero exit, with the tail of the broker log when a start fails.
set -euo pipefail

readonly KAFKA_VERSION=${DERRD_KAFKA_VERSION:-3.9.2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
readonly HERE ROOT
readonly CACHE=${DERRD_KAFKA_HOME:-$HOME/.cache/derrd-kafka}/$KAFKA_VERSION
readonly JARS=$CACHE/jars
readonly START_TIMEOUT=${DERRD_KAFKA_START_TIMEOUT:-60}
readonly STOP_TIMEOUT=30
readonly JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
readonly MVN=${MVN:-mvn}
readonly KCHECK_GIVEN=${KCHECK:+1}
build_dir=${BUILD:-build}
[[ $build_dir == /* ]] || build_dir=$ROOT/$build_dir
readonly KCHECK=${KCHECK:-$build_dir/kcheck}

die() {
    echo "broker.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# --------------------------------------------------------------------- fetch

# The stamp names the version and the pom it was fetched with.
fetch_stamp() {
    echo "$KAFKA_VERSION $(sha256sum <"$HERE/pom.xml" | cut -d' ' -f1)"
}

fetched() {
    [[ -d $JARS && -f $CACHE/fetched && "$(<"$CACHE/fetched")" == "$(fetch_stamp)" ]]
}

cmd_fetch() {
    fetched && return 0
    need_tool "$MVN" "install Maven (Debian: apt-get install maven)"
    need_tool "$JAVA" "install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
    mkdir -p "$CACHE"
    # One fetch at a time per cache dir; the lock fd is closed before any
    # broker starts, so a running JVM never holds it.
    (
        flock 9
        fetched && exit 0
        local tmp
        tmp=$(mktemp -d "$CACHE/jars.tmp.XXXXXX")
        if ! "$MVN" -q -B -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
                -DoutputDirectory="$tmp" dependency:copy-dependencies >"$tmp.log" 2>&1; then
            cat "$tmp.log" >&2
            rm -rf "$tmp" "$tmp.log"
            die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (output above)"
        fi
        rm -f "$tmp.log"
        [[ -f $tmp/org.apache.kafka.kafka_2.13-$KAFKA_VERSION.jar ]] ||
            { rm -rf "$tmp"; die "mvn ran but kafka_2.13-$KAFKA_VERSION.jar is missing"; }
        rm -rf "$JARS"
        mv "$tmp" "$JARS"
        fetch_stamp >"$CACHE/fetched"
    ) 9>"$CACHE/.lock"
}

# -------------------------------------------------------------------- kcheck

ensure_kcheck() {
    if [[ -n $KCHECK_GIVEN ]]; then
        [[ -x $KCHECK ]] || die "KCHECK=$KCHECK is not an executable"
        return 0
    fi
    [[ -x $KCHECK && ! $HERE/kcheck.c -nt $KCHECK ]] && return 0
    local cc=${CC:-cc} tmp
    need_tool "$cc" "a C compiler is needed to build kcheck"
    mkdir -p "$(dirname "$KCHECK")"
    tmp=$(mktemp "$KCHECK.tmp.XXXXXX")
    if ! "$cc" -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE "$HERE/kcheck.c" \
            -lrdkafka -o "$tmp"; then
        rm -f "$tmp"
        die "cannot build $KCHECK (is librdkafka-dev installed?)"
    fi
    mv -f "$tmp" "$KCHECK"
}

# --------------------------------------------------------------------- ports

# port_used PORT [STATE]: a TCP socket in this network namespace has local
# port PORT (in state STATE, two hex digits, e.g. 0A = LISTEN; any if absent).
port_used() {
    local hex state=${2:-..}
    hex=$(printf '%04X' "$1")
    # (grep reads the files itself: `cat | grep -q` fails under pipefail
    # when grep exits at the first match.)
    grep -qsE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:[0-9A-F]{4} $state " /proc/net/tcp /proc/net/tcp6
}

# A random port in 20000..31999, below Linux's ephemeral range (32768+) so
# outgoing connections do not take it, and not bound by anyone now.
pick_port() {
    local port tries
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 12000))
        [[ $port == "${1:-}" ]] && continue
        port_used "$port" || { echo "$port"; return 0; }
    done
    die "found no free TCP port in 20000..31999"
}

# ---------------------------------------------------------------- processes

state_dir() {
    [[ -n ${1:-} ]] || die "missing DIR (broker.sh --help for usage)"
    [[ -d $1 ]] || die "$1: no such directory"
    (cd "$1" && pwd)
}

# The pid of the broker of DIR if that process is alive and is that broker.
# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

broker_pid() {
    local dir=$1 pid
    [[ -f $dir/broker.pid ]] || return 1
    pid=$(<"$dir/broker.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    # Our JVM carries -Dderrd.kafka.dir=DIR: a recycled pid is not ours.
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "-Dderrd.kafka.dir=$dir" ||
        return 1
    echo "$pid"
}

log_tail() {
    echo "--- last lines of $1/broker.log ---" >&2
    tail -n 40 "$1/broker.log" >&2 2>/dev/null || echo "(no log)" >&2
    echo "---" >&2
}

prop() { # prop DIR KEY: a value from DIR/server.properties
    sed -n "s/^$2=//p" "$1/server.properties" | tail -n 1
}

write_config() {
    local dir=$1 port=$2 cport=$3
    cat >"$dir/server.properties" <<EOF
# Written by tests/kafka/broker.sh: a single-node KRaft test broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data

# One replica of everything, no waiting for groups to fill.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
# Let tests use short consumer session timeouts (fast failover).
group.min.session.timeout.ms=1000
auto.create.topics.enable=true
delete.topic.enable=true

# Small footprint for two cores and a 512 MiB heap.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.segment.bytes=16777216
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216

# After a crash (SIGKILL) the controller refuses the restarted broker until the
# old registration's session expires: 4 s here instead of 9 s.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
EOF
    cat >"$dir/log4j.properties" <<'EOF'
# Written by tests/kafka/broker.sh: everything to the console (DIR/broker.log).
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
}

java_cmd() { # java_cmd DIR CLASS ARGS...: the JVM command line for DIR
    local dir=$1 class=$2
    shift 2
    local heap
    read -r -a heap <<<"${DERRD_KAFKA_HEAP:--Xms128m -Xmx512m}"
    local extra=()
    [[ -n ${DERRD_KAFKA_JAVA_OPTS:-} ]] && read -r -a extra <<<"$DERRD_KAFKA_JAVA_OPTS"
    JAVA_CMD=("$JAVA" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j.configuration=file:$dir/log4j.properties" "-Dderrd.kafka.dir=$dir" ${extra[@]+"${extra[@]}"}
        -cp "$JARS/*" "$class" "$@")
}

format_storage() {
    local dir=$1 id
    # A Kafka Uuid: 16 random bytes, base64url without padding, not starting
    # with '-' (kafka.tools.StorageTool random-uuid does the same, in a JVM).
    id=-
    while [[ $id == -* ]]; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    java_cmd "$dir" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties"
    if ! "${JAVA_CMD[@]}" >"$dir/format.log" 2>&1; then
        cat "$dir/format.log" >&2
        echo "broker.sh: formatting the KRaft storage in $dir/data failed (output above)" >&2
        return 1
    fi
}

# Forget a broker that never started, so that `start DIR` can be tried again;
# the logs stay for the post-mortem.
reset_state() {
    rm -rf "$1/data" "$1/server.properties" "$1/log4j.properties" "$1/bootstrap" \
        "$1/broker.pid"
}

# The broker log since the last start.
last_run_log() {
    awk '/^=== broker.sh: starting/ { n = 0 } { line[n++] = $0 }
         END { for (i = 0; i < n; i++) print line[i] }' "$1/broker.log"
}

# launch DIR: start the JVM and wait until it serves metadata.
# Returns 0 when ready, 2 when it could not bind its ports, 1 otherwise.
launch() {
    local dir=$1 port deadline
    port=$(prop "$dir" listeners | sed -n 's/^PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p')
    [[ -n $port ]] || die "$dir/server.properties: no PLAINTEXT listener"
    java_cmd "$dir" kafka.Kafka "$dir/server.properties"
    echo "=== broker.sh: starting Kafka $KAFKA_VERSION $(date -u +%FT%TZ) ===" >>"$dir/broker.log"
    (cd "$dir" && exec "${JAVA_CMD[@]}" >>"$dir/broker.log" 2>&1 </dev/null) &
    launched_pid=$!
    echo "$launched_pid" >"$dir/broker.pid"
    # Interrupted while waiting: do not leave a half-started broker behind.
    trap 'kill -KILL "$launched_pid" 2>/dev/null; rm -f "$dir/broker.pid"; exit 130' INT TERM
    deadline=$((SECONDS + START_TIMEOUT))
    local rc=
    while [[ -z $rc ]]; do
        # Exited, not "not ours yet": until the subshell execs the JVM, its
        # command line lacks -Dderrd.kafka.dir, and broker_pid says no.
        if ! pid_alive "$launched_pid"; then
            wait "$launched_pid" 2>/dev/null || true
            rm -f "$dir/broker.pid"
            if last_run_log "$dir" | grep -qE 'BindException|Address already in use'; then
                rc=2
            else
                echo "broker.sh: the broker in $dir exited during startup" >&2
                rc=1
            fi
        elif broker_pid "$dir" >/dev/null && port_used "$port" 0A &&
            "$KCHECK" ready -b "127.0.0.1:$port" -t 2 2>/dev/null; then
            echo "127.0.0.1:$port" >"$dir/bootstrap"
            echo "127.0.0.1:$port"
            rc=0
        elif ((SECONDS >= deadline)); then
            echo "broker.sh: the broker in $dir is not ready after $START_TIMEOUT s;" \
                "killing it" >&2
            kill -KILL "$launched_pid" 2>/dev/null || true
            wait "$launched_pid" 2>/dev/null || true
            rm -f "$dir/broker.pid"
            rc=1
        else
            sleep 0.5
        fi
    done
    trap - INT TERM
    return "$rc"
}

cmd_start() {
    [[ -n ${1:-} ]] || die "start: missing DIR (broker.sh --help for usage)"
    mkdir -p "$1"
    local dir attempt rc port cport
    dir=$(state_dir "$1")
    [[ ! -e $dir/server.properties ]] ||
        die "$dir already holds a broker: use 'restart', or start in a fresh DIR"
    cmd_fetch
    ensure_kcheck
    for attempt in 1 2 3; do
        port=$(pick_port)
        cport=$(pick_port "$port")
        write_config "$dir" "$port" "$cport"
        format_storage "$dir" || { reset_state "$dir"; die "start failed in $dir"; }
        rc=0
        launch "$dir" || rc=$?
        ((rc == 0)) && return 0
        if ((rc == 2 && attempt < 3)); then
            # Someone took a port between the pick and the bind: start over.
            mv "$dir/broker.log" "$dir/broker.log.bind-failed-$attempt"
            reset_state "$dir"
            continue
        fi
        log_tail "$dir"
        reset_state "$dir"
        die "start failed in $dir"
    done
}

cmd_stop() {
    local dir pid deadline sig=TERM
    dir=$(state_dir "${1:-}")
    case ${2:-} in
    "") ;;
    --kill) sig=KILL ;;
    *) die "stop: unknown option '$2' (broker.sh --help for usage)" ;;
    esac
    if ! pid=$(broker_pid "$dir"); then
        rm -f "$dir/broker.pid"
        return 0
    fi
    kill -"$sig" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while broker_pid "$dir" >/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if broker_pid "$dir" >/dev/null; then
        echo "broker.sh: broker $pid in $dir still runs $STOP_TIMEOUT s after SIG$sig;" \
            "sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while broker_pid "$dir" >/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        ! broker_pid "$dir" >/dev/null || die "broker $pid in $dir survived SIGKILL"
    fi
    rm -f "$dir/broker.pid"
}

cmd_restart() {
    local dir port cport rc p
    dir=$(state_dir "${1:-}")
    [[ -f $dir/server.properties && -f $dir/data/meta.properties ]] ||
        die "$dir holds no formatted broker: use 'start'"
    cmd_stop "$dir"
    cmd_fetch
    ensure_kcheck
    port=$(prop "$dir" listeners | sed -n 's/^PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p')
    cport=$(prop "$dir" listeners | sed -n 's/.*,CONTROLLER:\/\/127\.0\.0\.1:\([0-9]*\)$/\1/p')
    for p in "$port" "$cport"; do
        [[ -n $p ]] || die "$dir/server.properties: cannot read the listener ports"
        ! port_used "$p" 0A || die "port $p of $dir is taken by another process"
    done
    rc=0
    launch "$dir" || rc=$?
    ((rc == 0)) && return 0
    log_tail "$dir"
    ((rc == 2)) && die "restart failed in $dir: a port is taken by another process"
    die "restart failed in $dir"
}

cmd_status() {
    local dir pid
    dir=$(state_dir "${1:-}")
    if pid=$(broker_pid "$dir"); then
        echo "running $pid $(cat "$dir/bootstrap" 2>/dev/null || echo '?')"
    else
        echo stopped
        return 1
    fi
}

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    fetch) (($# == 0)) || die "fetch takes no arguments"; cmd_fetch ;;
    start) (($# == 1)) || die "usage: broker.sh start DIR"; cmd_start "$1" ;;
    stop) (($# >= 1 && $# <= 2)) || die "usage: broker.sh stop DIR [--kill]"; cmd_stop "$@" ;;
    restart) (($# == 1)) || die "usage: broker.sh restart DIR"; cmd_restart "$1" ;;
    status) (($# == 1)) || die "usage: broker.sh status DIR"; cmd_status "$1" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) die "unknown command '$cmd' (broker.sh --help for usage)" ;;
    esac
}

main "$@"
