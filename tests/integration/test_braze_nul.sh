#!/usr/bin/env bash
# A NUL byte in one cell costs that row only: Braze refuses a request that
# holds \u0000 as a whole, so the row is dead-lettered with its line before
# the request and the other users of its batch (and of the file) arrive.
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=nul-key-$RANDOM$RANDOM
{
    printf 'external_id,first_name,city\n'
    for i in $(seq 1 100); do
        if [ "$i" = 40 ]; then
            printf 'u%s,Ann\0e,Paris\n' "$i" # line 41, unquoted
        elif [ "$i" = 41 ]; then
            printf 'u%s,Bo,"Ly\0on"\n' "$i" # line 42, quoted
        else
            printf 'u%s,Name %s,City\n' "$i" "$i"
        fi
    done
} >"$T_DIR/users.csv"
start_fake_braze braze
export BRAZE_CSV=$T_DIR/users.csv
set +e
sluice run -c "$SRC_DIR/examples/braze-import.yml" >"$T_DIR/run.out" 2>"$T_DIR/run.err"
rc=$?
set -e
stats=$(fake_stats "$FAKE_braze_PORT")
stop_fake "$FAKE_braze_PID"
expect_eq "exit 2: finished, two rows dead-lettered" 2 "$rc"
expect_eq "Braze refused no request" 0 \
    "$(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["status"]; print(sum(v for k,v in s.items() if k!="201"))' "$stats")"
expect_eq "the other 98 users arrived" 98 "$(json_get "$stats" accepted_records)"
check "the rows after the NUL arrived whole (nothing truncated)" \
    grep -q '"external_id":"u100","first_name":"Name 100","city":"City"' "$FAKE_braze_RECORD"
expect_no_match "no row with a NUL was sent" "$FAKE_braze_RECORD" '"u4[01]"'
expect_match "summary: two dead letters" "$T_DIR/run.out" "dead-lettered 2( |$)"
sluice status -c "$SRC_DIR/examples/braze-import.yml" braze-import >"$T_DIR/status.out"
expect_match "line 41 dead-lettered, naming the column" "$T_DIR/status.out" \
    "line 41 .*column 'first_name' holds a NUL character at offset 3"
expect_match "line 42 dead-lettered, naming the column" "$T_DIR/status.out" \
    "line 42 .*column 'city' holds a NUL character at offset 2"
finish
