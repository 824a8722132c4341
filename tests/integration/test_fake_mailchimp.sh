#!/usr/bin/env bash
# fake_mailchimp must be as strict as Mailchimp's list-members endpoint (auth,
# count/offset, fields, since/before, sorting, problem documents), change its
# list on request (touch, add, churn), enforce the connection limit and inject
# faults by offset. Run by ctest with FAKES_DIR.
set -euo pipefail

FAKES_DIR=${FAKES_DIR:?set FAKES_DIR to the build directory that holds fake_mailchimp}
FAKE="$FAKES_DIR/fake_mailchimp"
[[ -x "$FAKE" ]] || { echo "FAIL: $FAKE is not an executable (build target fake_mailchimp)"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is required"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is required"; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_fake_mailchimp.XXXXXX")
FAKE_PID=""
BG_PIDS=()
passed=0
failed=0
KEY=0123456789abcdef-us9
LIST=f00dcafe42

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
        bad "fake_mailchimp exited with status $rc after SIGTERM, expected 0; stderr tail:"
        tail -n 30 "$TMP/err"
    else
        ok
    fi
}
cleanup() {
    for p in "${BG_PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
    done
    if [[ -n "$FAKE_PID" ]]; then
        kill -TERM "$FAKE_PID" 2>/dev/null || true
        wait "$FAKE_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

start_fake() {
    rm -f "$TMP/port"
    "$FAKE" --port 0 --port-file "$TMP/port" --api-key "$KEY" --list-id "$LIST" "$@" \
        >"$TMP/out" 2>"$TMP/err" &
    FAKE_PID=$!
    for _ in $(seq 1 200); do
        [[ -s "$TMP/port" ]] && break
        sleep 0.05
    done
    if [[ ! -s "$TMP/port" ]]; then
        echo "FAIL: fake_mailchimp did not write its port file within 10 s; stderr:"
        cat "$TMP/err"
        exit 1
    fi
    URL="http://127.0.0.1:$(cat "$TMP/port")"
    MEMBERS="$URL/3.0/lists/$LIST/members"
}
# get URL [CURL ARGS...]: sets CODE, RESP (body) and HDRS (headers file).
get() {
    CODE=$(curl -s -o "$TMP/resp" -D "$TMP/hdrs" -w '%{http_code}' --max-time 10 "$@" || true)
    RESP=$(cat "$TMP/resp" 2>/dev/null || true)
    HDRS="$TMP/hdrs"
}
# api QUERY [CURL ARGS...]: an authenticated members request.
api() {
    local q=$1
    shift
    get "$MEMBERS$q" -u "anyone:$KEY" "$@"
}
post() { curl -s -X POST --max-time 10 "$URL$1"; }
# py EXPR JSON: evaluate EXPR with d = the parsed JSON. One python3 process
# serves every check (a python start costs ~0.1 s on a loaded box): each
# request is "LEN_EXPR LEN_JSON\n" then both texts; the answer is one line.
coproc PYCO {
    exec python3 -u -c '
import datetime, hashlib, json, sys
inp = sys.stdin.buffer
while True:
    head = inp.readline()
    if not head:
        break
    ne, nj = map(int, head.split())
    e = inp.read(ne).decode()
    j = inp.read(nj).decode()
    try:
        d = json.loads(j)
        r = str(eval(e))
    except Exception as x:
        r = "<error: %s>" % x
    print(r.replace("\n", "\\n"))
'
}
py() {
    local LC_ALL=C line
    printf '%d %d\n%s%s' "${#1}" "${#2}" "$1" "$2" >&"${PYCO[1]}"
    IFS= read -r line <&"${PYCO[0]}"
    printf '%s\n' "$line"
}
header() { grep -i "^$1:" "$HDRS" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
iso_now() { python3 -c 'import datetime,sys; print(datetime.datetime.fromtimestamp(int(sys.argv[1]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%%2B00:00"))' "$1"; }

# ---- usage errors -------------------------------------------------------------------
rc=0
"$FAKE" --port 0 >/dev/null 2>"$TMP/usage" || rc=$?
expect "missing --api-key exits 2" 2 "$rc"
rc=0
"$FAKE" --port 0 --api-key k --fail-offset 10:abc >/dev/null 2>"$TMP/usage" || rc=$?
expect "bad --fail-offset exits 2" 2 "$rc"
grep -q "OFFSET\[:STATUS\[:TIMES\]\]" "$TMP/usage" && ok || bad "usage names the --fail-offset form"

# ---- auth, routes, params -------------------------------------------------------------
start_fake --members 25

api ""
expect "basic auth: status" 200 "$CODE"
expect "default count is 10" 10 "$(py 'len(d["members"])' "$RESP")"
expect "total_items" 25 "$(py 'd["total_items"]' "$RESP")"
expect "list_id" "$LIST" "$(py 'd["list_id"]' "$RESP")"
expect "_links" "[]" "$(py 'd["_links"]' "$RESP")"
expect "member shape" \
    "True" "$(py 'all(set(m) >= {"id","email_address","unique_email_id","status","merge_fields","last_changed","timestamp_opt","list_id"} and set(m["merge_fields"]) == {"FNAME","LNAME"} for m in d["members"])' "$RESP")"
expect "id is md5 of the lower-cased email" \
    "True" "$(py 'all(m["id"] == hashlib.md5(m["email_address"].lower().encode()).hexdigest() for m in d["members"])' "$RESP")"
expect "content type" "application/json; charset=utf-8" "$(header Content-Type)"
api "" -u ":$KEY"
expect "basic auth, empty user" 200 "$CODE"
get "$MEMBERS" -H "Authorization: Bearer $KEY"
expect "bearer auth" 200 "$CODE"
get "$MEMBERS" -H "Authorization: apikey $KEY"
expect "apikey auth" 200 "$CODE"
get "$MEMBERS" -u "anyone:wrong-us9"
expect "wrong key: status" 401 "$CODE"
expect "wrong key: title" "API Key Invalid" "$(py 'd["title"]' "$RESP")"
expect "wrong key: problem shape" "True" "$(py 'set(d) == {"type","title","status","detail","instance"} and d["status"] == 401' "$RESP")"
grep -q "$KEY" "$TMP/resp" && bad "401 body echoes the key" || ok
expect "problem content type" "application/problem+json; charset=utf-8" "$(header Content-Type)"
get "$MEMBERS" -H "Authorization: Bearer wrong"
expect "wrong bearer" 401 "$CODE"
get "$MEMBERS" -H "Authorization: Basic !!!"
expect "garbage basic" 401 "$CODE"
get "$MEMBERS"
expect "no auth: status" 401 "$CODE"
expect "no auth: title" "API Key Missing" "$(py 'd["title"]' "$RESP")"
get "$URL/3.0/lists/nosuchlist/members" -u "x:$KEY"
expect "unknown list: status" 404 "$CODE"
expect "unknown list: problem" "Resource Not Found 404 True" \
    "$(py 'd["title"] + " " + str(d["status"]) + " " + str(bool(d["type"] and d["detail"] and d["instance"]))' "$RESP")"
get "$MEMBERS" -u "x:$KEY" -X POST -d '{}'
expect "POST on members" 405 "$CODE"
expect "405 Allow" "GET" "$(header Allow)"

api "?count=1000"
expect "count=1000" 25 "$(py 'len(d["members"])' "$RESP")"
api "?count=1001"
expect "count=1001: status" 400 "$CODE"
expect "count=1001: errors[0].field" count "$(py 'd["errors"][0]["field"]' "$RESP")"
api "?count=ten"
expect "count=ten" 400 "$CODE"
api "?offset=-1"
expect "offset=-1" 400 "$CODE"
api "?count=10&offset=20"
expect "last page is short" 5 "$(py 'len(d["members"])' "$RESP")"
api "?count=10&offset=30"
expect "offset past the end: members" 0 "$(py 'len(d["members"])' "$RESP")"
expect "offset past the end: total_items" 25 "$(py 'd["total_items"]' "$RESP")"
api "?count=5&unknown_param=1&email=nothing"
expect "unknown params are ignored" 200 "$CODE"
api "?sort_field=bogus"
expect "bad sort_field" 400 "$CODE"
api "?sort_field=last_changed&sort_dir=up"
expect "bad sort_dir" 400 "$CODE"

DUMP=$(curl -s "$URL/_members")
expect "/_members holds every member" 25 "$(py 'len(d)' "$DUMP")"
ALL=""
for off in 0 10 20; do
    api "?count=10&offset=$off&fields=members.id"
    ALL="$ALL$(py '",".join(m["id"] for m in d["members"])' "$RESP"),"
done
expect "offset pages walk the list in insertion order" \
    "$(py '",".join(m["id"] for m in d)' "$DUMP")," "$ALL"

# fields / exclude_fields
api "?count=3&fields=members.id,members.email_address,members.merge_fields.FNAME,total_items"
expect "fields: top level" "['members', 'total_items']" "$(py 'sorted(d)' "$RESP")"
expect "fields: member keys" "[('email_address', 'id', 'merge_fields')]" \
    "$(py 'sorted(set(tuple(sorted(m)) for m in d["members"]))' "$RESP")"
expect "fields: merge sub-field" "True" "$(py 'all(list(m["merge_fields"]) == ["FNAME"] for m in d["members"])' "$RESP")"
api "?count=2&fields=total_items"
expect "fields=total_items" '{"total_items":25}' "$RESP"
api "?count=2&fields=members.location"
expect "fields: whole sub-object" "True" "$(py 'all(list(m) == ["location"] and len(m["location"]) == 6 for m in d["members"])' "$RESP")"
api "?count=2&exclude_fields=members.location,members.merge_fields.LNAME,_links"
expect "exclude_fields" "True" "$(py '"_links" not in d and all("location" not in m and list(m["merge_fields"]) == ["FNAME"] for m in d["members"])' "$RESP")"

# since (inclusive) / before (exclusive), against the dump
CUT=$(py 'sorted(m["last_changed"] for m in d)[12]' "$DUMP")
CUT_Q=${CUT/+/%2B}
api "?count=1000&since_last_changed=$CUT_Q"
expect "since is inclusive" "$(py "sum(m['last_changed'] >= '$CUT' for m in d)" "$DUMP")" "$(py 'd["total_items"]' "$RESP")"
expect "since: members match total" "True" "$(py "len(d['members']) == d['total_items'] and all(m['last_changed'] >= '$CUT' for m in d['members'])" "$RESP")"
SINCE_N=$(py 'd["total_items"]' "$RESP")
api "?count=1000&before_last_changed=$CUT_Q"
expect "before is exclusive" "$(py "sum(m['last_changed'] < '$CUT' for m in d)" "$DUMP")" "$(py 'd["total_items"]' "$RESP")"
expect "since + before at one instant tile the list" 25 "$((SINCE_N + $(py 'd["total_items"]' "$RESP")))"
# The same instant in another offset: 2026-11-28T12:00:00Z == 14:00:00+02:00
api "?fields=total_items&since_last_changed=2026-11-28T12:00:00Z"
A=$RESP
api "?fields=total_items&since_last_changed=2026-11-28T14:00:00%2B02:00"
expect "offsets are honoured" "$A" "$RESP"
api "?since_last_changed=2026-11-28T12:00:00+00:00"
expect "unencoded '+' is refused" 400 "$CODE"
grep -q "%2B" "$TMP/resp" && ok || bad "the 400 explains the '+' ($RESP)"
api "?since_last_changed=yesterday"
expect "bad since" 400 "$CODE"
api "?count=1000&since_last_changed=2026-11-28T06:00:00Z&before_last_changed=2026-11-28T18:00:00Z"
expect "window" "$(py "sum('2026-11-28T06:00:00' <= m['last_changed'] < '2026-11-28T18:00:00' for m in d)" "$DUMP")" \
    "$(py 'd["total_items"]' "$RESP")"

# sorting
api "?count=1000&sort_field=last_changed&sort_dir=ASC&fields=members.last_changed"
expect "sort last_changed ASC" True "$(py 'all(a["last_changed"] <= b["last_changed"] for a, b in zip(d["members"], d["members"][1:]))' "$RESP")"
api "?count=1000&sort_field=last_changed&sort_dir=DESC&fields=members.last_changed"
expect "sort last_changed DESC" True "$(py 'all(a["last_changed"] >= b["last_changed"] for a, b in zip(d["members"], d["members"][1:]))' "$RESP")"
api "?count=1000&sort_field=timestamp_opt&fields=members.timestamp_opt"
expect "sort timestamp_opt" True "$(py 'all(a["timestamp_opt"] <= b["timestamp_opt"] for a, b in zip(d["members"], d["members"][1:]))' "$RESP")"

# ---- the live list ------------------------------------------------------------------
T0=$(date +%s)
TOUCHED=$(post "/_touch?n=5&seed=3")
expect "/_touch returns 5 ids" 5 "$(py 'len(set(d))' "$TOUCHED")"
api "?count=1000&since_last_changed=$(iso_now "$T0")&fields=members.id,members.last_changed,total_items"
expect "since the touch: exactly the touched members" "$(py 'sorted(d)' "$TOUCHED")" \
    "$(py 'sorted(m["id"] for m in d["members"])' "$RESP")"
T1=$(date +%s)
expect "touched last_changed is the time of the touch" True \
    "$(py "all($T0 <= __import__('datetime').datetime.fromisoformat(m['last_changed']).timestamp() <= $T1 for m in d['members'])" "$RESP")"
api "?fields=total_items&before_last_changed=$(iso_now "$T0")"
expect "before the touch: the rest" '{"total_items":20}' "$RESP"
api "?count=1000&sort_field=last_changed&fields=members.id"
expect "touched members sort last" "$(py 'sorted(d)' "$TOUCHED")" "$(py 'sorted(m["id"] for m in d["members"][-5:])' "$RESP")"
ADDED=$(post "/_add?n=2")
api "?count=1000&fields=members.email_address,total_items"
expect "/_add grows the list" 27 "$(py 'd["total_items"]' "$RESP")"
expect "/_add appends" "user25@example.org user26@example.org" "$(py '" ".join(m["email_address"] for m in d["members"][-2:])' "$RESP")"
expect "/_add returns their ids" "$(py '[hashlib.md5(("user%d@example.org" % i).encode()).hexdigest() for i in (25, 26)]' '0')" \
    "$(py 'd' "$ADDED")"

# churn: a plain offset walk over last_changed skips members on a live list
expect "/_churn on" '{"per_request":2}' "$(post "/_churn?per_request=2&seed=9")"
SEEN=""
for off in 0 5 10 15 20 25; do
    api "?count=5&offset=$off&sort_field=last_changed&fields=members.id"
    SEEN="$SEEN $(py '" ".join(m["id"] for m in d["members"])' "$RESP")"
done
UNIQUE=$(printf '%s\n' $SEEN | sort -u | wc -l)
[[ $UNIQUE -lt 27 ]] && ok || bad "churn: a naive walk should miss members, saw $UNIQUE of 27"
S=$(curl -s "$URL/_stats")
expect "churned per request" "0 2 2 2 2 2" "$(py '" ".join(str(e["churned"]) for e in d["request_log"][-6:])' "$S")"
expect "touches counted (5 + 5 x 2)" 15 "$(py 'd["touched"]' "$S")"
expect "/_churn off" '{"per_request":0}' "$(post "/_churn?per_request=0")"
api "?count=5&offset=10"
S=$(curl -s "$URL/_stats")
expect "churn stopped" 0 "$(py 'd["request_log"][-1]["churned"]' "$S")"
expect "request log: offset/count/since/before" "10 5 None None" \
    "$(py '" ".join(str(d["request_log"][-1][k]) for k in ("offset","count","since","before"))' "$S")"
expect "request log: since as sent" "$CUT" \
    "$(py "[e['since'] for e in d['request_log'] if e['since']][0]" "$S")"
expect "stats count 401s" 4 "$(py 'd["status"]["401"]' "$S")"
expect "control connections do not count" 1 "$(py 'd["peak_connections"]' "$S")"
post /_reset_stats >/dev/null
S=$(curl -s "$URL/_stats")
expect "/_reset_stats" "0 0" "$(py 'str(d["requests"]) + " " + str(len(d["request_log"]))' "$S")"
get "$URL/_nope"
expect "unknown control" 404 "$CODE"
get "$URL/_touch"
expect "GET /_touch" 405 "$CODE"
stop_fake
expect "final stats on SIGTERM" 0 "$(py 'd["requests"]' "$(tail -n1 "$TMP/out")")"

# ---- connection limit ---------------------------------------------------------------
# Ten slow requests hold ten connections; once /_stats shows them, the 11th is refused.
run_limit() {
    start_fake --members 50 --latency-ms 1500 "$@"
    BG_PIDS=()
    for i in $(seq 1 10); do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 -u "x:$KEY" \
            "$MEMBERS?count=1&offset=$i" >"$TMP/slow.$i" &
        BG_PIDS+=($!)
    done
    for _ in $(seq 1 200); do
        [[ $(py 'd["current_connections"]' "$(curl -s "$URL/_stats")") == 10 ]] && break
        sleep 0.02
    done
    api "?count=1"
    for p in "${BG_PIDS[@]}"; do wait "$p" || true; done
    BG_PIDS=()
    SLOW=$(cat "$TMP"/slow.* | sort | uniq -c | tr -s ' ')
    S=$(curl -s "$URL/_stats")
}
run_limit
expect "11th connection: 429" 429 "$CODE"
expect "11th connection: title" "Too Many Requests" "$(py 'd["title"]' "$RESP")"
expect "the ten slow requests succeed" " 10 200" "$SLOW"
expect "peak_connections" 11 "$(py 'd["peak_connections"]' "$S")"
expect "one 429" 1 "$(py 'd["status"]["429"]' "$S")"
stop_fake
run_limit --overload-403
expect "overload: 403" 403 "$CODE"
expect "overload: empty body" "" "$RESP"
expect "overload: the ten succeed" " 10 200" "$SLOW"
stop_fake

# ---- faults ------------------------------------------------------------------------
start_fake --members 30 --retry-after-429 1 --missing-members-offset 0:1 --fail-offset 10:503:2 \
    --fail-offset 15 --non-json-offset 20:1 --hang-offset 25:1
api "?count=5&offset=0"
expect "retry-after-429: status" 429 "$CODE"
expect "retry-after-429: header" 1 "$(header Retry-After)"
api "?count=5&offset=0"
expect "missing members: status" 200 "$CODE"
expect "missing members: body" "False 30" "$(py 'str("members" in d) + " " + str(d["total_items"])' "$RESP")"
api "?count=5&offset=0"
expect "offset 0 then answers" 5 "$(py 'len(d["members"])' "$RESP")"
api "?count=5&offset=10"
expect "fail-offset 10, 1st" 503 "$CODE"
api "?count=5&offset=10"
expect "fail-offset 10, 2nd" 503 "$CODE"
api "?count=5&offset=10"
expect "fail-offset 10, 3rd answers" 200 "$CODE"
api "?count=5&offset=15"
api "?count=5&offset=15"
expect "fail-offset 15 (forever)" "500 Internal Server Error" "$CODE $(py 'd["title"]' "$RESP")"
api "?count=5&offset=20"
expect "non-JSON page: status" 200 "$CODE"
python3 -c 'import json,sys; json.loads(sys.argv[1])' "$RESP" 2>/dev/null && bad "non-JSON page parsed as JSON" || ok
api "?count=5&offset=20"
expect "non-JSON once, then JSON" 5 "$(py 'len(d["members"])' "$RESP")"
START=$(date +%s%N)
rc=0
curl -s -o /dev/null --max-time 1 -u "x:$KEY" "$MEMBERS?count=5&offset=25" || rc=$?
expect "hang: the client times out (curl 28)" 28 "$rc"
api "?count=5&offset=25"
expect "hang once, then answers" 5 "$(py 'len(d["members"])' "$RESP")"
# A hanging request must not keep SIGTERM from stopping the fake.
post /_reset_stats >/dev/null
curl -s -o /dev/null --max-time 30 -u "x:$KEY" "$MEMBERS?count=5&offset=25" &
BG_PIDS=($!)
S=$(curl -s "$URL/_stats")
stop_fake
wait "${BG_PIDS[0]}" 2>/dev/null || true
BG_PIDS=()
ELAPSED=$((($(date +%s%N) - START) / 1000000))
[[ $ELAPSED -lt 10000 ]] && ok || bad "stopping with a hanging request took ${ELAPSED} ms"

# ---- a million members ---------------------------------------------------------------
start_fake --members 1000000
api "?count=1000&offset=999000&fields=members.email_address,total_items"
expect "1M: total" 1000000 "$(py 'd["total_items"]' "$RESP")"
expect "1M: last page" "1000 user999999@example.org" "$(py 'str(len(d["members"])) + " " + d["members"][-1]["email_address"]' "$RESP")"
api "?count=1000&offset=250000&sort_field=last_changed&since_last_changed=2026-11-28T12:00:00Z&fields=members.last_changed,total_items"
expect "1M: sorted window" True "$(py 'len(d["members"]) == 1000 and 400000 < d["total_items"] < 600000 and all(a["last_changed"] <= b["last_changed"] for a, b in zip(d["members"], d["members"][1:])) and d["members"][0]["last_changed"] >= "2026-11-28T12:00:00"' "$RESP")"
stop_fake

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] || exit 1
