# lib.sh: helpers shared by the shell tests; source it (after `cd` to the
# repository root):  . tests/lib.sh
# Each helper prints its answer and returns non-zero when it failed, so the
# caller says how (every test has its own fail()).

# A free TCP port on 127.0.0.1 (free when asked: the caller binds it soon).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# embedded_bootstrap LOG PID: waits up to 10 s until derrd --embedded-kafka
# (process PID, logging to LOG) has logged its mock cluster's bootstrap
# address and its HTTP line; prints the address. Fails when derrd exits
# first or the lines do not come.
embedded_bootstrap() {
    local b=
    for _ in $(seq 1 100); do
        b=$(sed -n 's/.*embedded Kafka.* at \([^;]*\);.*/\1/p' "$1")
        if [ -n "$b" ] && grep -q "status page" "$1"; then
            echo "$b"
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# wait_committed BOOTSTRAP TOPIC GROUP PID [TICKS]: polls the group's
# committed lag (build/kcheck) every 0.5 s, TICKS times (240), until it is 0;
# prints the last lag seen. Fails when it never reaches 0 or process PID
# exits meanwhile.
wait_committed() {
    local lag=unknown
    for _ in $(seq 1 "${5:-240}"); do
        kill -0 "$4" 2>/dev/null || { echo "$lag"; return 1; }
        lag=$("${BUILD:-build}/kcheck" lag -b "$1" -t "$2" -g "$3" |
              awk '$1 == "total_lag" { print $2 }')
        [ "$lag" = 0 ] && { echo 0; return 0; }
        sleep 0.5
    done
    echo "$lag"
    return 1
}

# exit_how PID: waits for PID, a child of this shell that has exited, and
# prints how it ended: "exit status N", or "killed by SIGNAME" (a signal
# leaves no line in derrd's log, so a test that only says "exited" hides it).
exit_how() {
    local rc=0
    wait "$1" 2>/dev/null || rc=$?
    if [ "$rc" = 127 ]; then
        echo "exit status unknown: not a child of this shell"
    elif [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
        echo "killed by SIG$(kill -l $((rc - 128)))"
    else
        echo "exit status $rc"
    fi
}
