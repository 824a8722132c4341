#!/usr/bin/env bash
# ControlShift into a real Postgres warehouse that users have built on
# (issue 7 item 3): a full export replaces a table that views depend on and
# keeps the views and grants working; a permanent database error (SQLSTATE
# 23505) fails its job at once, naming the table and the SQLSTATE, instead
# of being retried for hours; and the table's next export is not held up.
source "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"
pg_start
# the EXIT trap of lib.sh runs after pg_stop (pg.sh chains itself in front)

FAKE=$FAKES_DIR/fake_controlshift
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-0f3a9c2e-$RANDOM$RANDOM
EX=$T_DIR/exports
mkdir -p "$EX"
"$FAKE" gen --table petitions --rows 300 --cols 4 --out "$EX/p.csv" --seed 3 >/dev/null
printf 'id,email\n2,a@example.org\n' >"$EX/s-dup.csv"
printf 'id,email\n3,c@example.org\n4,d@example.org\n' >"$EX/s-ok.csv"
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE petitions (id integer PRIMARY KEY, created_at timestamp, updated_at timestamp,
                        title text);
INSERT INTO petitions VALUES (999999, now(), now(), 'old row');
CREATE VIEW recent_petitions AS SELECT id, title FROM petitions WHERE id > 10;
DROP ROLE IF EXISTS analyst;
CREATE ROLE analyst;
GRANT SELECT ON petitions, recent_petitions TO analyst;
CREATE TABLE signatures (id integer PRIMARY KEY, email text UNIQUE);
INSERT INTO signatures VALUES (1, 'a@example.org');
SQL

CFG=$T_DIR/cs.yml
cat >"$CFG" <<YML
state: $T_DIR/state.db
pipelines:
  cs:
    trigger: {type: controlshift, secret: "\${CONTROLSHIFT_WEBHOOK_SECRET}", url_lifetime: 1h}
    source: {type: csv, path: "{{url}}", compression: "{{compression}}", allow_hosts: 127.0.0.1, empty_is_null: true}
    sink: {type: sql_table, url: "$PG_URL", table: "{{table}}", mode: "{{mode}}", key: [id], empty_as_null: false, on_bad_row: fail}
    max_failed: 0
    # a job retried by mistake would hold its table's queue for a minute
    job_backoff: 60s
    job_max_backoff: 60s
YML
start_serve main "$CFG"
send() { "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" "$@" 2>>"$T_DIR/send.err"; }

# 1. full export into a table with a dependent view
expect_eq "full export webhook: 202" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/p.csv" --jid full1)"
check "the job ended" wait_jobs "$CFG" cs 1 20
sluice status -c "$CFG" cs >"$T_DIR/s1.txt"
expect_match "the full export loaded" "$T_DIR/s1.txt" "#1 +done +petitions .*rows 300"
expect_eq "the table holds the export, not the old row" "300|0" \
    "$(psql -X -At -c "SELECT count(*), count(*) FILTER (WHERE id = 999999) FROM petitions")"
expect_eq "the view still works and sees the new rows" "290" \
    "$(psql -X -At -c "SELECT count(*) FROM recent_petitions")"
expect_eq "grants kept (table and view)" "t|t" \
    "$(psql -X -At -c "SELECT has_table_privilege('analyst', 'petitions', 'SELECT'), has_table_privilege('analyst', 'recent_petitions', 'SELECT')")"

# 2. a permanent error (a unique constraint) fails at once, not retried
expect_eq "incremental webhook (duplicate email): 202" 202 "$(send --type data.incremental_table_exported --table signatures --url "$CS/exports/s-dup.csv" --jid inc-dup)"
check "the job ended" wait_jobs "$CFG" cs 2 20
sluice status -c "$CFG" cs >"$T_DIR/s2.txt"
expect_match "failed on the first attempt" "$T_DIR/s2.txt" "#2 +failed +signatures .*attempts 1 "
expect_match "the error names the table and the SQLSTATE" "$T_DIR/s2.txt" \
    'error: .*table "signatures".*SQLSTATE 23505'
expect_match "the log says it is not retried" "$T_DIR/serve-main.log" "job 2 failed \\(not retried"

# 3. the table's next export runs at once
expect_eq "next incremental webhook: 202" 202 "$(send --type data.incremental_table_exported --table signatures --url "$CS/exports/s-ok.csv" --jid inc-ok)"
check "the job ended" wait_jobs "$CFG" cs 3 20
sluice status -c "$CFG" cs >"$T_DIR/s3.txt"
expect_match "the next export is done" "$T_DIR/s3.txt" "#3 +done +signatures"
expect_eq "signatures: the old row and the new ones" "1,3,4" \
    "$(psql -X -At -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM signatures")"
kill -TERM "$SERVE_main_PID"
wait "$SERVE_main_PID" || true
psql -X -q -c "DROP OWNED BY analyst" -c "DROP ROLE analyst" || true
finish
