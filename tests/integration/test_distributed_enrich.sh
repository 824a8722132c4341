#!/usr/bin/env bash
# The reference case of distributed mode: examples/fullcontact-enrich.yml,
# unchanged, split across processes. A Postgres view of 10,000 e-mails is
# fanned out to a 4-partition topic of librdkafka's mock cluster; two
# `sluice worker`s enrich them against fake FullContact (202/404 mix) and
# deliver to fake Stitch, with the state store (runs, dead letters, the
# billing ledger) on the same Postgres. One worker is killed -9 mid-run:
# its partitions move to the other, which pays for nothing the dead one had
# paid for (the ledger is shared), so billed calls = distinct e-mails + at
# most the dead worker's lookups in flight. Every e-mail lands in Stitch.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kafka_lib.sh"
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"
trap 'pg_stop; t_cleanup' EXIT

N=${ENRICH_ROWS:-10000}
CONC=10
EXAMPLE=$(realpath "$SRC_DIR/examples/fullcontact-enrich.yml")
pg_start
export WAREHOUSE_URL="postgres://postgres:sekret@127.0.0.1:$PGPORT/postgres"
export SLUICE_STATE=$PG_URL
export FULLCONTACT_API_KEY=fc-key-$RANDOM$RANDOM STITCH_TOKEN=stitch-token-$RANDOM$RANDOM
export FULLCONTACT_CONCURRENCY=$CONC FULLCONTACT_QUEUED_WAIT=20ms
export SLUICE_WORKERS=2 KAFKA_SESSION_TIMEOUT_MS=6000 KAFKA_HEARTBEAT_MS=500
cd "$T_DIR"

psql -X -q -v ON_ERROR_STOP=1 -v n="$N" <<'SQL'
CREATE TABLE people (id int PRIMARY KEY, email text, name text);
INSERT INTO people SELECT i, 'Person' || i || '@Example.org', 'n' || i FROM generate_series(1, :n) i;
INSERT INTO people VALUES (:n + 1, 'not-an-address', 'bad');
CREATE VIEW emails_to_enrich AS SELECT email, name FROM people;
SQL

start_kafka_mock km --brokers 3 --topic sluice.fullcontact-stitch --partitions 4
rm -f fc.port
"$FAKES_DIR/fake_fullcontact" --port 0 --port-file fc.port --api-key "$FULLCONTACT_API_KEY" \
    --notfound-pct 10 --queued-pct 15 --queued-calls 2 --latency-ms 40 >fc.out 2>fc.err &
T_PIDS+=($!)
export FULLCONTACT_API_URL=http://127.0.0.1:$(wait_port_file fc.port)
start_fake_stitch st
stat_of() { json_get "$(fake_stats "${FULLCONTACT_API_URL##*:}")" "$1"; }
stitch_count() { curl -fsS "$STITCH_API_URL/_tables/fullcontact_profiles" |
    python3 -c 'import json,sys; print(len({r["data"]["email_address"] for r in json.load(sys.stdin)}))'; }

# ---- fanout: the view onto the topic (one distributed pipeline in the file)
rc=0
sluice fanout -c "$EXAMPLE" >fanout.out 2>fanout.err || rc=$?
cat fanout.out
expect_eq "fanout puts the view on the topic" 0 "$rc"
expect_match "every row of the view was produced" fanout.out "read $((N + 1)) +sent $((N + 1))"

# ---- two workers; one killed -9 once it has paid for a quarter
(exec "$SLUICE_BIN" worker -c "$EXAMPLE" >w1.out 2>w1.err) &
W1=$!
(exec "$SLUICE_BIN" worker -c "$EXAMPLE" >w2.out 2>w2.err) &
W2=$!
for _ in $(seq 1 600); do
    [ "$(stat_of billed)" -ge $((N / 4)) ] && break
    sleep 0.05
done
kill -9 "$W1"
wait "$W1" 2>/dev/null || true
billed_at_kill=$(stat_of billed)
check "worker 1 was killed mid-run ($billed_at_kill billed)" test "$billed_at_kill" -lt $((N * 9 / 10))
for _ in $(seq 1 1200); do
    [ "$(stitch_count 2>/dev/null || echo 0)" -ge "$N" ] && break
    sleep 0.1
done
expect_eq "every e-mail landed in Stitch" "$N" "$(stitch_count)"
for _ in $(seq 1 300); do
    sluice status -c "$EXAMPLE" fullcontact-stitch >st.caught 2>&1 || true
    grep -q " 0 records not yet done" st.caught && break
    sleep 0.2
done
expect_match "the surviving worker caught up with the topic" st.caught " 0 records not yet done"
kill -TERM "$W2"
rc=0
wait "$W2" || rc=$?
# 2 when this worker dead-lettered the malformed e-mail, 0 when the other did
check "worker 2 drains and stops cleanly on SIGTERM (exit $rc)" test "$rc" -eq 0 -o "$rc" -eq 2

# billing: FullContact bills a 200 when it answers; what the dead worker paid
# and recorded is in the shared ledger and was not paid again by the other
billable=$(curl -fsS "$FULLCONTACT_API_URL/_emails" |
    python3 -c 'import json,sys; print(sum(v["outcome"] != "notfound" for v in json.load(sys.stdin).values()))')
twice=$(stat_of billed_twice)
expect_eq "billed calls = distinct e-mails with a profile + those billed twice" \
    "$((billable + twice))" "$(stat_of billed)"
check "billed twice: at most the dead worker's lookups in flight ($twice <= $CONC)" \
    test "$twice" -le "$CONC"
ledger=$(psql -X -At -c "SELECT count(*) FROM sluice.kv WHERE pipeline = 'ledger:fullcontact'")
expect_eq "the shared ledger holds each paid e-mail once" "$billable" "$ledger"
sluice status -c "$EXAMPLE" fullcontact-stitch >status.out 2>&1 || true
expect_match "the malformed e-mail is dead-lettered in the shared store" status.out \
    "'not-an-address' is not an e-mail address"
expect_no_match "no key, token or password printed" <(cat fanout.* w1.* w2.* status.out) \
    "$FULLCONTACT_API_KEY|$STITCH_TOKEN|sekret"
stop_kafka_mock km
finish
