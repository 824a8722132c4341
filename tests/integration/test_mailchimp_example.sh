#!/usr/bin/env bash
# examples/mailchimp-import.yml itself (not a private config), end to end:
# fake_mailchimp as Mailchimp, fake_hook answering 201 as the target.
#   - 25,000 members (25 pages): all arrive once, as {id, firstname, lastname,
#     email, status} with the e-mail lower-cased;
#   - 300 members touched: exactly those 300 arrive on the next run;
#   - members changing during a run: none is lost (that run ends partial);
#   - page 7 failing: exit 2 naming the page, cursor unchanged, the next run
#     delivers it;
#   - two overlapping runs: the second exits 75 naming the first;
#   - kill -9 mid-run: the next run takes over the lease, resumes, and every
#     member arrives; re-sends bounded by one page plus the engine's window;
#   - a wrong key: exit 1, a clear message without the key;
#   - the target refusing one member (400 for the whole array): the batch is
#     sent again in halves until that member is alone; only it is dead-lettered,
#     with the body, every other member delivered once, and `sluice retry`
#     delivers it later;
#   - at most 10 connections to Mailchimp in every run.
# Plugin-level details (request parameters, the ledger, the passes) are in
# test_http_pages.sh.
source "$(dirname "$0")/lib.sh"

EXAMPLE=$SRC_DIR/examples/mailchimp-import.yml
KEY="0123456789abcdef0123456789abcdef-us9"
LIST=a1b2c3d4e5
PIPE=mailchimp-import

# start_mc NAME ARGS...: a fake Mailchimp; sets MC_PID, MC_PORT, MAILCHIMP_API_URL
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
    export MAILCHIMP_API_URL=http://127.0.0.1:$MC_PORT
}
mc() { curl -fsS -X "$1" "http://127.0.0.1:$MC_PORT$2"; }
peak() { fake_stats "$MC_PORT" | jq -r '.peak_connections'; }
check_peak() {
    local p
    p=$(peak)
    check "$1: peak connections to Mailchimp $p <= 10" test "$p" -le 10
}

# run_example NAME [ARGS...]: sluice run on the example with state NAME.db;
# output in NAME.out, exit code in RC
run_example() {
    local name=$1
    shift
    SLUICE_STATE=$T_DIR/$name.db "$SLUICE_BIN" run -c "$EXAMPLE" "$@" >"$T_DIR/$name.out" 2>&1 &&
        RC=0 || RC=$?
}
kv() { sqlite3 "$T_DIR/$1.db" "select value from kv where key like '%http_pages/$2'" 2>/dev/null || true; }
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
# ids delivered to hook record $1 after its line $2, one per line
ids_since() { tail -n +"$(($2 + 1))" "$1" | jq -r '.[].id'; }
all_ids() { mc GET /_members | jq -r '.[].id' | sort; }

export MAILCHIMP_API_KEY=$KEY MAILCHIMP_LIST_ID=$LIST TARGET_TOKEN=target-token-1234
start_fake_hook hook --status 201
export TARGET_URL=http://127.0.0.1:$FAKE_hook_PORT/hook
REC=$FAKE_hook_RECORD

# ---------------------------------------------------------------- full, then 300
start_mc full --members 25000
expect_eq "sluice check accepts the example" 0 \
    "$("$SLUICE_BIN" check -c "$EXAMPLE" >"$T_DIR/check.out" 2>&1 && echo 0 || echo $?)"
n0=$(lines "$REC")
run_example full
expect_eq "first run exits 0" 0 "$RC"
tail -n +"$((n0 + 1))" "$REC" >"$T_DIR/full1.jsonl"
jq -c '.[]' "$T_DIR/full1.jsonl" >"$T_DIR/full1.members"
jq -r '.id' "$T_DIR/full1.members" | sort >"$T_DIR/full1.ids"
expect_eq "25,000 members arrive" 25000 "$(wc -l <"$T_DIR/full1.ids")"
check "each once, and they are the list's" cmp -s <(all_ids) "$T_DIR/full1.ids"
expect_eq "every member has exactly {id, firstname, lastname, email, status}" 0 \
    "$(jq -c 'select(keys_unsorted != ["id","firstname","lastname","email","status"])' \
        "$T_DIR/full1.members" | wc -l)"
expect_eq "e-mails are lower-case, statuses are Mailchimp's" 0 \
    "$(jq -c 'select(.email != (.email | ascii_downcase) or
        (.status | IN("subscribed","unsubscribed","cleaned","pending","transactional") | not))' \
        "$T_DIR/full1.members" | wc -l)"
# the names and e-mails are the API's: compare with what the API answers
curl -fsS -u "any:$KEY" "$MAILCHIMP_API_URL/3.0/lists/$LIST/members?count=1000&offset=3000&fields=members.id,members.email_address,members.status,members.merge_fields" |
    jq -c '.members[] | {id, firstname: .merge_fields.FNAME, lastname: .merge_fields.LNAME,
        email: (.email_address | ascii_downcase), status}' | sort >"$T_DIR/api.sample"
check "1,000 members compared with the API field by field (non-ASCII names included)" \
    test "$(sort "$T_DIR/full1.members" | comm -12 - "$T_DIR/api.sample" | wc -l)" -eq 1000
hs=$(fake_stats "$FAKE_hook_PORT")
expect_eq "every request was answered 201 (as the original target does)" \
    "$(jq '.requests' <<<"$hs")" "$(jq '.status["201"] // 0' <<<"$hs")"
check_peak "first run"
check "the cursor is set" test -n "$(kv full cursor)"

touched=$(mc POST "/_touch?n=300&seed=7" | jq -r '.[]' | sort)
sleep 1.1 # a change in the second a run starts belongs to the next run (whole-second windows)
n0=$(lines "$REC")
run_example full
expect_eq "second run exits 0" 0 "$RC"
expect_eq "exactly the 300 touched arrive" "$touched" "$(ids_since "$REC" "$n0" | sort)"
check_peak "second run"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- churn
start_mc churn --members 25000 --latency-ms 10
all_ids >"$T_DIR/start.ids"
mc POST "/_churn?per_request=3&seed=11" >/dev/null
n0=$(lines "$REC")
run_example churn
expect_eq "a run whose list changes under every page ends partial" 2 "$RC"
expect_match "saying the list kept changing" "$T_DIR/churn.out" "kept changing through"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/churn1.ids"
mc POST "/_churn?per_request=0" >/dev/null
changed=$(fake_stats "$MC_PORT" | jq '.touched')
check_peak "run under churn"
sleep 1.1
n0=$(lines "$REC")
run_example churn
expect_eq "the run after exits 0" 0 "$RC"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/churn2.ids"
expect_eq "no member lost ($changed changed during run 1)" 0 \
    "$(sort -u "$T_DIR/churn1.ids" "$T_DIR/churn2.ids" | comm -23 "$T_DIR/start.ids" - | wc -l)"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- page 7 fails
start_mc fail --members 25000 --non-json-offset 7000:1
n0=$(lines "$REC")
run_example fail
expect_eq "a run with a failed page exits 2 (partial)" 2 "$RC"
expect_match "the summary names the page and why" "$T_DIR/fail.out" \
    "1 page could not be fetched \\(offset 7000; HTTP 200 but the body is not JSON"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/fail1.ids"
expect_eq "24,000 members arrive" 24000 "$(wc -l <"$T_DIR/fail1.ids")"
expect_eq "the cursor does not move" "" "$(kv fail cursor)"
check_peak "run with a failed page"
n0=$(lines "$REC")
run_example fail
expect_eq "the next run exits 0" 0 "$RC"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/fail2.ids"
expect_eq "the missing 1,000 arrive in the next run" 1000 \
    "$(all_ids | comm -23 - "$T_DIR/fail1.ids" | comm -12 - "$T_DIR/fail2.ids" | wc -l)"
check "now the cursor moved" test -n "$(kv fail cursor)"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- overlapping runs
start_mc overlap --members 25000 --latency-ms 300
(SLUICE_STATE=$T_DIR/overlap.db exec "$SLUICE_BIN" run -c "$EXAMPLE" >"$T_DIR/overlap1.out" 2>&1) &
first=$!
for _ in $(seq 1 200); do # the probe has arrived: the lease is taken before it
    [ "$(fake_stats "$MC_PORT" | jq '.members_requests')" -ge 1 ] && break
    sleep 0.02
done
run_example overlap
expect_eq "a second run while the first runs exits 75" 75 "$RC"
expect_match "naming the first run's process" "$T_DIR/overlap.out" \
    "pipeline $PIPE is already running: process $first on "
wait "$first" && rc1=0 || rc1=$?
expect_eq "the first run is not disturbed" 0 "$rc1"
check_peak "overlapping runs"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- kill -9, take over
start_mc crash --members 25000 --latency-ms 40
n0=$(lines "$REC")
(SLUICE_STATE=$T_DIR/crash.db exec "$SLUICE_BIN" run -c "$EXAMPLE" >"$T_DIR/crash1.out" 2>&1) &
cpid=$!
for _ in $(seq 1 500); do
    [ "$(($(lines "$REC") - n0))" -ge 50 ] && break # 50 batches of 100 acknowledged
    sleep 0.01
done
kill -9 "$cpid" 2>/dev/null || true
wait "$cpid" 2>/dev/null || true
ids_since "$REC" "$n0" | sort -u >"$T_DIR/crash1.ids"
k=$(wc -l <"$T_DIR/crash1.ids")
check "the killed run delivered part ($k)" test "$k" -gt 0 -a "$k" -lt 25000
n0=$(lines "$REC")
run_example crash
expect_eq "the next run exits 0" 0 "$RC"
expect_match "it takes over the dead run's lease" "$T_DIR/crash.out" \
    "taking over the lease of run .* \\(process $cpid on this host is gone\\)"
expect_match "and resumes" "$T_DIR/crash.out" "resuming at pass 1, page"
ids_since "$REC" "$n0" | sort -u >"$T_DIR/crash2.ids"
expect_eq "together every member" 25000 "$(sort -u "$T_DIR/crash1.ids" "$T_DIR/crash2.ids" | wc -l)"
again=$(comm -12 "$T_DIR/crash1.ids" "$T_DIR/crash2.ids" | wc -l)
# re-sent: the page holding the checkpoint, read again from its start (<= 1000),
# plus batches acknowledged after the last checkpoint: at most the engine's
# window, 2 x concurrency 4 x 100 records = 800
check "re-sent after kill -9: $again <= 1000 + 800" test "$again" -le 1800
check "the cursor moved" test -n "$(kv crash cursor)"
check_peak "resumed run"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- wrong key
start_mc key --members 100
n0=$(lines "$REC")
MAILCHIMP_API_KEY=wrong-key-0000-us9 run_example key
expect_eq "a wrong key: exit 1" 1 "$RC"
expect_match "the message names the URL, the status and what Mailchimp said" "$T_DIR/key.out" \
    "/3.0/lists/$LIST/members.*HTTP 401.*API Key Invalid.*is the API key right"
expect_no_match "the key is not shown" "$T_DIR/key.out" "wrong-key-0000-us9"
expect_no_match "nor its Basic credential" "$T_DIR/key.out" \
    "$(printf 'sluice:wrong-key-0000-us9' | base64 -w0)"
expect_eq "nothing was sent" "$n0" "$(lines "$REC")"
stop_fake "$MC_PID"

# ---------------------------------------------------------------- the target refuses a member
start_mc reject --members 25000
bad=$(mc GET /_members | jq -r '.[4242] | .id + " " + (.email_address | ascii_downcase)')
bad_id=${bad%% *}
bad_email=${bad#* }
start_fake_hook picky --status 201 --reject "\"$bad_email\""
n0=$(lines "$FAKE_picky_RECORD")
TARGET_URL=http://127.0.0.1:$FAKE_picky_PORT/hook run_example reject
expect_eq "a run with a refused member ends partial" 2 "$RC"
ids_since "$FAKE_picky_RECORD" "$n0" | sort -u >"$T_DIR/reject.ids"
q() { sqlite3 "$T_DIR/reject.db" "$1"; }
ndl=$(q "select count(*) from dead_letters where pipeline = '$PIPE'")
expect_eq "only the refused member is dead-lettered (its batch was taken apart)" 1 "$ndl"
expect_eq "the refused member is among them" 1 \
    "$(q "select count(*) from dead_letters where record like '%$bad_id%'")"
expect_match "with the target's status and body" <(q "select error || ' | ' || response from dead_letters where record like '%$bad_id%'") \
    "HTTP 400.*member rejected"
expect_eq "every other member arrived" $((25000 - ndl)) "$(wc -l <"$T_DIR/reject.ids")"
expect_eq "dead letters and deliveries cover the list" 25000 \
    "$({ cat "$T_DIR/reject.ids"; q "select json_extract(record, '$.id') from dead_letters"; } | sort -u | wc -l)"
# once the target accepts the member, `sluice retry` delivers the batch
n0=$(lines "$REC")
SLUICE_STATE=$T_DIR/reject.db "$SLUICE_BIN" retry -c "$EXAMPLE" "$PIPE" >"$T_DIR/retry.out" 2>&1 &&
    rc=0 || rc=$?
expect_eq "sluice retry against the fixed target exits 0" 0 "$rc"
expect_eq "it delivers the dead-lettered members" "$ndl" "$(ids_since "$REC" "$n0" | sort -u | wc -l)"
check "the refused member among them" grep -qx "$bad_id" <(ids_since "$REC" "$n0")
expect_eq "no dead letters left" 0 "$(q "select count(*) from dead_letters where pipeline = '$PIPE'")"
stop_fake "$MC_PID"

finish
