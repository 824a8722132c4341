#!/usr/bin/env bash
# The diff step's lapsed records at scale: more lapse than the step holds at
# once (so it takes the snapshot in several windows), and still each lapsed
# person comes exactly once, in the order of the earlier export, with the
# key text that export had. Also: the records the step drops leave the
# batches, and the sink gets every new and changed record once.
source "$(dirname "$0")/lib.sh"

cd "$T_DIR"
N=150000

cat >diff.yml <<YML
state: $T_DIR/state.db
pipelines:
  members:
    source: {type: csv, path: "\${EXPORT}"}
    steps:
      - type: diff
        key: [email]
        action_field: action
        max_lapse: "100%"
    sink: {type: sql_table, url: "$T_DIR/sink.db", table: members, mode: append}
YML

# N people, some e-mails in capitals (the lapsed carry the text as written)
python3 - "$N" <<'PY'
import sys
n = int(sys.argv[1])
def email(i):
    return ("P%d@Example.ORG" if i % 7 == 0 else "p%d@example.org") % i
with open("w1.csv", "w") as f:
    f.write("email,name\n")
    for i in range(n):
        f.write("%s,Name %d\n" % (email(i), i))
# a third stay (every tenth of them renamed), two thirds lapse; a few new
with open("w2.csv", "w") as f:
    f.write("email,name\n")
    for i in range(0, n, 3):
        f.write("%s,%s %d\n" % (email(i).lower(), "Renamed" if i % 10 == 0 else "Name", i))
    for i in range(n, n + 5):
        f.write("p%d@example.org,Name %d\n" % (i, i))
# five lapse, in the middle and at both ends
with open("w3.csv", "w") as f:
    f.write("email,name\n")
    for i in range(0, n, 3):
        if i in (0, 3 * 1000, 3 * 20000, 3 * ((n - 1) // 3)):
            continue
        f.write("%s,%s %d\n" % (email(i), "Renamed" if i % 10 == 0 else "Name", i))
    for i in range(n, n + 5):
        f.write("p%d@example.org,Name %d\n" % (i, i))
PY

run() { # NAME EXPORT: exit code in RC
    set +e
    EXPORT=$2 "$SLUICE_BIN" -q run -c diff.yml >"$1.out" 2>&1
    RC=$?
    set -e
}
# the sink's rows after rowid $1, one "email,name" line each, in order (a
# lapsed record carries the key only: its name is "-")
rows_after() {
    python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect("sink.db")
for e, n in db.execute("select email, name from members where rowid > ? order by rowid",
                       (int(sys.argv[1]),)):
    print("%s,%s" % (e, n if n is not None else "-"))
PY
}
maxrow() { python3 -c 'import sqlite3; print(sqlite3.connect("sink.db").execute("select coalesce(max(rowid),0) from members").fetchone()[0])'; }

run w1 w1.csv
expect_eq "first export: exit 0" 0 "$RC"
expect_eq "first export: everyone new, once" "$N" "$(rows_after 0 | grep -c ',Name ')"

# A dry run with batches of 1000: the diff drops nine rows in ten, and the
# batches are topped up, so the sink still gets at least half-full batches
# (not a hundred records out of each thousand read).
sed 's/^    sink:/    batch: {records: 1000}\n    sink:/' diff.yml >batch.yml
set +e
EXPORT=w2.csv "$SLUICE_BIN" -q run --dry-run -c batch.yml >dry.out 2>&1
RC=$?
set -e
expect_eq "dry run: exit 0" 0 "$RC"
first=$(sed -n 's/^--- sample payload 1 (batch of \([0-9]*\) records)$/\1/p' dry.out)
check "dry run: the first batch holds at least 500 records (it has ${first:-none})" test "${first:-0}" -ge 500
expect_match "dry run: the counts" dry.out "lapsed: $((N - N / 3))"
expect_no_match "dry run: samples show only records to send" dry.out '"name":"Name 3"'

m=$(maxrow)
run w2 w2.csv
expect_eq "second export: exit 0" 0 "$RC"
rows_after "$m" >w2.rows
python3 - "$N" >w2.want <<'PY'
import sys
n = int(sys.argv[1])
def email(i):
    return ("P%d@Example.ORG" if i % 7 == 0 else "p%d@example.org") % i
for i in range(0, n, 3):
    if i % 10 == 0:
        print("%s,Renamed %d" % (email(i).lower(), i))
for i in range(n, n + 5):
    print("p%d@example.org,Name %d" % (i, i))
for i in range(n):
    if i % 3:
        print("%s,-" % email(i))
PY
check "second export: the changed and new once each, then every lapsed person once, in the first export's order and spelling" cmp -s w2.want w2.rows
expect_eq "second export: $((N - N / 3)) lapsed" "$((N - N / 3))" "$(grep -c ',-$' w2.rows)"
expect_match "second export: the counts" w2.out "lapsed $((N - N / 3))"

m=$(maxrow)
run w3 w3.csv
expect_eq "third export: exit 0" 0 "$RC"
rows_after "$m" >w3.rows
printf '%s,-\n' p0@example.org p3000@example.org p60000@example.org "p$((3 * ((N - 1) / 3)))@example.org" >w3.want
check "third export: only the four gone lapse, in order" cmp -s w3.want w3.rows

finish
