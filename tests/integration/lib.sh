# Shared helpers for the integration tests (sourced, bash).
# Environment from ctest: SLUICE_BIN, FAKES_DIR (build dir with fake_*), SRC_DIR.
set -euo pipefail

SRC_DIR=${SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FAKES_DIR=${FAKES_DIR:-$SRC_DIR/build}
SLUICE_BIN=$(realpath "${SLUICE_BIN:-$FAKES_DIR/sluice}")
FAKES_DIR=$(realpath "$FAKES_DIR")
TOOLS=$SRC_DIR/tests/tools

T_PASS=0
T_FAIL=0
T_PIDS=()
T_DIR=$(mktemp -d /tmp/sluice-it.XXXXXX)

t_cleanup() {
    for p in "${T_PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP_TMP:-0}" = 1 ] || [ "$T_FAIL" -gt 0 ]; then
        echo "(test files kept in $T_DIR)"
    else
        rm -rf "$T_DIR"
    fi
}
trap t_cleanup EXIT

ok() { T_PASS=$((T_PASS + 1)); echo "ok - $*"; }
not_ok() { T_FAIL=$((T_FAIL + 1)); echo "NOT OK - $*"; }

# check DESCRIPTION COMMAND...: passes when the command succeeds
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: expected '$2', got '$3'"; fi
}

# expect_match DESCRIPTION FILE REGEX
expect_match() {
    if grep -Eq -- "$3" "$2"; then ok "$1"; else
        not_ok "$1: /$3/ not found in $2:"
        sed 's/^/    | /' "$2" | head -20
    fi
}

expect_no_match() {
    if grep -Eq -- "$3" "$2"; then
        not_ok "$1: /$3/ unexpectedly found in $2"
        grep -E -- "$3" "$2" | head -5 | sed 's/^/    | /'
    else ok "$1"; fi
}

finish() {
    echo "$T_PASS passed, $T_FAIL failed"
    [ "$T_FAIL" -eq 0 ]
}

# wait_port_file FILE: wait until a fake wrote its port; prints it
wait_port_file() {
    local f=$1 i
    for i in $(seq 1 200); do
        if [ -s "$f" ]; then cat "$f"; return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for $f" >&2
    return 1
}

# start_fake_braze NAME [ARGS...]: starts fake_braze, sets BRAZE_API_URL and
# FAKE_<NAME>_PID / _RECORD / _PORT
start_fake_braze() {
    local name=$1
    shift
    local pf=$T_DIR/$name.port rec=$T_DIR/$name.jsonl
    rm -f "$pf"
    "$FAKES_DIR/fake_braze" --port 0 --port-file "$pf" --api-key "$BRAZE_API_KEY" \
        --record "$rec" "$@" >"$T_DIR/$name.out" 2>&1 &
    local pid=$!
    T_PIDS+=("$pid")
    local port
    port=$(wait_port_file "$pf")
    export BRAZE_API_URL="http://127.0.0.1:$port"
    eval "FAKE_${name}_PID=$pid FAKE_${name}_RECORD=$rec FAKE_${name}_PORT=$port"
}

start_fake_hook() {
    local name=$1
    shift
    local pf=$T_DIR/$name.port rec=$T_DIR/$name.jsonl
    rm -f "$pf"
    "$FAKES_DIR/fake_hook" --port 0 --port-file "$pf" --record "$rec" "$@" \
        >"$T_DIR/$name.out" 2>&1 &
    local pid=$!
    T_PIDS+=("$pid")
    local port
    port=$(wait_port_file "$pf")
    eval "FAKE_${name}_PID=$pid FAKE_${name}_RECORD=$rec FAKE_${name}_PORT=$port"
}

# stop_fake PID: SIGTERM and wait (flushes the record file)
stop_fake() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

fake_stats() { curl -fsS "http://127.0.0.1:$1/_stats"; }

# json_get JSON KEY: top-level value of a JSON document
json_get() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# Run sluice from inside the test dir (state goes to $T_DIR/.sluice).
sluice() { (cd "$T_DIR" && "$SLUICE_BIN" "$@"); }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_serve NAME CFG: sluice serve in the background on a free port; sets
# SERVE_URL and SERVE_<NAME>_PID; waits for /healthz.
start_serve() {
    local name=$1 cfg=$2 port i
    port=$(free_port)
    (cd "$T_DIR" && exec "$SLUICE_BIN" serve -c "$cfg" --listen "127.0.0.1:$port" \
        >>"$T_DIR/serve-$name.log" 2>&1) &
    local pid=$!
    T_PIDS+=("$pid")
    eval "SERVE_${name}_PID=$pid"
    SERVE_URL=http://127.0.0.1:$port
    for i in $(seq 1 100); do
        if curl -fsS "$SERVE_URL/healthz" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "sluice serve exited:"; cat "$T_DIR/serve-$name.log"; return 1
        fi
        sleep 0.1
    done
    echo "sluice serve did not become healthy"; cat "$T_DIR/serve-$name.log"; return 1
}

# job_counts CFG PIPELINE: "queued running retry done failed"
job_counts() {
    sluice status -c "$1" "$2" 2>/dev/null |
        sed -n 's/.*jobs: \([0-9]*\) queued, \([0-9]*\) running, \([0-9]*\) retrying, \([0-9]*\) done, \([0-9]*\) failed.*/\1 \2 \3 \4 \5/p'
}

# wait_jobs CFG PIPELINE DONE+FAILED [TIMEOUT_S]: until that many jobs ended
# and none is queued or running.
wait_jobs() {
    local cfg=$1 p=$2 want=$3 t=${4:-60} i c
    for i in $(seq 1 $((t * 5))); do
        c=$(job_counts "$cfg" "$p")
        set -- $c
        if [ -n "$c" ] && [ "$1" = 0 ] && [ "$2" = 0 ] && [ $(($4 + $5)) -ge "$want" ]; then
            echo "$c"
            return 0
        fi
        sleep 0.2
    done
    echo "timeout waiting for $want finished jobs (queued running retry done failed: $c)" >&2
    return 1
}

# start_fake_actionnetwork NAME [ARGS...]: starts fake_actionnetwork with
# ACTIONNETWORK_API_KEY, sets ACTIONNETWORK_API_URL (…/api/v2) and
# FAKE_<NAME>_PID / _RECORD / _PORT
start_fake_actionnetwork() {
    local name=$1
    shift
    local pf=$T_DIR/$name.port rec=$T_DIR/$name.jsonl
    rm -f "$pf"
    "$FAKES_DIR/fake_actionnetwork" --port 0 --port-file "$pf" \
        --api-key "$ACTIONNETWORK_API_KEY" --record "$rec" "$@" >"$T_DIR/$name.out" 2>&1 &
    local pid=$!
    T_PIDS+=("$pid")
    local port
    port=$(wait_port_file "$pf")
    export ACTIONNETWORK_API_URL="http://127.0.0.1:$port/api/v2"
    eval "FAKE_${name}_PID=$pid FAKE_${name}_RECORD=$rec FAKE_${name}_PORT=$port"
}

# start_fake_stitch NAME [ARGS...]: starts fake_stitch with STITCH_TOKEN, sets
# STITCH_API_URL and FAKE_<NAME>_PID / _RECORD / _PORT
start_fake_stitch() {
    local name=$1
    shift
    local pf=$T_DIR/$name.port rec=$T_DIR/$name.jsonl
    rm -f "$pf"
    "$FAKES_DIR/fake_stitch" --port 0 --port-file "$pf" --token "$STITCH_TOKEN" \
        --record "$rec" "$@" >"$T_DIR/$name.out" 2>"$T_DIR/$name.err" &
    local pid=$!
    T_PIDS+=("$pid")
    local port
    port=$(wait_port_file "$pf")
    export STITCH_API_URL="http://127.0.0.1:$port"
    eval "FAKE_${name}_PID=$pid FAKE_${name}_RECORD=$rec FAKE_${name}_PORT=$port"
}
