#!/usr/bin/env bash
# fake_controlshift must produce what ControlShift produces (signed webhooks,
# CSV exports) and serve them the way S3 does (Range, expired presigned URLs,
# truncated and slow downloads), or the sluice serve tests built on it prove
# nothing. Run by ctest with FAKES_DIR (build dir holding fake_controlshift, fake_hook).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FAKE="$FAKES_DIR/fake_controlshift"
[ -x "$FAKE" ] || {
    echo "FAIL: $FAKE is not an executable (build target fake_controlshift)"
    exit 1
}
[ -x "$FAKES_DIR/fake_hook" ] || { echo "FAIL: $FAKES_DIR/fake_hook is not built"; exit 1; }
for tool in curl python3 bunzip2; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is required"; exit 1; }
done
D=$T_DIR

# py SCRIPT ARGS...: run a python3 snippet (sys.argv[1:] are the ARGS).
py() { python3 -c "$@"; }
# jget JSON DOTTED.PATH: a nested value of a JSON document.
jget() {
    py 'import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(json.dumps(v) if isinstance(v, (dict, list)) or v is None else v)' "$1" "$2"
}
# hmac_hex SECRET FILE: hex HMAC-SHA256 computed outside the fake.
hmac_hex() {
    if command -v openssl >/dev/null; then
        openssl dgst -sha256 -hmac "$1" <"$2" | awk '{print $NF}'
    else
        py 'import hmac, hashlib, sys
print(hmac.new(sys.argv[1].encode(), open(sys.argv[2], "rb").read(), hashlib.sha256).hexdigest())' \
            "$1" "$2"
    fi
}
# start_mode NAME MODE ARGS...: run a server mode on a free port; sets NAME_PID, NAME_URL.
start_mode() {
    local name=$1 mode=$2
    shift 2
    rm -f "$D/$name.port"
    "$FAKE" "$mode" --port 0 --port-file "$D/$name.port" "$@" >"$D/$name.out" 2>"$D/$name.err" &
    local pid=$!
    T_PIDS+=("$pid")
    local port
    port=$(wait_port_file "$D/$name.port") || { cat "$D/$name.err"; exit 1; }
    eval "${name}_PID=$pid ${name}_URL=http://127.0.0.1:$port"
}
# stop_mode NAME: SIGTERM; it must exit 0 and print its final stats last.
stop_mode() {
    local pid_var="${1}_PID" rc=0
    kill -TERM "${!pid_var}" 2>/dev/null || true
    wait "${!pid_var}" || rc=$?
    expect_eq "$1: exit status after SIGTERM" 0 "$rc"
    [ "$rc" -eq 0 ] || tail -n 20 "$D/$1.err"
}
# get URL [CURL ARGS...]: sets CODE, RC (curl's exit status) and HDRS; body in $D/body.
get() {
    local url=$1
    shift
    RC=0
    CODE=$(curl -s -o "$D/body" -D "$D/hdrs" -w '%{http_code}' --max-time 20 "$@" "$url") || RC=$?
    HDRS=$(tr -d '\r' <"$D/hdrs" 2>/dev/null || true)
}
header() { printf '%s\n' "$HDRS" | grep -i "^$1:" | head -n1 | sed 's/^[^:]*: *//'; }
same_file() { cmp -s "$1" "$2"; }

# ---- gen ------------------------------------------------------------------------
out=$("$FAKE" gen --table petitions --rows 3000 --cols 20 --seed 7 --out "$D/p.csv")
echo "$out" >"$D/gen.out"
expect_match "gen: summary line" "$D/gen.out" \
    "wrote .*p\.csv: table petitions, 3000 rows \(ids 1\.\.3000\), 20 columns"
check "gen: no temporary file left behind" test -z "$(ls "$D" | grep '\.tmp\.' || true)"
shape=$(py 'import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
h, body = rows[0], rows[1:]
widths = {len(r) for r in body}
ids = [int(r[0]) for r in body]
cells = [c for r in body for c in r]
print(len(body), h[0], len(h), sorted(widths), ids == list(range(1, 3001)),
      "title" in h and "created_at" in h and "updated_at" in h,
      any("," in c for c in cells), any("\"" in c for c in cells),
      any("\n" in c for c in cells), any(ord(ch) > 127 for c in cells for ch in c),
      any(ord(ch) > 0xFFFF for c in cells for ch in c), "" in cells)' "$D/p.csv")
expect_eq "gen: rows, header, width, ids, columns, tricky values" \
    "3000 id 20 [20] True True True True True True True True" "$shape"
check "gen: NULL cells (empty, unquoted)" grep -q ',,' "$D/p.csv"
check "gen: empty-string cells (\"\")" grep -Eq ',"",|,""$' "$D/p.csv"
check "gen: a quoted value with a doubled quote" grep -q '""' "$D/p.csv"

"$FAKE" gen --table petitions --rows 3000 --cols 20 --seed 7 --out "$D/p2.csv" >/dev/null
check "gen: deterministic for a seed" same_file "$D/p.csv" "$D/p2.csv"
"$FAKE" gen --table petitions --rows 3000 --cols 20 --seed 8 --out "$D/p3.csv" >/dev/null
check "gen: another seed gives other values" bash -c "! cmp -s '$D/p.csv' '$D/p3.csv'"

# Rows depend on (seed, id) only: rows 1..2000 + 2001..3000 equal rows 1..3000.
"$FAKE" gen --table petitions --rows 2000 --cols 20 --seed 7 --out "$D/full.csv" >/dev/null
"$FAKE" gen --table petitions --rows 1000 --cols 20 --seed 7 --start-id 2001 \
    --out "$D/incr.csv" >/dev/null
check "gen: full export + incremental (--start-id) equal one longer export" same_file \
    "$D/p.csv" <(cat "$D/full.csv"; tail -n +2 "$D/incr.csv")
first_incr=$(py 'import csv, sys
r = list(csv.reader(open(sys.argv[1], newline="", encoding="utf-8")))
print(r[1][0], r[-1][0], len(r) - 1)' "$D/incr.csv")
expect_eq "gen: --start-id ids" "2001 3000 1000" "$first_incr"

"$FAKE" gen --table petitions --rows 3000 --cols 20 --seed 7 --bz2 --out "$D/p.csv.bz2" >/dev/null
expect_eq "gen --bz2: bzip2 magic" "BZh" "$(head -c 3 "$D/p.csv.bz2")"
check "gen --bz2: bunzip2 -c equals the plain export" same_file "$D/p.csv" \
    <(bunzip2 -c "$D/p.csv.bz2")

"$FAKE" gen --table no_such_table_yet --rows 2 --cols 30 --out "$D/unknown.csv" >/dev/null
expect_eq "gen: unknown table gets generic + extra columns" \
    "id created_at 30 extra_" \
    "$(py 'import csv, sys
h = next(csv.reader(open(sys.argv[1], newline="", encoding="utf-8")))
print(h[0], h[1], len(h), h[-1][:6])' "$D/unknown.csv")"
"$FAKE" gen --table signatures --rows 0 --cols 5 --out "$D/empty.csv" >/dev/null
expect_eq "gen --rows 0: header only" "id,petition_id,email,first_name,last_name" \
    "$(cat "$D/empty.csv")"
rc=0
"$FAKE" gen --table petitions --out "$D/x.csv" 2>"$D/usage.err" || rc=$?
expect_eq "gen without --rows: usage error" 2 "$rc"
expect_match "gen without --rows: says what is missing" "$D/usage.err" "--rows"

# ---- serve ----------------------------------------------------------------------
start_mode S serve --dir "$D" --record-requests "$D/req.jsonl"
expect_eq "serve: listening line" "fake_controlshift listening on ${S_URL#http://}" \
    "$(head -n1 "$D/S.out")"
SIZE=$(stat -c %s "$D/p.csv")

get "$S_URL/exports/p.csv"
expect_eq "download: status" 200 "$CODE"
check "download: body equals the file" same_file "$D/body" "$D/p.csv"
expect_eq "download: Content-Length" "$SIZE" "$(header Content-Length)"
expect_eq "download: Accept-Ranges" bytes "$(header Accept-Ranges)"

# A presigned URL's credentials travel in the query: tolerated and ignored.
Q="X-Amz-Algorithm=AWS4-HMAC-SHA256"
Q+="&X-Amz-Credential=AKIAFAKE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
Q+="&X-Amz-Expires=21600&X-Amz-Signature=deadbeef&sig=s3cr3tsig"
get "$S_URL/exports/p.csv.bz2?$Q"
expect_eq "presigned query: status" 200 "$CODE"
check "presigned query: body equals the bz2 file" same_file "$D/body" "$D/p.csv.bz2"
expect_eq "bz2: Content-Type" application/x-bzip2 "$(header Content-Type)"

get "$S_URL/exports/p.csv" -H 'Range: bytes=100-4099'
expect_eq "Range a-b: status" 206 "$CODE"
expect_eq "Range a-b: Content-Range" "bytes 100-4099/$SIZE" "$(header Content-Range)"
expect_eq "Range a-b: Content-Length" 4000 "$(header Content-Length)"
check "Range a-b: the right bytes" same_file "$D/body" <(tail -c +101 "$D/p.csv" | head -c 4000)

get "$S_URL/exports/p.csv" -H "Range: bytes=$((SIZE - 10))-"
expect_eq "Range a-: status" 206 "$CODE"
check "Range a-: the last 10 bytes" same_file "$D/body" <(tail -c 10 "$D/p.csv")
get "$S_URL/exports/p.csv" -H 'Range: bytes=-25'
expect_eq "Range -n: status" 206 "$CODE"
check "Range -n: the last 25 bytes" same_file "$D/body" <(tail -c 25 "$D/p.csv")
get "$S_URL/exports/p.csv" -H "Range: bytes=$SIZE-"
expect_eq "Range past the end: status" 416 "$CODE"
expect_eq "Range past the end: Content-Range" "bytes */$SIZE" "$(header Content-Range)"
expect_match "Range past the end: S3 InvalidRange echoing the range" "$D/body" \
    "<Code>InvalidRange</Code>.*<RangeRequested>bytes=$SIZE-</RangeRequested>"

# curl's resume (-C -) is what a client that kept a partial file does.
head -c 5000 "$D/p.csv" >"$D/resumed"
RC=0
curl -s -C - -o "$D/resumed" --max-time 20 "$S_URL/exports/p.csv" || RC=$?
expect_eq "resume with curl -C -: exit status" 0 "$RC"
check "resume with curl -C -: file complete" same_file "$D/resumed" "$D/p.csv"

get "$S_URL/exports/p.csv?expired=1&X-Amz-Signature=abc"
expect_eq "expired: status" 403 "$CODE"
expect_match "expired: S3 AccessDenied" "$D/body" \
    '<Error><Code>AccessDenied</Code><Message>Request has expired</Message>'
expect_eq "expired: XML content type" application/xml "$(header Content-Type)"

get "$S_URL/exports/nope.csv"
expect_eq "missing export: status" 404 "$CODE"
expect_match "missing export: S3 NoSuchKey naming the key" "$D/body" \
    '<Code>NoSuchKey</Code>.*<Key>exports/nope.csv</Key>'
get "$S_URL/exports/..%2Fp.csv"
expect_eq "path traversal: 404" 404 "$CODE"
get "$S_URL/exports/p.csv" -X POST
expect_eq "POST an export: 405" 405 "$CODE"
get "$S_URL/exports/p.csv?drop_after=abc"
expect_eq "bad drop_after: 400" 400 "$CODE"
expect_match "bad drop_after: names the parameter" "$D/body" 'drop_after must be'

get "$S_URL/exports/p.csv" -I
expect_eq "HEAD: status" 200 "$CODE"
expect_eq "HEAD: Content-Length" "$SIZE" "$(header Content-Length)"
expect_eq "HEAD: no body bytes" 0 \
    "$(curl -s -I -o /dev/null -w '%{size_download}' --max-time 5 "$S_URL/exports/p.csv")"

# Truncated download: headers promise the whole file, 1000 bytes come, then EOF.
get "$S_URL/exports/p.csv?drop_after=1000"
expect_eq "drop_after: status line" 200 "$CODE"
expect_eq "drop_after: full Content-Length promised" "$SIZE" "$(header Content-Length)"
expect_eq "drop_after: curl reports a partial transfer (18)" 18 "$RC"
expect_eq "drop_after: partial body size" 1000 "$(stat -c %s "$D/body")"
check "drop_after: partial body is the file's start" same_file "$D/body" <(head -c 1000 "$D/p.csv")
get "$S_URL/exports/p.csv" -H 'Range: bytes=2000-' -G -d drop_after=300
expect_eq "drop_after with Range: 206" 206 "$CODE"
check "drop_after with Range: 300 bytes from offset 2000" same_file "$D/body" \
    <(tail -c +2001 "$D/p.csv" | head -c 300)

# drop_times=1: only the first request of the file is cut, a retry gets it all.
get "$S_URL/exports/p.csv.bz2?drop_after=10&drop_times=1"
expect_eq "drop_times=1: first request cut" "18 10" "$RC $(stat -c %s "$D/body")"
get "$S_URL/exports/p.csv.bz2?drop_after=10&drop_times=1"
expect_eq "drop_times=1: second request whole" 0 "$RC"
check "drop_times=1: second body equals the file" same_file "$D/body" "$D/p.csv.bz2"

# slow_ms pauses between 64 KB chunks: 4 chunks of a 256 KB range = 3 pauses.
start_ns=$(date +%s%N)
get "$S_URL/exports/p.csv?slow_ms=200" -H 'Range: bytes=0-262143'
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
expect_eq "slow_ms: status" 206 "$CODE"
check "slow_ms: body intact" same_file "$D/body" <(head -c 262144 "$D/p.csv")
if [ "$elapsed_ms" -ge 580 ]; then ok "slow_ms: 3 pauses of 200 ms (took ${elapsed_ms} ms)"; else
    not_ok "slow_ms: expected >= 600 ms for 3 pauses, took ${elapsed_ms} ms"
fi

S=$(curl -s --max-time 5 "$S_URL/_stats")
expect_eq "stats: requests" 19 "$(jget "$S" requests)"
expect_eq "stats: downloads (GET answered 200/206)" 11 "$(jget "$S" downloads)"
expect_eq "stats: drops" 3 "$(jget "$S" drops)"
expect_eq "stats: status 206" 6 "$(jget "$S" status.206)"
expect_eq "stats: status 403" 1 "$(jget "$S" status.403)"
expect_eq "stats: status 404" 2 "$(jget "$S" status.404)"
expect_eq "stats: status 416" 1 "$(jget "$S" status.416)"
BZSIZE=$(stat -c %s "$D/p.csv.bz2")
expect_eq "stats: bytes sent" \
    $((SIZE + BZSIZE + 4000 + 10 + 25 + SIZE - 5000 + 1000 + 300 + 10 + BZSIZE + 262144)) \
    "$(jget "$S" bytes)"

expect_eq "record: one line per request" 19 "$(wc -l <"$D/req.jsonl" | tr -d ' ')"
rec2=$(sed -n 2p "$D/req.jsonl")
expect_eq "record: presigned query args kept (decoded)" \
    "AKIAFAKE/20240101/us-east-1/s3/aws4_request s3cr3tsig 200" \
    "$(py 'import json, sys
r = json.loads(sys.argv[1])
print(r["args"]["X-Amz-Credential"], r["args"]["sig"], r["status"])' "$rec2")"
expect_eq "record: Range header kept" "bytes=100-4099 206" \
    "$(py 'import json, sys; r = json.loads(sys.argv[1]); print(r["range"], r["status"])' \
        "$(sed -n 3p "$D/req.jsonl")")"

CODE=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$S_URL/_reset")
expect_eq "POST /_reset: status" 200 "$CODE"
expect_eq "after reset: downloads" 0 "$(jget "$(curl -s "$S_URL/_stats")" downloads)"
stop_mode S
expect_eq "serve: final stats line" 0 "$(jget "$(tail -n1 "$D/S.out")" requests)"

# ---- send -----------------------------------------------------------------------
SECRET='s3cr3t-webhook'
start_mode R receive --record "$D/hooks.jsonl"
# body_of N / header_of N NAME: the Nth recorded request's body (to a file) / header.
body_of() { py 'import json, sys
r = json.loads(open(sys.argv[1]).readlines()[int(sys.argv[2]) - 1])
sys.stdout.write(r["body"])' "$D/hooks.jsonl" "$1" >"$D/hook$1.body"; }
header_of() { py 'import json, sys
r = json.loads(open(sys.argv[1]).readlines()[int(sys.argv[2]) - 1])
print(r["headers"].get(sys.argv[3], "(absent)"))' "$D/hooks.jsonl" "$1" "$2"; }

FILE_URL="${S_URL}/exports/petitions.csv.bz2?X-Amz-Credential=AKIAFAKE%2Fx&X-Amz-Signature=ab12"
out=$("$FAKE" send --to "$R_URL/controlshift" --secret "$SECRET" \
    --type data.full_table_exported --table petitions --url "$FILE_URL" --jid job-1 \
    2>"$D/send.err") && rc=0 || rc=$?
expect_eq "send: prints the status, exits 0" "200 0" "$out $rc"
expect_eq "send: answer body on stderr" '{"ok":true}' "$(cat "$D/send.err")"
body_of 1
expect_eq "send: the body ControlShift sends, byte for byte" \
    "{\"type\":\"data.full_table_exported\",$(
    )\"data\":{\"url\":\"$FILE_URL\",\"table\":\"petitions\",$(
    )\"s3\":{\"bucket\":\"fake-bucket\",\"key\":\"exports/petitions.csv.bz2\"},$(
    )\"compression_format\":\"bzip2\"},\"jid\":\"job-1\"}" \
    "$(cat "$D/hook1.body")"
expect_eq "send: signature header is sha256:<HMAC-SHA256(secret, body)>" \
    "sha256:$(hmac_hex "$SECRET" "$D/hook1.body")" "$(header_of 1 x-controlshift-webhook-signature)"
expect_eq "send: Content-Type" application/json "$(header_of 1 content-type)"
expect_eq "send: method and path" "POST /controlshift" \
    "$(py 'import json, sys; r = json.loads(open(sys.argv[1]).readline())
print(r["method"], r["path"])' "$D/hooks.jsonl")"

out=$("$FAKE" send --to "$R_URL/controlshift" --secret "$SECRET" \
    --type data.incremental_table_exported --table signatures --url "$S_URL/exports/s.csv" \
    --compression none --redeliver 3 2>/dev/null)
expect_eq "--redeliver 3: three statuses" "200 200 200" "$(echo $out)"
for n in 2 3 4; do body_of $n; done
check "--redeliver: same body each time" same_file "$D/hook2.body" "$D/hook4.body"
check "--redeliver: same body each time (middle)" same_file "$D/hook2.body" "$D/hook3.body"
jid=$(jget "$(cat "$D/hook2.body")" jid)
check "default jid: 24 hex characters ($jid)" bash -c "[[ '$jid' =~ ^[0-9a-f]{24}$ ]]"
expect_eq "incremental: type, table, compression, key" \
    "data.incremental_table_exported signatures none exports/s.csv" \
    "$(py 'import json, sys; b = json.loads(sys.argv[1]); d = b["data"]
print(b["type"], d["table"], d["compression_format"], d["s3"]["key"])' "$(cat "$D/hook2.body")")"

"$FAKE" send --to "$R_URL/c" --secret "$SECRET" --type data.full_table_exported \
    --table petitions --url "$S_URL/exports/p.csv" --bad-signature >/dev/null 2>&1
body_of 5
sig5=$(header_of 5 x-controlshift-webhook-signature)
check "--bad-signature: well-formed header ($sig5)" bash -c "[[ '$sig5' =~ ^sha256:[0-9a-f]{64}$ ]]"
check "--bad-signature: HMAC does not match" \
    test "$sig5" != "sha256:$(hmac_hex "$SECRET" "$D/hook5.body")"
"$FAKE" send --to "$R_URL/c" --no-signature --type data.full_table_exported \
    --table petitions --url "$S_URL/exports/p.csv" >/dev/null 2>&1
expect_eq "--no-signature: no header" "(absent)" "$(header_of 6 x-controlshift-webhook-signature)"

printf '{"type":"data.full_table_exported","data":{"url":' >"$D/raw.json"
"$FAKE" send --to "$R_URL/c" --secret "$SECRET" --raw-body "$D/raw.json" >/dev/null 2>&1
body_of 7
check "--raw-body: the file's bytes sent as is" same_file "$D/hook7.body" "$D/raw.json"
expect_eq "--raw-body: still signed over those bytes" \
    "sha256:$(hmac_hex "$SECRET" "$D/raw.json")" "$(header_of 7 x-controlshift-webhook-signature)"

out=$("$FAKE" send --to "$R_URL/c" --secret "$SECRET" --type data.table_schema_changed \
    --table petitions --url "$S_URL/exports/p.csv" 2>/dev/null)
expect_eq "other --type: sent" "200 data.table_schema_changed" \
    "$out $(body_of 8; jget "$(cat "$D/hook8.body")" type)"
stop_mode R
expect_eq "receive: final stats" 8 "$(jget "$(tail -n1 "$D/R.out")" requests)"

start_mode R5 receive --status 503
out=$("$FAKE" send --to "$R_URL/c" --secret x --type t --table t --url http://h/e 2>/dev/null) \
    && rc=0 || rc=$?
expect_eq "connection refused: 000 and exit 1" "000 1" "$out $rc"
out=$("$FAKE" send --to "$R5_URL/c" --secret x --type t --table t --url http://h/e 2>/dev/null) \
    && rc=0 || rc=$?
expect_eq "a 503 answer: printed, exit 0" "503 0" "$out $rc"
stop_mode R5

# A generic JSON receiver (fake_hook) accepts and records the same body.
start_fake_hook H
out=$("$FAKE" send --to "http://127.0.0.1:$FAKE_H_PORT/hook" --secret "$SECRET" \
    --type data.full_table_exported --table members --url "$S_URL/exports/m.csv.bz2" \
    --jid j-9 2>/dev/null)
expect_eq "fake_hook: 200" 200 "$out"
stop_fake "$FAKE_H_PID"
expect_eq "fake_hook: recorded body parses" "members bzip2 j-9" \
    "$(py 'import json, sys; b = json.loads(open(sys.argv[1]).readline())
print(b["data"]["table"], b["data"]["compression_format"], b["jid"])' "$FAKE_H_RECORD")"

finish
