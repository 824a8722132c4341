#!/usr/bin/env bash
# The state-store unit tests (test_state, test_jobs) against a real,
# throw-away PostgreSQL server (tests/tools/pg.sh): with
# SLUICE_TEST_STATE_URL set, every case that runs against SQLite runs against
# Postgres, each in a fresh database; the SQLite-only ones say why they skip.
set -euo pipefail
SRC_DIR=${SRC_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FAKES_DIR=${FAKES_DIR:-$SRC_DIR/build}
# shellcheck source=../tools/pg.sh
source "$SRC_DIR/tests/tools/pg.sh"

for t in test_state test_jobs; do
    if [ ! -x "$FAKES_DIR/$t" ]; then
        echo "missing $FAKES_DIR/$t (build the $t target)" >&2
        exit 1
    fi
done
pg_start
export SLUICE_TEST_STATE_URL=$PG_URL
rc=0
out=$(mktemp /tmp/sluice-state-pg.XXXXXX)
for t in test_state test_jobs; do
    set +e
    "$FAKES_DIR/$t" >"$out" 2>&1
    trc=$?
    set -e
    cat "$out"
    # the Postgres run must really have happened, and passed
    if [ "$trc" != 0 ]; then
        echo "NOT OK - $t against Postgres: exit $trc"
        rc=1
    elif ! grep -q "PASSED" "$out" || ! grep -q "backend: postgres" "$out"; then
        echo "NOT OK - $t did not run against Postgres"
        rc=1
    else
        echo "ok - $t against Postgres"
    fi
done
# no test database is left behind
left=$(psql -X -At -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'sluice_t_%'")
if [ "$left" != 0 ]; then
    echo "NOT OK - $left test databases left behind"
    rc=1
fi
rm -f "$out"
pg_stop
exit "$rc"
