#!/usr/bin/env bash
# enrich (FullContact preset) against fake_fullcontact: 2,000 e-mails with a
# 202/404 mix, concurrency 20. Every e-mail is looked up exactly once (a
# queued one until its 200), 404s are marked, a second run inside the
# freshness window bills nothing, a kill -9 mid-run then a rerun bills each
# e-mail once, a refused key stops the run (exit 1) without printing it.
source "$(dirname "$0")/lib.sh"

N=${ENRICH_ROWS:-2000}
CONC=20
export FC_KEY=fc-key-$RANDOM$RANDOM
python3 - "$N" >"$T_DIR/in.csv" <<'PY'
import sys
print("email,name")
for i in range(int(sys.argv[1])):
    print(f"Person{i}@Example.org,n{i}")
print(",nobody")
print("not-an-address,bad")
PY

start_fake_hook hook
FC_PF=$T_DIR/fc.port
start_fc() {
    rm -f "$FC_PF"
    "$FAKES_DIR/fake_fullcontact" --port 0 --port-file "$FC_PF" --api-key "$FC_KEY" \
        --notfound-pct 10 --queued-pct 15 --queued-calls 2 "$@" >>"$T_DIR/fc.out" 2>>"$T_DIR/fc.err" &
    FC_PID=$!
    T_PIDS+=("$FC_PID")
    export FC_URL=http://127.0.0.1:$(wait_port_file "$FC_PF")
}
start_fc --latency-ms 5
export HOOK_URL=http://127.0.0.1:$FAKE_hook_PORT

cat >"$T_DIR/enrich.yml" <<'YML'
state: ${STATE}
pipelines:
  enrich:
    source: {type: csv, path: "${CSV}"}
    steps:
      - type: enrich
        preset: fullcontact
        url: ${FC_URL}/v3/person.enrich
        token: ${FC_KEY}
        concurrency: 20
        queued_wait: 50ms
    sink:
      type: http
      url: ${HOOK_URL}/hook
YML
CFG=$T_DIR/enrich.yml
export CSV=$T_DIR/in.csv STATE=$T_DIR/a/state.db
mkdir -p "$T_DIR/a" "$T_DIR/b" "$T_DIR/c"

stat_of() { json_get "$(fake_stats "${FC_URL##*:}")" "$1"; }
# expected outcome counts, from the fake's own view of every address
outcomes() { curl -fsS "$FC_URL/_emails" | python3 -c '
import json,sys
d=json.load(sys.stdin)
bad=[e for e,v in d.items() if v["billed"]!=(0 if v["outcome"]=="notfound" else 1)
     or v["calls"]!={"ok":1,"queued":3,"notfound":1}[v["outcome"]]]
print(len(d), sum(v["outcome"]!="notfound" for v in d.values()),
      sum(v["outcome"]=="notfound" for v in d.values()), len(bad), *bad[:3])'; }

# ---- run 1
set +e
sluice run -c "$CFG" >"$T_DIR/run1.out" 2>"$T_DIR/run1.err"
rc=$?
set -e
expect_eq "run 1 ends partial (2 rows dead-lettered)" 2 "$rc"
read -r emails billable notfound wrong rest <<<"$(outcomes)"
expect_eq "every valid e-mail reached the fake" "$N" "$emails"
expect_eq "each looked up exactly once (queued ones until their 200), none billed twice" 0 "$wrong"
expect_eq "billed calls = e-mails with a profile" "$billable" "$(stat_of billed)"
check "peak concurrency at the fake $(stat_of peak_concurrency) <= $CONC" \
    test "$(stat_of peak_concurrency)" -le "$CONC"
check "the fake saw 202s and 404s" test "$notfound" -gt 0 -a "$(stat_of requests)" -gt "$N"
read -r rows ok na <<<"$(python3 -c '
import json,sys
rows=[r for l in open(sys.argv[1]) for r in json.loads(l)]
print(len(rows), sum(1 for r in rows if r["success_at"] and r["full_name"]),
      sum(1 for r in rows if r["unavailable_at"] and not r["success_at"]))' "$FAKE_hook_RECORD")"
expect_eq "every valid e-mail delivered" "$N" "$rows"
expect_eq "profiles delivered for every 200" "$billable" "$ok"
expect_eq "404s delivered with unavailable_at" "$notfound" "$na"
sluice status -c "$CFG" enrich >"$T_DIR/status1" 2>&1 || true
expect_match "empty e-mail dead-lettered" "$T_DIR/status1" "email is empty: nothing to look up"
expect_match "malformed e-mail dead-lettered" "$T_DIR/status1" "'not-an-address' is not an e-mail address"

# ---- run 2, inside the window
billed1=$(stat_of billed)
set +e
sluice run --again -c "$CFG" >"$T_DIR/run2.out" 2>"$T_DIR/run2.err"
set -e
expect_eq "a second run inside the window bills nothing" "$billed1" "$(stat_of billed)"
expect_match "the second run reused the kept profiles" "$T_DIR/run2.err" "$billable kept profiles reused"

# ---- kill -9 mid-run, then rerun: billed calls = distinct e-mails
stop_fake "$FC_PID"
start_fc --latency-ms 60 # a run of ~6 s: the kill lands mid-way even on a busy machine
export STATE=$T_DIR/b/state.db
(cd "$T_DIR" && exec "$SLUICE_BIN" run -c "$CFG" >"$T_DIR/crash.out" 2>"$T_DIR/crash.err") &
pid=$!
for i in $(seq 1 400); do
    [ "$(stat_of billed)" -ge $((N / 3)) ] && break
    sleep 0.02
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
billed_at_kill=$(stat_of billed)
check "the run was killed mid-way ($billed_at_kill of $billable billed)" \
    test "$billed_at_kill" -lt "$billable"
set +e
sluice run -c "$CFG" >"$T_DIR/rerun.out" 2>"$T_DIR/rerun.err"
set -e
read -r emails billable2 notfound2 wrong rest <<<"$(outcomes)"
twice=$(stat_of billed_twice)
# FullContact bills when it answers: a 200 still on the wire when the
# process dies is paid and lost, and the rerun pays for it again. Every
# answer that reached the process is in the ledger and never paid again,
# so the only double payments are those in flight at the kill (<= CONC).
expect_eq "after kill -9 + rerun: billed calls = distinct e-mails + those in flight at the kill" \
    "$((billable2 + twice))" "$(stat_of billed)"
check "after kill -9 + rerun: at most one window billed twice ($twice <= $CONC)" \
    test "$twice" -le "$CONC"
# the ledger lives in the state store, under the preset's shared scope
expect_eq "the ledger holds each paid e-mail once" "$billable2" \
    "$(sqlite3 "$STATE" "SELECT count(*) FROM kv WHERE pipeline = 'ledger:fullcontact'")"
expect_eq "each entry is the time it was paid and the profile" 0 \
    "$(sqlite3 "$STATE" "SELECT count(*) FROM kv WHERE pipeline = 'ledger:fullcontact' AND (json_type(value, '$.t') NOT IN ('real', 'integer') OR json_type(value, '$.f') != 'object')")"
read -r rows ok na <<<"$(python3 -c '
import json,sys
seen={}
for l in open(sys.argv[1]):
    for r in json.loads(l):
        seen[r["email_address"]]=r
print(len(seen), sum(1 for r in seen.values() if r["success_at"]), 0)' "$FAKE_hook_RECORD")"
expect_eq "after the rerun every e-mail was delivered" "$N" "$rows"

# ---- a refused key: exit 1, nothing billed after, key never printed
export STATE=$T_DIR/c/state.db
billed_before=$(stat_of billed)
req_before=$(stat_of requests)
good_key=$FC_KEY
export FC_KEY=wrong-key-$RANDOM$RANDOM
set +e
sluice run -c "$CFG" >"$T_DIR/bad.out" 2>"$T_DIR/bad.err"
rc=$?
set -e
expect_eq "a refused key stops the run with exit 1" 1 "$rc"
expect_eq "nothing billed after the refusal" "$billed_before" "$(stat_of billed)"
sent=$(($(stat_of requests) - req_before))
check "at most one window of requests was sent with the refused key ($sent)" test "$sent" -le "$CONC"
expect_match "the error says the key was refused" "$T_DIR/bad.err" "refused the API key: 401"
cat "$T_DIR/bad.out" "$T_DIR/bad.err" >"$T_DIR/bad.all"
expect_no_match "the refused key is never printed" "$T_DIR/bad.all" "$FC_KEY"
expect_no_match "nor the good one" "$T_DIR/bad.all" "$good_key"
finish
