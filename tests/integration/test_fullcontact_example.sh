#!/usr/bin/env bash
# examples/fullcontact-enrich.yml, unchanged, against a real PostgreSQL
# (tests/tools/pg.sh), fake_fullcontact (202/404 mix, latency) and
# fake_stitch: a view of 10,000 e-mails plus a NULL and a malformed one.
# Every e-mail is looked up exactly once (a queued one until its 200), 404s
# are marked (unavailable_at), the profiles land in Stitch; a second run
# bills nothing; the table pipeline (upsert on email_address) bills nothing
# either and holds the same profiles as Stitch, row by row; kill -9 mid-run
# then a rerun: billed calls = distinct e-mails + at most the lookups in
# flight at the kill (<= concurrency, docs/steps/enrich.md).
source "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"
trap 'pg_stop; t_cleanup' EXIT

N=${ENRICH_ROWS:-10000}
CONC=20
EXAMPLE=$(realpath "$SRC_DIR/examples/fullcontact-enrich.yml")
pg_start
export WAREHOUSE_URL="postgres://postgres:sekret@127.0.0.1:$PGPORT/postgres"
export FULLCONTACT_API_KEY=fc-key-$RANDOM$RANDOM STITCH_TOKEN=stitch-token-$RANDOM$RANDOM
export FULLCONTACT_CONCURRENCY=$CONC FULLCONTACT_QUEUED_WAIT=20ms
export SLUICE_STATE=$T_DIR/a/state.db
mkdir -p "$T_DIR/a" "$T_DIR/b"
cd "$T_DIR"

psql -X -q -v ON_ERROR_STOP=1 -v n="$N" <<'SQL'
CREATE TABLE people (id int PRIMARY KEY, email text, name text);
INSERT INTO people SELECT i, 'Person' || i || '@Example.org', 'n' || i FROM generate_series(1, :n) i;
INSERT INTO people VALUES (:n + 1, NULL, 'nobody'), (:n + 2, 'not-an-address', 'bad');
CREATE VIEW emails_to_enrich AS SELECT email, name FROM people;
-- a primary key (not needed by the upsert; checks one row per e-mail); other columns are added by the sink
CREATE TABLE fullcontact_profiles (email_address text PRIMARY KEY);
SQL

FC_PF=$T_DIR/fc.port
start_fc() {
    rm -f "$FC_PF"
    "$FAKES_DIR/fake_fullcontact" --port 0 --port-file "$FC_PF" --api-key "$FULLCONTACT_API_KEY" \
        --notfound-pct 10 --queued-pct 15 --queued-calls 2 "$@" >>"$T_DIR/fc.out" 2>>"$T_DIR/fc.err" &
    FC_PID=$!
    T_PIDS+=("$FC_PID")
    export FULLCONTACT_API_URL=http://127.0.0.1:$(wait_port_file "$FC_PF")
}
start_fc --latency-ms 5
start_fake_stitch st

stat_of() { json_get "$(fake_stats "${FULLCONTACT_API_URL##*:}")" "$1"; }
# the fake's own view of every address: count, billable, 404s, wrong ones
outcomes() { curl -fsS "$FULLCONTACT_API_URL/_emails" | python3 -c '
import json,sys
d=json.load(sys.stdin)
bad=[e for e,v in d.items() if v["billed"]!=(0 if v["outcome"]=="notfound" else 1)
     or v["calls"]!={"ok":1,"queued":3,"notfound":1}[v["outcome"]]]
print(len(d), sum(v["outcome"]!="notfound" for v in d.values()),
      sum(v["outcome"]=="notfound" for v in d.values()), len(bad), *bad[:3])'; }
stitch_rows() { curl -fsS "$STITCH_API_URL/_tables/fullcontact_profiles" >"$1"; }

# ---- run 1: the Stitch pipeline
rc=0
sluice run -c "$EXAMPLE" fullcontact-stitch >run1.out 2>run1.err || rc=$?
expect_eq "run 1 ends partial (the NULL and the malformed e-mail dead-lettered)" 2 "$rc"
read -r emails billable notfound wrong rest <<<"$(outcomes)"
expect_eq "every valid e-mail reached FullContact" "$N" "$emails"
expect_eq "each looked up exactly once (queued ones until their 200), none billed twice" 0 "$wrong"
expect_eq "billed calls = e-mails with a profile" "$billable" "$(stat_of billed)"
check "peak concurrency at FullContact $(stat_of peak_concurrency) <= $CONC" \
    test "$(stat_of peak_concurrency)" -le "$CONC"
check "FullContact answered 202s and 404s ($notfound 404s, $(stat_of requests) requests)" \
    test "$notfound" -gt 0 -a "$(stat_of requests)" -gt "$N"
stitch_rows st1.json
read -r rows ok na <<<"$(python3 -c '
import json,sys
rows=[r["data"] for r in json.load(open(sys.argv[1]))]
print(len(rows), sum(1 for r in rows if r["success_at"] and r["full_name"] and not r["unavailable_at"]),
      sum(1 for r in rows if r["unavailable_at"] and not r["success_at"] and r["full_name"] is None))' st1.json)"
expect_eq "every valid e-mail landed in Stitch" "$N" "$rows"
expect_eq "a profile in Stitch for every 200" "$billable" "$ok"
expect_eq "404s in Stitch with unavailable_at, no profile" "$notfound" "$na"
expect_eq "Stitch refused nothing" 0 "$(json_get "$(fake_stats "$FAKE_st_PORT")" rejected_requests)"
sluice status -c "$EXAMPLE" fullcontact-stitch >status1 2>&1 || true
expect_match "the NULL e-mail is dead-lettered" status1 "email is .*nothing to look up"
expect_match "the malformed e-mail is dead-lettered" status1 "'not-an-address' is not an e-mail address"
expect_no_match "no key or token printed" <(cat run1.out run1.err status1) \
    "$FULLCONTACT_API_KEY|$STITCH_TOKEN|sekret"

# ---- run 2, inside the freshness window: nothing billed
billed1=$(stat_of billed)
rc=0
sluice run --again -c "$EXAMPLE" fullcontact-stitch >run2.out 2>run2.err || rc=$?
expect_eq "run 2 ends partial too" 2 "$rc"
expect_eq "a second run inside the window bills nothing" "$billed1" "$(stat_of billed)"
expect_match "the second run reused the kept profiles" run2.err "$billable kept profiles reused"

# ---- the table pipeline: same ledger, nothing billed, same profiles
rc=0
sluice run -c "$EXAMPLE" fullcontact-table >table.out 2>table.err || rc=$?
expect_eq "the table pipeline ends partial (the same 2 dead letters)" 2 "$rc"
expect_eq "the table pipeline bills nothing (shared ledger)" "$billed1" "$(stat_of billed)"
stitch_rows st2.json
psql -X -q -At -c "SELECT coalesce(json_agg(t), '[]') FROM fullcontact_profiles t" >table.json
diff=$(python3 - st2.json table.json <<'PY'
import json, sys
st = {r["data"]["email_address"]: r["data"] for r in json.load(open(sys.argv[1]))}
tb = {r["email_address"]: r for r in json.load(open(sys.argv[2]))}
bad = []
if set(st) != set(tb):
    bad.append("keys differ: %d in Stitch, %d in the table, %d common" % (len(st), len(tb), len(set(st) & set(tb))))
def norm(v):  # the table's columns are text: JSON values are stored as JSON text
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            pass
    return v
profile = ["full_name", "age_range", "gender", "location", "title", "organization", "twitter",
           "linkedin", "photos", "organizations", "social_profiles", "email", "name", "success_at"]
for k in sorted(set(st) & set(tb)):
    s, t = st[k], tb[k]
    for c in profile:
        if norm(t.get(c)) != s.get(c):
            bad.append("%s.%s: Stitch %r, table %r" % (k, c, s.get(c), t.get(c)))
    if (t.get("unavailable_at") is None) != (s.get("unavailable_at") is None):
        bad.append("%s.unavailable_at: Stitch %r, table %r" % (k, s.get("unavailable_at"), t.get("unavailable_at")))
print(len(bad), *bad[:3], sep="\n")
PY
)
expect_eq "the table holds the same rows and profiles as Stitch, row by row" 0 "$diff"
expect_eq "one row per e-mail in the table" "$N" "$(psql -X -At -c 'SELECT count(DISTINCT email_address) FROM fullcontact_profiles')"

# ---- kill -9 mid-run, then rerun: billed calls = distinct e-mails (+ in flight)
stop_fake "$FC_PID"
start_fc --latency-ms 20 # ~10 s for the whole view: the kill lands mid-way
start_fake_stitch st3
export SLUICE_STATE=$T_DIR/b/state.db
(cd "$T_DIR" && exec "$SLUICE_BIN" run -c "$EXAMPLE" fullcontact-stitch >crash.out 2>crash.err) &
pid=$!
for _ in $(seq 1 1000); do
    [ "$(stat_of billed)" -ge $((N / 3)) ] && break
    sleep 0.02
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
billed_at_kill=$(stat_of billed)
check "the run was killed mid-way ($billed_at_kill of $billable billed)" \
    test "$billed_at_kill" -lt "$billable"
rc=0
sluice run -c "$EXAMPLE" fullcontact-stitch >rerun.out 2>rerun.err || rc=$?
expect_eq "the rerun ends partial (2 dead letters)" 2 "$rc"
read -r emails billable2 notfound2 wrong rest <<<"$(outcomes)"
twice=$(stat_of billed_twice)
expect_eq "after kill -9 + rerun: billed calls = distinct e-mails + those in flight at the kill" \
    "$((billable2 + twice))" "$(stat_of billed)"
check "after kill -9 + rerun: at most one window billed twice ($twice <= $CONC)" \
    test "$twice" -le "$CONC"
expect_eq "the ledger in the state store holds each paid e-mail once" "$billable2" \
    "$(sqlite3 "$SLUICE_STATE" "SELECT count(*) FROM kv WHERE pipeline = 'ledger:fullcontact'")"
stitch_rows st3.json
expect_eq "after the rerun every e-mail is in Stitch with its outcome" "$N $billable2" \
    "$(python3 -c '
import json,sys
rows=[r["data"] for r in json.load(open(sys.argv[1]))]
print(len(rows), sum(1 for r in rows if r["success_at"]))' st3.json)"
finish
