#!/usr/bin/env bash
# fake_stitch refuses what the Stitch Import API refuses and keeps what it
# accepted per table (latest version of each key by sequence).
source "$(dirname "$0")/lib.sh"

export STITCH_TOKEN=fake-stitch-SECRET-1
start_fake_stitch fs --fail-first 1:503 --retry-after 0
U=$STITCH_API_URL/v2/import/batch
SCHEMA='{"properties":{"id":{"type":"integer"},"name":{"type":["null","string"]},"at":{"type":["null","string"],"format":"date-time"}}}'
# post BODY [CURL ARGS...]: prints "STATUS BODY"
post() {
    local body=$1
    shift
    curl -sS -o "$T_DIR/resp" -w '%{http_code}' -XPOST "$U" -H "Authorization: Bearer $STITCH_TOKEN" \
        -H 'Content-Type: application/json' "$@" --data-binary "$body"
    echo " $(cat "$T_DIR/resp")"
}
batch() { echo "{\"table_name\":\"t\",\"key_names\":[\"id\"],\"schema\":$SCHEMA,\"messages\":[$1]}"; }
m() { echo "{\"action\":\"upsert\",\"sequence\":$1,\"data\":$2}"; }

expect_match "first request: injected 503 with Retry-After" <(curl -sS -i -XPOST "$U" -d x) "^HTTP/1.1 503"
expect_match "no token: 401" <(curl -sS -w ' %{http_code}' -XPOST "$U" -H 'Content-Type: application/json' -d '{}') " 401$"
expect_match "wrong token: 401, token not echoed" <(curl -sS -w ' %{http_code}' -XPOST "$U" -H 'Authorization: Bearer nope-XYZ' -d '{}') "unknown token.* 401$"
expect_match "text/plain: 415" <(curl -sS -w ' %{http_code}' -XPOST "$U" -H "Authorization: Bearer $STITCH_TOKEN" \
    -H 'Content-Type: text/plain' --data-binary "$(batch "$(m 1 '{"id":1}')")") "Content-Type must be application/json.* 415$"
expect_match "no table_name: 400" <(post '{"schema":{"properties":{}},"messages":[]}') "^400 .*table_name"
expect_match "no schema: 400" <(post '{"table_name":"t","messages":[]}') "^400 .*schema"
expect_match "type mismatch: 400 with the record and column" <(post "$(batch "$(m 1 '{"id":1}'),$(m 2 '{"id":"two"}')")") \
    '^400 .*Record 1 for table t did not conform to schema: #/id: expected type: integer, found: string'
expect_match "missing key: 400" <(post "$(batch "$(m 1 '{"name":"a"}')")") '^400 .*required key \[id\] not found'
expect_match "bad date-time: 400" <(post "$(batch "$(m 1 '{"id":1,"at":"yesterday"}')")") '^400 .*not a valid date-time'
expect_match "column not in schema: 400" <(post "$(batch "$(m 1 '{"id":1,"zip":"x"}')")") '^400 .*#/zip: not described'
expect_match "sequence not an integer: 400" <(post "$(batch "$(m 1.5 '{"id":1}')")") "^400 .*'sequence' must be an integer"
python3 -c '
import json
print(json.dumps({"table_name":"t","key_names":["id"],"schema":{"properties":{"id":{"type":"integer"}}},
  "messages":[{"action":"upsert","sequence":i,"data":{"id":i}} for i in range(10001)]}))' >"$T_DIR/many.json"
expect_match "10,001 messages: 400" <(post @"$T_DIR/many.json") "^400 .*at most 10000"
python3 -c 'print("{\"table_name\":\"t\",\"pad\":\"" + "x"*(4*1024*1024) + "\"}")' >"$T_DIR/huge.json"
expect_match "4 MB body: 413" <(post @"$T_DIR/huge.json") "^413 "
expect_match "valid batch: 201" <(post "$(batch "$(m 5 '{"id":1,"name":"a","at":"2024-01-01T00:00:00Z"}'),$(m 6 '{"id":2,"name":null}')")") '^201 .*Batch accepted'
expect_match "older sequence for id 1: accepted, not applied" <(post "$(batch "$(m 4 '{"id":1,"name":"old"}')")") '^201 '
s=$(fake_stats "$FAKE_fs_PORT")
expect_eq "stats: accepted" "2 3 1" "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["accepted_requests"], j["accepted_messages"], j["sequence_regressions"])' "$s")"
expect_eq "table keeps the latest version per key" "a None" \
    "$(curl -fsS "$STITCH_API_URL/_tables/t" | python3 -c 'import json,sys; j=sorted(json.load(sys.stdin), key=lambda r: r["data"]["id"]); print(j[0]["data"]["name"], j[1]["data"]["name"])')"
expect_eq "record file: one line per accepted message" 3 "$(wc -l <"$FAKE_fs_RECORD")"
finish
