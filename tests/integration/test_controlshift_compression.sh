#!/usr/bin/env bash
# Compressed exports, however they are announced (issue 7 items 4 and 11):
# real ControlShift deliveries carry no compression_format for a .csv.bz2
# URL, the schema endpoint spells it "BZIP2", and a well-signed, well-formed
# webhook must never get a 4xx for a detail the loader can handle (9 failed
# deliveries disable the endpoint). The compression is detected from the
# content and the URL's path. A download that expands beyond the configured
# limit fails its job cleanly, naming the URL and the limit.
source "$(dirname "$0")/lib.sh"

FAKE=$FAKES_DIR/fake_controlshift
export CONTROLSHIFT_WEBHOOK_SECRET=whsec-0f3a9c2e-$RANDOM$RANDOM
EX=$T_DIR/exports
mkdir -p "$EX"
"$FAKE" gen --table t --rows 200 --cols 4 --out "$EX/a.csv.bz2" --bz2 --seed 1 >/dev/null
"$FAKE" gen --table t --rows 150 --cols 4 --out "$EX/b.csv" --seed 2 >/dev/null
gzip -k "$EX/b.csv"
cp "$EX/a.csv.bz2" "$EX/a-no-extension"
# 3 MB of rows after decompression, a few KB compressed
python3 -c '
import sys
sys.stdout.write("id,note\n")
for i in range(60000):
    sys.stdout.write("%d,%s\n" % (i, "x" * 40))' | bzip2 -9 >"$EX/big.csv.bz2"
"$FAKE" serve --dir "$EX" --port 0 --port-file "$T_DIR/cs.port" >"$T_DIR/cs.log" 2>&1 &
T_PIDS+=($!)
CS=http://127.0.0.1:$(wait_port_file "$T_DIR/cs.port")

CFG=$T_DIR/cs.yml
cat >"$CFG" <<YML
state: $T_DIR/state.db
pipelines:
  cs:
    trigger: {type: controlshift, secret: "\${CONTROLSHIFT_WEBHOOK_SECRET}"}
    source: {type: csv, path: "{{url}}", compression: "{{compression}}", allow_hosts: 127.0.0.1,
             empty_is_null: true, max_decompressed: 1MB}
    sink: {type: sql_table, url: "$T_DIR/wh.db", table: "{{table}}", mode: "{{mode}}", key: [id], empty_as_null: false}
    max_failed: 0
YML
start_serve main "$CFG"

# body TABLE URL COMPRESSION_JSON: a delivery as ControlShift's samples have
# it (no s3, & escaped as \u0026); COMPRESSION_JSON is '' to leave it out
body() {
    local f=$T_DIR/body-$1.json comp=""
    [ -n "$3" ] && comp=",\"compression_format\":$3"
    printf '{"type":"data.full_table_exported","jid":"jid-%s","data":{"url":"%s?X-Amz-Expires=86400\\u0026x=1","table":"%s"%s}}' \
        "$1" "$2" "$1" "$comp" >"$f"
    "$FAKE" send --to "$SERVE_URL/webhooks/controlshift" --secret "$CONTROLSHIFT_WEBHOOK_SECRET" \
        --raw-body "$f" 2>>"$T_DIR/send.err"
}
rows() { python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM " + sys.argv[2]).fetchone()[0])' "$T_DIR/wh.db" "$1" 2>/dev/null || echo none; }

expect_eq ".csv.bz2 URL, no compression_format: 202" 202 "$(body nofield "$CS/exports/a.csv.bz2" '')"
expect_eq "compression_format BZIP2 (the schema endpoint's spelling): 202" 202 "$(body upper "$CS/exports/a.csv.bz2" '"BZIP2"')"
expect_eq "compression_format GZip, a .csv.gz: 202" 202 "$(body gz "$CS/exports/b.csv.gz" '"GZip"')"
expect_eq "compression_format none, but bzip2 content: 202" 202 "$(body wrong "$CS/exports/a-no-extension" '"none"')"
expect_eq "an unknown compression_format, plain CSV: 202" 202 "$(body odd "$CS/exports/b.csv" '"zstd-maybe"')"
expect_eq "compression_format null: 202" 202 "$(body nul "$CS/exports/b.csv" 'null')"
expect_eq "a download bigger than max_decompressed once expanded: 202" 202 "$(body bomb "$CS/exports/big.csv.bz2" '"bzip2"')"
check "the jobs ended" wait_jobs "$CFG" cs 7 60
sluice status -c "$CFG" cs >"$T_DIR/status.txt"
for t in nofield upper wrong; do
    expect_eq "$t: every row of the bzip2 export loaded" 200 "$(rows $t)"
done
for t in gz odd nul; do
    expect_eq "$t: every row loaded" 150 "$(rows $t)"
done
expect_match "the unknown spelling is logged" "$T_DIR/serve-main.log" "compression_format 'zstd-maybe' is not one sluice knows"
expect_match "the expanding download failed, not retried" "$T_DIR/status.txt" "failed +bomb .*attempts 1 "
expect_match "its error names the URL and the limit" "$T_DIR/status.txt" \
    "error: .*127.0.0.1:[0-9]+/exports/big.csv.bz2: input is larger than the limit of 1048576 bytes after decompression"
expect_eq "and its table was left alone (never created)" none "$(rows bomb)"
expect_eq "jobs: 6 done, 1 failed" "0 0 0 6 1" "$(job_counts "$CFG" cs)"
kill -TERM "$SERVE_main_PID"
wait "$SERVE_main_PID" || true
finish
