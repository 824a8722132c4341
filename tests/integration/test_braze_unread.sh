#!/usr/bin/env bash
# A Braze 201 whose body cannot be read (an HTML page from a proxy; a JSON
# answer cut at the client's 1 MiB response cap) lost its per-record errors.
# Braze's 201 means the request was accepted, so its users count as
# delivered (re-sending cannot recover the list and is billed again), but the
# loss is logged with the batch's lines and the run says so in its summary.
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=unread-key-$RANDOM$RANDOM
{
    printf 'external_id,first_name\n'
    for i in $(seq 1 200); do printf 'u%s,Name %s\n' "$i" "$i"; done
} >"$T_DIR/users.csv"
export BRAZE_CSV=$T_DIR/users.csv

for mode in html huge; do
    # ids containing 7 are refused inside the 201: the errors list that is lost
    start_fake_braze "$mode" --reject-id 7 --garble-201 "$mode"
    set +e
    SLUICE_STATE=$T_DIR/$mode.db sluice run -c "$SRC_DIR/examples/braze-import.yml" \
        >"$T_DIR/$mode.run.out" 2>"$T_DIR/$mode.run.err"
    rc=$?
    set -e
    stats=$(eval fake_stats "\$FAKE_${mode}_PORT")
    eval "stop_fake \$FAKE_${mode}_PID"
    # delivered as far as Braze's contract says, but not known to be: partial
    expect_eq "$mode: the run ends partial (exit 2)" 2 "$rc"
    expect_eq "$mode: three requests, each answered 201" 3 "$(json_get "$stats" accepted_requests)"
    expect_eq "$mode: nothing re-sent" 3 "$(json_get "$stats" requests)"
    expect_match "$mode: users counted as sent, none dead-lettered" "$T_DIR/$mode.run.out" \
        "sent 200( |,|$).*dead-lettered 0|dead-lettered 0.*sent 200( |,|$)"
    expect_eq "$mode: the fake did refuse users inside those 201s" 1 \
        "$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["rejected_records"] > 0))' "$stats")"
    expect_eq "$mode: one warning per unread answer" 3 \
        "$(grep -c 'per-record errors, if any, are unknown' "$T_DIR/$mode.run.err")"
    expect_match "$mode: the warning names the lines and the cause" "$T_DIR/$mode.run.err" \
        "Braze answered HTTP 201 at http://127.0.0.1:[0-9]+/users/track for lines 2-76 but its body is not JSON"
done
expect_match "huge: the cut body is named as such" "$T_DIR/huge.run.err" "premature end of input|end of file"
expect_no_match "the API key never appears in logs" "$T_DIR/html.run.err" "$BRAZE_API_KEY"
finish
