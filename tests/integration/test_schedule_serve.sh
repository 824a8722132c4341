#!/usr/bin/env bash
# Scheduled runs under `sluice serve`: runs happen at their slots; a run that
# is still going when the next slot comes is not stacked (the slot is skipped
# and counted); the next run shows in status and /metrics; slots missed while
# no server ran are run once at start; a failed scheduled run notifies.
# Waits poll status, metrics or logs against a deadline; the only waits for
# the clock are where wall time itself must pass (slots being missed).
source "$(dirname "$0")/lib.sh"

PY=python3

# metric NAME{LABELS}: its value from /metrics, or 0
metric() {
    curl -fsS "$SERVE_URL/metrics" 2>/dev/null | awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }'
}

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll until the command succeeds
wait_for() {
    local what=$1 t=$2 i
    shift 2
    for i in $(seq 1 $((t * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    not_ok "timed out after ${t}s waiting for: $what"
    return 1
}

# sjson CFG PIPELINE EXPR: a Python expression over status --json's pipeline p
sjson() {
    sluice status -c "$1" "$2" --json 2>/dev/null |
        $PY -c 'import json,sys; p=json.load(sys.stdin)["pipelines"][0]; print(eval(sys.argv[1]))' "$3"
}

ge() { [ "$(eval "$2")" -ge "$1" ]; }

printf 'email,name\na@example.org,A\nb@example.org,B\nc@example.org,C\n' >"$T_DIR/in.csv"

# --- check: a bad schedule is a config error with its position --------------
cat >"$T_DIR/bad.yml" <<YML
pipelines:
  p:
    source: {type: csv, path: in.csv}
    sink: {type: http, url: "http://127.0.0.1:9/hook"}
    schedule: "*/15 * * * mon-fry"
YML
set +e
sluice check -c "$T_DIR/bad.yml" >"$T_DIR/bad.out" 2>&1
rc=$?
set -e
expect_eq "check: a bad schedule exits 78" 78 "$rc"
expect_match "check: file:line:col, the field and what was found" "$T_DIR/bad.out" \
    'bad.yml:5:15: pipelines.p.schedule: invalid schedule .*day-of-week field: found "mon-fry"'

# --- runs happen; a failed one notifies; next run in status and metrics -----
start_fake_hook sink
start_fake_hook down --status 500
start_fake_hook notif
cat >"$T_DIR/a.yml" <<YML
pipelines:
  tick:
    schedule: every 1s
    source: {type: csv, path: "$T_DIR/in.csv"}
    sink: {type: http, url: "http://127.0.0.1:$FAKE_sink_PORT/hook"}
  failing:
    schedule: every 1s
    source: {type: csv, path: "$T_DIR/in.csv"}
    sink: {type: http, url: "http://127.0.0.1:$FAKE_down_PORT/hook"}
    retry: {max_attempts: 1}
    notify: [{url: "http://127.0.0.1:$FAKE_notif_PORT/hook", format: json, on: failure}]
YML
start_serve a "$T_DIR/a.yml"
wait_for "two scheduled runs of tick" 20 ge 2 "sjson $T_DIR/a.yml tick 'sum(r[\"status\"] in (\"ok\", \"skipped\") for r in p[\"runs\"])'" &&
    ok "tick ran at least twice on its own"
# the file did not change: the first run delivered it, the later ones had
# nothing to do (an input already delivered is not sent again)
recs=$($PY -c 'import json,sys; print(sum(len(json.loads(l)) for l in open(sys.argv[1])))' "$FAKE_sink_RECORD")
expect_eq "the sink received the file's 3 records once" 3 "$recs"
check "the later runs are recorded as skipped" [ "$(sjson "$T_DIR/a.yml" tick 'sum(r["status"] == "skipped" for r in p["runs"])')" -ge 1 ]
now=$(date +%s)
next=$(sjson "$T_DIR/a.yml" tick 'p["schedule"]["next_run"]')
check "status --json: next_run is within 2s of now ($next vs $now)" \
    [ "$next" -ge $((now - 1)) -a "$next" -le $((now + 2)) ]
sluice status -c "$T_DIR/a.yml" tick >"$T_DIR/status.txt"
expect_match "status: the schedule and its next run" "$T_DIR/status.txt" \
    'next run: [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} \+00:00 \([0-9]+\) under sluice serve'
g=$(metric 'sluice_schedule_next_run_timestamp_seconds{pipeline="tick"}')
check "/metrics: next run gauge is a time near now ($g)" [ "${g%.*}" -ge $((now - 2)) -a "${g%.*}" -le $((now + 3)) ]
wait_for "a failure notification" 20 test -s "$FAKE_notif_RECORD" &&
    ok "a failed scheduled run notified"
expect_match "the notification is about the failing pipeline" "$FAKE_notif_RECORD" '"pipeline": *"failing"'
check "failed runs counted" [ "$(metric 'sluice_scheduled_runs_total{pipeline="failing",reason="slot",result="failed"}')" -ge 1 ]
expect_match "the log says the scheduled run failed" "$T_DIR/serve-a.log" '\[failing\] scheduled run \(slot .*\) failed'

kill -TERM "$SERVE_a_PID"
wait "$SERVE_a_PID" && rc=0 || rc=$?
expect_eq "serve exits 0 on SIGTERM" 0 "$rc"

# --- missed slots run once at start -----------------------------------------
last=$(sjson "$T_DIR/a.yml" tick 'p["schedule"]["last_slot"]')
check "the last slot run is recorded ($last)" [ "$last" -gt 0 ]
# three slots must pass with no server: wall time itself is what is waited for
while [ "$(date +%s)" -lt $((last + 4)) ]; do sleep 0.2; done
expect_eq "status --json: a missed slot is caught up at start" True \
    "$(sjson "$T_DIR/a.yml" tick 'p["schedule"]["catch_up"]')"
sluice status -c "$T_DIR/a.yml" tick >"$T_DIR/status2.txt"
expect_match "status: next run as soon as serve runs" "$T_DIR/status2.txt" 'next run: as soon as sluice serve runs'
runs_before=$(sjson "$T_DIR/a.yml" tick 'len([r for r in p["runs"]])')
start_serve a2 "$T_DIR/a.yml"
wait_for "the catch-up run" 10 ge 1 "metric 'sluice_scheduled_runs_total{pipeline=\"tick\",reason=\"catch-up\",result=\"skipped\"}'" &&
    ok "one catch-up run at start"
wait_for "a regular slot after the catch-up" 10 ge 2 "metric 'sluice_scheduled_runs_total{pipeline=\"tick\",reason=\"slot\",result=\"skipped\"}'"
expect_eq "exactly one catch-up run although several slots were missed" 1 \
    "$(metric 'sluice_scheduled_runs_total{pipeline="tick",reason="catch-up",result="skipped"}')"
expect_match "the log counts the missed slots" "$T_DIR/serve-a2.log" \
    '\[tick\] ([3-9]|[1-9][0-9]+) scheduled slot\(s\) missed while no server was running .*running once now'
kill -TERM "$SERVE_a2_PID"
wait "$SERVE_a2_PID" || true

# --- a slow run is not stacked ------------------------------------------------
# The source is a FIFO: the run cannot finish until the test writes it.
mkfifo "$T_DIR/slow.csv"
cat >"$T_DIR/b.yml" <<YML
pipelines:
  slow:
    schedule: every 1s
    source: {type: csv, path: "$T_DIR/slow.csv"}
    sink: {type: http, url: "http://127.0.0.1:$FAKE_sink_PORT/hook"}
YML
start_serve b "$T_DIR/b.yml"
wait_for "the slow run to start" 10 grep -q 'scheduled run (slot .*) started' "$T_DIR/serve-b.log"
started=$(date +%s)
while [ "$(date +%s)" -lt $((started + 4)) ]; do sleep 0.2; done # three slots come due
n_started=$(grep -c 'scheduled run (slot .*) started' "$T_DIR/serve-b.log" || true)
expect_eq "no second run started while the first is going" 1 "$n_started"
# (the run is blocked opening its input, so it may not be in the history yet)
expect_eq "status: no run has finished" True \
    "$(sjson "$T_DIR/b.yml" slow 'len(p["runs"]) <= 1 and all(r["status"] == "running" for r in p["runs"])')"
# release the run, then put a plain file in place for the next slots
cp "$T_DIR/in.csv" "$T_DIR/next.csv"
cat "$T_DIR/in.csv" >"$T_DIR/slow.csv"
mv "$T_DIR/next.csv" "$T_DIR/slow.csv"
wait_for "the slow run to end" 10 ge 1 "metric 'sluice_scheduled_runs_total{pipeline=\"slow\",reason=\"slot\",result=\"ok\"}'"
sk=$(metric 'sluice_schedule_slots_skipped_total{pipeline="slow"}')
check "the slots that came due during the run were skipped and counted ($sk >= 3)" [ "${sk%.*}" -ge 3 ]
expect_match "the log says slots were skipped" "$T_DIR/serve-b.log" \
    '\[slow\] [0-9]+ scheduled slot\(s\) skipped: the previous run was still going'
# the same file again: the next slot runs and finds nothing to do
wait_for "the next slot runs normally" 10 ge 1 "metric 'sluice_scheduled_runs_total{pipeline=\"slow\",reason=\"slot\",result=\"skipped\"}'" &&
    ok "scheduling continues after a slow run"
# runs never overlap
check "no two runs overlap in time" $PY -c '
import json, subprocess, sys
doc = json.loads(sys.stdin.read())
runs = sorted(doc["pipelines"][0]["runs"], key=lambda r: r["started_at"])
for a, b in zip(runs, runs[1:]):
    if a["finished_at"] == 0 or b["started_at"] < a["finished_at"]:
        sys.exit("overlap: %r %r" % (a, b))
' < <(sluice status -c "$T_DIR/b.yml" slow --json)
kill -TERM "$SERVE_b_PID"
wait "$SERVE_b_PID" && rc=0 || rc=$?
expect_eq "serve b exits 0 on SIGTERM" 0 "$rc"

# --- a run elsewhere holds the lease: scheduled slots are skipped as locked --
rm -f "$T_DIR/slow.csv"
mkfifo "$T_DIR/slow.csv"
(cd "$T_DIR" && exec "$SLUICE_BIN" run -c "$T_DIR/b.yml" slow >"$T_DIR/manual.out" 2>&1) &
manual=$!
T_PIDS+=("$manual")
# the manual run holds the lease while it waits for its input
holds_lease() { sluice status -c "$T_DIR/b.yml" slow | grep -q 'running now: process'; }
wait_for "the manual run's lease" 10 holds_lease
start_serve c "$T_DIR/b.yml"
wait_for "a scheduled slot refused by the lease" 10 ge 1 "metric 'sluice_scheduled_runs_total{pipeline=\"slow\",reason=\"slot\",result=\"locked\"}'" &&
    ok "a scheduled run while another run holds the lease is skipped as locked"
expect_match "the log names the holder" "$T_DIR/serve-c.log" \
    '\[slow\] scheduled run \(slot .*\) skipped: another run of the pipeline holds its lease'
cp "$T_DIR/in.csv" "$T_DIR/next.csv"
cat "$T_DIR/in.csv" >"$T_DIR/slow.csv"
mv "$T_DIR/next.csv" "$T_DIR/slow.csv"
wait "$manual" && rc=0 || rc=$?
expect_eq "the manual run finished" 0 "$rc"
wait_for "a scheduled run once the lease is free" 10 ge 1 "metric 'sluice_scheduled_runs_total{pipeline=\"slow\",reason=\"slot\",result=\"skipped\"}'" &&
    ok "scheduled runs resume once the lease is free"
kill -TERM "$SERVE_c_PID"
wait "$SERVE_c_PID" && rc=0 || rc=$?
expect_eq "serve c exits 0 on SIGTERM" 0 "$rc"
finish
