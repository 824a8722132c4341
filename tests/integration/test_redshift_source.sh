#!/usr/bin/env bash
# The sql source on a redshift:// URL, in restricted mode on the harness's
# Postgres (with log_statement = all, so the statements that reached the
# server are checked): Redshift's session setup (no IntervalStyle), a cursor
# inside a READ ONLY transaction, DECLARE without NO SCROLL, FETCH FORWARD
# at most 1000 (Redshift's limit on single-node clusters) whatever
# batch_rows says; a 300,000-row view is streamed, not buffered (every row
# arrives; peak RSS stays far below the result's size).
source "$(dirname "$0")/lib.sh"
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"
pg_start
q() { psql -X -At -v ON_ERROR_STOP=1 -c "$1"; }
q "CREATE TABLE people AS SELECT g AS person_id, 'person' || g || '@example.org' AS email,
   repeat('x', 200) AS pad FROM generate_series(1, 300000) g" >/dev/null
q "CREATE VIEW needs_enrichment AS SELECT person_id, email, pad FROM people" >/dev/null
q "ALTER SYSTEM SET log_statement = 'all'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
cat >"$T_DIR/src.yml" <<YML
state: $T_DIR/state.db
pipelines:
  p:
    source: {type: sql, url: "redshift://postgres@127.0.0.1:$PGPORT/postgres", view: needs_enrichment, order_key: person_id, batch_rows: 5000}
    sink: {type: sql_table, url: "$PG_URL", table: enriched, mode: append}
YML
RC=0
(cd "$T_DIR" && /usr/bin/time -v "$SLUICE_BIN" run -c "$T_DIR/src.yml") >"$T_DIR/run.out" 2>&1 || RC=$?
expect_eq "run: exit 0" 0 "$RC"
expect_eq "every row of the view arrived, in order, once" "300000|300000|45000150000" \
    "$(q "SELECT count(*), count(DISTINCT person_id), sum(person_id::bigint) FROM enriched")"
rss=$(sed -n 's/.*Maximum resident set size (kbytes): \([0-9]*\).*/\1/p' "$T_DIR/run.out")
echo "# peak RSS ${rss} KB for a ~70 MB result"
if [ -n "${SLUICE_SANITIZED:-}" ]; then
    echo "# (sanitizer build: the RSS bound is not checked)"
else
    check "peak RSS under 60 MB (the result is not buffered)" test "${rss:-999999}" -lt 61440
fi
LOG=$PG_DIR/server.log
check "the server log is readable" test -r "$LOG"
expect_match "a READ ONLY transaction" "$LOG" 'statement: BEGIN READ ONLY'
expect_match "a cursor without NO SCROLL" "$LOG" '(statement|execute [^:]*): DECLARE sluice_cursor CURSOR FOR SELECT'
expect_match "FETCH at most 1000 rows" "$LOG" 'statement: FETCH FORWARD 1000 FROM sluice_cursor'
expect_no_match "no NO SCROLL" "$LOG" 'NO SCROLL'
expect_no_match "no IntervalStyle (Redshift lacks it)" "$LOG" 'IntervalStyle'
expect_eq "the largest FETCH asks for 1000 rows" 1000 \
    "$(grep -oE 'statement: FETCH FORWARD [0-9]+' "$LOG" | awk '$4 > m { m = $4 } END { print m }')"
finish
