#!/usr/bin/env bash
# The Redshift dialect of sql_table (INSERT path) in restricted mode: a
# redshift:// URL pointed at the harness's real Postgres, every statement
# recorded (SLUICE_REDSHIFT_TRACE). replace / append / upsert run end to end
# and are compared row by row (tests/tools/table_check.py); views and grants
# survive a replace; values Redshift would refuse are dead-lettered up front;
# a row the server refuses fails the load and leaves the table as it was;
# the ControlShift example runs through the dialect; and no statement sent
# uses what Redshift lacks.
source "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"
pg_start

RS_URL="redshift://postgres@127.0.0.1:$PGPORT/postgres"
export SLUICE_REDSHIFT_EMULATE=postgres
export SLUICE_REDSHIFT_TRACE=$T_DIR/trace.sql
FAKE=$FAKES_DIR/fake_controlshift
EX=$T_DIR/exports
mkdir -p "$EX"
q() { psql -X -At -v ON_ERROR_STOP=1 -c "$1"; }
tcheck() { python3 "$TOOLS/table_check.py" --db "$PG_URL" "$@"; }

# runcfg NAME FILE TABLE MODE [extra sink yaml]: a one-pipeline config
runcfg() {
    cat >"$T_DIR/$1.yml" <<YML
state: $T_DIR/state-$1.db
pipelines:
  p:
    source: {type: csv, path: "$2", empty_is_null: true}
    sink: {type: sql_table, url: "$RS_URL", table: "$3", mode: $4, key: [id], empty_as_null: false${5:-}}
YML
    echo "$T_DIR/$1.yml"
}
run() { # NAME FILE TABLE MODE [extra] -> exit code in RC, log in $T_DIR/NAME.out
    local cfg
    cfg=$(runcfg "$@")
    RC=0
    sluice run -c "$cfg" >"$T_DIR/$1.out" 2>&1 || RC=$?
}

# 10 columns x 12,000 rows: more parameters than one statement may carry,
# so each 5,000-row batch is split into several INSERTs
"$FAKE" gen --table petitions --rows 12000 --cols 10 --out "$EX/full.csv" --seed 11 >/dev/null
"$FAKE" gen --table petitions --rows 300 --cols 10 --out "$EX/more.csv" --seed 12 >/dev/null
python3 - "$EX/more.csv" <<'PY'
import csv, sys
# ids that do not collide with full.csv's, for append (fields may span lines)
p = sys.argv[1]
rows = list(csv.reader(open(p, encoding="utf-8", newline="")))
for r in rows[1:]:
    r[0] = str(int(r[0]) + 100000)
csv.writer(open(p, "w", encoding="utf-8", newline=""), lineterminator="\n").writerows(rows)
PY
# upsert: changed rows, a duplicate key inside the file (the last wins), a new column
{
    printf 'id,title,extra\n'
    printf '5,changed five,x5\n'
    printf '7,first seven,x7\n'
    printf '7,"second, seven ""quoted""",y7\n'
    printf '999999,brand new,\n'
    printf '8,"",e8\n'
} >"$EX/up.csv"

# 1. replace into a missing table: created with VARCHAR(65535) columns
run r1 "$EX/full.csv" petitions replace
expect_eq "replace (new table): exit 0" 0 "$RC"
check "replace: the table is the export, row by row" tcheck --table petitions replace:"$EX/full.csv"
expect_eq "created columns are VARCHAR(65535), not text" "character varying(65535)" \
    "$(q "SELECT DISTINCT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'petitions'::regclass AND attnum > 0")"
check "more than one INSERT per 5,000-row batch (parameter limit)" \
    test "$(grep -c '^INSERT INTO sluice_stage' "$T_DIR/trace.sql")" -ge 5

# 2. append
run a1 "$EX/more.csv" petitions append
expect_eq "append: exit 0" 0 "$RC"
check "append: export + appended rows" tcheck --table petitions replace:"$EX/full.csv" append:"$EX/more.csv"

# 3. upsert, with a new column added
run u1 "$EX/up.csv" petitions upsert
expect_eq "upsert: exit 0" 0 "$RC"
check "upsert: rows replaced by key, last duplicate wins, new column" \
    tcheck --table petitions replace:"$EX/full.csv" append:"$EX/more.csv" upsert:"$EX/up.csv"
expect_eq "the duplicate key's last row won" 'second, seven "quoted"|y7|1' \
    "$(q "SELECT max(title), max(extra), count(*) FROM petitions WHERE id = '7'")"
expect_eq "a quoted empty string stays '' (not NULL)" "1" \
    "$(q "SELECT count(*) FROM petitions WHERE id = '8' AND title = ''")"

# 4. replace on a typed table that a view and grants depend on
q "CREATE TABLE signers (id integer NOT NULL, email varchar(20), signed_at timestamp, ok boolean)" >/dev/null
q "INSERT INTO signers VALUES (42, 'old@example.org', now(), true)" >/dev/null
q "CREATE VIEW recent_signers AS SELECT id, email FROM signers WHERE id > 1" >/dev/null
q "DROP ROLE IF EXISTS analyst" >/dev/null
q "CREATE ROLE analyst" >/dev/null
q "GRANT SELECT ON signers, recent_signers TO analyst" >/dev/null
{
    printf 'id,email,signed_at,ok\n'
    printf '1,a@example.org,2020-01-01 00:02:18.3636,t\n'
    printf '2,b@example.org,2021-06-01 10:00:00,f\n'
    printf '3,c@example.org,,true\n'
    printf '4,too-long-for-twenty@example.org,2021-06-01 10:00:00,f\n'
    printf '5,bad \xc3\x28 utf8,2021-06-01 10:00:00,f\n'
} >"$EX/signers.csv"
run s1 "$EX/signers.csv" signers replace
expect_eq "replace with two bad rows: exit 2 (dead letters)" 2 "$RC"
expect_eq "the table holds the good rows only, old row gone" "1,2,3" \
    "$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM signers")"
expect_eq "types kept (timestamp parsed, boolean)" "2020-01-01 00:02:18.3636|t" \
    "$(q "SELECT signed_at, ok FROM signers WHERE id = 1")"
expect_eq "the view still works and sees the new rows" "2" "$(q "SELECT count(*) FROM recent_signers")"
expect_eq "grants kept (table and view)" "t|t" \
    "$(q "SELECT has_table_privilege('analyst', 'signers', 'SELECT'), has_table_privilege('analyst', 'recent_signers', 'SELECT')")"
sluice status -c "$T_DIR/s1.yml" p >"$T_DIR/s1.status"
expect_match "too long a value is dead-lettered naming the byte limit" "$T_DIR/s1.status" \
    "line 5: column 'email': 31 bytes, longer than the column's 20"
expect_match "invalid UTF-8 is dead-lettered" "$T_DIR/s1.status" "line 6: column 'email': invalid UTF-8"

# 4b. a view named as the target is refused, and nothing is loaded into it
run v1 "$EX/signers.csv" recent_signers append
expect_eq "a view as the target: the run fails (exit 1)" 1 "$RC"
expect_match "the error says it is not a table" "$T_DIR/v1.out" \
    "is not a table \\(pg_class.relkind 'v'\\)"
expect_eq "the view's table is unchanged" "1,2,3" "$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM signers")"

# 5. a row the server refuses fails the load; the table is unchanged
printf 'id,email\n7,x@example.org\nnot-a-number,y@example.org\n' >"$EX/bad.csv"
run b1 "$EX/bad.csv" signers append
expect_eq "server-refused row: the run fails (exit 1)" 1 "$RC"
expect_match "the error names the table and the SQLSTATE" "$T_DIR/b1.out" \
    'redshift table "signers".*SQLSTATE 22P02'
expect_match "the log says the table is unchanged" "$T_DIR/b1.out" 'load rolled back: redshift table "signers" is unchanged'
expect_eq "the table is unchanged" "1,2,3" "$(q "SELECT string_agg(id::text, ',' ORDER BY id) FROM signers")"
expect_no_match "no password or URL in the output" "$T_DIR/b1.out" "redshift://"

# 6. the ControlShift example itself, through the Redshift dialect
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-rs-$RANDOM$RANDOM
export CONTROLSHIFT_EXPORT_HOSTS=127.0.0.1
export WAREHOUSE_URL=$RS_URL
export SLUICE_STATE=$T_DIR/cs-state.db
"$FAKE" gen --table members --rows 2000 --cols 8 --out "$EX/m1.csv" --seed 21 >/dev/null
"$FAKE" gen --table members --rows 2500 --cols 8 --out "$EX/m2.csv" --seed 22 >/dev/null
printf 'id,first_name\n3,Changed\n4000,New\n' >"$EX/m-inc.csv"
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")
CFG=$SRC_DIR/examples/controlshift.yml
start_serve cs "$CFG"
send() { "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" "$@" 2>>"$T_DIR/send.err"; }
expect_eq "full export: 202" 202 "$(send --type data.full_table_exported --table members --url "$CS/exports/m1.csv" --jid rs-f1)"
check "job 1 ended" wait_jobs "$CFG" controlshift 1 60
check "members = m1" tcheck --table members replace:"$EX/m1.csv"
q "CREATE VIEW member_names AS SELECT id, first_name FROM members" >/dev/null
expect_eq "second full export: 202" 202 "$(send --type data.full_table_exported --table members --url "$CS/exports/m2.csv" --jid rs-f2)"
check "job 2 ended" wait_jobs "$CFG" controlshift 2 60
check "members = m2 (replace with a view on the table)" tcheck --table members replace:"$EX/m2.csv"
expect_eq "the view sees m2" 2500 "$(q "SELECT count(*) FROM member_names")"
expect_eq "incremental export: 202" 202 "$(send --type data.incremental_table_exported --table members --url "$CS/exports/m-inc.csv" --jid rs-i1)"
check "job 3 ended" wait_jobs "$CFG" controlshift 3 60
check "members = m2 upserted with the increment" tcheck --table members replace:"$EX/m2.csv" upsert:"$EX/m-inc.csv"
sluice status -c "$CFG" controlshift >"$T_DIR/cs.status"
expect_match "three jobs done" "$T_DIR/cs.status" "3 done, 0 failed"
kill -TERM "$SERVE_cs_PID"
wait "$SERVE_cs_PID" || true
expect_no_match "the serve log has no URL with credentials" "$T_DIR/serve-cs.log" "redshift://"

# 7. what was sent: nothing Redshift lacks
TR=$T_DIR/trace.sql
check "the trace recorded statements" test -s "$TR"
for pat in 'ON CONFLICT' 'FROM STDIN' 'jsonb' '\bjson\b' 'SERIAL' 'SAVEPOINT' 'ARRAY' '\[\]' \
    'to_regclass' 'aclexplode' '\bformat\(' 'string_agg' 'ON COMMIT' 'INCLUDING' 'TRUNCATE' \
    'OVERRIDING' '::regclass' 'RETURNING' 'FILTER \(' ' text[,)]' 'pg_temp' 'NO SCROLL'; do
    if grep -Eiq "$pat" "$TR"; then
        not_ok "a statement uses '$pat', which Redshift lacks: $(grep -Ei -m1 "$pat" "$TR" | cut -c1-200)"
    else
        ok "no statement uses '$pat'"
    fi
done
expect_match "staging is a TEMP table" "$TR" '^CREATE TEMP TABLE sluice_stage \('
expect_match "rows go in as multi-row INSERTs with parameters" "$TR" \
    '^INSERT INTO sluice_stage \(.*\) VALUES \(\$1,\$2,.*\),\(.*-- [0-9]+ parameters$'
expect_match "upsert deletes with DELETE ... USING" "$TR" \
    '^DELETE FROM "public"."petitions" USING sluice_stage WHERE "petitions"."id" = sluice_stage."id"$'
expect_match "replace refills in place" "$TR" '^DELETE FROM "public"."signers"$'
expect_eq "the most parameters in one statement (limit 32767)" 32760 \
    "$(grep -oE -- '-- [0-9]+ parameters$' "$TR" | awk '$2 > m { m = $2 } END { print m }')"
q "DROP OWNED BY analyst" >/dev/null || true
q "DROP ROLE analyst" >/dev/null || true
finish
