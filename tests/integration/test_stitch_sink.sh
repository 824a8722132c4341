#!/usr/bin/env bash
# CSV -> infer -> stitch sink -> fake_stitch: every row lands with its JSON
# type, a row that does not conform to the declared schema is the only one
# dead-lettered (the engine isolates it by halves), a record over the 4 MB
# limit is dead-lettered without being sent, batches stay under 4 MB and
# 10,000 messages, sequences grow across runs, and a refused token stops the
# run (exit 1) without ever being printed.
source "$(dirname "$0")/lib.sh"

export STITCH_TOKEN=stitch-SECRET-token-4242
pyq() { python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
# rows PORT TABLE EXPR: EXPR on the stored rows (j), read from stdin (too big for argv)
rows() { curl -fsS "http://127.0.0.1:$1/_tables/$2" |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$3"; }
dead_letter() { # PIPELINE LINE COLUMN
    sqlite3 "$T_DIR/.sluice/state.db" \
        "select $3 from dead_letters where pipeline='$1' and line=$2" 2>/dev/null || true
}

# 25,000 rows (more than one request's 10,000), row 7 has a non-integer age
python3 - "$T_DIR/people.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("email_address,age,score,member,joined\n")
    for i in range(1, 25001):
        age = "forty" if i == 6 else str(20 + i % 50)
        f.write(f"p{i}@example.org,{age},{i % 7}.5,{'true' if i % 2 else 'false'},2024-01-{1 + i % 28:02d}T10:00:00Z\n")
PY
cat >"$T_DIR/stitch.yml" <<'EOF2'
pipelines:
  people:
    source:
      type: csv
      path: ${CSV:-people.csv}
    steps:
      - type: infer
        except: [email_address]
    sink:
      type: stitch
      url: ${STITCH_API_URL}
      token: ${STITCH_TOKEN}
      table: people
      key_names: [email_address]
      schema: {age: integer, joined: date-time}
    batch:
      records: ${BATCH_RECORDS:-10000}
      bytes: ${BATCH_BYTES:-2MB}
    retry: {max_attempts: 4}
EOF2

start_fake_stitch st
P=$FAKE_st_PORT

set +e
sluice run -c stitch.yml >"$T_DIR/run1.out" 2>&1
rc=$?
set -e
expect_eq "run 1: exit 2 (one row dead-lettered)" 2 "$rc"
expect_match "run 1: 24,999 sent, 1 dead-lettered" "$T_DIR/run1.out" "read 25000 +sent 24999 +dead-lettered 1"
s=$(fake_stats "$P")
expect_eq "all good rows stored" 24999 "$(rows "$P" people 'len(j)')"
expect_eq "no request over 10,000 messages" True "$(pyq "$s" 'j["max_messages_per_request"] <= 10000')"
expect_eq "no request body of 4 MB or more" True "$(pyq "$s" 'j["max_body_bytes"] < 4*1024*1024')"
expect_eq "types as inferred: integer, number, boolean, string" \
    "<class 'int'> <class 'float'> <class 'bool'> <class 'str'>" \
    "$(rows "$P" people '" ".join(str(type(r["data"][k])) for r in j[:1] for k in ("age","score","member","joined"))')"
expect_eq "row 7 (age 'forty') not stored" 0 \
    "$(rows "$P" people 'sum(1 for r in j if r["data"]["email_address"]=="p6@example.org")')"
if command -v sqlite3 >/dev/null; then
    expect_match "dead letter names Stitch's reason" <(dead_letter people 7 error) \
        "Stitch refused the batch for table 'people' \(HTTP 400\): Record 0 for table people did not conform to schema: #/age: expected type: null\|integer, found: string"
    expect_eq "only row 7 dead-lettered" 1 \
        "$(sqlite3 "$T_DIR/.sluice/state.db" "select count(*) from dead_letters where pipeline='people'")"
fi
seq1=$(rows "$P" people 'max(r["sequence"] for r in j)')
expect_no_match "token never printed" "$T_DIR/run1.out" "$STITCH_TOKEN"

# --- run 2: the same rows again: every key's sequence grows ----------------
set +e
sluice run -c stitch.yml --again >"$T_DIR/run2.out" 2>&1
rc=$?
set -e
expect_eq "run 2: exit 2" 2 "$rc"
s=$(fake_stats "$P")
expect_eq "run 2: no sequence regressed (every key replaced by the newer run)" 0 "$(json_get "$s" sequence_regressions)"
expect_eq "run 2: every stored sequence above run 1's highest" True \
    "$(rows "$P" people "min(r['sequence'] for r in j) > $seq1")"

# --- a record over 4 MB: dead-lettered before sending --------------------------
curl -fsS -XPOST "http://127.0.0.1:$P/_reset" >/dev/null
python3 - "$T_DIR/big.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("email_address,age,score,member,joined\n")
    f.write("a@example.org,30,1.5,true,2024-01-01T00:00:00Z\n")
    f.write("big@example.org,31,2.5,true," + "x" * (5 * 1024 * 1024) + "\n")
    f.write("c@example.org,32,3.5,false,2024-01-03T00:00:00Z\n")
PY
cat >"$T_DIR/big.yml" <<'EOF2'
pipelines:
  big:
    source: {type: csv, path: big.csv, max_row_bytes: 8MB}
    steps: [{type: infer, except: [email_address]}]
    sink: {type: stitch, url: "${STITCH_API_URL}", token: "${STITCH_TOKEN}", table: people, key_names: [email_address]}
EOF2
set +e
sluice run -c big.yml >"$T_DIR/big.out" 2>&1
rc=$?
set -e
expect_eq "big: exit 2" 2 "$rc"
expect_match "big: 2 sent, 1 dead-lettered" "$T_DIR/big.out" "read 3 +sent 2 +dead-lettered 1"
s=$(fake_stats "$P")
expect_eq "big: no request refused (413 never seen)" 0 "$(json_get "$s" rejected_requests)"
if command -v sqlite3 >/dev/null; then
    expect_match "big: reason names the size limit" <(dead_letter big 3 error) \
        "record is [0-9]+ bytes as a Stitch message: a request to table 'people' must stay under 4194304 bytes"
fi

# --- many large rows: batches split by bytes under 4 MB -------------------------
curl -fsS -XPOST "http://127.0.0.1:$P/_reset" >/dev/null
python3 - "$T_DIR/wide.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("email_address,age,score,member,joined\n")
    for i in range(60):
        f.write(f"w{i}@example.org,{i},0.5,true," + "y" * 300000 + "\n")
PY
cat >"$T_DIR/wide.yml" <<'EOF2'
pipelines:
  wide:
    source: {type: csv, path: wide.csv}
    steps: [{type: infer, except: [email_address]}]
    sink: {type: stitch, url: "${STITCH_API_URL}", token: "${STITCH_TOKEN}", table: wide, key_names: [email_address]}
    batch:
      bytes: ${BATCH_BYTES:-2MB}
EOF2
set +e
sluice run -c wide.yml >"$T_DIR/wide.out" 2>&1
rc=$?
set -e
s=$(fake_stats "$P")
expect_eq "wide: exit 0" 0 "$rc"
expect_eq "wide: all 60 rows stored" 60 "$(json_get "$s" accepted_messages)"
expect_eq "wide: every accepted body under 4 MB" True "$(pyq "$s" 'j["max_body_bytes"] < 4*1024*1024')"
expect_eq "wide: several requests, none refused" "True 0" "$(pyq "$s" '"%s %d" % (j["accepted_requests"] > 1, j["rejected_requests"])')"
# batch.bytes raised to the limit itself: a batch closes just past 4 MB, Stitch
# answers 413 and the engine sends it in halves; nothing is lost
curl -fsS -XPOST "http://127.0.0.1:$P/_reset" >/dev/null
set +e
BATCH_BYTES=4MB sluice run -c wide.yml --again >"$T_DIR/wide2.out" 2>&1
rc=$?
set -e
s=$(fake_stats "$P")
expect_eq "wide, 4MB batches: exit 0" 0 "$rc"
expect_eq "wide, 4MB batches: a 413 was answered and split" True "$(pyq "$s" 'j["status"]["413"] >= 1')"
expect_eq "wide, 4MB batches: all 60 rows stored" 60 "$(json_get "$s" accepted_messages)"

# --- a refused token: exit 1, the token never printed ---------------------------
set +e
STITCH_TOKEN=wrong-SECRET-token-1 sluice run -c stitch.yml --again >"$T_DIR/bad.out" 2>&1
rc=$?
set -e
expect_eq "bad token: exit 1" 1 "$rc"
expect_match "bad token: says the token was refused" "$T_DIR/bad.out" "Stitch refused the token \(HTTP 401\)"
expect_no_match "bad token: never printed" "$T_DIR/bad.out" "wrong-SECRET-token-1"

finish
