#!/usr/bin/env bash
# http_pages source against fake_mailchimp through the real binary, at the
# plugin's level: what it asks the API and what it keeps in the state store
# (records posted by the http sink to fake_hook):
#   - a full pull: 25 requests, offsets k*1000, every request with the same
#     before_last_changed, the cursor is the run's start; the next run asks
#     since that cursor minus the overlap;
#   - page 7 failing: the ledger entry (offset, count, status) is kept with the
#     cursor unchanged, fetched first by the next run, then cleared;
#   - members changing during the pull: every member that did not change
#     arrives in that very run (the passes), none is lost across two runs;
#   - a wrong key stops the run on the probe: one request.
# What the Mailchimp example delivers (shape, 300 touched, kill -9, overlapping
# runs, a refused member) is in test_mailchimp_example.sh.
source "$(dirname "$0")/lib.sh"

KEY="0123456789abcdef0123456789abcdef-us9"
LIST=a1b2c3d4e5

# start_mc NAME ARGS...: fake_mailchimp; sets MC_PORT
start_mc() {
    local name=$1
    shift
    local pf=$T_DIR/$name.port
    rm -f "$pf"
    "$FAKES_DIR/fake_mailchimp" --port 0 --port-file "$pf" --api-key "$KEY" --list-id "$LIST" \
        "$@" >"$T_DIR/$name.out" 2>"$T_DIR/$name.err" &
    MC_PID=$!
    T_PIDS+=("$MC_PID")
    MC_PORT=$(wait_port_file "$pf")
}

mc() { curl -fsS -X "$1" "http://127.0.0.1:$MC_PORT$2"; }

# write_config NAME: a pipeline reading the fake, posting to the hook
write_config() {
    cat >"$T_DIR/$1.yml" <<EOF
state: $T_DIR/$1.db
pipelines:
  members:
    source:
      type: http_pages
      preset: mailchimp
      url: http://127.0.0.1:$MC_PORT/3.0/lists/$LIST/members
      api_key: \${MC_KEY}
      fields: [members.id, members.email_address, members.status, members.merge_fields,
               members.last_changed]
      retries: 2
      backoff: 20ms
      max_backoff: 100ms
    sink:
      type: http
      url: http://127.0.0.1:$FAKE_hook_PORT/hook
    batch: {records: 500}
    concurrency: 4
EOF
}

# ids delivered since line $2 of the hook's record file, one per line
ids_since() { tail -n +"$(($2 + 1))" "$1" | jq -r '.[].id'; }
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
kv() { sqlite3 "$T_DIR/$1.db" "select value from kv where key like '%http_pages/$2'" 2>/dev/null || true; }
peak() { fake_stats "$MC_PORT" | jq -r '.peak_connections'; }
export MC_KEY=$KEY

start_fake_hook hook
REC=$FAKE_hook_RECORD

# ---------------------------------------------------------------- full, then 300
start_mc full --members 25000
write_config full
n0=$(lines "$REC")
sluice run -c "$T_DIR/full.yml" >"$T_DIR/run1.out" 2>&1 && rc=0 || rc=$?
expect_eq "full pull exits 0" 0 "$rc"
sync
ids_since "$REC" "$n0" | sort >"$T_DIR/run1.ids"
expect_eq "25,000 members delivered" 25000 "$(wc -l <"$T_DIR/run1.ids")"
stats=$(fake_stats "$MC_PORT")
expect_eq "25 page requests" 25 "$(jq '[.request_log[] | select(.status == 200)] | length' <<<"$stats")"
expect_eq "offsets are k*1000" "0 1000 2000 24000" \
    "$(jq -r '[.request_log[].offset] | sort | [.[0], .[1], .[2], .[-1]] | map(tostring) | join(" ")' <<<"$stats")"
expect_eq "every page carries one before_last_changed" 1 \
    "$(jq '[.request_log[].before] | unique | map(select(. != null)) | length' <<<"$stats")"
expect_eq "no 429" 0 "$(jq '.status["429"] // 0' <<<"$stats")"
p=$(peak)
check "peak connections $p <= 10" test "$p" -le 10
cursor1=$(kv full cursor)
check "cursor set ($cursor1)" test -n "$cursor1"

mc POST "/_touch?n=300&seed=7" >/dev/null
sleep 1.1 # a change in the second a run starts belongs to the next run (whole-second windows)
n0=$(lines "$REC")
sluice run -c "$T_DIR/full.yml" >"$T_DIR/run2.out" 2>&1 && rc=0 || rc=$?
expect_eq "incremental run exits 0" 0 "$rc"
expect_eq "the incremental run's window holds the 300" 300 \
    "$(fake_stats "$MC_PORT" | jq '.request_log[-1].total_items')"
req=$(fake_stats "$MC_PORT" | jq -c '.request_log[-1]')
expect_eq "the second run asks since the first run's start minus 1s" \
    "$(python3 -c 'import sys,datetime as d; t=d.datetime.fromisoformat(sys.argv[1])-d.timedelta(seconds=1); print(t.isoformat())' "$cursor1")" \
    "$(jq -r '.since' <<<"$req" | sed 's/\.000//; s/Z$/+00:00/')"
p=$(peak)
check "peak connections $p <= 10" test "$p" -le 10
stop_fake "$MC_PID"

# ---------------------------------------------------------------- page 7 fails
start_mc fail --members 25000 --fail-offset 7000:503:3
write_config fail
n0=$(lines "$REC")
sluice run -c "$T_DIR/fail.yml" >"$T_DIR/fail1.out" 2>&1 && rc=0 || rc=$?
expect_eq "a failed page does not stop the run; it ends partial" 2 "$rc"
expect_match "the summary names the page" "$T_DIR/fail1.out" "page could not be fetched \\(offset 7000; HTTP 503"
expect_match "the failed page is logged" "$T_DIR/fail1.out" "page 7, offset 7000.*HTTP 503"
expect_eq "the cursor does not move" "" "$(kv fail cursor)"
expect_match "the failed page is kept: its window, offset, count, error, attempts" \
    <(kv fail failed_pages) '"before":"[^"]+","offset":7000,"count":1000,"error":"GET [^"]*HTTP 503[^"]*","attempts":3'
before1=$(fake_stats "$MC_PORT" | jq -r '.request_log[0].before')
mc POST /_reset_stats >/dev/null
sluice run -c "$T_DIR/fail.yml" >"$T_DIR/fail2.out" 2>&1 && rc=0 || rc=$?
expect_eq "next run exits 0" 0 "$rc"
expect_match "it says it fetches the failed page first" "$T_DIR/fail2.out" \
    "fetching 1 page that failed in an earlier run first"
# submitted first after the probe; requests go out 10 at a time, so it
# arrives within the first window (arrival order inside one is not fixed)
expect_eq "right after the probe (in the first window), with the failed run's window" "7000 $before1" \
    "$(fake_stats "$MC_PORT" | jq -r --arg b "$before1" '[.request_log[1:11][] | select(.offset == 7000 and .before == $b)][0] | "\(.offset) \(.before)"')"
check "the cursor moved" test -n "$(kv fail cursor)"
expect_eq "the ledger is cleared" "" "$(kv fail failed_pages)"
p=$(peak)
check "peak connections $p <= 10" test "$p" -le 10
stop_fake "$MC_PID"

# ---------------------------------------------------------------- sluice retry fetches the failed page
start_mc retry --members 5000 --fail-offset 3000:503:3
write_config retry
n0=$(lines "$REC")
sluice run -c "$T_DIR/retry.yml" >"$T_DIR/retry1.out" 2>&1 && rc=0 || rc=$?
expect_eq "retry case: the first run ends partial" 2 "$rc"
expect_eq "retry case: 4,000 members arrive" 4000 "$(ids_since "$REC" "$n0" | sort -u | wc -l)"
mc POST /_reset_stats >/dev/null
n0=$(lines "$REC")
sluice retry -c "$T_DIR/retry.yml" members >"$T_DIR/retry2.out" 2>&1 && rc=0 || rc=$?
expect_eq "sluice retry: exit 0" 0 "$rc"
expect_match "sluice retry: says what it fetches" "$T_DIR/retry2.out" "retry: fetching 1 page that failed"
expect_eq "sluice retry: the failed page, and nothing else" "1 3000" \
    "$(fake_stats "$MC_PORT" | jq -r '[.request_log | length, .[0].offset] | join(" ")')"
expect_eq "sluice retry: its 1,000 members arrive" 1000 "$(ids_since "$REC" "$n0" | sort -u | wc -l)"
expect_eq "sluice retry: the ledger is cleared" "" "$(kv retry failed_pages)"
expect_eq "sluice retry: the cursor stays where it was (unset): the next run reads its window" \
    "" "$(kv retry cursor)"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- churn
start_mc churn --members 25000 --latency-ms 20
write_config churn
mc GET /_members | jq -r '.[] | "\(.id) \(.last_changed)"' | sort >"$T_DIR/start.lc"
cut -d' ' -f1 "$T_DIR/start.lc" >"$T_DIR/start.ids"
mc POST "/_churn?per_request=3&seed=11" >/dev/null
n0=$(lines "$REC")
sluice run -c "$T_DIR/churn.yml" >"$T_DIR/churn1.out" 2>&1 && rc=0 || rc=$?
expect_eq "a run whose list kept changing through every pass ends partial" 2 "$rc"
expect_match "and says why" "$T_DIR/churn1.out" "kept changing through 4 passes"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/churn1.ids"
mc POST "/_churn?per_request=0" >/dev/null
changed=$(fake_stats "$MC_PORT" | jq '.touched')
sleep 1.1
n0=$(lines "$REC")
sluice run -c "$T_DIR/churn.yml" >"$T_DIR/churn2.out" 2>&1 && rc=0 || rc=$?
expect_eq "the run after exits 0" 0 "$rc"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/churn2.ids"
missing=$(sort -u "$T_DIR/churn1.ids" "$T_DIR/churn2.ids" | comm -23 "$T_DIR/start.ids" - | wc -l)
expect_eq "no member lost ($changed changed during run 1; run 1 sent $(wc -l <"$T_DIR/churn1.ids"), run 2 $(wc -l <"$T_DIR/churn2.ids"))" 0 "$missing"
mc GET /_members | jq -r '.[] | "\(.id) \(.last_changed)"' | sort >"$T_DIR/end.lc"
unchanged_missing=$(comm -12 "$T_DIR/start.lc" "$T_DIR/end.lc" | cut -d' ' -f1 |
    comm -23 - "$T_DIR/churn1.ids" | wc -l)
expect_eq "every member that did not change arrived in run 1" 0 "$unchanged_missing"
p=$(peak)
check "peak connections $p <= 10" test "$p" -le 10
stop_fake "$MC_PID"

# ---------------------------------------------------------------- wrong key
start_mc key --members 10
write_config key
MC_KEY=wrong-key-us9 sluice run -c "$T_DIR/key.yml" >"$T_DIR/key.out" 2>&1 && rc=0 || rc=$?
expect_eq "a wrong key fails the run" 1 "$rc"
expect_match "the message names the URL and what the API said" "$T_DIR/key.out" \
    "/3.0/lists/$LIST/members.*HTTP 401.*API Key Invalid"
expect_no_match "the key is not shown" "$T_DIR/key.out" "wrong-key-us9"
expect_eq "one request: the probe" 1 "$(fake_stats "$MC_PORT" | jq '.requests')"
stop_fake "$MC_PID"

finish
