#!/usr/bin/env bash
# The generic http sink behind the map step, against fake_hook: a JSON array
# per batch expecting 201 (the Mailchimp target's shape), and one request per
# record where the target refuses one member with 400: only that member is
# dead-lettered, with the target's body, and the run exits 2.
source "$(dirname "$0")/lib.sh"

FAKE="$FAKES_DIR/fake_hook"

start_hook() { # NAME ARGS...: sets PORT
    local name=$1
    shift
    "$FAKE" --port 0 --port-file "$T_DIR/$name.port" --record "$T_DIR/$name.jsonl" "$@" \
        2>"$T_DIR/$name.err" &
    T_PIDS+=($!)
    for _ in $(seq 1 100); do
        [ -s "$T_DIR/$name.port" ] && break
        sleep 0.05
    done
    PORT=$(cat "$T_DIR/$name.port")
}

cd "$T_DIR"
cat >members.csv <<'CSV'
id,email_address,FNAME,LNAME,status
m1,  Ann@Example.org ,Ann ,Lee,subscribed
m2,bad@example.org,Bob,,unsubscribed
m3,cy@example.org,Cy,Zed,subscribed
CSV

# --- array bodies, expect 201
start_hook arr --status 201
cat >arr.yml <<YML
pipelines:
  members:
    source: {type: csv, path: members.csv}
    steps:
      - type: map
        fields:
          id: id
          firstname: FNAME | trim
          lastname: LNAME | null_if_empty
          email: email_address | trim | lowercase
          status: status
    sink:
      type: http
      url: http://127.0.0.1:$PORT/hook
      expect_status: [201]
YML
rc=0
"$SLUICE_BIN" run -c arr.yml >arr.out 2>&1 || rc=$?
expect_eq "array run exits 0" 0 "$rc"
expect_eq "one request with the three members, mapped" \
    '[{"id":"m1","firstname":"Ann","lastname":"Lee","email":"ann@example.org","status":"subscribed"},{"id":"m2","firstname":"Bob","lastname":null,"email":"bad@example.org","status":"unsubscribed"},{"id":"m3","firstname":"Cy","lastname":"Zed","email":"cy@example.org","status":"subscribed"}]' \
    "$(cat arr.jsonl)"

# --- a 200 where 201 is expected fails the batch, with the body in the reason
start_hook ok200 --status 200
sed "s/:$(grep -o '127.0.0.1:[0-9]*' arr.yml | cut -d: -f2)\//:$PORT\//" arr.yml >ok200.yml
rc=0
"$SLUICE_BIN" run -c ok200.yml --again >ok200.out 2>&1 || rc=$?
expect_eq "200 instead of 201: exit 2 (dead-lettered)" 2 "$rc"
"$SLUICE_BIN" status -c ok200.yml members >ok200.status 2>&1 || true
expect_match "the reason names the expected status and the body" ok200.out \
    'expected HTTP 201 from http://127.0.0.1:[0-9]+/hook, got 200: \{"ok":true\}'

# --- array bodies, the target refuses the whole array for two members in it
# (a 400 that cannot say which): the batch is sent again in halves until the
# two are alone; only they are dead-lettered, with the answer, the 38 others
# arrive once each
start_hook split --status 201 --reject @bad.
python3 - >many.csv <<'PY'
print("id,email_address,FNAME,LNAME,status")
for i in range(40):
    mail = "m%d@bad.example.org" % i if i in (7, 29) else "m%d@example.org" % i
    print("m%d,%s,F%d,L%d,subscribed" % (i, mail, i, i))
PY
sed -e "s/:$(grep -o '127.0.0.1:[0-9]*' arr.yml | cut -d: -f2)\//:$PORT\//" \
    -e 's/path: members.csv/path: many.csv/' arr.yml >split.yml
rc=0
"$SLUICE_BIN" run -c split.yml >split.out 2>&1 || rc=$?
expect_eq "two refused members: exit 2" 2 "$rc"
expect_match "read 40, sent 38, dead-lettered 2" split.out 'read 40 +sent 38 +dead-lettered 2'
check "each of the 38 arrived exactly once, the two never" python3 - split.jsonl <<'PY'
import json, sys, collections
seen = collections.Counter()
for line in open(sys.argv[1]):
    body = json.loads(line)
    if any("@bad." in m["email"] for m in body):
        continue  # a refused request: nothing of it was delivered
    for m in body:
        seen[m["id"]] += 1
want = {"m%d" % i for i in range(40)} - {"m7", "m29"}
assert set(seen) == want, sorted(set(seen) ^ want)
assert max(seen.values()) == 1, seen.most_common(3)
PY
"$SLUICE_BIN" status -c split.yml members >split.status 2>&1 || true
expect_match "the dead letters carry the target's answer" split.status 'member rejected'
expect_match "and name the two members" split.status 'm7@bad.example.org'

# --- one request per record; the target refuses one member
start_hook rec --status 201 --reject bad@
cat >rec.yml <<YML
pipelines:
  members:
    source: {type: csv, path: members.csv}
    steps:
      - type: map
        fields:
          id: id
          email: email_address | trim | lowercase
    sink:
      type: http
      format: record
      url: http://127.0.0.1:$PORT/hook?member={id}
      headers: {X-Member: "{id}"}
      expect_status: 201
    batch: {records: 1}
YML
rc=0
"$SLUICE_BIN" run -c rec.yml --again >rec.out 2>&1 || rc=$?
expect_eq "record run exits 2 (one dead letter)" 2 "$rc"
expect_eq "the two good members arrived, one request each" \
    "$(printf '%s\n' '{"id":"m1","email":"ann@example.org"}' '{"id":"m3","email":"cy@example.org"}')" \
    "$(sort rec.jsonl)"
"$SLUICE_BIN" status -c rec.yml members >rec.status 2>&1 || true
expect_match "the refused member is dead-lettered with the target's body" rec.status \
    'HTTP 400 from http://127.0.0.1:[0-9]+/hook: \{"error":"member rejected"\}'
expect_match "read 3, sent 2, dead-lettered 1" rec.out 'read 3 +sent 2 +dead-lettered 1'

# --- record mode sizes its own batches: no batch setting needed
sed 's/batch: {records: 1}//' rec.yml >rec_batch.yml
rm -f rec.jsonl
rc=0
"$SLUICE_BIN" run -c rec_batch.yml --from-start --again >rec_batch.out 2>&1 || rc=$?
expect_eq "record mode without a batch setting behaves the same (exit 2)" 2 "$rc"
expect_match "one request per record" rec_batch.out 'requests 3 '

finish
