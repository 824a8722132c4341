#!/usr/bin/env bash
# The kafka sink and source against librdkafka's mock cluster (3 brokers, a
# 4-partition topic): 10,000 CSV rows produced, then drained by a consumer
# group (until: end) into fake_hook: every record exactly once, values and
# types as the same pipeline delivers them without Kafka. Offsets are
# committed: a second drain reads only what was produced since; a poison
# message is dead-lettered naming its partition and offset, and the
# partition moves on past it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kafka_lib.sh"
cd "$T_DIR"

python3 - <<'PY'
import random
random.seed(7)
with open("users.csv", "w") as f:
    f.write("id,email,name,age,score,active,tags\n")
    for i in range(10000):
        tags = '"[""a"", ""b""]"' if i % 7 == 0 else ""
        f.write("%d,user%d@example.org,Name %d,%d,%s,%s,%s\n" % (
            i, i, i, random.randint(18, 90), "%.2f" % (random.randint(0, 10000) / 100),
            random.choice(["true", "false"]), tags))
PY

start_kafka_mock km --brokers 3 --topic users --partitions 4
start_fake_hook viakafka
start_fake_hook direct

cat >p.yml <<YML
pipelines:
  produce:
    source: {type: csv, path: users.csv}
    steps: [{type: infer}]
    sink: {type: kafka, brokers: "\${KAFKA_BROKERS}", topic: users, key: email}
  consume:
    source:
      type: kafka
      brokers: "\${KAFKA_BROKERS}"
      topic: users
      group: drain
      until: end
      properties: $KAFKA_TEST_PROPS
    sink: {type: http, url: "http://127.0.0.1:$FAKE_viakafka_PORT/hook"}
  direct:
    source: {type: csv, path: users.csv}
    steps: [{type: infer}]
    sink: {type: http, url: "http://127.0.0.1:$FAKE_direct_PORT/hook"}
YML

rc=0
sluice run -c p.yml produce >produce.out 2>&1 || rc=$?
expect_eq "produce exits 0" 0 "$rc"
expect_match "produce sent 10,000 records" produce.out 'read 10000 +sent 10000 +dead-lettered 0'

rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml consume >consume.out 2>&1 || rc=$?
expect_eq "drain exits 0" 0 "$rc"
expect_match "drain read 10,000 records" consume.out 'read 10000 +sent 10000 +dead-lettered 0'
expect_match "the input is named by topic and group" consume.out 'kafka topic users \(group drain\)'

rc=0
sluice run -c p.yml direct >direct.out 2>&1 || rc=$?
expect_eq "the same pipeline without Kafka exits 0" 0 "$rc"

check "every record arrived exactly once, with the values and types it has without Kafka" \
    python3 - "$FAKE_viakafka_RECORD" "$FAKE_direct_RECORD" <<'PY'
import json, sys, collections
def load(path):
    recs = [r for line in open(path) for r in json.loads(line)]
    return recs
k, d = load(sys.argv[1]), load(sys.argv[2])
ids = collections.Counter(r["id"] for r in k)
assert len(k) == 10000 and len(ids) == 10000, (len(k), len(ids), ids.most_common(2))
canon = lambda rs: sorted(json.dumps(r, sort_keys=True) for r in rs)
assert canon(k) == canon(d), [a for a, b in zip(canon(k), canon(d)) if a != b][:2]
r = next(r for r in k if r["id"] == 14)
assert isinstance(r["age"], int) and isinstance(r["score"], float), r
assert isinstance(r["active"], bool) and r["tags"] == ["a", "b"], r
PY

# --- committed offsets: nothing new, nothing read
rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml consume >again.out 2>&1 || rc=$?
expect_eq "a second drain exits 0" 0 "$rc"
expect_match "a second drain reads nothing: the offsets were committed" again.out 'read 0 +sent 0'

# --- a poison message between two good ones on partition 0
kmock km 'produce users 0 poison this is not a record'
kmock km 'produce users 0 late {"id":10000,"email":"late@example.org","age":30}'
rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml consume >poison.out 2>&1 || rc=$?
expect_eq "the poison run exits 2 (one dead letter)" 2 "$rc"
expect_match "it read the two new messages: one delivered, one dead-lettered" poison.out \
    'read 2 +sent 1 +dead-lettered 1'
check "the good message after the poison one was delivered" \
    grep -q '"email":"late@example.org","age":30' "$FAKE_viakafka_RECORD"
sluice status -c p.yml consume >poison.status 2>&1 || true
expect_match "the dead letter names topic, partition and offset" poison.status \
    'topic users partition 0 offset [0-9]+: the message is not a JSON record'
expect_match "and keeps what the message held" poison.status 'this is not a record'

rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml consume >after.out 2>&1 || rc=$?
expect_eq "the partition moved on: the next drain exits 0" 0 "$rc"
expect_match "and reads nothing" after.out 'read 0 +sent 0'

finish
