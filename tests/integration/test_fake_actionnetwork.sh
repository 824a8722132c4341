#!/usr/bin/env bash
# fake_actionnetwork must refuse what Action Network refuses, dedupe people by
# e-mail and enforce its rate limit, or the sink tests that use it prove
# nothing. curl only.
source "$(dirname "$0")/lib.sh"

export ACTIONNETWORK_API_KEY=an-fake-key-42
FAKE="$FAKES_DIR/fake_actionnetwork"
[ -x "$FAKE" ] || { echo "FAIL: $FAKE is not built"; exit 1; }

# post URL BODY [CURL ARGS...]: prints "STATUS BODY"
post() {
    local url=$1 body=$2
    shift 2
    curl -sS -o "$T_DIR/resp" -w '%{http_code}' -X POST "$url" --data-binary "$body" "$@"
    printf ' '
    cat "$T_DIR/resp"
}
people() { curl -fsS "http://127.0.0.1:$1/_people"; }
# pyq JSON EXPR: evaluate EXPR with j = the parsed JSON
pyq() { python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

start_fake_actionnetwork an --rate 0
P=$FAKE_an_PORT
U=$ACTIONNETWORK_API_URL/people/
AUTH=(-H "OSDI-API-Token: $ACTIONNETWORK_API_KEY" -H "Content-Type: application/json")
ANN='{"person":{"given_name":"Ann","family_name":"Lee","email_addresses":[{"address":"Ann@Example.org"}],"custom_fields":{"is_member":"True"}},"add_tags":["ak"]}'

# --- auth -------------------------------------------------------------------
r=$(post "$U" "$ANN" -H "Content-Type: application/json")
expect_eq "no OSDI-API-Token: 401" 401 "${r%% *}"
check "401 body is Action Network's {\"error\":...}" grep -q '"error":"API Key invalid' "$T_DIR/resp"
r=$(post "$U" "$ANN" -H "OSDI-API-Token: wrong-key" -H "Content-Type: application/json")
expect_eq "wrong key: 401" 401 "${r%% *}"
expect_no_match "the presented key is never echoed" "$T_DIR/resp" "wrong-key"
r=$(post "$U" "$ANN" -H "Authorization: Bearer $ACTIONNETWORK_API_KEY" -H "Content-Type: application/json")
expect_eq "a Bearer token is not the OSDI header: 401" 401 "${r%% *}"

# --- routes -------------------------------------------------------------------
r=$(post "http://127.0.0.1:$P/api/v2/people/x" "$ANN" "${AUTH[@]}")
expect_eq "unknown path: 404" 404 "${r%% *}"
st=$(curl -sS -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$U")
expect_eq "GET people: 405 (the fake serves the signup helper)" 405 "$st"

# --- shape ----------------------------------------------------------------------
r=$(post "$U" "$ANN" -H "OSDI-API-Token: $ACTIONNETWORK_API_KEY" -H "Content-Type: text/plain")
expect_eq "Content-Type text/plain: 400" 400 "${r%% *}"
r=$(post "$U" "$ANN" -H "OSDI-API-Token: $ACTIONNETWORK_API_KEY")
expect_eq "no Content-Type (curl's form type): 400" 400 "${r%% *}"
bad_bodies=(
    '' 'invalid JSON'
    '{"person":{' 'invalid JSON'
    '[]' 'must be a JSON object'
    '{"persons":{}}' "'person' is required"
    '{"person":"ann@example.org"}' "'person' must be an object"
    '{"person":{"given_name":"Ann"}}' 'needs an email address or a phone number'
    '{"person":{"email_addresses":[]}}' 'needs an email address or a phone number'
    '{"person":{"email_addresses":{"address":"a@example.org"}}}' 'email_addresses must be an array'
    '{"person":{"email_addresses":[{"email":"a@example.org"}]}}' "with an 'address' string"
    '{"person":{"email_addresses":[{"address":"not-an-email"}]}}' 'is not a valid email address'
    '{"person":{"email_addresses":[{"address":"a@b"}]}}' 'is not a valid email address'
    '{"person":{"email_addresses":[{"address":"a b@example.org"}]}}' 'is not a valid email address'
    '{"person":{"email_addresses":[{"address":"a@@example.org"}]}}' 'is not a valid email address'
    '{"person":{"email_addresses":[{"address":"a@example.org"}],"custom_fields":{"is_member":true}}}' 'custom_fields.is_member must be a string, got a boolean'
    '{"person":{"email_addresses":[{"address":"a@example.org"}],"custom_fields":["x"]}}' 'custom_fields must be an object'
    '{"person":{"email_addresses":[{"address":"a@example.org"}],"postal_addresses":[{"postal_code":2134}]}}' 'postal_code must be a string, got a number'
    '{"person":{"email_addresses":[{"address":"a@example.org"}],"postal_addresses":[{"address_lines":"1 Main"}]}}' 'address_lines must be an array'
    '{"person":{"phone_numbers":[{"number":"call me"}]}}' 'is not a phone number'
    '{"person":{"phone_numbers":[{"number":"123"}]}}' '7 to 15 digits'
    '{"person":{"email_addresses":[{"address":"a@example.org"}],"given_name":5}}' 'given_name must be a string'
    '{"person":{"email_addresses":[{"address":"a@example.org"}]},"add_tags":"x"}' "'add_tags' must be an array of strings"
    '{"person":{"email_addresses":[{"address":"a@example.org"}]},"person":{}}' 'invalid JSON'
)
for ((i = 0; i < ${#bad_bodies[@]}; i += 2)); do
    body=${bad_bodies[i]} want=${bad_bodies[i + 1]}
    r=$(post "$U" "$body" "${AUTH[@]}")
    expect_eq "400 for ${body:0:60}" 400 "${r%% *}"
    expect_match "message for ${body:0:60}" "$T_DIR/resp" "$want"
done
expect_eq "refused requests store nobody" 0 "$(pyq "$(people "$P")" 'len(j)')"
if [ -s "$FAKE_an_RECORD" ]; then not_ok "refused requests are not recorded"; else ok "refused requests are not recorded"; fi

# --- dedupe by e-mail ----------------------------------------------------------
r=$(post "$U" "$ANN" "${AUTH[@]}")
expect_eq "a valid person: 200" 200 "${r%% *}"
check "the answer is the OSDI person with an action_network identifier" \
    grep -q '"identifiers":\["action_network:' "$T_DIR/resp"
id1=$(pyq "${r#* }" 'j["identifiers"][0]')
# same person, e-mail in another case, new name, a lapse, phone, address
r=$(post "$U" '{"person":{"given_name":"Annie","email_addresses":[{"address":"ann@EXAMPLE.org"}],"phone_numbers":[{"number":"6175550100"}],"postal_addresses":[{"postal_code":"02134","region":"MA"}],"custom_fields":{"is_member":"False","ak_id":"7"}},"add_tags":["ak","lapsed"]}' "${AUTH[@]}")
expect_eq "second signup: 200" 200 "${r%% *}"
expect_eq "the same person is updated (case-insensitive e-mail)" "$id1" "$(pyq "${r#* }" 'j["identifiers"][0]')"
all=$(people "$P")
expect_eq "one person stored" 1 "$(pyq "$all" 'len(j)')"
expect_eq "given_name updated" Annie "$(pyq "$all" 'j[0]["given_name"]')"
expect_eq "family_name kept" Lee "$(pyq "$all" 'j[0]["family_name"]')"
expect_eq "stored address keeps its first spelling" Ann@Example.org "$(pyq "$all" 'j[0]["email_addresses"][0]["address"]')"
expect_eq "custom fields merged" "{'is_member': 'False', 'ak_id': '7'}" "$(pyq "$all" 'j[0]["custom_fields"]')"
expect_eq "tags added once" "['ak', 'lapsed']" "$(pyq "$all" 'j[0]["tags"]')"
expect_eq "signups counted" 2 "$(pyq "$all" 'j[0]["signups"]')"
expect_eq "postal code stored" 02134 "$(pyq "$all" 'j[0]["postal_addresses"][0]["postal_code"]')"
# a phone-only signup with Ann's number finds Ann
r=$(post "$U" '{"person":{"phone_numbers":[{"number":"(617) 555-0100"}],"custom_fields":{"x":"1"}}}' "${AUTH[@]}")
expect_eq "phone-only signup matches by number" "$id1" "$(pyq "${r#* }" 'j["identifiers"][0]')"
r=$(post "$U" '{"person":{"email_addresses":[{"address":"bob@example.org"}]},"ignored_top":1}' "${AUTH[@]}")
expect_eq "another e-mail: a new person" 200 "${r%% *}"
all=$(people "$P")
expect_eq "two people stored" 2 "$(pyq "$all" 'len(j)')"
s=$(fake_stats "$P")
expect_eq "stats: created" 2 "$(json_get "$s" created)"
expect_eq "stats: updated" 2 "$(json_get "$s" updated)"
expect_eq "stats: unknown keys counted, not refused" 1 "$(json_get "$s" ignored_keys)"
expect_eq "stats: 400s" $(( ${#bad_bodies[@]} / 2 + 2 )) "$(pyq "$s" 'j["status"]["400"]')"
expect_eq "the record file holds the 4 accepted bodies" 4 "$(wc -l <"$FAKE_an_RECORD")"
check "records are compact, as sent" grep -qF "$ANN" "$FAKE_an_RECORD"

curl -fsS -X POST "http://127.0.0.1:$P/_reset" >/dev/null
s=$(fake_stats "$P")
expect_eq "reset: no people" 0 "$(json_get "$s" people)"
expect_eq "reset: no requests" 0 "$(json_get "$s" requests)"
stop_fake "$FAKE_an_PID"
check "the fake prints its final stats on SIGTERM" grep -q '"people_requests"' "$T_DIR/an.out"

# --- rate limit ---------------------------------------------------------------
start_fake_actionnetwork rl --rate 2
U=$ACTIONNETWORK_API_URL/people/
codes=""
for i in 1 2 3 4; do
    r=$(post "$U" "{\"person\":{\"email_addresses\":[{\"address\":\"p$i@example.org\"}]}}" "${AUTH[@]}" -D "$T_DIR/h$i")
    codes="$codes ${r%% *}"
done
expect_eq "--rate 2: two per second, then 429" " 200 200 429 429" "$codes"
check "429 carries Retry-After" grep -qi '^Retry-After: 1' "$T_DIR/h3"
sleep 1.05 # the window is one second of wall time
r=$(post "$U" '{"person":{"email_addresses":[{"address":"p5@example.org"}]}}' "${AUTH[@]}")
expect_eq "after the window: 200 again" 200 "${r%% *}"
s=$(fake_stats "$FAKE_rl_PORT")
expect_eq "rate_limited counted" 2 "$(json_get "$s" rate_limited)"
expect_eq "refused by the limit: stored nobody" 3 "$(json_get "$s" people)"
stop_fake "$FAKE_rl_PID"

# --- faults -------------------------------------------------------------------
start_fake_actionnetwork ff --rate 0 --fail-first 2:503 --reject-email refuse-me
U=$ACTIONNETWORK_API_URL/people/
codes=""
for i in 1 2 3; do
    r=$(post "$U" '{"person":{"email_addresses":[{"address":"a@example.org"}]}}' "${AUTH[@]}")
    codes="$codes ${r%% *}"
done
expect_eq "--fail-first 2:503" " 503 503 200" "$codes"
r=$(post "$U" '{"person":{"email_addresses":[{"address":"refuse-me@example.org"}]}}' "${AUTH[@]}")
expect_eq "--reject-email: 400" 400 "${r%% *}"
stop_fake "$FAKE_ff_PID"
start_fake_actionnetwork f4 --rate 0 --fail-first 1:429 --retry-after 3
r=$(post "$ACTIONNETWORK_API_URL/people/" "$ANN" "${AUTH[@]}" -D "$T_DIR/h429")
expect_eq "--fail-first 1:429" 429 "${r%% *}"
check "--retry-after 3 sets the header" grep -qi '^Retry-After: 3' "$T_DIR/h429"
stop_fake "$FAKE_f4_PID"

# --- usage ---------------------------------------------------------------------
set +e
"$FAKE" --port 0 >/dev/null 2>"$T_DIR/usage"
rc=$?
set -e
expect_eq "no --api-key: usage error" 2 "$rc"
expect_match "usage names --api-key" "$T_DIR/usage" "api-key is required"

finish
