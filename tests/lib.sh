# lib.sh: helpers shared by the shell tests; source it (after `cd` to the
# repository root):  . tests/lib.sh
# Each helper prints its answer and returns non-zero when it failed, so the
# caller says how (every test has its own fail()).

# derrd_port LOG PID [TICKS]: waits up to TICKS x 0.1 s (100) until derrd
# (process PID, logging to LOG) has logged its HTTP line, and prints the
# port it bound: with --http-port 0 the one the kernel picked, so no other
# process can take it between a choice and the bind. The last such line
# counts; give each run its own log (or empty it) before a restart. Fails
# when derrd exits first or the line does not come.
derrd_port() {
    local p=
    for _ in $(seq 1 "${3:-100}"); do
        p=$(sed -n 's/.* status page http:\/\/.*:\([0-9][0-9]*\)\/ .*/\1/p' "$1" 2>/dev/null | tail -n 1)
        [ -n "$p" ] && { echo "$p"; return 0; }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
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
