#!/usr/bin/env bash
# Kafka faults against librdkafka's mock cluster: a broker down while the
# sink produces (the run waits and completes once it is back, or, when the
# messages time out, fails loudly and a rerun delivers them: never a silent
# drop, counted at the end by draining the topic); brokers unreachable at
# start (a clear error naming them, a nonzero exit within a bounded time,
# no secret in the output).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kafka_lib.sh"
cd "$T_DIR"

python3 - <<'PY'
with open("users.csv", "w") as f:
    f.write("id,email,name\n")
    for i in range(10000):
        f.write("%d,user%d@example.org,Name %d\n" % (i, i, i))
PY

start_kafka_mock km --brokers 3 --topic users --partitions 4
start_fake_hook sink

# drain GROUP: every message of the topic into fake_hook, once per group
cfg() { # TIMEOUT_MS
    cat <<YML
pipelines:
  produce:
    source: {type: csv, path: users.csv}
    sink:
      type: kafka
      brokers: "\${KAFKA_BROKERS}"
      topic: users
      key: email
      properties: {message.timeout.ms: $1, retry.backoff.ms: 50}
  drain:
    source:
      type: kafka
      brokers: "\${KAFKA_BROKERS}"
      topic: users
      group: count
      until: end
      properties: $KAFKA_TEST_PROPS
    sink: {type: http, url: "http://127.0.0.1:$FAKE_sink_PORT/hook"}
YML
}

# --- a broker is down when the produce starts and comes back: the run waits
cfg 60000 >p.yml
# the mock places leaders at random: make broker 1 lead partitions 0 and 1
kmock km 'leader users 0 1'
kmock km 'leader users 1 1'
kmock km 'down 1'
sluice run -c p.yml produce >down.out 2>&1 &
prod=$!
# the messages for broker 1's partitions cannot go anywhere while it is down
sleep 3
if kill -0 "$prod" 2>/dev/null; then
    ok "with broker 1 down the produce waits for its delivery reports"
else
    not_ok "the produce ended while broker 1 was down:"
    sed 's/^/    | /' down.out | tail -5
fi
kmock km 'up 1'
rc=0
wait "$prod" || rc=$?
expect_eq "once broker 1 is back the produce completes (exit 0)" 0 "$rc"
expect_match "and every record was confirmed" down.out 'read 10000 +sent 10000 +dead-lettered 0'

# --- a broker stays down past message.timeout.ms: the run fails loudly
cfg 2000 >t.yml
kmock km 'leader users 2 2'
kmock km 'down 2'
rc=0
timeout 120 "$SLUICE_BIN" run -c t.yml produce --again >timeout.out 2>&1 || rc=$?
check "messages that time out fail the run (exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
expect_match "naming the messages and librdkafka's error" timeout.out \
    'message\(s\) of this batch not delivered after 3 attempts.*timed out'
kmock km 'up 2'
rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml produce >rerun.out 2>&1 || rc=$?
expect_eq "the rerun after the broker is back exits 0" 0 "$rc"

rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml drain >drain.out 2>&1 || rc=$?
expect_eq "the drain exits 0" 0 "$rc"
check "every record is on the topic: none dropped (duplicates only from the failed run)" \
    python3 - "$FAKE_sink_RECORD" <<'PY'
import json, sys, collections
ids = collections.Counter(int(r["id"]) for line in open(sys.argv[1]) for r in json.loads(line))
missing = set(range(10000)) - set(ids)
assert not missing, (len(missing), sorted(missing)[:5])
# the first run delivered 10,000; the failed run and its rerun at most two
# more copies of each
assert sum(ids.values()) <= 30000 and max(ids.values()) <= 3, ids.most_common(3)
print("drained %d messages, %d distinct" % (sum(ids.values()), len(ids)))
PY

# --- brokers unreachable at start
port=$(free_port)
cat >u.yml <<YML
pipelines:
  produce:
    source: {type: csv, path: users.csv}
    sink:
      type: kafka
      brokers: "127.0.0.1:$port"
      topic: users
      key: email
      properties: {sasl.password: "hunter2-kafka-secret", debug: conf}
  drain:
    source: {type: kafka, brokers: "127.0.0.1:$port", topic: users, until: end,
             properties: {sasl.password: "hunter2-kafka-secret"}}
    sink: {type: http, url: "http://127.0.0.1:$FAKE_sink_PORT/hook"}
YML
for p in produce drain; do
    t0=$(date +%s)
    rc=0
    timeout 60 "$SLUICE_BIN" -v run -c u.yml $p >unreach-$p.out 2>&1 || rc=$?
    t1=$(date +%s)
    check "$p with brokers unreachable exits nonzero (exit $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
    check "$p gives up within 20 s ($((t1 - t0)) s)" test $((t1 - t0)) -le 20
    expect_match "$p: the error names the brokers" unreach-$p.out \
        "kafka brokers 127.0.0.1:$port: no answer"
    expect_no_match "$p: the sasl.password never appears" unreach-$p.out 'hunter2-kafka-secret'
done

finish
