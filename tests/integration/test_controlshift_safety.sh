#!/usr/bin/env bash
# Bad webhooks get the right status and store nothing; downloads outside the
# allow-list are refused; bad exports fail the job and leave the table as it
# was; a hostile table name touches exactly that table.
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
"$FAKE" gen --table petitions --rows 100 --cols 6 --out "$EX/good.csv" --seed 1
"$FAKE" gen --table petitions --rows 3000 --cols 6 --out "$EX/big.csv.bz2" --bz2 --seed 2
head -c $(( $(stat -c %s "$EX/big.csv.bz2") / 2 )) "$EX/big.csv.bz2" >"$EX/truncated.csv.bz2"
printf 'id,title\n1,a\n2,b\n3\n4,d\n' >"$EX/ragged.csv"
printf 'id,title\n1,ok\n2,\xff\xfe broken\n' >"$EX/badutf8.csv"
python3 - "$EX/good.csv" "$EX/newcol.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="", encoding="utf-8")))
w = csv.writer(open(sys.argv[2], "w", newline="", encoding="utf-8"))
w.writerow(rows[0] + ["brand_new_column"])
for r in rows[1:6]:
    w.writerow(r + ["extra"])
PY

"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CSPORT=$(wait_port_file "$T_DIR/cs.port")
CS=http://127.0.0.1:$CSPORT
start_serve main "$CFG"
HOOK=$SERVE_URL/webhooks/controlshift

send() { # extra args...
    "$FAKE" send --to "$HOOK" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" "$@" 2>>"$T_DIR/send.err"
}
total_jobs() { job_counts "$CFG" controlshift | awk '{print $1+$2+$3+$4+$5}'; }

# --- webhooks that must be refused, storing nothing
expect_eq "unsigned webhook: 401" 401 "$(send --no-signature --type data.full_table_exported --table t --url "$CS/exports/good.csv")"
expect_eq "wrongly signed webhook: 401" 401 "$(send --bad-signature --type data.full_table_exported --table t --url "$CS/exports/good.csv")"
printf '{"type": "data.full_table_exported", "data": {"url": ' >"$T_DIR/malformed.json"
expect_eq "malformed JSON: 400" 400 "$(send --raw-body "$T_DIR/malformed.json" --type x --table t --url x)"
printf '{"type": "data.full_table_exported", "data": {"url": "%s/exports/good.csv"}, "jid": "j1"}' "$CS" >"$T_DIR/notable.json"
expect_eq "missing data.table: 400" 400 "$(send --raw-body "$T_DIR/notable.json" --type x --table t --url x)"
python3 -c 'import json; print(json.dumps({"type":"data.full_table_exported","data":{"url":"x","table":"t","pad":"x"*(1100*1024)},"jid":"big"}))' >"$T_DIR/huge.json"
expect_eq "oversized body: 413" 413 "$(send --raw-body "$T_DIR/huge.json" --type x --table t --url x)"
expect_eq "unknown event type: 200 (skipped)" 200 "$(send --type data.something_else --table t --url "$CS/exports/good.csv")"
expect_eq "none of these stored a job" 0 "$(total_jobs)"

# --- a good load first: the table the bad exports must leave alone
expect_eq "good full export: 202" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/good.csv" --jid good1)"
check "good load done" wait_jobs "$CFG" controlshift 1 60
check "petitions loaded" python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/good.csv"

# --- downloads that must be refused (the job fails with the reason)
n=1
for url in "https://evil.example/exports/good.csv" "http://localhost:$CSPORT/exports/good.csv" \
           "http://169.254.169.254/latest/meta-data/" "file:///etc/passwd"; do
    expect_eq "webhook naming $url is accepted (the URL is checked on download)" 202 \
        "$(send --type data.full_table_exported --table petitions --url "$url" --jid "refused$n")"
    n=$((n + 1))
done
# a redirect (to the metadata address) is never followed
RPORT=$(free_port)
python3 - "$RPORT" >/dev/null 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
T_PIDS+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$RPORT/" && break; sleep 0.1; done
expect_eq "webhook naming a redirecting URL is accepted" 202 \
    "$(send --type data.full_table_exported --table petitions --url "http://127.0.0.1:$RPORT/exports/good.csv" --jid redirect)"
check "the four refused downloads and the redirect failed" wait_jobs "$CFG" controlshift 6 60
sluice status -c "$CFG" controlshift >"$T_DIR/status1.txt"
expect_match "disallowed host: refused with the rule" "$T_DIR/status1.txt" "evil.example.*(not in allow_hosts|not allowed)"
expect_match "loopback via a name: refused" "$T_DIR/status1.txt" "localhost.*(not in allow_hosts|not allowed|refused)"
expect_match "metadata address: refused" "$T_DIR/status1.txt" "169.254.169.254.*(not in allow_hosts|not allowed|refused)"
expect_match "file:// refused" "$T_DIR/status1.txt" "file:.*(only https|not allowed|refused)"
expect_match "the redirect was not followed" "$T_DIR/status1.txt" "exports/good.csv.*HTTP 302"
check "petitions untouched by refused downloads" python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/good.csv"

# --- bad exports: the job fails, the table keeps its rows
expect_eq "ragged export accepted" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/ragged.csv" --jid ragged)"
expect_eq "invalid UTF-8 export accepted" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/badutf8.csv" --jid badutf8)"
expect_eq "truncated bzip2 export accepted" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/truncated.csv.bz2" --jid trunc --compression bzip2)"
check "the three bad loads ended" wait_jobs "$CFG" controlshift 9 90
expect_eq "all three failed" 8 "$(job_counts "$CFG" controlshift | cut -d' ' -f5)"
sluice status -c "$CFG" controlshift >"$T_DIR/status2.txt"
expect_match "ragged row: reason with line number" "$T_DIR/status2.txt" "ragged.csv:4: row has 1 fields?, expected 2"
expect_match "truncated bzip2: reason" "$T_DIR/status2.txt" "(bzip2|truncated|corrupt)"
expect_match "invalid UTF-8: the database's reason, naming the row" "$T_DIR/status2.txt" "refused row 2 of the load.*(UTF8|encoding)"
check "petitions still hold the good export" python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/good.csv"

# --- a column the table lacks is added
expect_eq "export with a new column accepted" 202 "$(send --type data.incremental_table_exported --table petitions --url "$CS/exports/newcol.csv" --jid newcol)"
check "new-column load done" wait_jobs "$CFG" controlshift 10 60
expect_eq "the new column exists and holds the values" 5 \
    "$(psql "$PG_URL" -XAtq -c "select count(*) from petitions where brand_new_column = 'extra'")"

# --- a hostile table name: that table, nothing else
psql "$PG_URL" -Xq -c 'create table x (a int); insert into x values (1)'
evil='evil"; DROP TABLE x; --'
expect_eq "hostile table name accepted" 202 "$(send --type data.full_table_exported --table "$evil" --url "$CS/exports/good.csv" --jid evil)"
check "hostile-name load done" wait_jobs "$CFG" controlshift 11 60
expect_eq "table x still exists with its row" 1 "$(psql "$PG_URL" -XAtq -c 'select count(*) from x')"
check "the rows went into exactly the table named $evil" \
    python3 "$TOOLS/table_check.py" --db "$PG_URL" --table "$evil" replace:"$EX/good.csv"
check "petitions untouched" python3 "$TOOLS/table_check.py" --db "$PG_URL" --table petitions replace:"$EX/good.csv" upsert:"$EX/newcol.csv"
finish
