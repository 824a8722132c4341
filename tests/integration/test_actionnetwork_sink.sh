#!/usr/bin/env bash
# CSV (ActionKit export columns) -> actionnetwork sink -> fake_actionnetwork:
# people created with the contract's clean-ups, a second export updates the
# same people (no duplicates), a malformed person is dead-lettered with the
# answer, 429 + Retry-After is honoured, the default rate is 4 requests/s,
# and a bad key stops the run with a clear message that never shows the key.
source "$(dirname "$0")/lib.sh"

export ACTIONNETWORK_API_KEY=an-sink-SECRET-key-77
pyq() { python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
people() { curl -fsS "http://127.0.0.1:$1/_people"; }
# person PORT EMAIL EXPR: EXPR on the stored person with that e-mail (p)
person() {
    python3 -c '
import json, sys
ps = [p for p in json.loads(sys.argv[1])
      if any(e["address"].lower() == sys.argv[2] for e in p["email_addresses"])]
p = ps[0] if len(ps) == 1 else None
print(eval(sys.argv[3]) if p else "found %d" % len(ps))' "$(people "$1")" "$2" "$3"
}
dead_letter() { # PIPELINE LINE COLUMN
    sqlite3 "$T_DIR/.sluice/state.db" \
        "select $3 from dead_letters where pipeline='$1' and line=$2" 2>/dev/null || true
}

cat >"$T_DIR/week1.csv" <<'EOF'
email,first_name,last_name,address1,address2,city,state,zip,country,best_phone,mobile_phone,home_phone,work_phone,ak_id
ann@example.org,Ann,Lee,1 Main St,Apt 2,Boston,MA,2134,US,,617-555 0101,617-555-0102,,11
bob@example.org,Bob,Ray,,,Chicago,IL,60601,US,"312-555-0100, 312-555-0199",,,,12
not-an-email,Bad,Person,,,,,501,US,,,,,13
carol@example.org,Carol,,,,,,,,,,,,14
,No,Email,,,,,,,,,,,15
EOF
cat >"$T_DIR/an.yml" <<'EOF'
pipelines:
  people:
    source: {type: csv, path: "${AK_EXPORT}"}
    sink:
      type: actionnetwork
      url: ${ACTIONNETWORK_API_URL}
      api_key: ${ACTIONNETWORK_API_KEY}
      custom_fields: {ak_user_id: ak_id}
      add_tags: [ak-sync]
    rate_limit: ${ACTIONNETWORK_RATE_LIMIT:-4}
    retry: {max_attempts: 6}
EOF

start_fake_actionnetwork an --rate 0
P=$FAKE_an_PORT
export ACTIONNETWORK_RATE_LIMIT=0

# --- week 1: people created --------------------------------------------------
set +e
AK_EXPORT=week1.csv sluice run -c an.yml >"$T_DIR/run1.out" 2>&1
rc=$?
set -e
expect_eq "week 1: exit 2 (two people dead-lettered)" 2 "$rc"
expect_match "week 1: 3 sent, 2 dead-lettered" "$T_DIR/run1.out" "read 5 +sent 3 +dead-lettered 2"
expect_eq "three people stored" 3 "$(pyq "$(people "$P")" 'len(j)')"
expect_eq "ann: names" "Ann Lee" "$(person "$P" ann@example.org 'p["given_name"]+" "+p["family_name"]')"
expect_eq "ann: zip zero-padded" 02134 "$(person "$P" ann@example.org 'p["postal_addresses"][0]["postal_code"]')"
expect_eq "ann: address lines" "['1 Main St', 'Apt 2']" "$(person "$P" ann@example.org 'p["postal_addresses"][0]["address_lines"]')"
expect_eq "ann: mobile before home, cleaned" 6175550101 "$(person "$P" ann@example.org 'p["phone_numbers"][0]["number"]')"
expect_eq "bob: best phone, first of the list" 3125550100 "$(person "$P" bob@example.org 'p["phone_numbers"][0]["number"]')"
expect_eq "ann: custom fields" "{'ak_user_id': '11', 'is_member': 'True'}" "$(person "$P" ann@example.org 'p["custom_fields"]')"
expect_eq "carol: no address or phone sent" "0 0" "$(person "$P" carol@example.org '"%d %d" % (len(p["postal_addresses"]), len(p["phone_numbers"]))')"
expect_eq "tags" "['ak-sync']" "$(person "$P" bob@example.org 'p["tags"]')"
# the exact request of a person, as the fake recorded it
expect_eq "exact request for bob" \
    '{"person":{"given_name":"Bob","family_name":"Ray","email_addresses":[{"address":"bob@example.org"}],"postal_addresses":[{"locality":"Chicago","region":"IL","country":"US","postal_code":"60601"}],"phone_numbers":[{"number":"3125550100"}],"custom_fields":{"ak_user_id":"12","is_member":"True"}},"add_tags":["ak-sync"]}' \
    "$(grep '"bob@example.org"' "$FAKE_an_RECORD")"
if command -v sqlite3 >/dev/null; then
    expect_match "malformed person: dead letter names the refusal" \
        <(dead_letter people 4 error) "Action Network refused the person \(HTTP 400\): .*not-an-email.* is not a valid email address"
    expect_match "malformed person: dead letter keeps the response body" \
        <(dead_letter people 4 response) '^\{"error":"person.email_addresses\[0\].address .not-an-email. is not a valid email address"\}$'
    expect_match "no e-mail: dead-lettered without a request" <(dead_letter people 6 error) "empty email"
fi
s=$(fake_stats "$P")
expect_eq "four requests reached the fake (the blank e-mail did not)" 4 "$(json_get "$s" people_requests)"
expect_eq "one person at a time per request" 3 "$(json_get "$s" created)"

# --- week 2: the same people again, one changed: updates, not duplicates -----
sed -e 's/^ann@example.org,Ann,/ANN@example.org,Annie,/' -e '/^not-an-email/d' -e '/^,No,/d' \
    "$T_DIR/week1.csv" >"$T_DIR/week2.csv"
AK_EXPORT=week2.csv sluice run -c an.yml >"$T_DIR/run2.out" 2>&1 || true
expect_match "week 2: exit 0, 3 sent" "$T_DIR/run2.out" "read 3 +sent 3"
expect_eq "still three people" 3 "$(pyq "$(people "$P")" 'len(j)')"
expect_eq "ann updated through a case-changed e-mail" Annie "$(person "$P" ann@example.org 'p["given_name"]')"
expect_eq "ann signed up twice" 2 "$(person "$P" ann@example.org 'p["signups"]')"
s=$(fake_stats "$P")
expect_eq "week 2: three updates" 3 "$(json_get "$s" updated)"

# --- an is_member column decides when no diff step set an action -------------
printf 'email,is_member\nbob@example.org,false\n' >"$T_DIR/lapse.csv"
AK_EXPORT=lapse.csv sluice run -c an.yml >"$T_DIR/run3.out" 2>&1 || true
expect_eq "bob's is_member column sent as \"False\"" False "$(person "$P" bob@example.org 'p["custom_fields"]["is_member"]')"
expect_eq "bob's name untouched by a custom-field update" Bob "$(person "$P" bob@example.org 'p["given_name"]')"

# --- dry run: a sample, nothing sent, no key ----------------------------------
before=$(json_get "$(fake_stats "$P")" people_requests)
AK_EXPORT=week1.csv sluice run -c an.yml --dry-run --again >"$T_DIR/dry.out" 2>&1 || true
expect_eq "dry run sends nothing" "$before" "$(json_get "$(fake_stats "$P")" people_requests)"
expect_match "dry run shows a request" "$T_DIR/dry.out" 'POST .*/api/v2/people/'
expect_no_match "dry run never shows the key" "$T_DIR/dry.out" "$ACTIONNETWORK_API_KEY"
stop_fake "$FAKE_an_PID"

# --- 429 + Retry-After honoured -----------------------------------------------
# the fake admits 2 requests a second; sluice, unlimited, sends 4 at once
start_fake_actionnetwork rl --rate 2
seq 1 6 | awk 'BEGIN{print "email,first_name"} {print "p" $1 "@example.org,P" $1}' >"$T_DIR/six.csv"
start=$(date +%s.%N)
AK_EXPORT=six.csv sluice run -c an.yml >"$T_DIR/run429.out" 2>&1 && rc=0 || rc=$?
elapsed=$(python3 -c "import time; print(time.time() - $start)")
expect_eq "429s retried to success: exit 0" 0 "$rc"
s=$(fake_stats "$FAKE_rl_PORT")
expect_eq "all six people landed" 6 "$(json_get "$s" people)"
check "the fake refused some with 429 ($(json_get "$s" rate_limited))" \
    test "$(json_get "$s" rate_limited)" -gt 0
check "retries waited for Retry-After (6 people at 2/s took ${elapsed}s)" \
    python3 -c "import sys; sys.exit(0 if $elapsed >= 2.0 else 1)"
stop_fake "$FAKE_rl_PID"

# --- the default rate: 4 requests a second ------------------------------------
start_fake_actionnetwork dr --rate 0
unset ACTIONNETWORK_RATE_LIMIT
seq 1 9 | awk 'BEGIN{print "email"} {print "q" $1 "@example.org"}' >"$T_DIR/nine.csv"
start=$(date +%s.%N)
AK_EXPORT=nine.csv sluice run -c an.yml >"$T_DIR/rundr.out" 2>&1 || true
elapsed=$(python3 -c "import time; print(time.time() - $start)")
expect_eq "default rate: all nine landed" 9 "$(json_get "$(fake_stats "$FAKE_dr_PORT")" people)"
check "default rate: 9 requests at 4/s take at least 2 s (took ${elapsed}s)" \
    python3 -c "import sys; sys.exit(0 if $elapsed >= 2.0 else 1)"
expect_eq "default rate: never more than 4 at once" 1 \
    "$(pyq "$(fake_stats "$FAKE_dr_PORT")" 'int(j["peak_concurrency"] <= 4)')"
stop_fake "$FAKE_dr_PID"

# --- bad key: exit 1, clear message, no key anywhere --------------------------
start_fake_actionnetwork bk --rate 0
export ACTIONNETWORK_RATE_LIMIT=0
good=$ACTIONNETWORK_API_KEY
export ACTIONNETWORK_API_KEY=an-WRONG-key-SECRET-99
set +e
AK_EXPORT=week2.csv sluice run -c an.yml --again >"$T_DIR/badkey.out" 2>&1
rc=$?
set -e
expect_eq "bad key: exit 1" 1 "$rc"
expect_match "bad key: the message says so" "$T_DIR/badkey.out" \
    "Action Network rejected the API key \(HTTP 401\) at http://127.0.0.1:[0-9]+/api/v2/people/"
sluice status -c an.yml people >"$T_DIR/badkey-status.out" 2>&1 || true
for f in badkey.out badkey-status.out; do
    expect_no_match "bad key: $f never shows the key" "$T_DIR/$f" "an-WRONG-key|$good"
done
expect_eq "bad key: nobody stored" 0 "$(json_get "$(fake_stats "$FAKE_bk_PORT")" people)"
stop_fake "$FAKE_bk_PID"

finish
