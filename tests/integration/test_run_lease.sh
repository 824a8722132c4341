#!/usr/bin/env bash
# One run of a pipeline at a time: a second `sluice run` while the first is
# still going is refused with exit 75 and names the holder; when the first
# is killed, the next run takes its lease over and resumes; nothing is sent
# twice by overlapping runs (the bug: two runs of 20,000 rows sent 40,000).
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=lease-key-$RANDOM$RANDOM
export BRAZE_CONCURRENCY=2
python3 "$TOOLS/gen_users.py" --rows 3000 --seed 11 \
    --csv "$T_DIR/users.csv" --expect "$T_DIR/expected.jsonl"
# slow answers keep run A going for ~6 s (40 batches, 2 at a time, 300 ms each)
start_fake_braze braze --latency-ms 300
CFG=$SRC_DIR/examples/braze-import.yml
export BRAZE_CSV=$T_DIR/users.csv

(cd "$T_DIR" && exec "$SLUICE_BIN" run -c "$CFG" >"$T_DIR/a.out" 2>"$T_DIR/a.err") &
a_pid=$!
# handshake: A holds the lease once its first requests reach the fake
for i in $(seq 1 400); do
    n=$(json_get "$(fake_stats "$FAKE_braze_PORT")" accepted_requests 2>/dev/null || echo 0)
    [ "$n" -ge 4 ] && break
    sleep 0.05
done
sent_by_a=$(json_get "$(fake_stats "$FAKE_braze_PORT")" accepted_records)
check "run A is delivering ($sent_by_a records so far)" test "$sent_by_a" -ge 150

# Run B, same pipeline, whole file: refused (without the lease it would send
# all 3,000 rows again: the duplicate bound at the end catches that).
set +e
sluice run -c "$CFG" >"$T_DIR/b.out" 2>"$T_DIR/b.err"
rc=$?
set -e
expect_eq "the overlapping run exits 75" 75 "$rc"
expect_match "it names the pipeline and the holder's pid" "$T_DIR/b.err" \
    "pipeline braze-import is already running: process $a_pid on "
check "run A is still running" kill -0 "$a_pid"
sluice status -c "$CFG" braze-import >"$T_DIR/status.during"
expect_match "status shows who runs it" "$T_DIR/status.during" "running now: process $a_pid on "

# A dies without releasing; C takes the lease over at once (same host, the
# pid is gone) and resumes where A's checkpoint was.
kill -9 "$a_pid"
wait "$a_pid" 2>/dev/null || true
set +e
sluice run -c "$CFG" >"$T_DIR/c.out" 2>"$T_DIR/c.err"
rc=$?
set -e
expect_eq "the next run finishes" 0 "$rc"
expect_match "it took the dead run's lease over" "$T_DIR/c.err" "taking over the lease of run .*:$a_pid:"
expect_match "and resumed instead of starting over" "$T_DIR/c.err" "resuming an interrupted run at line [0-9]+"
stop_fake "$FAKE_braze_PID"
# re-sends: at most A's in-flight window (2 x concurrency batches of 75)
check "every external_id arrived; duplicates <= 300" \
    python3 "$TOOLS/compare_braze.py" "$T_DIR/expected.jsonl" "$FAKE_braze_RECORD" --max-dups 300
finish
