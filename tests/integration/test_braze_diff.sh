#!/usr/bin/env bash
# The Braze example with its diff block enabled: a second import of a file
# with 1 % of the rows changed sends only those rows, each with its
# external_id and the changed attribute (Braze bills every data point).
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=diff-key-$RANDOM$RANDOM
start_fake_braze braze
cd "$T_DIR"
# the example, with the commented diff step switched on
sed -e 's/^      # - type: diff/      - type: diff/' \
    -e 's/^      #   \(key\|normalize\|changed_fields_only\|lapsed\):/        \1:/' \
    "$SRC_DIR/examples/braze-import.yml" >braze-diff.yml
check "the example's diff block is enabled" grep -q "^      - type: diff" braze-diff.yml

python3 - <<'PY'
with open("week1.csv", "w") as a, open("week2.csv", "w") as b:
    h = "external_id,first_name,city,score\n"
    a.write(h); b.write(h)
    for i in range(1, 1001):
        row = "u%04d,Name%d,City%d,%d\n" % (i, i, i % 37, i % 100)
        a.write(row)
        if i % 100 == 0:
            row = "u%04d,Name%d,Moved%d,%d\n" % (i, i, i, i % 100)  # 1 %: city changed
        b.write(row)
PY
expect_eq "sluice check accepts it" 0 "$(BRAZE_CSV=week1.csv "$SLUICE_BIN" check -c braze-diff.yml >check.out 2>&1; echo $?)"
BRAZE_CSV=week1.csv "$SLUICE_BIN" run -c braze-diff.yml >w1.out 2>&1 && rc=0 || rc=$?
expect_eq "first import: exit 0" 0 "$rc"
expect_eq "first import: every user, whole" 1000 "$(wc -l <"$FAKE_braze_RECORD")"
n0=$(wc -l <"$FAKE_braze_RECORD")
BRAZE_CSV=week2.csv "$SLUICE_BIN" run -c braze-diff.yml >w2.out 2>&1 && rc=0 || rc=$?
expect_eq "second import: exit 0" 0 "$rc"
expect_eq "only the ten changed users, with external_id and the changed attribute" \
    "$(for i in 100 200 300 400 500 600 700 800 900 1000; do printf '{"external_id":"u%04d","city":"Moved%d"}\n' "$i" "$i"; done)" \
    "$(tail -n +"$((n0 + 1))" "$FAKE_braze_RECORD" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
for r in sorted(rows, key=lambda r: r["external_id"]):
    print(json.dumps(r, separators=(",", ":")))')"
expect_match "the run counts 990 unchanged users as skipped" w2.out "skipped 990"
finish
