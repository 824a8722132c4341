#!/usr/bin/env bash
# Bad input gets a clear error naming the thing, the place and what was
# expected, with the documented exit code; secrets never appear.
source "$(dirname "$0")/lib.sh"

CFG=$SRC_DIR/examples/braze-import.yml
export BRAZE_API_KEY=secret-key-$RANDOM$RANDOM
export BRAZE_API_URL=http://127.0.0.1:9   # nothing listens; runs below fail before sending
printf 'external_id,first_name\n1,Ann\n' >"$T_DIR/ok.csv"
export BRAZE_CSV=$T_DIR/ok.csv

# run_rc NAME ARGS...: run sluice, keep stdout+stderr in $T_DIR/NAME.log, echo the exit code
run_rc() {
    local name=$1
    shift
    set +e
    sluice "$@" >"$T_DIR/$name.log" 2>&1
    local rc=$?
    set -e
    echo "$rc"
}

# --- usage and config errors
expect_eq "unknown command: exit 64" 64 "$(run_rc usage frobnicate)"
expect_match "unknown command is named" "$T_DIR/usage.log" "unknown command 'frobnicate'"
expect_eq "missing config file: exit 78" 78 "$(run_rc nofile check -c "$T_DIR/nope.yml")"
expect_match "missing config file is named" "$T_DIR/nofile.log" "nope.yml"

printf 'pipelines:\n  p:\n    source: {type: csv, path: x.csv\n' >"$T_DIR/syntax.yml"
expect_eq "YAML syntax error: exit 78" 78 "$(run_rc syntax check -c "$T_DIR/syntax.yml")"
expect_match "YAML syntax error has file:line:col" "$T_DIR/syntax.log" "syntax.yml:[0-9]+:[0-9]+:"

cat >"$T_DIR/typo.yml" <<'YML'
pipelines:
  p:
    source:
      type: csv
      paht: users.csv
    sink:
      type: braze
      url: http://127.0.0.1:9
      api_key: k
    concurency: 4
YML
expect_eq "unknown keys: exit 78" 78 "$(run_rc typo check -c "$T_DIR/typo.yml")"
expect_match "a typo in a plugin option is named with its line and a suggestion" "$T_DIR/typo.log" \
    "typo.yml:5:[0-9]+: .*paht.*path"
expect_match "a typo in a pipeline key is named with its line" "$T_DIR/typo.log" "typo.yml:10:[0-9]+: .*concurency"
expect_match "the required path option is reported missing" "$T_DIR/typo.log" "path"

(unset BRAZE_API_KEY; export BRAZE_API_KEY=; unset BRAZE_API_KEY
 set +e; cd "$T_DIR" && "$SLUICE_BIN" run -c "$CFG" >"$T_DIR/nokey.log" 2>&1; echo $? >"$T_DIR/nokey.rc")
expect_eq "missing secret env var: exit 78" 78 "$(cat "$T_DIR/nokey.rc")"
expect_match "the missing variable is named with its place" "$T_DIR/nokey.log" \
    "braze-import.yml:[0-9]+:[0-9]+: .*BRAZE_API_KEY is not set"

expect_eq "check passes on the example" 0 "$(run_rc check check -c "$CFG")"
expect_no_match "check never prints the secret" "$T_DIR/check.log" "$BRAZE_API_KEY"

# --- input errors
BRAZE_CSV=$T_DIR/missing.csv
export BRAZE_CSV
expect_eq "unreadable CSV: exit 1" 1 "$(run_rc missing run -c "$CFG")"
expect_match "unreadable CSV names the file and the reason" "$T_DIR/missing.log" \
    "missing.csv.*(No such file|cannot open)"

head -c 3000 /dev/urandom >"$T_DIR/binary.csv"
printf '\0\0\0' >>"$T_DIR/binary.csv"
export BRAZE_CSV=$T_DIR/binary.csv
expect_eq "non-CSV input: exit 1" 1 "$(run_rc binary run -c "$CFG")"
expect_match "non-CSV input is named" "$T_DIR/binary.log" "binary.csv"

printf 'email,first_name\na@b.c,Ann\n' >"$T_DIR/noid.csv"
export BRAZE_CSV=$T_DIR/noid.csv
expect_eq "header without external_id: exit 1" 1 "$(run_rc noid run -c "$CFG")"
expect_match "header without external_id says what was expected" "$T_DIR/noid.log" "external_id"

# --- a cast that fails dead-letters that row only, with the reason
start_fake_braze braze
cat >"$T_DIR/cast.yml" <<YML
pipelines:
  typed:
    source: {type: csv, path: $T_DIR/cast.csv}
    steps:
      - type: cast
        types: {age: integer}
    sink: {type: braze, url: "\${BRAZE_API_URL}", api_key: "\${BRAZE_API_KEY}"}
YML
printf 'external_id,age\n1,34\n2,abc\n3,35\n' >"$T_DIR/cast.csv"
expect_eq "failed cast: exit 2 (finished, one row dead-lettered)" 2 "$(run_rc cast run -c "$T_DIR/cast.yml")"
sluice status -c "$T_DIR/cast.yml" typed >"$T_DIR/cast.status"
expect_match "the failed cast is dead-lettered with column, value and type" "$T_DIR/cast.status" \
    "line 3 .*age.*abc.*integer"
expect_eq "the other two rows were delivered" 2 "$(wc -l <"$FAKE_braze_RECORD")"

# --- a wrong API key stops the run (exit 1), keeps the checkpoint, hides the key
export BRAZE_CSV=$T_DIR/ok.csv
real=$BRAZE_API_KEY
export BRAZE_API_KEY=wrong-key-$RANDOM$RANDOM
expect_eq "rejected API key: exit 1" 1 "$(run_rc badkey run -c "$CFG")"
expect_match "the rejected key is reported" "$T_DIR/badkey.log" "API key|401"
expect_no_match "the wrong key is not printed" "$T_DIR/badkey.log" "$BRAZE_API_KEY"
# the row was read before the 401 stopped the run: the summary says so
expect_match "a run stopped by a 401 reports what it read" "$T_DIR/badkey.log" "read 1 +sent 0"
export BRAZE_API_KEY=$real

# --- dry run: counts and samples, nothing sent
before=$(json_get "$(fake_stats "$FAKE_braze_PORT")" requests)
expect_eq "dry run: exit 0" 0 "$(run_rc dry run -c "$CFG" --dry-run)"
expect_match "dry run prints a sample payload" "$T_DIR/dry.log" '"attributes":\[\{"external_id":"1"'
# a sink without a request body (a table) shows records as samples: only
# those that would be sent, not a row the source rejected
printf 'id,name\n1,a,extra\n2,b\n3,c\n' >"$T_DIR/ragged.csv"
cat >"$T_DIR/table.yml" <<YML
state: $T_DIR/table-state.db
pipelines:
  t:
    source: {type: csv, path: $T_DIR/ragged.csv}
    sink: {type: sql_table, url: $T_DIR/table.db, table: t, mode: replace}
YML
(cd "$T_DIR" && "$SLUICE_BIN" run --dry-run -c "$T_DIR/table.yml") >"$T_DIR/dry-table.log" 2>&1 || true
expect_match "a table's dry run shows a record that would be sent" "$T_DIR/dry-table.log" '"id":"2"'
expect_no_match "... and not the ragged row the source rejected" "$T_DIR/dry-table.log" '"id":"1"'
expect_match "dry run prints counts" "$T_DIR/dry.log" "1 would be sent"
after=$(json_get "$(fake_stats "$FAKE_braze_PORT")" requests)
expect_eq "dry run sends nothing" "$before" "$after"

# --- status needs none of the pipeline's variables (it sends nothing)
set +e
(cd "$T_DIR" && env -u BRAZE_API_KEY -u BRAZE_API_URL -u BRAZE_CSV \
    "$SLUICE_BIN" status -c "$CFG" braze-import) >"$T_DIR/status-noenv.log" 2>&1
rc=$?
set -e
expect_eq "status without the pipeline's environment: exit 0" 0 "$rc"
expect_match "... lists the pipeline" "$T_DIR/status-noenv.log" "^braze-import  \(csv -> braze\)"
expect_match "... and its runs" "$T_DIR/status-noenv.log" "dead-lettered"
expect_no_match "... no complaint about a variable" "$T_DIR/status-noenv.log" "not set"
expect_eq "status of an unknown pipeline: still an error" 64 \
    "$(cd "$T_DIR" && env -u BRAZE_API_KEY "$SLUICE_BIN" status -c "$CFG" nope >/dev/null 2>&1; echo $?)"
# --help advertises only commands that exist: none of them is a usage error
"$SLUICE_BIN" --help >"$T_DIR/help.txt" 2>&1
for cmd in $(awk '$1 == "sluice" && $2 ~ /^[a-z]+$/ { print $2 }' "$T_DIR/help.txt"); do
    rc=$(cd "$T_DIR" && "$SLUICE_BIN" help "$cmd" >/dev/null 2>&1; echo $?)
    expect_eq "help lists '$cmd', which exists (help $cmd exits 0)" 0 "$rc"
done
# distributed mode on a pipeline that has no `distributed:` block: told why
rc=$(cd "$T_DIR" && env -u KAFKA_BROKERS "$SLUICE_BIN" worker -c "$CFG" >"$T_DIR/worker.out" 2>&1; echo $?)
expect_eq "worker without a distributed pipeline: usage error" 64 "$rc"
expect_match "worker without a distributed pipeline: says there is none" "$T_DIR/worker.out" \
    "has 0 distributed pipelines"
rc=$(cd "$T_DIR" && env -u KAFKA_BROKERS "$SLUICE_BIN" fanout -c "$CFG" braze-import >"$T_DIR/fanout.out" 2>&1; echo $?)
expect_eq "fanout of a pipeline without distributed: config error" 78 "$rc"
expect_match "fanout names the missing block" "$T_DIR/fanout.out" "has no .distributed:. block, or its brokers are empty"
finish
