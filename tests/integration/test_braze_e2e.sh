#!/usr/bin/env bash
# End to end: a 10,000-row CSV full of awkward cases -> examples/braze-import.yml
# -> fake Braze. Every user's attributes must arrive exactly as the importer's
# rules say, JSON types included; bad rows are dead-lettered with their line.
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=test-key-$RANDOM$RANDOM
python3 "$TOOLS/gen_users.py" --rows 10000 --seed 7 --bad \
    --csv "$T_DIR/users.csv" --expect "$T_DIR/expected.jsonl"
# ids containing 7777 are refused one by one by the fake (201 with errors)
start_fake_braze braze --reject-id 7777
start_fake_hook hook
export BRAZE_CSV=$T_DIR/users.csv
export SLACK_WEBHOOK_URL=http://127.0.0.1:$FAKE_hook_PORT/hook

set +e
sluice run -c "$SRC_DIR/examples/braze-import.yml" >"$T_DIR/run.out" 2>"$T_DIR/run.err"
rc=$?
set -e
cat "$T_DIR/run.out"
expect_eq "exit code 2: finished, some records dead-lettered" 2 "$rc"

stats=$(fake_stats "$FAKE_braze_PORT")
expect_eq "no request was ever refused as a whole" 0 \
    "$(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["status"]; print(sum(v for k,v in s.items() if k!="201"))' "$stats")"
expect_eq "peak requests within concurrency 8" 1 \
    "$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["peak_concurrency"] <= 8))' "$stats")"
stop_fake "$FAKE_braze_PID"
stop_fake "$FAKE_hook_PID"

rejected=$(grep -o '"external_id": "[^"]*7777[^"]*"' "$T_DIR/expected.jsonl" | sed 's/.*: "//; s/"$//' | paste -sd, -)
check "every user arrived with exactly the expected attributes and types" \
    python3 "$TOOLS/compare_braze.py" "$T_DIR/expected.jsonl" "$FAKE_braze_RECORD" --exclude "$rejected"

nbad=$(wc -l <"$T_DIR/expected.jsonl.bad")
nrej=$(echo "$rejected" | tr , '\n' | grep -c . || true)
expect_match "summary counts dead letters" "$T_DIR/run.out" "dead-lettered $((nbad + nrej))( |$)"
expect_match "skipped rows with no attributes are counted" "$T_DIR/run.out" "skipped [1-9]"

# dead letters: each ragged row with its line number, and the refused ids
sluice status -c "$SRC_DIR/examples/braze-import.yml" braze-import >"$T_DIR/status.out"
first_bad=$(head -1 "$T_DIR/expected.jsonl.bad")
expect_match "status lists the ragged row with its line" "$T_DIR/status.out" \
    "line $first_bad .*users.csv:$first_bad: row has 10 fields, expected 11"
expect_match "status shows the dead-letter count" "$T_DIR/status.out" "dead letters: $((nbad + nrej))"
expect_match "status shows the run" "$T_DIR/status.out" "partial"
expect_no_match "the API key never appears in status" "$T_DIR/status.out" "$BRAZE_API_KEY"
expect_no_match "the API key never appears in logs" "$T_DIR/run.err" "$BRAZE_API_KEY"
if command -v sqlite3 >/dev/null; then
    check "the API key is nowhere in the state store" \
        bash -c "! grep -a -q '$BRAZE_API_KEY' '$T_DIR/.sluice/state.db'"
fi

# the summary notification: the original's fileName, success, usersProcessed
sent=$(grep -o 'sent [0-9]*' "$T_DIR/run.out" | head -1 | cut -d' ' -f2)
summary=$(tail -1 "$FAKE_hook_RECORD")
expect_eq "summary fileName" "$BRAZE_CSV" "$(json_get "$summary" fileName)"
expect_eq "summary success is false when rows were dead-lettered" "False" "$(json_get "$summary" success)"
expect_eq "summary usersProcessed = records sent" "$sent" "$(json_get "$summary" usersProcessed)"

# nothing to resume after a finished run: the checkpoint is gone
expect_no_match "no checkpoint left after a finished run" "$T_DIR/status.out" "checkpoint:"

finish
