#!/usr/bin/env bash
# sluice retry: dead letters refused by the sink are re-sent once the cause
# is fixed; delivered ones leave the store; rows the source rejected stay.
source "$(dirname "$0")/lib.sh"

CFG=$SRC_DIR/examples/braze-import.yml
export BRAZE_API_KEY=retry-key-$RANDOM$RANDOM
{
    echo "external_id,first_name,age"
    for i in $(seq 1 200); do
        if [ $((i % 50)) = 0 ]; then echo "x-bad-$i,Bad,$i"; else echo "$i,Name$i,$i"; fi
    done
    echo "ragged,row"
} >"$T_DIR/users.csv"
export BRAZE_CSV=$T_DIR/users.csv

start_fake_braze first --reject-id x-bad
set +e
sluice run -c "$CFG" >"$T_DIR/run1.out" 2>&1
rc=$?
set -e
expect_eq "first run: exit 2" 2 "$rc"
sluice status -c "$CFG" braze-import >"$T_DIR/status1"
expect_match "5 dead letters (4 refused + 1 ragged)" "$T_DIR/status1" "dead letters: 5"
expect_match "the refusal reason is kept" "$T_DIR/status1" "Braze rejected"
stop_fake "$FAKE_first_PID"

start_fake_braze second
set +e
sluice retry -c "$CFG" braze-import >"$T_DIR/retry.out" 2>"$T_DIR/retry.err"
rc=$?
set -e
cat "$T_DIR/retry.out" "$T_DIR/retry.err"
expect_eq "retry: exit 0 (all retryable letters delivered)" 0 "$rc"
expect_match "retry says why the ragged row stays" "$T_DIR/retry.err" "cannot be retried"
stop_fake "$FAKE_second_PID"
expect_eq "the 4 refused users arrived on retry" 4 "$(grep -c '"external_id":"x-bad-' "$FAKE_second_RECORD")"
check "retried users keep their typed attributes" grep -q '"external_id":"x-bad-50","first_name":"Bad","age":50' "$FAKE_second_RECORD"
sluice status -c "$CFG" braze-import >"$T_DIR/status2"
expect_match "only the ragged row is left" "$T_DIR/status2" "dead letters: 1"

# retry again: nothing retryable left, nothing sent
start_fake_braze third
set +e
sluice retry -c "$CFG" braze-import >"$T_DIR/retry2.out" 2>&1
rc=$?
set -e
expect_eq "second retry: exit 0" 0 "$rc"
expect_eq "second retry sends nothing" 0 "$(json_get "$(fake_stats "$FAKE_third_PORT")" requests)"
finish
