#!/usr/bin/env bash
# The state store refuses the job-status write for a moment (a full disk;
# injected with the test hook SLUICE_FAULT=job_finish_fail:N, issue 7 item
# 2): the worker retries the write, then hands the job back to the queue on
# its own once the store accepts writes; meanwhile /healthz answers 503 with
# the reason. Afterwards nothing is left `running` and the table's next
# export is not held up.
source "$(dirname "$0")/lib.sh"

FAKE=$FAKES_DIR/fake_controlshift
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-0f3a9c2e-$RANDOM$RANDOM
EX=$T_DIR/exports
mkdir -p "$EX"
"$FAKE" gen --table petitions --rows 100 --cols 4 --out "$EX/p.csv" --seed 1 >/dev/null
"$FAKE" gen --table petitions --rows 30 --cols 4 --out "$EX/p2.csv" --seed 2 --start-id 101 >/dev/null
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")

CFG=$T_DIR/cs.yml
cat >"$CFG" <<YML
state: $T_DIR/state.db
pipelines:
  cs:
    trigger: {type: controlshift, secret: "\${CONTROLSHIFT_WEBHOOK_SECRET}"}
    source: {type: csv, path: "{{url}}", compression: "{{compression}}", allow_hosts: 127.0.0.1, empty_is_null: true}
    sink: {type: sql_table, url: "$T_DIR/wh.db", table: "{{table}}", mode: "{{mode}}", key: [id], empty_as_null: false}
    max_failed: 0
YML
# 5 tries of the outcome, then 3 of the hand-back fail: about 6 s unrecorded
export SLUICE_FAULT=job_finish_fail:8
start_serve main "$CFG"
unset SLUICE_FAULT
send() { "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" "$@" 2>>"$T_DIR/send.err"; }

expect_eq "webhook: 202" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/p.csv" --jid j1)"
saw503=0
for i in $(seq 1 100); do
    code=$(curl -s -o "$T_DIR/health.json" -w '%{http_code}' "$SERVE_URL/healthz")
    if [ "$code" = 503 ]; then
        saw503=1
        break
    fi
    sleep 0.1
done
expect_eq "/healthz: 503 while the outcome cannot be recorded" 1 "$saw503"
expect_match "/healthz says why" "$T_DIR/health.json" "cannot record job outcomes: .*database or disk is full"
check "the job ended (handed back, then run again)" wait_jobs "$CFG" cs 1 30
expect_eq "/healthz: 200 again" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$SERVE_URL/healthz")"
expect_match "the log says it went back to the queue" "$T_DIR/serve-main.log" "job 1 handed back to the queue"
sluice status -c "$CFG" cs >"$T_DIR/s1.txt"
expect_match "done on a later attempt" "$T_DIR/s1.txt" "#1 +done +petitions .*rows 100"
expect_eq "the next export of the table is not held up" 202 "$(send --type data.incremental_table_exported --table petitions --url "$CS/exports/p2.csv" --jid j2)"
check "the second job ended" wait_jobs "$CFG" cs 2 30
expect_eq "jobs: 2 done" "0 0 0 2 0" "$(job_counts "$CFG" cs)"
kill -TERM "$SERVE_main_PID"
wait "$SERVE_main_PID" || true
finish
