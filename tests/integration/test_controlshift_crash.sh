#!/usr/bin/env bash
# kill -9 of `sluice serve` right after it acknowledged a webhook: the job
# still runs after the restart. kill -9 in the middle of a replace load: the
# table keeps its old rows, and the job re-runs to completion.
source "$(dirname "$0")/lib.sh"
source "$SRC_DIR/tests/tools/pg.sh"
pg_start

CFG=$SRC_DIR/examples/controlshift.yml
FAKE=$FAKES_DIR/fake_controlshift
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-0f3a9c2e-$RANDOM$RANDOM
export CONTROLSHIFT_EXPORT_HOSTS=127.0.0.1
export WAREHOUSE_URL=$PG_URL
export SLUICE_STATE=$T_DIR/state.db
EX=$T_DIR/exports
mkdir -p "$EX"
"$FAKE" gen --table petitions --rows 200 --cols 6 --out "$EX/v1.csv" --seed 1
"$FAKE" gen --table petitions --rows 30000 --cols 6 --out "$EX/v2.csv" --seed 2
"$FAKE" gen --table petitions --rows 500 --cols 6 --out "$EX/v3.csv" --seed 3
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")
send() { # file jid [query]
    "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" \
        --type data.full_table_exported --table petitions --url "$CS/exports/$1${3:-}" --jid "$2" \
        2>>"$T_DIR/send.err"
}

start_serve a "$CFG"
expect_eq "first full export: 202" 202 "$(send v1.csv j1)"
check "first load done" wait_jobs "$CFG" controlshift 1 60
check "table holds v1" python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/v1.csv"

# --- kill -9 in the middle of a replace load (the download trickles in)
expect_eq "slow full export: 202" 202 "$(send v2.csv j2 '?slow_ms=150')"
for _ in $(seq 1 100); do
    grep -q "job 2 started" "$T_DIR/serve-a.log" && break
    sleep 0.1
done
sleep 1.5
kill -9 "$SERVE_a_PID"
wait "$SERVE_a_PID" 2>/dev/null || true
check "killed mid-load: the table still holds exactly v1" \
    python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/v1.csv"
expect_match "the job was running when killed" <(sluice status -c "$CFG" controlshift) "#2 +running"

# --- kill -9 right after the 2xx of another webhook (before it could run)
start_serve b "$CFG"
code=$(send v3.csv j3 '?slow_ms=50')
kill -9 "$SERVE_b_PID"
wait "$SERVE_b_PID" 2>/dev/null || true
expect_eq "webhook acknowledged before the kill" 202 "$code"
expect_match "the acknowledged job is in the store" <(sluice status -c "$CFG" controlshift) "#3 +(queued|running)"

# --- restart: both jobs run, in arrival order, to completion
start_serve c "$CFG"
check "both jobs finished after the restart" wait_jobs "$CFG" controlshift 3 120
expect_eq "none failed" 0 "$(job_counts "$CFG" controlshift | cut -d' ' -f5)"
expect_match "the restart re-queued the interrupted job" "$T_DIR/serve-c.log" "running when the last process stopped"
check "the table holds v3 (the last full export, loaded after v2)" \
    python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/v3.csv"
no_staging=$(psql "$PG_URL" -XAtq -c "select count(*) from pg_tables where tablename <> 'petitions' and tablename like '%petitions%'")
expect_eq "no staging table left behind" 0 "$no_staging"
finish
