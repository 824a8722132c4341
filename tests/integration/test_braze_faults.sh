#!/usr/bin/env bash
# Faults: 5% of requests answered with 500, 429 (Retry-After: 1), an HTML 502,
# or a dropped connection. Every row must still land exactly once, and every
# 429 must be waited out for at least its Retry-After.
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=fault-key-$RANDOM$RANDOM
python3 "$TOOLS/gen_users.py" --rows 20000 --seed 11 \
    --csv "$T_DIR/users.csv" --expect "$T_DIR/expected.jsonl"
start_fake_braze braze --fault-rate 0.05 --faults 500,429,html502,drop --retry-after 1 --seed 3
export BRAZE_CSV=$T_DIR/users.csv

set +e
sluice run -c "$SRC_DIR/examples/braze-import.yml" >"$T_DIR/run.out" 2>"$T_DIR/run.err"
rc=$?
set -e
cat "$T_DIR/run.out"
expect_eq "exit code 0: every record delivered despite faults" 0 "$rc"

stats=$(fake_stats "$FAKE_braze_PORT")
echo "fake: $stats"
count() { python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["status"].get(sys.argv[2],0) if sys.argv[2]!="drops" else s["drops"])' "$stats" "$1"; }
faults=$(( $(count 500) + $(count 429) + $(count 502) + $(count drops) ))
check "faults were injected (got $faults)" test "$faults" -ge 5
check "429s were injected" test "$(count 429)" -ge 1
stop_fake "$FAKE_braze_PID"

check "every row landed exactly once with its attributes" \
    python3 "$TOOLS/compare_braze.py" "$T_DIR/expected.jsonl" "$FAKE_braze_RECORD" --max-dups 0
expect_match "retries are counted in the summary" "$T_DIR/run.out" "retries [1-9]"

# every retry after a 429 waited at least Retry-After (1 s)
grep -E ': 429[ ,].*retry' "$T_DIR/run.err" >"$T_DIR/429.log" || true
n429=$(wc -l <"$T_DIR/429.log")
check "sluice logged its 429 retries ($n429)" test "$n429" -ge 1
short=$(grep -Eo 'in [0-9.]+s' "$T_DIR/429.log" | tr -dc '0-9.\n' | awk '$1 < 1.0' | wc -l)
expect_eq "no 429 retry waited less than Retry-After" 0 "$short"
expect_no_match "the API key never appears in logs" "$T_DIR/run.err" "$BRAZE_API_KEY"
finish
