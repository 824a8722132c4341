#!/usr/bin/env bash
# Crash: kill -9 a 200,000-row import three times at random moments, resume
# each time. Every external_id must arrive, and re-sends are bounded by the
# in-flight window: at most 2 x concurrency batches of 75 per crash.
source "$(dirname "$0")/lib.sh"

ROWS=${CRASH_ROWS:-200000}
CONC=8
export BRAZE_API_KEY=crash-key-$RANDOM$RANDOM
export BRAZE_CONCURRENCY=$CONC
python3 "$TOOLS/gen_users.py" --rows "$ROWS" --seed 5 \
    --csv "$T_DIR/users.csv" --expect "$T_DIR/expected.jsonl"
# a little latency so a run lasts long enough to be killed mid-flight
start_fake_braze braze --latency-ms 20
export BRAZE_CSV=$T_DIR/users.csv
CFG=$SRC_DIR/examples/braze-import.yml

kills=0
for k in 1 2 3; do
    (cd "$T_DIR" && exec "$SLUICE_BIN" run -c "$CFG" >>"$T_DIR/run.out" 2>>"$T_DIR/run.err") &
    pid=$!
    # a random moment between 0.3 s and 1.5 s into the run (a whole run takes ~7 s)
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 1.5), 2))')"
    if kill -9 "$pid" 2>/dev/null; then
        kills=$((kills + 1))
    fi
    wait "$pid" 2>/dev/null || true
    sluice status -c "$CFG" braze-import >"$T_DIR/status.$k" || true
done
check "three runs were killed mid-way ($kills)" test "$kills" -eq 3
expect_match "a killed run left a checkpoint to resume from" "$T_DIR/status.3" "checkpoint: line [0-9]+"
expect_match "the killed run is shown as interrupted" "$T_DIR/status.3" "interrupted|running"

set +e
sluice run -c "$CFG" >"$T_DIR/final.out" 2>"$T_DIR/final.err"
rc=$?
set -e
cat "$T_DIR/final.out"
expect_eq "the final run finishes with exit 0" 0 "$rc"
expect_match "the final run resumed instead of starting over" "$T_DIR/final.err" "resuming an interrupted run at line [0-9]+"
stop_fake "$FAKE_braze_PID"

bound=$((kills * 2 * CONC * 75))
check "every external_id arrived; duplicates <= $bound" \
    python3 "$TOOLS/compare_braze.py" "$T_DIR/expected.jsonl" "$FAKE_braze_RECORD" --max-dups "$bound"
finish
