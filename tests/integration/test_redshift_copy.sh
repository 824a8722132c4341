#!/usr/bin/env bash
# The Redshift dialect's COPY path in restricted mode: rows staged as gzip CSV
# objects on the strict fake S3 (SigV4 verified), a manifest, the COPY
# statement recorded (Postgres cannot COPY from S3: the same rows go in by
# INSERT, so the merge runs end to end against the real Postgres).
# Checked: the staged objects, decompressed, are byte for byte the CSV the
# export should become; the manifest lists exactly them with their sizes;
# the COPY text carries Redshift's documented options; objects are removed
# after the commit; objects a crashed load left (kept on purpose here) are
# removed by the next load of the table; the ControlShift example loads
# through S3.
source "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"
pg_start

S3DIR=$T_DIR/s3
mkdir -p "$S3DIR"
"$FAKES_DIR/fake_s3" --port 0 --port-file "$T_DIR/s3.port" --dir "$S3DIR" --bucket stage \
    >"$T_DIR/s3.log" 2>&1 &
T_PIDS+=($!)
export SLUICE_S3_ENDPOINT=http://127.0.0.1:$(wait_port_file "$T_DIR/s3.port")
export AWS_ACCESS_KEY_ID=AKIAFAKEFAKEFAKE AWS_SECRET_ACCESS_KEY=fake-secret-key AWS_REGION=us-east-1
export REDSHIFT_S3_STAGING=s3://stage/sluice/ REDSHIFT_IAM_ROLE=arn:aws:iam::123456789012:role/load
RS_URL="redshift://postgres@127.0.0.1:$PGPORT/postgres"
export SLUICE_REDSHIFT_EMULATE=postgres
export SLUICE_REDSHIFT_TRACE=$T_DIR/trace.sql
FAKE=$FAKES_DIR/fake_controlshift
EX=$T_DIR/exports
mkdir -p "$EX"
q() { psql -X -At -v ON_ERROR_STOP=1 -c "$1"; }
tcheck() { python3 "$TOOLS/table_check.py" --db "$PG_URL" "$@"; }
# objects in the fake's store: "key<TAB>size", keys decoded
objects() {
    python3 - "$S3DIR/stage" <<'PY'
import os, sys, urllib.parse
d = sys.argv[1]
for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    print("%s\t%d" % (urllib.parse.unquote(n), os.path.getsize(os.path.join(d, n))))
PY
}
run() { # NAME FILE TABLE MODE
    cat >"$T_DIR/$1.yml" <<YML
state: $T_DIR/state-$1.db
pipelines:
  p:
    source: {type: csv, path: "$2", empty_is_null: true}
    sink:
      type: sql_table
      url: "$RS_URL"
      table: "$3"
      mode: $4
      key: [id]
      empty_as_null: false
      s3_staging: \${REDSHIFT_S3_STAGING}
      iam_role: \${REDSHIFT_IAM_ROLE}
      region: \${AWS_REGION}
YML
    RC=0
    sluice run -c "$T_DIR/$1.yml" >"$T_DIR/$1.out" 2>&1 || RC=$?
}

"$FAKE" gen --table petitions --rows 30000 --cols 12 --out "$EX/full.csv" --seed 31 >/dev/null
{
    printf 'id,title,note\n'
    printf '1,"a, b","say ""hi"""\n'
    printf '2,,"multi\nline"\n'
    printf '3,"",\\N\n'
    printf '1,last wins,x\n'
} >"$EX/up.csv"

# 1. replace through S3, the staged objects kept (as a crash would leave them)
SLUICE_REDSHIFT_KEEP_STAGED=1 run r1 "$EX/full.csv" petitions replace
expect_eq "replace via COPY path: exit 0" 0 "$RC"
check "the table is the export, row by row" tcheck --table petitions replace:"$EX/full.csv"
objects >"$T_DIR/objects1.txt"
check "parts and a manifest under one run prefix" \
    grep -Eq '^sluice/petitions/run-[0-9]{8}T[0-9]{6}Z-[0-9]+-[0-9]+/manifest.json' "$T_DIR/objects1.txt"
check "the staged objects are the export, byte for byte after gunzip; the manifest lists them" \
    env TOOLS="$TOOLS" python3 - "$EX/full.csv" "$S3DIR/stage" <<'PY'
import gzip, json, os, sys, urllib.parse
sys.path.insert(0, os.environ["TOOLS"])
from table_check import read_csv
rows = read_csv(sys.argv[1])
def cell(v):
    if v is None:
        return "\\N"
    if v == "" or v == "\\N" or any(c in v for c in ',"\n\r'):
        return '"' + v.replace('"', '""') + '"'
    return v
want = "".join(",".join(cell(v) for v in r.values()) + "\n" for r in rows).encode()
d = sys.argv[2]
objs = {urllib.parse.unquote(n): os.path.join(d, n) for n in os.listdir(d)}
man = [k for k in objs if k.endswith("/manifest.json")]
assert len(man) == 1, man
m = json.load(open(objs[man[0]]))
got = b""
run = man[0][: -len("manifest.json")]
parts = sorted(k for k in objs if k.startswith(run) and k.endswith(".csv.gz"))
assert [e["url"] for e in m["entries"]] == ["s3://stage/" + k for k in parts], (m, parts)
for e, k in zip(m["entries"], parts):
    assert e["mandatory"] is True
    assert e["meta"]["content_length"] == os.path.getsize(objs[k]), e
    got += gzip.open(objs[k]).read()
if got != want:
    i = next(i for i in range(min(len(got), len(want))) if got[i] != want[i]) if got[:len(want)] != want[:len(got)] else min(len(got), len(want))
    print("differ at byte %d: got %r want %r" % (i, got[i-40:i+40], want[i-40:i+40]))
    sys.exit(1)
print("%d parts, %d bytes, %d rows" % (len(parts), len(got), len(rows)))
PY
RUN1=$(sed -n 's/^\(sluice\/petitions\/run-[^/]*\/\)manifest.json.*/\1/p' "$T_DIR/objects1.txt")
expect_eq "the COPY statement (recorded, not run on Postgres)" \
    "-- not run (SLUICE_REDSHIFT_EMULATE): COPY sluice_stage ($(head -1 "$EX/full.csv" | sed 's/[^,]*/"&"/g')) FROM 's3://stage/${RUN1}manifest.json' IAM_ROLE 'arn:aws:iam::123456789012:role/load' MANIFEST FORMAT AS CSV GZIP TIMEFORMAT 'auto' DATEFORMAT 'auto' MAXERROR 0 COMPUPDATE OFF STATUPDATE OFF REGION 'us-east-1'" \
    "$(grep '^-- not run' "$T_DIR/trace.sql" | head -1)"
check "no INSERT ... VALUES left out of the trace (restricted mode inserts the same rows)" \
    grep -q '^INSERT INTO sluice_stage' "$T_DIR/trace.sql"

# 2. the next load of the table removes what the first left, and its own objects after commit
"$FAKE" gen --table petitions --rows 200 --cols 12 --out "$EX/more.csv" --seed 32 >/dev/null
python3 - "$EX/more.csv" <<'PY'
import csv, sys
p = sys.argv[1]
rows = list(csv.reader(open(p, encoding="utf-8", newline="")))
for r in rows[1:]:
    r[0] = str(int(r[0]) + 100000)
csv.writer(open(p, "w", encoding="utf-8", newline=""), lineterminator="\n").writerows(rows)
PY
run a1 "$EX/more.csv" petitions append
expect_eq "append via COPY path: exit 0" 0 "$RC"
expect_match "the earlier load's objects were removed" "$T_DIR/a1.out" \
    "removed [0-9]+ staged objects left by an earlier load under s3://stage/sluice/petitions/"
check "export + appended rows" tcheck --table petitions replace:"$EX/full.csv" append:"$EX/more.csv"
expect_eq "nothing left on S3 after the commit" "" "$(objects)"

# 3. upsert: the staged CSV carries the row order (last row per key wins)
run u1 "$EX/up.csv" petitions upsert
expect_eq "upsert via COPY path: exit 0" 0 "$RC"
check "rows replaced by key" tcheck --table petitions replace:"$EX/full.csv" append:"$EX/more.csv" upsert:"$EX/up.csv"
expect_eq "a literal \\N stays a string, '' stays ''" '|\N' "$(q "SELECT title, note FROM petitions WHERE id = '3'")"
expect_match "the upsert COPY names the sequence column" "$T_DIR/trace.sql" \
    '^-- not run .*COPY sluice_stage \("id","title","note",_sluice_seq\) FROM '
expect_eq "nothing left on S3" "" "$(objects)"

# 4. the ControlShift example through S3
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-rs-$RANDOM$RANDOM
export CONTROLSHIFT_EXPORT_HOSTS=127.0.0.1
export WAREHOUSE_URL=$RS_URL
export SLUICE_STATE=$T_DIR/cs-state.db
"$FAKE" gen --table members --rows 3000 --cols 8 --out "$EX/m1.csv" --seed 41 >/dev/null
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")
CFG=$SRC_DIR/examples/controlshift.yml
start_serve cs "$CFG"
expect_eq "full export: 202" 202 "$("$FAKE" send --to "$SERVE_URL/webhooks/controlshift" \
    --secret "$CONTROLSHIFT_WEBHOOK_SECRET" --type data.full_table_exported --table members \
    --url "$CS/exports/m1.csv" --jid rs-c1 2>>"$T_DIR/send.err")"
check "job ended" wait_jobs "$CFG" controlshift 1 60
check "members = m1" tcheck --table members replace:"$EX/m1.csv"
expect_match "the job staged to S3" "$T_DIR/serve-cs.log" "staged 3000 rows in 1 object under s3://stage/sluice/members/"
expect_eq "nothing left on S3" "" "$(objects)"
kill -TERM "$SERVE_cs_PID"
wait "$SERVE_cs_PID" || true
expect_no_match "no secret key in the log" "$T_DIR/serve-cs.log" "fake-secret-key"
finish
