#!/usr/bin/env bash
# An external_id is sent as the exact text of its cell or not at all: ids
# that are not valid UTF-8 would be repaired into one id (two people, one
# Braze user), and `null` ids would all become the user "null". Those rows
# are dead-lettered with their line; the others are delivered.
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=keys-key-$RANDOM$RANDOM
printf 'external_id,first_name\nu1,Ann\nab\xff,Bea\nab\xfe,Cy\nnull,Dot\nNULL,Eve\nu2,Fay\n' \
    >"$T_DIR/users.csv"
start_fake_braze braze
export BRAZE_CSV=$T_DIR/users.csv
set +e
sluice run -c "$SRC_DIR/examples/braze-import.yml" >"$T_DIR/run.out" 2>"$T_DIR/run.err"
rc=$?
set -e
stats=$(fake_stats "$FAKE_braze_PORT")
stop_fake "$FAKE_braze_PID"
expect_eq "exit 2: finished, some rows dead-lettered" 2 "$rc"
expect_eq "no two rows became one Braze user" 0 "$(json_get "$stats" duplicates)"
expect_eq "only the two faithful ids reached Braze" 2 "$(json_get "$stats" accepted_records)"
expect_eq "the ids sent, exactly" "u1 u2" \
    "$(python3 -c 'import json,sys; print(" ".join(sorted(json.loads(l)["external_id"] for l in open(sys.argv[1]))))' "$FAKE_braze_RECORD")"
expect_no_match "no repaired id was sent" "$FAKE_braze_RECORD" $'\xef\xbf\xbd|\\\\ufffd|"null"'
expect_match "summary: four dead letters" "$T_DIR/run.out" "dead-lettered 4( |$)"

sluice status -c "$SRC_DIR/examples/braze-import.yml" braze-import >"$T_DIR/status.out"
expect_match "line 3 dead-lettered: not UTF-8" "$T_DIR/status.out" \
    "line 3 .*external_id is not valid UTF-8 \(byte 0xFF at offset 2\)"
expect_match "line 4 dead-lettered: not UTF-8" "$T_DIR/status.out" \
    "line 4 .*external_id is not valid UTF-8 \(byte 0xFE at offset 2\)"
expect_match "line 5 dead-lettered: null" "$T_DIR/status.out" "line 5 .*external_id is the text 'null'"
expect_match "line 6 dead-lettered: NULL" "$T_DIR/status.out" "line 6 .*external_id is the text 'NULL'"
finish
