#!/usr/bin/env bash
# A load into a table is one transaction: killing `sluice run` mid-load
# leaves the table as it was, and the next run loads everything again from
# the start (no checkpoint resume for transactional sinks), on SQLite and
# Postgres.
source "$(dirname "$0")/lib.sh"
source "$SRC_DIR/tests/tools/pg.sh"
pg_start

python3 "$TOOLS/gen_users.py" --rows 300000 --plain 10 --csv "$T_DIR/big.csv"
head -101 "$T_DIR/big.csv" >"$T_DIR/small.csv"
for backend in sqlite postgres; do
    db=$T_DIR/wh.db
    [ $backend = postgres ] && db=$PG_URL
    cat >"$T_DIR/$backend.yml" <<YML
state: $T_DIR/state-$backend.db
pipelines:
  load:
    source: {type: csv, path: "\${INPUT}"}
    sink: {type: sql_table, url: "$db", table: users, mode: replace, key: [external_id]}
YML
    INPUT=$T_DIR/small.csv sluice run -c "$T_DIR/$backend.yml" >/dev/null 2>&1
    # the input is a pipe that delivers half the file and then stalls, so
    # the kill lands mid-load whatever the machine's speed
    rm -f "$T_DIR/pipe.csv"
    mkfifo "$T_DIR/pipe.csv"
    (exec 3>"$T_DIR/pipe.csv"; head -150000 "$T_DIR/big.csv" >&3; exec sleep 60) >/dev/null 2>&1 &
    feeder=$!
    (cd "$T_DIR" && INPUT=$T_DIR/pipe.csv exec "$SLUICE_BIN" run -c "$T_DIR/$backend.yml" >"$T_DIR/$backend-killed.log" 2>&1) &
    pid=$!
    for _ in $(seq 1 100); do
        # wait until sluice has read what the pipe had to give
        [ -z "$(jobs -p | grep -x "$feeder")" ] && break
        if [ -r /proc/$pid/io ] && [ "$(awk '/^rchar/ {print $2}' /proc/$pid/io)" -gt 10000000 ]; then break; fi
        sleep 0.1
    done
    sleep 0.5
    kill -9 "$pid" 2>/dev/null && killed=1 || killed=0
    wait "$pid" 2>/dev/null || true
    kill "$feeder" 2>/dev/null || true
    wait "$feeder" 2>/dev/null || true
    expect_eq "[$backend] the big load was killed mid-way" 1 "$killed"
    check "[$backend] after the kill the table still holds the previous load" \
        python3 "$TOOLS/table_check.py" --db "$db" --table users --key external_id replace:"$T_DIR/small.csv"
    set +e
    INPUT=$T_DIR/big.csv sluice run -c "$T_DIR/$backend.yml" >"$T_DIR/$backend-rerun.log" 2>&1
    rc=$?
    set -e
    expect_eq "[$backend] the rerun succeeds" 0 "$rc"
    expect_no_match "[$backend] the rerun did not resume mid-file" "$T_DIR/$backend-rerun.log" "resuming"
    check "[$backend] the table holds the whole file exactly" \
        python3 "$TOOLS/table_check.py" --db "$db" --table users --key external_id replace:"$T_DIR/big.csv"
done
finish
