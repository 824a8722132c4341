#!/usr/bin/env bash
# The sql_table unit tests against a real, throw-away PostgreSQL server
# (tests/tools/pg.sh): the Postgres cases of test_sql_table run only when
# SLUICE_TEST_PG_URL is set, which this script does.
set -euo pipefail
SRC_DIR=${SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FAKES_DIR=${FAKES_DIR:-$SRC_DIR/build}
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"

bin=$FAKES_DIR/test_sql_table
if [ ! -x "$bin" ]; then
    echo "missing $bin (build the test_sql_table target)" >&2
    exit 1
fi
# A server speaking German (lc_messages) for the bad-row case: the locale is
# compiled into a temp dir (LOCPATH) rather than installed system-wide.
locdir=$(mktemp -d /tmp/sluice-locale.XXXXXX)
chmod 755 "$locdir"
if localedef -i de_DE -f UTF-8 "$locdir/de_DE.UTF-8" >/dev/null 2>&1; then
    export LOCPATH=$locdir SLUICE_TEST_PG_LOCALE=de_DE.UTF-8
else
    echo "NOTE: localedef de_DE failed; the other-language case is skipped"
fi
pg_start
# only the server needs the locale: glibc keeps (leaks) what LOCPATH makes it
# load into a client that calls setlocale, which the sanitizer build reports
unset LOCPATH
export SLUICE_TEST_PG_URL=$PG_URL
out=$(mktemp /tmp/sluice-sqlt-pg.XXXXXX)
set +e
"$bin" >"$out" 2>&1
rc=$?
set -e
cat "$out"
# the Postgres group must really have run, and passed
if ! grep -q "running the Postgres cases" "$out"; then
    echo "NOT OK - the Postgres cases did not run" >&2
    rc=1
fi
rm -f "$out"

# End to end with the real binary: a bzip2 CSV with a broken row -> replace.
SLUICE_BIN=${SLUICE_BIN:-$FAKES_DIR/sluice}
if [ -x "$SLUICE_BIN" ]; then
    work=$(mktemp -d /tmp/sluice-sqlt-e2e.XXXXXX)
    {
        printf 'id,name,"note, with comma"\n'
        for i in $(seq 1 5000); do printf '%d,name %d,"say ""hi"" %d"\n' "$i" "$i" "$i"; done
        printf '5001,bad \xc3\x28 name,x\n'
    } >"$work/petitions.csv"
    bzip2 "$work/petitions.csv"
    cat >"$work/c.yml" <<YML
state: $work/state.db
pipelines:
  cs:
    source: {type: csv, path: $work/petitions.csv.bz2}
    sink: {type: sql_table, url: "$PG_URL", table: petitions, mode: replace}
YML
    psql -X -q -c "CREATE TABLE petitions (id text, name text)" \
        -c "INSERT INTO petitions VALUES ('old', 'old row')"
    set +e
    "$SLUICE_BIN" run -c "$work/c.yml" >"$work/out" 2>&1
    erc=$?
    set -e
    got=$(psql -X -At -c "SELECT count(*), count(*) FILTER (WHERE id = 'old'),
        max(\"note, with comma\") FILTER (WHERE id = '7') FROM petitions")
    if [ "$erc" = 2 ] && [ "$got" = '5000|0|say "hi" 7' ] &&
        grep -q 'line 5002: column .name.: invalid UTF-8' <("$SLUICE_BIN" status -c "$work/c.yml" cs); then
        echo "ok - sluice run: bz2 CSV replaced the table, the bad row dead-lettered"
    else
        echo "NOT OK - sluice run: exit $erc, table '$got'"
        sed 's/^/    | /' "$work/out"
        rc=1
    fi
    rm -rf "$work"
else
    echo "SKIP: no sluice binary at $SLUICE_BIN for the end-to-end case"
fi
pg_stop
rm -rf "$locdir"
exit "$rc"
