#!/usr/bin/env bash
# fake_braze must reject what Braze rejects, or every other test that uses it
# proves nothing. Run by ctest with FAKES_DIR (build dir holding fake_braze).
set -euo pipefail

FAKES_DIR=${FAKES_DIR:?set FAKES_DIR to the build directory that holds fake_braze}
FAKE="$FAKES_DIR/fake_braze"
[[ -x "$FAKE" ]] || { echo "FAIL: $FAKE is not an executable (build target fake_braze)"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is required"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is required"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_fake_braze.XXXXXX")
FAKE_PID=""
KEY="test-key-123"
passed=0
failed=0

# stop_fake: SIGTERM the fake; it must exit 0 (a sanitizer report makes it fail).
stop_fake() {
    local rc=0
    [[ -n "$FAKE_PID" ]] || return 0
    kill -TERM "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" || rc=$?
    FAKE_PID=""
    if [[ $rc -ne 0 ]]; then
        bad "fake_braze exited with status $rc after SIGTERM, expected 0; stderr tail:"
        tail -n 30 "$TMP/err"
    else
        ok
    fi
}
cleanup() {
    if [[ -n "$FAKE_PID" ]]; then
        kill -TERM "$FAKE_PID" 2>/dev/null || true
        wait "$FAKE_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); }
bad() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}
# expect DESCRIPTION EXPECTED ACTUAL
expect() {
    if [[ "$2" == "$3" ]]; then ok; else bad "$1: expected [$2], got [$3]"; fi
}
# expect_contains DESCRIPTION NEEDLE HAYSTACK
expect_contains() {
    if [[ "$3" == *"$2"* ]]; then ok; else bad "$1: expected to contain [$2], got [$3]"; fi
}

# start_fake ARGS...: start fake_braze on a free port, wait for its port file.
start_fake() {
    rm -f "$TMP/port" "$TMP/out" "$TMP/err"
    "$FAKE" --port 0 --port-file "$TMP/port" --api-key "$KEY" "$@" >"$TMP/out" 2>"$TMP/err" &
    FAKE_PID=$!
    for _ in $(seq 1 100); do
        [[ -s "$TMP/port" ]] && break
        sleep 0.05
    done
    if [[ ! -s "$TMP/port" ]]; then
        echo "FAIL: fake_braze did not write its port file within 5 s; stderr:"
        cat "$TMP/err"
        exit 1
    fi
    PORT=$(cat "$TMP/port")
    URL="http://127.0.0.1:$PORT"
}

# post_raw BODY [CURL ARGS...]: POST BODY to /users/track with only the given
# headers; post BODY: with the three good headers (curl would send a repeated
# -H twice, so tests of a bad header use post_raw). Both set CODE, RESP, HDRS.
post_raw() {
    local body=$1
    shift
    printf '%s' "$body" >"$TMP/req"
    CODE=$(curl -s -o "$TMP/resp" -D "$TMP/hdrs" -w '%{http_code}' --max-time 10 \
        -X POST --data-binary @"$TMP/req" "$@" "$URL/users/track" || true)
    RESP=$(cat "$TMP/resp" 2>/dev/null || true)
    HDRS=$(cat "$TMP/hdrs" 2>/dev/null || true)
}
post() {
    post_raw "$1" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -H 'X-Braze-Bulk: true'
}
# json_get JSON PATH (dotted, e.g. status.201)
json_get() {
    python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1" "$2"
}
stats() { curl -s --max-time 5 "$URL/_stats"; }
# objects N [PREFIX]: an attributes array body with N objects.
objects() {
    python3 -c '
import json, sys
n, p = int(sys.argv[1]), sys.argv[2]
print(json.dumps({"attributes": [{"external_id": "%s%d" % (p, i), "n": i} for i in range(n)]}))' \
        "$1" "${2:-u}"
}

# ---- strict run ---------------------------------------------------------------
start_fake --record "$TMP/rec.jsonl" --reject-id BAD --cross-check
expect "listening line names the port file's port" "fake_braze listening on 127.0.0.1:$PORT" \
    "$(head -n1 "$TMP/out")"

post_raw '{"attributes":[{"external_id":"a1"}]}' -H 'Authorization: Bearer wrong-secret-zz' \
    -H 'Content-Type: application/json' -H 'X-Braze-Bulk: true'
expect "wrong key: status" 401 "$CODE"
expect_contains "wrong key: message" '"message":"Invalid API key' "$RESP"
if [[ "$RESP" == *wrong-secret-zz* ]]; then
    bad "wrong key: the presented key is echoed: $RESP"
else
    ok
fi

post_raw '{"attributes":[{"external_id":"a1"}]}' -H 'Content-Type: application/json' \
    -H 'X-Braze-Bulk: true'
expect "no Authorization header: status" 401 "$CODE"

post_raw '{"attributes":[{"external_id":"a1"}]}' -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json'
expect "missing X-Braze-Bulk: status" 400 "$CODE"
expect_contains "missing X-Braze-Bulk: message names the header" "X-Braze-Bulk: true" "$RESP"

post_raw '{"attributes":[{"external_id":"a1"}]}' -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: text/plain' -H 'X-Braze-Bulk: true'
expect "text/plain body: status" 400 "$CODE"
expect_contains "text/plain body: message" "application/json" "$RESP"

post "$(objects 76)"
expect "76 objects: status" 400 "$CODE"
expect_contains "76 objects: message" "more than 75" "$RESP"

post '{"attributes":[{"external_id":"s0"},{"external_id":123},{"external_id":"s2"}]}'
expect "numeric external_id: status" 400 "$CODE"
expect_contains "numeric external_id: message names the index" "attributes[1].external_id" "$RESP"

post '{"attributes":[{"external_id":""}]}'
expect "empty external_id: status" 400 "$CODE"

post '{"attributes":[{"name":"no id"}]}'
expect "missing external_id: status" 400 "$CODE"

post '{"attributes":[]}'
expect "empty attributes: status" 400 "$CODE"

post '{"attributes":[{"external_id":"d1","x":1,"x":2}]}'
expect "duplicate key in one object: status" 400 "$CODE"
expect_contains "duplicate key: message" "duplicate" "$RESP"

post '{"attributes":[{"external_id":"j1"},]}'
expect "invalid JSON: status" 400 "$CODE"
expect_contains "invalid JSON: message" "invalid JSON" "$RESP"

head -c $((4 * 1024 * 1024 + 10)) /dev/zero | tr '\0' ' ' >"$TMP/big"
CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST --data-binary @"$TMP/big" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -H 'X-Braze-Bulk: true' \
    "$URL/users/track" || true)
expect "body over 4 MB: status" 413 "$CODE"

CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/users/track")
expect "GET /users/track: status" 405 "$CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -d '{}' "$URL/users/trak")
expect "unknown path: status" 404 "$CODE"

if [[ -s "$TMP/rec.jsonl" ]]; then
    bad "rejected requests were recorded: $(cat "$TMP/rec.jsonl")"
else
    ok
fi

# Accepted: values are recorded byte-for-byte (0.10 stays 0.10), one compact line each.
post '{"attributes": [ {"external_id":"u1", "price": 0.10, "tags": ["a", "b c"]},
                       {"external_id":"u2","zip":"02134","ok":true,"gone":null} ]}'
expect "good 2-object request: status" 201 "$CODE"
expect "good request: attributes_processed" 2 "$(json_get "$RESP" attributes_processed)"
expect "good request: message" success "$(json_get "$RESP" message)"
S=$(stats)
expect "record file after a good request" \
    '{"external_id":"u1","price":0.10,"tags":["a","b c"]}
{"external_id":"u2","zip":"02134","ok":true,"gone":null}' "$(cat "$TMP/rec.jsonl")"

post "$(objects 75 m)"
expect "75 objects (the limit): status" 201 "$CODE"

post '{"attributes":[{"external_id":"k1"},{"external_id":"BAD-7"},{"external_id":"k2"}]}'
expect "--reject-id: status" 201 "$CODE"
expect "--reject-id: attributes_processed" 2 "$(json_get "$RESP" attributes_processed)"
expect "--reject-id: error index" 1 "$(json_get "$RESP" errors.0.index)"
expect "--reject-id: error input_array" attributes "$(json_get "$RESP" errors.0.input_array)"
expect "--reject-id: error type" "'external_id' is invalid" "$(json_get "$RESP" errors.0.type)"
expect "--reject-id: one error only" 1 \
    "$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["errors"]))' "$RESP")"

# Escaped external_ids are compared decoded ("e\u0042AD" is "eBAD").
post '{"attributes":[{"external_id":"e\u0042AD"},{"external_id":"caf\u00e9"}]}'
expect "escaped external_id: status" 201 "$CODE"
expect "escaped external_id: rejected index" 0 "$(json_get "$RESP" errors.0.index)"

# Duplicates: u1 again, and k3 twice within one request.
post '{"attributes":[{"external_id":"u1"},{"external_id":"k3"},{"external_id":"k3"}]}'
expect "duplicates request: status" 201 "$CODE"

S=$(stats)
expect "stats requests" 19 "$(json_get "$S" requests)"
expect "stats accepted_requests" 5 "$(json_get "$S" accepted_requests)"
expect "stats accepted_records" 83 "$(json_get "$S" accepted_records)"
expect "stats rejected_records" 2 "$(json_get "$S" rejected_records)"
expect "stats status 201" 5 "$(json_get "$S" status.201)"
expect "stats status 400" 9 "$(json_get "$S" status.400)"
expect "stats status 401" 2 "$(json_get "$S" status.401)"
expect "stats status 413" 1 "$(json_get "$S" status.413)"
expect "stats duplicates" 2 "$(json_get "$S" duplicates)"
expect "stats drops" 0 "$(json_get "$S" drops)"
expect "stats peak_concurrency" 1 "$(json_get "$S" peak_concurrency)"
expect "record file lines" 83 "$(wc -l <"$TMP/rec.jsonl" | tr -d ' ')"
if grep -q 'BAD-7' "$TMP/rec.jsonl"; then bad "a --reject-id object was recorded"; else ok; fi

CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "$URL/_reset")
expect "POST /_reset: status" 200 "$CODE"
S=$(stats)
expect "after reset: requests" 0 "$(json_get "$S" requests)"
expect "after reset: duplicates" 0 "$(json_get "$S" duplicates)"

stop_fake
expect "SIGTERM: final stats printed" 0 "$(json_get "$(tail -n1 "$TMP/out")" requests)"

# ---- faults -------------------------------------------------------------------
start_fake --record "$TMP/fault.jsonl" --fault-rate 1 --faults html502
post '{"attributes":[{"external_id":"f1"}]}'
expect "html502 fault: status" 502 "$CODE"
expect_contains "html502 fault: content type" "Content-Type: text/html" "$HDRS"
expect_contains "html502 fault: HTML body" "<html>" "$RESP"
S=$(stats)
expect "html502 fault: stats status 502" 1 "$(json_get "$S" status.502)"
expect "html502 fault: nothing accepted" 0 "$(json_get "$S" accepted_records)"
if [[ -s "$TMP/fault.jsonl" ]]; then bad "a faulted request was recorded"; else ok; fi
stop_fake

start_fake --fault-rate 1 --faults 429 --retry-after 7
post '{"attributes":[{"external_id":"f1"}]}'
expect "429 fault: status" 429 "$CODE"
expect_contains "429 fault: Retry-After" "Retry-After: 7" "$HDRS"
stop_fake

start_fake --fault-rate 1 --faults drop
post '{"attributes":[{"external_id":"f1"}]}'
expect "drop fault: no HTTP answer" 000 "$CODE"
expect "drop fault: stats drops" 1 "$(json_get "$(stats)" drops)"
stop_fake

# A seeded half-faulty run faults some requests and answers the others.
start_fake --fault-rate 0.5 --faults 500 --seed 42
codes=""
for _ in $(seq 1 20); do
    post '{"attributes":[{"external_id":"r1"}]}'
    codes+="$CODE "
done
if [[ "$codes" == *201* && "$codes" == *500* ]]; then ok; else
    bad "--fault-rate 0.5: expected both 201 and 500 among 20 answers, got [$codes]"
fi
stop_fake

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] || exit 1
