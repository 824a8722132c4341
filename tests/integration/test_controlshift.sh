#!/usr/bin/env bash
# End to end: fake ControlShift sends full then incremental exports for three
# tables (one bzip2, one a table never seen before), including a redelivery;
# sluice serve loads them into a real PostgreSQL and into SQLite. Table
# contents are checked exactly against the exports.
source "$(dirname "$0")/lib.sh"
source "$SRC_DIR/tests/tools/pg.sh"
pg_start

CFG=$SRC_DIR/examples/controlshift.yml
FAKE=$FAKES_DIR/fake_controlshift
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-0f3a9c2e-$RANDOM$RANDOM
export CONTROLSHIFT_EXPORT_HOSTS=127.0.0.1
EX=$T_DIR/exports
mkdir -p "$EX"
"$FAKE" gen --table petitions --rows 300 --cols 8 --out "$EX/petitions-full.csv" --seed 1
"$FAKE" gen --table petitions --rows 40 --cols 8 --out "$EX/petitions-incr.csv" --seed 2 --start-id 301
"$FAKE" gen --table signatures --rows 2000 --cols 12 --out "$EX/signatures-full.csv.bz2" --bz2 --seed 3
"$FAKE" gen --table signatures --rows 50 --cols 12 --out "$EX/signatures-incr.csv" --seed 4 --start-id 1990
"$FAKE" gen --table new_thing --rows 25 --cols 5 --out "$EX/new_thing-full.csv" --seed 5

"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")

send() { # type table file [jid] [compression]
    "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" \
        --type "data.$1_table_exported" --table "$2" \
        --url "$CS/exports/$3?X-Amz-Credential=AKIAFAKE&X-Amz-Signature=deadbeef" \
        --jid "${4:-$2-$1-$RANDOM}" --compression "${5:-none}" 2>>"$T_DIR/send.err"
}

for backend in postgres sqlite; do
    if [ $backend = postgres ]; then
        export WAREHOUSE_URL=$PG_URL
    else
        export WAREHOUSE_URL=$T_DIR/warehouse.db
    fi
    export SLUICE_STATE=$T_DIR/state-$backend.db
    start_serve $backend "$CFG"

    expect_eq "[$backend] full export accepted with 202" 202 "$(send full petitions petitions-full.csv jid-p1)"
    expect_eq "[$backend] bzip2 full export accepted" 202 "$(send full signatures signatures-full.csv.bz2 jid-s1 bzip2)"
    expect_eq "[$backend] new table accepted" 202 "$(send full new_thing new_thing-full.csv jid-n1)"
    check "[$backend] full loads finished" wait_jobs "$CFG" controlshift 3 60
    expect_eq "[$backend] incremental accepted" 202 "$(send incremental petitions petitions-incr.csv jid-p2)"
    expect_eq "[$backend] redelivered jid answered 200, not stored again" 200 "$(send incremental petitions petitions-incr.csv jid-p2)"
    expect_eq "[$backend] overlapping incremental accepted" 202 "$(send incremental signatures signatures-incr.csv jid-s2)"
    # the same rows again under a new jid: the key prevents duplicates
    expect_eq "[$backend] same rows, new jid accepted" 202 "$(send incremental petitions petitions-incr.csv jid-p3)"
    check "[$backend] all six jobs done" wait_jobs "$CFG" controlshift 6 60
    expect_eq "[$backend] no job failed" "0" "$(job_counts "$CFG" controlshift | cut -d' ' -f5)"

    check "[$backend] petitions = full export + incremental, once each" \
        python3 "$TOOLS/table_check.py" --db "$WAREHOUSE_URL" --table petitions \
        replace:"$EX/petitions-full.csv" upsert:"$EX/petitions-incr.csv"
    check "[$backend] signatures (bzip2) upserted over the full export" \
        python3 "$TOOLS/table_check.py" --db "$WAREHOUSE_URL" --table signatures \
        replace:"$EX/signatures-full.csv.bz2" upsert:"$EX/signatures-incr.csv"
    check "[$backend] a table never seen before was created and loaded" \
        python3 "$TOOLS/table_check.py" --db "$WAREHOUSE_URL" --table new_thing \
        replace:"$EX/new_thing-full.csv"

    # a second full export replaces the table
    expect_eq "[$backend] second full export accepted" 202 "$(send full new_thing petitions-incr.csv jid-n2)"
    check "[$backend] second full export done" wait_jobs "$CFG" controlshift 7 60
    check "[$backend] a full export replaces the whole table" \
        python3 "$TOOLS/table_check.py" --db "$WAREHOUSE_URL" --table new_thing \
        replace:"$EX/petitions-incr.csv"

    sluice status -c "$CFG" controlshift >"$T_DIR/status-$backend.txt"
    expect_match "[$backend] status lists jobs with table, kind and rows" "$T_DIR/status-$backend.txt" \
        "done +petitions +incremental .*rows 40"
    curl -fsS "$SERVE_URL/metrics" >"$T_DIR/metrics-$backend.txt"
    expect_match "[$backend] /metrics counts webhooks" "$T_DIR/metrics-$backend.txt" \
        'sluice_webhooks_total\{pipeline="controlshift",result="duplicate"\} 1'
    expect_match "[$backend] /metrics counts rows loaded" "$T_DIR/metrics-$backend.txt" \
        'sluice_rows_loaded_total\{pipeline="controlshift"\} [0-9]+'
    expect_match "[$backend] /metrics shows jobs by state" "$T_DIR/metrics-$backend.txt" \
        'sluice_jobs\{state="done"\} 7'

    kill -TERM "$(eval echo \$SERVE_${backend}_PID)"
    set +e
    wait "$(eval echo \$SERVE_${backend}_PID)"
    rc=$?
    set -e
    expect_eq "[$backend] SIGTERM: serve exits 0" 0 "$rc"
    expect_no_match "[$backend] the presigned URL's credentials never reach the log" \
        "$T_DIR/serve-$backend.log" "X-Amz-Signature|deadbeef"
    expect_no_match "[$backend] the webhook secret never reaches the log" \
        "$T_DIR/serve-$backend.log" "$CONTROLSHIFT_WEBHOOK_SECRET"
done
finish
