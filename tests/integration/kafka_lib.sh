# Kafka test helpers (sourced after lib.sh): librdkafka's mock cluster hosted
# by tests/tools/kafka_mock, driven through a FIFO on its stdin.

# start_kafka_mock NAME [kafka_mock ARGS...]: starts the mock cluster (e.g.
# --brokers 3 --topic users --partitions 4), exports KAFKA_BROKERS (its
# bootstrap list) and sets KMOCK_<NAME>_PID. Commands: kmock NAME "down 1".
start_kafka_mock() {
    local name=$1 fd
    shift
    local pf=$T_DIR/$name.brokers
    rm -f "$pf" "$T_DIR/$name.in"
    mkfifo "$T_DIR/$name.in"
    "$FAKES_DIR/kafka_mock" --port-file "$pf" "$@" <"$T_DIR/$name.in" \
        >"$T_DIR/$name.out" 2>"$T_DIR/$name.err" &
    local pid=$!
    T_PIDS+=("$pid")
    # the write end stays open in this shell: its EOF would stop the mock
    exec {fd}>"$T_DIR/$name.in"
    eval "KMOCK_${name}_FD=$fd KMOCK_${name}_PID=$pid"
    KAFKA_BROKERS=$(wait_port_file "$pf")
    export KAFKA_BROKERS
}

# kmock NAME COMMAND: sends one command and waits for its answer line
# ("ok COMMAND" or "error COMMAND: why"); fails on an error answer.
kmock() {
    local name=$1 cmd=$2 n i
    local fdv="KMOCK_${name}_FD" out=$T_DIR/$name.out
    n=$(wc -l <"$out")
    echo "$cmd" >&"${!fdv}"
    for i in $(seq 1 600); do
        if [ "$(wc -l <"$out")" -gt "$n" ]; then
            tail -n +"$((n + 1))" "$out" | head -1 | grep -q '^ok ' && return 0
            tail -n +"$((n + 1))" "$out" | head -1 >&2
            return 1
        fi
        sleep 0.05
    done
    echo "kafka_mock: no answer to '$cmd'" >&2
    return 1
}

# stop_kafka_mock NAME
stop_kafka_mock() {
    local fdv="KMOCK_${1}_FD" pidv="KMOCK_${1}_PID"
    eval "exec ${!fdv}>&-" 2>/dev/null || true
    kill -TERM "${!pidv}" 2>/dev/null || true
    wait "${!pidv}" 2>/dev/null || true
}

# Fast group settings for tests (a rebalance otherwise takes the default 45 s).
KAFKA_TEST_PROPS='{session.timeout.ms: 6000, heartbeat.interval.ms: 500}'
