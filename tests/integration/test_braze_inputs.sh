#!/usr/bin/env bash
# The CSV can be a plain file, .gz, .bz2, stdin or an http URL; each delivers
# the same users. Notifications: a Slack webhook on failure, JSON on success.
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=inputs-key-$RANDOM$RANDOM
python3 "$TOOLS/gen_users.py" --rows 3000 --seed 9 --csv "$T_DIR/users.csv" --expect "$T_DIR/expected.jsonl"
gzip -k "$T_DIR/users.csv"
bzip2 -k "$T_DIR/users.csv"
CFG=$SRC_DIR/examples/braze-import.yml

run_input() { # name csv-spec [stdin-file]
    local name=$1 spec=$2 in=${3:-/dev/null}
    start_fake_braze "$name"
    set +e
    BRAZE_CSV=$spec SLUICE_STATE=$T_DIR/$name.db sluice run -c "$CFG" <"$in" >"$T_DIR/$name.out" 2>&1
    local rc=$?
    set -e
    eval "stop_fake \$FAKE_${name}_PID"
    expect_eq "$name: exit 0" 0 "$rc"
    check "$name: every user arrived exactly as expected" \
        python3 "$TOOLS/compare_braze.py" "$T_DIR/expected.jsonl" "$(eval echo \$FAKE_${name}_RECORD)"
}
run_input gz "$T_DIR/users.csv.gz"
run_input bz2 "$T_DIR/users.csv.bz2"
run_input stdin - "$T_DIR/users.csv"

port=$(free_port)
(cd "$T_DIR" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
T_PIDS+=($!)
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/users.csv" -o /dev/null 2>/dev/null && break; sleep 0.1; done
run_input url "http://127.0.0.1:$port/users.csv"

# notifications: Slack format (strict fake) on failure only, JSON on success
start_fake_hook slack --slack
start_fake_hook json
start_fake_braze notif
cat >"$T_DIR/notify.yml" <<YML
pipelines:
  braze-import:
    source: {type: csv, path: "$T_DIR/users.csv"}
    sink: {type: braze, url: "\${BRAZE_API_URL}", api_key: "\${BRAZE_API_KEY}"}
    notify:
      - {url: "http://127.0.0.1:$FAKE_slack_PORT/hook", format: slack, on: failure}
      - {url: "http://127.0.0.1:$FAKE_json_PORT/hook", format: json, on: success}
YML
set +e
sluice run -c "$T_DIR/notify.yml" >"$T_DIR/n1.out" 2>&1
rc1=$?
BRAZE_API_KEY=wrong-$RANDOM sluice run -c "$T_DIR/notify.yml" --from-start --again >"$T_DIR/n2.out" 2>&1
rc2=$?
set -e
stop_fake "$FAKE_slack_PID"
stop_fake "$FAKE_json_PID"
expect_eq "successful run: exit 0" 0 "$rc1"
expect_eq "run with a rejected key: exit 1" 1 "$rc2"
expect_eq "one JSON summary (the success)" 1 "$(wc -l <"$FAKE_json_RECORD")"
expect_eq "one Slack message (the failure)" 1 "$(wc -l <"$FAKE_slack_RECORD")"
expect_match "the Slack message says what failed" "$FAKE_slack_RECORD" '"text":"sluice: braze-import failed.*API key'
expect_eq "JSON summary: success" "True" "$(json_get "$(cat "$FAKE_json_RECORD")" success)"
expect_no_match "no secret in the Slack message" "$FAKE_slack_RECORD" "$BRAZE_API_KEY"
finish
