# A throw-away PostgreSQL server for tests and benchmarks (sourced, bash).
#
#   source tests/tools/pg.sh
#   pg_start      # initdb + start on 127.0.0.1:<free port>; exports PGHOST PGPORT
#                 # PGUSER PGDATABASE PG_URL PG_DIR
#   ...
#   pg_stop       # stop (immediate) and delete everything; idempotent
#
# The server lives in a temp dir, trusts local connections (no password),
# runs with fsync off and is meant to be thrown away. pg_start installs an
# EXIT trap that calls pg_stop, chained in front of any EXIT trap already set;
# a caller that sets its own EXIT trap afterwards must call pg_stop in it.
# Tests run as root in CI: initdb refuses root, so the server runs as the
# `postgres` system user (via runuser) when the caller is root.

PG_DIR=${PG_DIR:-}

_pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
        return 0
    fi
    echo "pg.sh: PostgreSQL server binaries (initdb, pg_ctl) not found;" \
        "install the 'postgresql' package (scripts/install-deps)" >&2
    return 1
}

# _pg_as CMD...: run as the server's owner
_pg_as() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@" </dev/null
    else
        "$@" </dev/null
    fi
}

_pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] || return 0
    local bin
    if [ -f "$PG_DIR/data/postmaster.pid" ] && bin=$(_pg_bindir 2>/dev/null); then
        _pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    PG_DIR=
    return 0
}

_pg_install_trap() {
    local old
    old=$(trap -p EXIT)
    case "$old" in
    *pg_stop*) return 0 ;;
    "") trap pg_stop EXIT ;;
    *)
        eval "set -- $old"
        # shellcheck disable=SC2064
        trap "pg_stop; $3" EXIT
        ;;
    esac
}

pg_start() {
    if [ -n "${PG_DIR:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        return 0 # already running (idempotent)
    fi
    local bin port try
    bin=$(_pg_bindir) || return 1
    PG_DIR=$(mktemp -d /tmp/sluice-pg.XXXXXX) || return 1
    _pg_install_trap
    chmod 755 "$PG_DIR"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$PG_DIR"
    fi
    if ! _pg_as "$bin/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync -E UTF8 \
        --locale=C >"$PG_DIR/initdb.log" 2>&1; then
        echo "pg.sh: initdb failed:" >&2
        sed 's/^/    /' "$PG_DIR/initdb.log" >&2
        pg_stop
        return 1
    fi
    for try in 1 2 3; do
        port=$(_pg_free_port) || { pg_stop; return 1; }
        if _pg_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 20 \
            -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=40" \
            start >/dev/null 2>&1; then
            break
        fi
        port=
    done
    if [ -z "$port" ]; then
        echo "pg.sh: the server did not start:" >&2
        tail -20 "$PG_DIR/server.log" 2>/dev/null | sed 's/^/    /' >&2
        pg_stop
        return 1
    fi
    export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PG_DIR
    export PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    if [ -x "$bin/pg_isready" ]; then
        for try in $(seq 1 100); do
            "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && return 0
            sleep 0.05
        done
        echo "pg.sh: server on port $port not ready" >&2
        pg_stop
        return 1
    fi
    return 0
}
