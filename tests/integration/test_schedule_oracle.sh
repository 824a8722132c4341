#!/usr/bin/env bash
# Schedules against an oracle: `sluice schedule-next` vs croniter (which local
# times a cron line matches) + zoneinfo (local time -> instants), for a few
# hundred (expression, zone, start) cases, many on DST change days in
# Europe/London, America/New_York and Australia/Lord_Howe (a 30-minute
# change). See tests/tools/schedule_oracle.py.
source "$(dirname "$0")/lib.sh"

PY=""
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import croniter, zoneinfo' 2>/dev/null; then
        PY=$p
        break
    fi
done
if [ -z "$PY" ]; then
    not_ok "python3 with croniter is required (scripts/install-deps installs python3-croniter)"
    finish
    exit 1
fi

out=$T_DIR/oracle.out
if "$PY" "$TOOLS/schedule_oracle.py" "$SLUICE_BIN" --count 3 >"$out" 2>&1; then
    ok "sluice schedule-next agrees with the oracle: $(tail -1 "$out")"
else
    not_ok "sluice schedule-next disagrees with the oracle:"
    head -60 "$out" | sed 's/^/    | /'
fi
n=$(sed -n 's/^\([0-9]*\) cases.*/\1/p' "$out")
check "at least 300 cases were compared (got ${n:-0})" [ "${n:-0}" -ge 300 ]

# the oracle itself can tell a wrong answer: a schedule one minute off fails
if "$PY" - "$TOOLS" <<'PY' >"$T_DIR/self.out" 2>&1; then
import sys
sys.path.insert(0, sys.argv[1])
import schedule_oracle as so
o = so.Oracle("Europe/London")
t = so.to_ts("2024-03-30 12:00")
assert o.next_after("30 1 * * *", t) == so.to_ts("2024-03-31 01:00"), "spring: 01:30 fires at the change"
t = so.to_ts("2024-10-26 12:00")
assert o.next_after("30 1 * * *", so.to_ts("2024-10-27 00:30")) == so.to_ts("2024-10-28 01:30"), "autumn: once"
assert o.next_after("30 * * * *", so.to_ts("2024-10-27 00:30")) == so.to_ts("2024-10-27 01:30"), "wild: both passes"
PY
    ok "the oracle's own DST answers are the documented ones"
else
    not_ok "oracle self-check"; sed 's/^/    | /' "$T_DIR/self.out"
fi
finish
