#!/usr/bin/env bash
# The diff step over three weekly exports: adds, changes, case-only e-mail
# changes (not a change), removals (lapsed); exact records at the receiver.
# The lapse guard on an empty and on a half-size export; a failed delivery
# keeps the old snapshot; kill -9 mid-delivery then a rerun delivers every
# change and leaves the right snapshot; duplicate and blank keys are
# dead-lettered; --dry-run shows the three counts and changes nothing.
source "$(dirname "$0")/lib.sh"

cd "$T_DIR"
start_fake_hook hook --status 201
start_fake_hook down --status 503
start_fake_hook slack --slack

cat >diff.yml <<YML
pipelines:
  members:
    source: {type: csv, path: "\${EXPORT}"}
    steps:
      - type: diff
        key: [email]
        action_field: action
        max_lapse: "\${MAX_LAPSE:-20%}"
    sink: {type: http, url: "\${TARGET}", expect_status: [201]}
    retry: {max_attempts: 2, backoff: 10ms, max_backoff: 20ms}
    notify: [{url: "http://127.0.0.1:$FAKE_slack_PORT/hook", format: slack, on: always}]
YML
export TARGET=http://127.0.0.1:$FAKE_hook_PORT/hook

# what the receiver got since line $1 of its record: "action email name" lines, sorted
got_since() {
    tail -n +"$(($1 + 1))" "$FAKE_hook_RECORD" | python3 -c '
import json, sys
for line in sys.stdin:
    for r in json.loads(line):
        print(r.get("action"), r.get("email"), r.get("name", "-"))' | sort
}
lines() { wc -l <"$FAKE_hook_RECORD"; }
run() { # NAME EXPORT [ARGS...]: exit code in RC
    local name=$1 export=$2
    shift 2
    set +e
    EXPORT=$export "$SLUICE_BIN" run -c diff.yml "$@" >"$name.out" 2>&1
    RC=$?
    set -e
}

# 10 people; the first export makes all of them new
{
    echo "email,name,zip"
    for i in $(seq 1 10); do echo "p$i@example.org,Person $i,0210$i"; done
} >w1.csv
# a dry run before any real run: no state store yet, everyone is new, and
# no store is created
run dry0 w1.csv --dry-run
expect_eq "dry run before the first run: exit 0" 0 "$RC"
expect_match "dry run before the first run: all ten new" dry0.out "new: 10"
check "dry run before the first run: no state store created" test ! -e .sluice/state.db
n0=$(lines)
run w1 w1.csv
expect_eq "week 1: exit 0" 0 "$RC"
expect_eq "week 1: ten new people" 10 "$(got_since "$n0" | grep -c '^new ')"

# week 2: p2 renamed, P3's e-mail in capitals (not a change), p4 gone, p11 new
{
    echo "email,name,zip"
    echo "p1@example.org,Person 1,02101"
    echo "p2@example.org,Someone Else,02102"
    echo "P3@Example.org ,Person 3,02103"
    for i in $(seq 5 10); do echo "p$i@example.org,Person $i,0210$i"; done
    echo "p11@example.org,Person 11,02111"
} >w2.csv
# a dry run first: the three counts, nothing sent, nothing changed
n0=$(lines)
run dry w2.csv --dry-run
expect_eq "dry run: exit 0" 0 "$RC"
expect_match "dry run: the counts per action" dry.out "new: 1"
expect_match "dry run: changed" dry.out "changed: 1"
expect_match "dry run: lapsed" dry.out "lapsed: 1"
expect_eq "dry run: nothing sent" "$n0" "$(lines)"

run w2 w2.csv
expect_eq "week 2: exit 0" 0 "$RC"
expect_eq "week 2: exactly the change, the addition and the lapse" \
    "$(printf '%s\n' 'changed p2@example.org Someone Else' 'lapsed p4@example.org -' 'new p11@example.org Person 11' | sort)" \
    "$(got_since "$n0")"
expect_match "week 2: unchanged people counted as skipped" w2.out "skipped 8"
for a in new changed lapsed; do
    expect_match "week 2: the summary counts $a" w2.out "(^|  )$a 1( |$)"
    expect_match "week 2: so does the Slack message ($a)" "$FAKE_slack_RECORD" "w2\.csv.*[ n]$a 1"
done

# week 3 with the receiver down: the run fails, the snapshot stays week 2's
{
    echo "email,name,zip"
    for i in 1 2 3 5 6 7 8 9 10; do echo "p$i@example.org,Person $i,0210$i"; done
    echo "p11@example.org,Person 11,02111"
    echo "p12@example.org,Person 12,02112"
} >w3.csv
TARGET=http://127.0.0.1:$FAKE_down_PORT/hook run w3down w3.csv
expect_eq "week 3, receiver down: the run fails" 1 "$RC"
n0=$(lines)
run w3 w3.csv
expect_eq "week 3 again: exit 0" 0 "$RC"
expect_eq "week 3: diffed against week 2 (the failed run did not advance the snapshot)" \
    "$(printf '%s\n' 'changed p2@example.org Person 2' 'new p12@example.org Person 12' | sort)" \
    "$(got_since "$n0")"

# the lapse guard: an empty export and a half-size one lapse nobody
echo "email,name,zip" >empty.csv
n0=$(lines)
run empty empty.csv
expect_eq "empty export: the run fails" 1 "$RC"
expect_match "empty export: says why" empty.out "no usable row.*nobody was lapsed"
expect_match "empty export: the alert says why" "$FAKE_slack_RECORD" "members failed \(empty\.csv\).*no usable row"
head -n 6 w3.csv >half.csv
run half half.csv
expect_eq "half-size export: the run fails" 1 "$RC"
expect_match "half-size export: names the share and max_lapse" half.out \
    "6 of 11 people \(54\.5%\) .* more than max_lapse \(20%\); nobody was lapsed"
expect_eq "nothing was lapsed by either" 0 "$(got_since "$n0" | grep -c '^lapsed ' || true)"
# an intended purge
MAX_LAPSE=100% run purge half.csv
expect_eq "with max_lapse 100%: exit 0" 0 "$RC"
expect_eq "the six missing people lapse" 6 "$(got_since "$n0" | grep -c '^lapsed ')"

# an export without the key column: a clear error, nothing sent or lapsed
printf 'mail,name,zip\np1@example.org,A,1\n' >nokey.csv
n0=$(lines)
run nokey nokey.csv
expect_eq "missing key column: exit 1" 1 "$RC"
expect_match "missing key column: named, with the columns found" nokey.out \
    "key column 'email' is not in the export \(its columns: mail, name, zip\)"
expect_eq "missing key column: nothing sent" "$n0" "$(lines)"

# duplicate and blank keys are dead-lettered, the first row wins
{
    echo "email,name,zip"
    cat half.csv | tail -n +2
    echo "P1@example.org,Duplicate,00000"
    echo ",No Key,00000"
} >dups.csv
n0=$(lines)
run dups dups.csv
expect_eq "duplicates: exit 2 (two rows dead-lettered)" 2 "$RC"
"$SLUICE_BIN" status -c diff.yml members >dups.status 2>&1 || true
expect_match "the duplicate is named" dups.status "duplicate key 'P1@example.org'"
expect_match "the blank key is named" dups.status "key column 'email' is blank"
expect_eq "nothing else was sent (the first p1 row is unchanged)" "" "$(got_since "$n0")"

# kill -9 while delivering: the rerun delivers every change and the snapshot
# ends right. A FIFO stalls the export after its first rows, so the kill
# happens while the run is certainly in the middle.
{
    echo "email,name,zip"
    for i in $(seq 1 6); do echo "p$i@example.org,Changed $i,0210$i"; done
    for i in $(seq 20 3019); do echo "p$i@example.org,Person $i,02$i"; done
} >w4.csv
mkfifo w4.fifo
n0=$(lines)
(EXPORT=$T_DIR/w4.fifo exec "$SLUICE_BIN" run -c diff.yml >w4kill.out 2>&1) &
pid=$!
exec 3<>w4.fifo # read-write: never blocks, whatever the run does
# more than the 64 KB the csv source reads before it starts, less than all
head -c 90000 w4.csv >&3
for i in $(seq 1 200); do [ "$(lines)" -gt "$n0" ] && break; sleep 0.05; done
check "the killed run had delivered something" [ "$(lines)" -gt "$n0" ]
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
exec 3>&-
run w4 w4.csv
expect_eq "the rerun: exit 0" 0 "$RC"
# the snapshot holds p1-p3, p5, p6 (the purge), so p4 comes back as new
check "every change arrived (5 changed, 3001 new)" python3 - "$FAKE_hook_RECORD" "$n0" <<'PY'
import json, sys
seen = set()
for line in open(sys.argv[1]).readlines()[int(sys.argv[2]):]:
    for r in json.loads(line):
        seen.add((r["action"], r["email"]))
want = {("changed", "p%d@example.org" % i) for i in (1, 2, 3, 5, 6)}
want.add(("new", "p4@example.org"))
want |= {("new", "p%d@example.org" % i) for i in range(20, 3020)}
missing = want - seen
assert not missing, sorted(missing)[:5]
PY
n0=$(lines)
run w4again w4.csv --again
expect_eq "the same export again: nothing to send (the snapshot is right)" "" "$(got_since "$n0")"

# changed_fields_only: a changed record carries its key and what changed
sed -e 's/pipelines:/pipelines:/' -e 's/  members:/  fields:/' \
    -e 's/        action_field: action/        action_field: action\n        changed_fields_only: true/' diff.yml >fields.yml
{
    echo "email,name,zip"
    for i in $(seq 1 100); do echo "f$i@example.org,Person $i,1$i"; done
} >f1.csv
sed -e 's/^f7@example.org,Person 7,17$/f7@example.org,Person 7,99999/' f1.csv >f2.csv
EXPORT=f1.csv "$SLUICE_BIN" run -c fields.yml >f1.out 2>&1
n0=$(lines)
EXPORT=f2.csv "$SLUICE_BIN" run -c fields.yml >f2.out 2>&1 && rc=0 || rc=$?
expect_eq "changed_fields_only: exit 0" 0 "$rc"
expect_eq "only the changed column of the one changed row is sent" \
    '[{"email":"f7@example.org","zip":"99999","action":"changed"}]' \
    "$(tail -n +"$((n0 + 1))" "$FAKE_hook_RECORD")"
finish
