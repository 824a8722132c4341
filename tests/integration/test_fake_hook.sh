#!/usr/bin/env bash
# fake_hook must be as strict as a Slack incoming webhook in --slack mode and a
# faithful JSON recorder otherwise. Run by ctest with FAKES_DIR.
set -euo pipefail

FAKES_DIR=${FAKES_DIR:?set FAKES_DIR to the build directory that holds fake_hook}
FAKE="$FAKES_DIR/fake_hook"
[[ -x "$FAKE" ]] || { echo "FAIL: $FAKE is not an executable (build target fake_hook)"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is required"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is required"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_fake_hook.XXXXXX")
FAKE_PID=""
passed=0
failed=0

ok() { passed=$((passed + 1)); }
bad() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}
expect() {
    if [[ "$2" == "$3" ]]; then ok; else bad "$1: expected [$2], got [$3]"; fi
}
stop_fake() {
    local rc=0
    [[ -n "$FAKE_PID" ]] || return 0
    kill -TERM "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" || rc=$?
    FAKE_PID=""
    if [[ $rc -ne 0 ]]; then
        bad "fake_hook exited with status $rc after SIGTERM, expected 0; stderr tail:"
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

start_fake() {
    rm -f "$TMP/port"
    "$FAKE" --port 0 --port-file "$TMP/port" "$@" >"$TMP/out" 2>"$TMP/err" &
    FAKE_PID=$!
    for _ in $(seq 1 100); do
        [[ -s "$TMP/port" ]] && break
        sleep 0.05
    done
    if [[ ! -s "$TMP/port" ]]; then
        echo "FAIL: fake_hook did not write its port file within 5 s; stderr:"
        cat "$TMP/err"
        exit 1
    fi
    URL="http://127.0.0.1:$(cat "$TMP/port")"
}
# send PATH BODY [CURL ARGS...]: sets CODE and RESP.
send() {
    printf '%s' "$2" >"$TMP/req"
    CODE=$(curl -s -o "$TMP/resp" -w '%{http_code}' --max-time 10 -X POST \
        --data-binary @"$TMP/req" "${@:3}" "$URL$1" || true)
    RESP=$(cat "$TMP/resp" 2>/dev/null || true)
}
json_get() {
    python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"
}

JSON=(-H 'Content-Type: application/json')

# ---- Slack mode -----------------------------------------------------------------
start_fake --slack --record "$TMP/slack.jsonl"
send /hook '{"text": "Import done: 3 rows"}' "${JSON[@]}"
expect "slack text: status" 200 "$CODE"
expect "slack text: body" ok "$RESP"
send /hook '{"blocks": [{"type": "section"}]}' "${JSON[@]}"
expect "slack blocks: status" 200 "$CODE"
send /hook '{"text": ""}' "${JSON[@]}"
expect "slack empty text: status" 400 "$CODE"
expect "slack empty text: body" no_text "$RESP"
send /hook '{"username": "sluice"}' "${JSON[@]}"
expect "slack no text: body" no_text "$RESP"
send /hook '{"text": ' "${JSON[@]}"
expect "slack invalid JSON: status" 400 "$CODE"
expect "slack invalid JSON: body" invalid_payload "$RESP"
send /hook '{"text": "x"}' -H 'Content-Type: application/x-www-form-urlencoded'
expect "slack form body: status" 400 "$CODE"
expect "slack form body: body" invalid_payload "$RESP"
send /other '{"text": "x"}' "${JSON[@]}"
expect "unknown path: status" 404 "$CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/hook")
expect "GET on the hook: status" 405 "$CODE"
expect "slack record" '{"text":"Import done: 3 rows"}
{"blocks":[{"type":"section"}]}' "$(cat "$TMP/slack.jsonl")"
S=$(curl -s --max-time 5 "$URL/_stats")
expect "slack stats requests" 8 "$(json_get "$S" requests)"
expect "slack stats recorded" 2 "$(json_get "$S" recorded)"
expect "slack stats 400" 4 "$(json_get "$S" status.400)"
stop_fake
expect "final stats on SIGTERM" 2 "$(json_get "$(tail -n1 "$TMP/out")" recorded)"

# ---- generic mode -------------------------------------------------------------------
start_fake --record "$TMP/gen.jsonl" --path /in --status 202
send /in '[1, 2.50, {"a": "b c"}]'
expect "generic JSON: status" 202 "$CODE"
expect "generic JSON: body" '{"ok":true}' "$RESP"
send /in 'not json'
expect "generic invalid JSON: status" 400 "$CODE"
expect "generic record" '[1,2.50,{"a":"b c"}]' "$(cat "$TMP/gen.jsonl")"
stop_fake

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] || exit 1
