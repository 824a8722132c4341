#!/usr/bin/env bash
# Two consumers of one group share a 4-partition topic of the mock cluster:
# the second one joining takes partitions from the first (a rebalance), each
# record is delivered once across both, SIGTERM makes each deliver what it
# read, commit and leave the group: a later drain of the group reads nothing.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kafka_lib.sh"
cd "$T_DIR"

python3 - <<'PY'
for name, rng in (("a.csv", range(0, 5000)), ("b.csv", range(5000, 10000))):
    with open(name, "w") as f:
        f.write("id,email\n")
        for i in rng:
            f.write("%d,user%d@example.org\n" % (i, i))
PY

start_kafka_mock km --brokers 3 --topic users --partitions 4
start_fake_hook h1
start_fake_hook h2
start_fake_hook h3

consumer() { # NAME PORT UNTIL
    cat <<YML
  $1:
    source:
      type: kafka
      brokers: "\${KAFKA_BROKERS}"
      topic: users
      group: shared
      until: $3
      properties: $KAFKA_TEST_PROPS
    sink: {type: http, url: "http://127.0.0.1:$2/hook"}
    batch: {records: 50}
YML
}
{
    echo "pipelines:"
    for f in a b; do
        cat <<YML
  produce_$f:
    source: {type: csv, path: $f.csv}
    steps: [{type: infer}]
    sink: {type: kafka, brokers: "\${KAFKA_BROKERS}", topic: users, key: email}
YML
    done
    consumer c1 "$FAKE_h1_PORT" stopped
    consumer c2 "$FAKE_h2_PORT" stopped
    consumer drain "$FAKE_h3_PORT" end
} >p.yml

# distinct [FILES...]: distinct ids delivered so far
distinct() {
    python3 -c '
import json, sys
ids = set()
for p in sys.argv[1:]:
    try:
        ids |= {r["id"] for line in open(p) for r in json.loads(line)}
    except FileNotFoundError:
        pass
print(len(ids))' "$@"
}
# wait_for DESCRIPTION COMMAND...: up to 60 s (a consumer exiting early fails at once)
wait_for() {
    local what=$1 i
    shift
    for i in $(seq 1 600); do
        if "$@"; then ok "$what"; return 0; fi
        sleep 0.1
    done
    not_ok "$what (timed out)"
    return 1
}
delivered() { [ "$(distinct "$FAKE_h1_RECORD" "$FAKE_h2_RECORD")" = "$1" ]; }

rc=0
sluice run -c p.yml produce_a >produce_a.out 2>&1 || rc=$?
expect_eq "the first 5,000 records are produced" 0 "$rc"

(cd "$T_DIR" && exec "$SLUICE_BIN" run -c p.yml c1 >c1.out 2>&1) &
c1=$!
T_PIDS+=("$c1")
wait_for "the first consumer takes the 4 partitions and delivers the 5,000" delivered 5000
(cd "$T_DIR" && exec "$SLUICE_BIN" run -c p.yml c2 >c2.out 2>&1) &
c2=$!
T_PIDS+=("$c2")
wait_for "the second consumer joins: partitions are split" \
    grep -q 'assigned [1-3] partition(s)' c2.out
rc=0
sluice run -c p.yml produce_b >produce_b.out 2>&1 || rc=$?
expect_eq "5,000 more records are produced" 0 "$rc"
wait_for "all 10,000 are delivered across the two consumers" delivered 10000
n2=$(distinct "$FAKE_h2_RECORD")
check "the second consumer delivered some of them ($n2)" test "$n2" -gt 0 -a "$n2" -lt 5000

kill -TERM "$c1" "$c2"
rc1=0 rc2=0
wait "$c1" || rc1=$?
wait "$c2" || rc2=$?
check "SIGTERM ends both consumers without a crash (exit $rc1, $rc2)" \
    test "$rc1" -lt 128 -a "$rc2" -lt 128
expect_match "the second one left the group" c2.out 'revoked [1-4] partition\(s\)'

check "every record once across both (duplicates only within the documented bound)" \
    python3 - "$FAKE_h1_RECORD" "$FAKE_h2_RECORD" <<'PY'
import json, sys, collections
ids = collections.Counter(r["id"] for p in sys.argv[1:] for line in open(p) for r in json.loads(line))
assert set(ids) == set(range(10000)), len(ids)
dups = sum(ids.values()) - len(ids)
print("duplicates: %d" % dups)
# a rebalance may re-read what was in flight: the engine's window of 50-record batches
assert dups <= 2000, dups
PY

rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml drain >drain.out 2>&1 || rc=$?
expect_eq "a drain of the group afterwards exits 0" 0 "$rc"
expect_match "and reads nothing: both committed before leaving" drain.out 'read 0 +sent 0'

finish
