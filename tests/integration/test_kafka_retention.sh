#!/usr/bin/env bash
# Records the topic deleted before the group read them are not skipped in
# silence. The mock cluster keeps 5 MB per partition (its retention): a
# consumer group reads 100 records and commits, then 2,000 incompressible
# 8 KB records push the log's start far past its committed offset. The next
# drain dead-letters one record naming the partition and the offsets that
# are gone, delivers everything still there, and ends partial (exit 2).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kafka_lib.sh"
cd "$T_DIR"

python3 - <<'PY'
import base64, os
with open("small.csv", "w") as f:
    f.write("id,blob\n")
    for i in range(100):
        f.write("s%d,x\n" % i)
with open("big.csv", "w") as f:
    f.write("id,blob\n")
    for i in range(2000):
        f.write("b%d,%s\n" % (i, base64.b64encode(os.urandom(6000)).decode()))
PY

start_kafka_mock km --brokers 1 --topic blobs --partitions 1
start_fake_hook hook

cat >p.yml <<YML
state: state.db
pipelines:
  small:
    source: {type: csv, path: small.csv}
    sink: {type: kafka, brokers: "\${KAFKA_BROKERS}", topic: blobs, key: id}
  big:
    source: {type: csv, path: big.csv}
    sink: {type: kafka, brokers: "\${KAFKA_BROKERS}", topic: blobs, key: id}
    batch: {records: 200}
  live1: &live
    source:
      type: kafka
      brokers: "\${KAFKA_BROKERS}"
      topic: blobs
      group: live
      properties: $KAFKA_TEST_PROPS
    sink: {type: http, url: "http://127.0.0.1:$FAKE_hook_PORT/hook"}
  live2: *live
  drain:
    source:
      type: kafka
      brokers: "\${KAFKA_BROKERS}"
      topic: blobs
      group: g
      until: end
      properties: $KAFKA_TEST_PROPS
    sink: {type: http, url: "http://127.0.0.1:$FAKE_hook_PORT/hook"}
YML

rc=0
sluice run -c p.yml small >small.out 2>&1 || rc=$?
expect_eq "100 small records produced" 0 "$rc"
rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml drain >drain1.out 2>&1 || rc=$?
expect_eq "the first drain reads them and commits" 0 "$rc"
expect_match "... all 100" drain1.out 'read 100 +sent 100'
rc=0
sluice run -c p.yml big >big.out 2>&1 || rc=$?
expect_eq "2,000 big records produced (16 MB: past the partition's 5 MB)" 0 "$rc"

rc=0
timeout 120 "$SLUICE_BIN" run -c p.yml drain >drain2.out 2>&1 || rc=$?
cat drain2.out
expect_eq "the second drain ends partial: something could not be delivered" 2 "$rc"
expect_match "one record is dead-lettered for the gap" drain2.out 'dead-lettered 1 '
sluice status -c p.yml drain >status.out 2>&1 || true
expect_match "the dead letter names the partition and the deleted offsets" status.out \
    "topic blobs partition 0: the [0-9]+ records at offsets 100 to [0-9]+ were deleted from the topic"
read -r first last sent <<<"$(python3 - "$FAKE_hook_RECORD" <<'PY'
import json, sys
ids = [r["id"] for l in open(sys.argv[1]) for r in json.loads(l)]
big = sorted(int(i[1:]) for i in ids if i.startswith("b"))
print(big[0], big[-1], len(big))
PY
)"
check "what was still on the topic was delivered, to its end (b$first..b$last)" test "$last" -eq 1999
gap_to=$(grep -oE 'offsets 100 to [0-9]+' status.out | head -1 | awk '{print $4}')
expect_eq "the gap and the delivered records account for every big record" 2000 \
    "$((gap_to - 100 + 1 + sent))"

# a topic with fewer partitions than consumers in its group: the idle one
# says so (two pipelines, one group: each holds its own run lease)
(exec "$SLUICE_BIN" run -c p.yml live1 >live1.out 2>&1) &
l1=$!
(exec "$SLUICE_BIN" run -c p.yml live2 >live2.out 2>&1) &
l2=$!
for _ in $(seq 1 400); do
    grep -q "no partition of topic blobs" live1.out live2.out && break
    sleep 0.05
done
kill -TERM "$l1" "$l2"
wait "$l1" 2>/dev/null || true
wait "$l2" 2>/dev/null || true
expect_match "with 1 partition and 2 consumers, the idle one is reported" <(cat live1.out live2.out) \
    "group live gave this worker no partition of topic blobs: it has more members than the topic has partitions"
stop_kafka_mock km
finish
