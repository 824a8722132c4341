#!/usr/bin/env bash
# examples/actionkit-actionnetwork.yml, the file itself, against
# fake_actionnetwork and a Slack-strict fake_hook: three weekly exports (CSV,
# CSV, then an e-mailed one in a Maildir) with adds, changes, a case-only
# e-mail change (not a change) and removals -> exactly the people created,
# updated and lapsed (is_member "False"); the Slack summary carries the three
# counts; --dry-run prints them and sends nothing; the lapse guard trips on a
# half-size export (exit 1, nobody lapsed, Slack alert); kill -9 mid-delivery
# then a rerun delivers every change.
source "$(dirname "$0")/lib.sh"

cd "$T_DIR"
EXAMPLE=$SRC_DIR/examples/actionkit-actionnetwork.yml
export ACTIONNETWORK_API_KEY=ak-example-SECRET-key-42
start_fake_actionnetwork an --rate 0
start_fake_hook slack --slack
export ACTIONNETWORK_RATE_LIMIT=0
export SLACK_WEBHOOK_URL=http://127.0.0.1:$FAKE_slack_PORT/hook
export SLUICE_STATE=$T_DIR/state/sluice.db
export AK_FROM=exports@actionkit.example
unset AK_MAX_LAPSE

lines() { wc -l <"$1"; }
# the requests the fake accepted since line $1 of its record, one compact
# JSON line each, sorted
sent_since() { tail -n +"$(($1 + 1))" "$FAKE_an_RECORD" | sort; }
# "email is_member given_name" of those requests, sorted
people_since() {
    tail -n +"$(($1 + 1))" "$FAKE_an_RECORD" | python3 -c '
import json, sys
for line in sys.stdin:
    p = json.loads(line)["person"]
    print(p["email_addresses"][0]["address"], p["custom_fields"]["is_member"], p.get("given_name", "-"))' | sort
}
run() { # NAME EXPORT [ARGS...]: exit code in RC
    local name=$1 export=$2
    shift 2
    set +e
    AK_EXPORT=$export "$SLUICE_BIN" run -c "$EXAMPLE" "$@" >"$name.out" 2>&1
    RC=$?
    set -e
}
new_person() { # EMAIL FIRST ZIP -> the request the sink sends for a new or changed person
    printf '{"person":{"given_name":"%s","family_name":"Doe","email_addresses":[{"address":"%s"}],"postal_addresses":[{"postal_code":"%s"}],"custom_fields":{"is_member":"True"}}}\n' "$2" "$1" "$3"
}
lapsed_person() {
    printf '{"person":{"email_addresses":[{"address":"%s"}],"custom_fields":{"is_member":"False"}}}\n' "$1"
}

AK_EXPORT=w1.csv "$SLUICE_BIN" check -c "$EXAMPLE" >check.out 2>&1 && rc=0 || rc=$?
expect_eq "sluice check accepts the example with a CSV path" 0 "$rc"
AK_EXPORT=maildir:/nonexistent "$SLUICE_BIN" check -c "$EXAMPLE" >check2.out 2>&1 && rc=0 || rc=$?
expect_eq "sluice check accepts the example with a Maildir" 0 "$rc"
AK_FROM= AK_EXPORT=maildir:/x "$SLUICE_BIN" check -c "$EXAMPLE" >check3.out 2>&1 && rc=0 || rc=$?
expect_eq "a Maildir without AK_FROM is a config error" 78 "$rc"
expect_match "which says the sender list is required" check3.out "from: required for a .eml or maildir: path"

# --- week 1 (CSV): ten new people
{
    echo "email,first_name,last_name,zip"
    for i in $(seq 1 10); do echo "p$i@example.org,P$i,Doe,0210$i"; done
} >w1.csv
n0=$(lines "$FAKE_an_RECORD")
run w1 w1.csv
expect_eq "week 1: exit 0" 0 "$RC"
expect_eq "week 1: ten people created, members" \
    "$(for i in $(seq 1 10); do echo "p$i@example.org True P$i"; done | sort)" "$(people_since "$n0")"
expect_eq "week 1: the exact request of p1" "$(new_person p1@example.org P1 02101)" \
    "$(grep '"p1@example.org"' "$FAKE_an_RECORD")"
expect_eq "week 1: the fake created ten" 10 "$(json_get "$(fake_stats "$FAKE_an_PORT")" created)"

# --- week 2 (CSV): p2 renamed, P3's address in capitals, p4 gone, p11 new
{
    echo "email,first_name,last_name,zip"
    echo "p1@example.org,P1,Doe,02101"
    echo "p2@example.org,Renamed,Doe,02102"
    echo " P3@Example.ORG,P3,Doe,02103"
    for i in $(seq 5 10); do echo "p$i@example.org,P$i,Doe,0210$i"; done
    echo "p11@example.org,P11,Doe,02111"
} >w2.csv
n0=$(lines "$FAKE_an_RECORD")
s0=$(lines "$FAKE_slack_RECORD")
run dry w2.csv --dry-run
expect_eq "dry run: exit 0" 0 "$RC"
for a in new changed lapsed; do expect_match "dry run: counts $a" dry.out "$a: 1"; done
expect_eq "dry run: nothing sent to Action Network" "$n0" "$(lines "$FAKE_an_RECORD")"
expect_eq "dry run: nothing sent to Slack" "$s0" "$(lines "$FAKE_slack_RECORD")"

run w2 w2.csv
expect_eq "week 2: exit 0" 0 "$RC"
expect_eq "week 2: exactly the change, the addition and the lapse (the case-only change is none)" \
    "$({
        new_person p2@example.org Renamed 02102
        new_person p11@example.org P11 02111
        lapsed_person p4@example.org
    } | sort)" "$(sent_since "$n0")"
expect_eq "week 2: Slack got one summary" $((s0 + 1)) "$(lines "$FAKE_slack_RECORD")"
for a in new changed lapsed; do
    expect_match "week 2: the Slack summary counts $a" <(tail -n 1 "$FAKE_slack_RECORD") "[ n]$a 1"
done
pyperson() { python3 -c '
import json, sys
ps = [p for p in json.load(sys.stdin) if p["email_addresses"][0]["address"].lower() == sys.argv[1]]
print(len(ps), ps[0]["custom_fields"]["is_member"] if ps else "-")' "$1" < <(curl -fsS "http://127.0.0.1:$FAKE_an_PORT/_people"); }
expect_eq "p4 is one person, no longer a member" "1 False" "$(pyperson p4@example.org)"

# --- week 3 (e-mailed, Maildir): p5's zip changed, p6 gone, p12 new, P3 back in lower case
{
    echo "email,first_name,last_name,zip"
    for i in 1 2 3 7 8 9 10 11; do
        case $i in 2) echo "p2@example.org,Renamed,Doe,02102" ;; 11) echo "p11@example.org,P11,Doe,02111" ;; *) echo "p$i@example.org,P$i,Doe,0210$i" ;; esac
    done
    echo "p5@example.org,P5,Doe,99999"
    echo "p12@example.org,P12,Doe,02112"
} >w3.csv
mkdir -p md/new md/cur md/tmp
python3 "$TOOLS/gen_eml.py" valid md/new/1.host --csv w3.csv --from "$AK_FROM"
n0=$(lines "$FAKE_an_RECORD")
run w3 "maildir:$T_DIR/md"
expect_eq "week 3 (maildir): exit 0" 0 "$RC"
expect_eq "week 3: exactly the change, the addition and the lapse" \
    "$({
        new_person p5@example.org P5 99999
        new_person p12@example.org P12 02112
        lapsed_person p6@example.org
    } | sort)" "$(sent_since "$n0")"
for a in new changed lapsed; do
    expect_match "week 3: the Slack summary counts $a" <(tail -n 1 "$FAKE_slack_RECORD") "[ n]$a 1"
done
n0=$(lines "$FAKE_an_RECORD")
run w3again "maildir:$T_DIR/md"
expect_eq "the same Maildir again: skipped (exit 0), nothing sent" "0 $n0" "$RC $(lines "$FAKE_an_RECORD")"

# --- the lapse guard: a half-size export lapses nobody
head -n 6 w3.csv >half.csv
n0=$(lines "$FAKE_an_RECORD")
s0=$(lines "$FAKE_slack_RECORD")
run half half.csv
expect_eq "half-size export: exit 1" 1 "$RC"
expect_match "half-size export: says why" half.out "5 of 10 people \(50\.0%\) .* more than max_lapse \(20%\); nobody was lapsed"
expect_eq "half-size export: nothing sent" "" "$(sent_since "$n0")"
expect_match "half-size export: Slack alert" <(tail -n +"$((s0 + 1))" "$FAKE_slack_RECORD") \
    "failed.*max_lapse"

# --- kill -9 mid-delivery, then a rerun delivers every change. A FIFO
# stalls the export after its first rows, so the kill lands mid-run.
{
    echo "email,first_name,last_name,zip"
    echo "p1@example.org,Changed,Doe,02101"
    tail -n +3 w3.csv
    for i in $(seq 100 2599); do echo "p$i@example.org,P$i,Doe,$i"; done
} >w4.csv
mkfifo w4.fifo
n0=$(lines "$FAKE_an_RECORD")
(AK_EXPORT=$T_DIR/w4.fifo exec "$SLUICE_BIN" run -c "$EXAMPLE" >w4kill.out 2>&1) &
pid=$!
exec 3<>w4.fifo # read-write: never blocks, whatever the run does
head -c 70000 w4.csv >&3
for i in $(seq 1 200); do [ "$(lines "$FAKE_an_RECORD")" -gt "$n0" ] && break; sleep 0.05; done
check "the killed run had delivered something" [ "$(lines "$FAKE_an_RECORD")" -gt "$n0" ]
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
exec 3>&-
killed=$(($(lines "$FAKE_an_RECORD") - n0))
check "the killed run had not delivered everything ($killed of 2501)" [ "$killed" -lt 2501 ]
run w4 w4.csv
expect_eq "the rerun: exit 0" 0 "$RC"
check "every change arrived (p1 changed, 2500 new)" python3 - "$FAKE_an_RECORD" "$n0" <<'PY'
import json, sys
seen = set()
for line in open(sys.argv[1]).readlines()[int(sys.argv[2]):]:
    p = json.loads(line)["person"]
    seen.add((p["email_addresses"][0]["address"], p.get("given_name"), p["custom_fields"]["is_member"]))
want = {("p1@example.org", "Changed", "True")}
want |= {("p%d@example.org" % i, "P%d" % i, "True") for i in range(100, 2600)}
missing = want - seen
assert not missing, sorted(missing)[:5]
assert all(m == "True" for _, _, m in seen), "a lapse was sent"
PY
n0=$(lines "$FAKE_an_RECORD")
run w4again w4.csv
expect_eq "the same export again: nothing to send (the snapshot is right)" "" "$(sent_since "$n0")"
expect_no_match "the API key never appears in output" <(cat ./*.out) "$ACTIONNETWORK_API_KEY"
finish
