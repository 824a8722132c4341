#!/usr/bin/env bash
# Job retries: a download cut mid-way is retried with backoff and succeeds;
# one that keeps failing is retried until its URL would have expired, then
# marked failed with the error; `sluice retry` runs it again once the cause
# is fixed. (Short lifetimes and backoffs here; production: 6 h, 15 s.)
source "$(dirname "$0")/lib.sh"

FAKE=$FAKES_DIR/fake_controlshift
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-0f3a9c2e-$RANDOM$RANDOM
export SLUICE_STATE=$T_DIR/state.db
EX=$T_DIR/exports
mkdir -p "$EX"
"$FAKE" gen --table petitions --rows 5000 --cols 6 --out "$EX/p.csv" --seed 1
"$FAKE" gen --table events --rows 50 --cols 4 --out "$EX/events-later.csv" --seed 2
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")

CFG=$T_DIR/cs.yml
cat >"$CFG" <<YML
pipelines:
  cs:
    trigger: {type: controlshift, secret: "\${CONTROLSHIFT_WEBHOOK_SECRET}", url_lifetime: 3s}
    source: {type: csv, path: "{{url}}", compression: "{{compression}}", allow_hosts: 127.0.0.1, empty_is_null: true}
    sink: {type: sql_table, url: "$T_DIR/wh.db", table: "{{table}}", mode: "{{mode}}", key: [id], empty_as_null: false}
    max_failed: 0
    job_backoff: 300ms
    job_max_backoff: 1s
YML
start_serve main "$CFG"
send() { "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" "$@" 2>>"$T_DIR/send.err"; }

# a download cut after 20 KB, once: the retry succeeds
expect_eq "webhook: 202" 202 "$(send --type data.full_table_exported --table petitions --url "$CS/exports/p.csv?drop_after=20000&drop_times=1" --jid cut)"
check "the job ended" wait_jobs "$CFG" cs 1 30
sluice status -c "$CFG" cs >"$T_DIR/s1.txt"
expect_match "done on the second attempt" "$T_DIR/s1.txt" "#1 +done +petitions .*attempts 2 +rows 5000"
expect_match "the cut was logged as a retry" "$T_DIR/serve-main.log" "job 1 attempt 1 failed, retry in"
check "table loaded once, completely" python3 "$TOOLS/table_check.py" --db "$T_DIR/wh.db" --table petitions replace:"$EX/p.csv"

# a download that is cut every time: retried until the URL would have
# expired (url_lifetime 3s here), then failed with the last error
expect_eq "webhook for an always-cut export: 202" 202 "$(send --type data.full_table_exported --table cuts --url "$CS/exports/p.csv?drop_after=5000" --jid alwayscut)"
check "the job gave up" wait_jobs "$CFG" cs 2 30
sluice status -c "$CFG" cs >"$T_DIR/s2.txt"
expect_match "failed after several attempts" "$T_DIR/s2.txt" "#2 +failed +cuts .*attempts [2-9]"
expect_match "the error names the download" "$T_DIR/s2.txt" "error: .*p.csv.*connection lost"
expect_match "the log says why it stopped retrying" "$T_DIR/serve-main.log" "job 2 failed \\(its URL has expired\\)"

# an export that is not there: a 404 is not retried (a presigned URL does
# not start working by itself)
expect_eq "webhook for a missing export: 202" 202 "$(send --type data.full_table_exported --table events --url "$CS/exports/events.csv" --jid missing)"
check "the job ended" wait_jobs "$CFG" cs 3 30
sluice status -c "$CFG" cs >"$T_DIR/s3.txt"
expect_match "failed at once" "$T_DIR/s3.txt" "#3 +failed +events .*attempts 1 "
expect_match "the error names the download and the status" "$T_DIR/s3.txt" "error: .*events.csv.*HTTP 404"
kill -TERM "$SERVE_main_PID"; wait "$SERVE_main_PID" || true

# the export appears; sluice retry runs the failed jobs now
cp "$EX/events-later.csv" "$EX/events.csv"
set +e
sluice retry -c "$CFG" cs >"$T_DIR/retry.out" 2>&1
rc=$?
set -e
cat "$T_DIR/retry.out"
expect_eq "sluice retry: exit 1 (the always-cut job failed again)" 1 "$rc"
expect_match "retry reports the re-queued jobs" "$T_DIR/retry.out" "2 failed job\\(s\\) queued again"
sluice status -c "$CFG" cs >"$T_DIR/s4.txt"
expect_match "the fixed job is done now" "$T_DIR/s4.txt" "#3 +done +events"
expect_match "the broken one failed again (failed, or waiting to retry while its URL lives)" "$T_DIR/s4.txt" "#2 +(failed|retry) +cuts"
check "events loaded" python3 "$TOOLS/table_check.py" --db "$T_DIR/wh.db" --table events replace:"$EX/events.csv"
finish
