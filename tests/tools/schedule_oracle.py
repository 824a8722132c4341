#!/usr/bin/env python3
"""Compare `sluice schedule-next` with an oracle built on croniter and zoneinfo.

Usage: schedule_oracle.py SLUICE_BIN [--count N] [--verbose]

croniter (Debian's python3-croniter 1.3.5) is used on naive datetimes only,
where it is pure calendar arithmetic: it decides which local dates and times
a cron line matches (fields, ranges, steps, names, the day-of-month /
day-of-week rule). Its own time-zone handling is not used: with tz-aware
datetimes 1.3.5 is wrong around DST changes with every tz library (with
zoneinfo, `30 1 * * *` in Europe/London fires at 02:30 the day after the
autumn change; with pytz it fires at 00:30 on the spring change day).

Local times are turned into instants with zoneinfo (the same tzdata files
sluice reads) under sluice's documented DST rules (Vixie cron's):
- a job whose minute and hour fields are both fixed fires once per local
  date and time: on the first occurrence of a repeated time, and at the
  instant of the change for a skipped time;
- a job with `*` in its minute or hour field fires on every instant whose
  local time matches (both passes of a repeated hour; skipped times never).

Exit 0 when every case agrees; prints the cases that do not.
"""
import calendar
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from croniter import croniter
from zoneinfo import ZoneInfo

UTC = timezone.utc

EXPRS = [
    "* * * * *",
    "*/15 * * * *",
    "*/20 1 * * *",
    "0 * * * *",
    "30 * * * *",
    "5,35 * * * *",
    "0 0 * * *",
    "30 1 * * *",
    "0 1 * * *",
    "59 1 * * *",
    "0 2 * * *",
    "30 2 * * *",
    "45 2 * * *",
    "0 3 * * *",
    "15 1-3 * * *",
    "0,30 0-4 * * *",
    "0 6 * * mon-fri",
    "30 9 * * 1-5",
    "0 12 * * 0",
    "0 12 * * 7",
    "0 22 * * fri-sun",
    "0 0 1 * *",
    "0 0 1,15 * *",
    "0 6 13 * 5",
    "30 4 1 * mon",
    "0 0 */2 * *",
    "0 0 1 jan,jul *",
    "0 9 * mar-oct *",
    "10-50/20 6-18/4 * * *",
    "7/15 * * * *",
    "0 0 29 2 *",
    "0 0 31 * *",
    "23 23 * * sat",
    "0 8 8-14 * *",
]
ZONES = ["Europe/London", "America/New_York", "Australia/Lord_Howe", "UTC"]

# DST change instants (UTC) of the three zones in 2024, 2025 and 2040 (the
# last exercises the POSIX TZ rule stored at the end of each zone file).
CHANGE_DAYS = {
    "Europe/London": ["2024-03-31 01:00", "2024-10-27 01:00", "2025-03-30 01:00",
                      "2025-10-26 01:00", "2040-03-25 01:00", "2040-10-28 01:00"],
    "America/New_York": ["2024-03-10 07:00", "2024-11-03 06:00", "2025-03-09 07:00",
                         "2025-11-02 06:00", "2040-03-11 07:00", "2040-11-04 06:00"],
    "Australia/Lord_Howe": ["2024-04-06 15:00", "2024-10-05 15:30", "2025-04-05 15:00",
                            "2025-10-04 15:30", "2040-04-07 15:00", "2040-09-30 15:30"],
    "UTC": ["2024-03-31 01:00", "2024-02-28 12:00"],
}


def wild(expr):
    f = expr.split()
    return f[0].startswith("*") or f[1].startswith("*")


def to_ts(s):
    return calendar.timegm(datetime.strptime(s, "%Y-%m-%d %H:%M").timetuple())


class Oracle:
    def __init__(self, zone):
        self.z = ZoneInfo(zone)

    def wall(self, ts):
        return datetime.fromtimestamp(ts, self.z).replace(tzinfo=None)

    def instants(self, w):
        """(instants whose local time is w, ascending; change instant if w was skipped)"""
        res = set()
        tss = []
        for fold in (0, 1):
            ts = int(w.replace(tzinfo=self.z, fold=fold).timestamp())
            tss.append(ts)
            if self.wall(ts) == w:
                res.add(ts)
        if res:
            return sorted(res), None
        lo, hi = min(tss), max(tss)  # the change lies in (lo, hi]
        off_hi = datetime.fromtimestamp(hi, self.z).utcoffset()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.z).utcoffset() == off_hi:
                hi = mid
            else:
                lo = mid
        return [], hi

    def next_after(self, expr, t):
        is_wild = wild(expr)
        it = croniter(expr, self.wall(t) - timedelta(hours=3))
        best = None
        while True:
            w = it.get_next(datetime)
            if best is not None and w > self.wall(best) + timedelta(hours=3):
                return best
            ins, gap = self.instants(w)
            cands = ins if is_wild else (ins[:1] if ins else [gap])
            for c in cands:
                if c > t and (best is None or c < best):
                    best = c


def cases(rng):
    out = []
    for zone in ZONES:
        starts = []
        for d in CHANGE_DAYS[zone]:
            c = to_ts(d)
            # around the change: hours before, just before/after, inside
            for delta in (-86400 - 1800, -3 * 3600, -3600 - 1, -1, 0, 1, 1799, 3600 + 7):
                starts.append(c + delta)
        for _ in range(6):
            starts.append(rng.randrange(to_ts("2020-01-01 00:00"), to_ts("2045-01-01 00:00")))
        for t in starts:
            for expr in rng.sample(EXPRS, 3):
                out.append((expr, zone, t))
    return out


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    binary = sys.argv[1]
    count = 3
    if "--count" in sys.argv:
        count = int(sys.argv[sys.argv.index("--count") + 1])
    verbose = "--verbose" in sys.argv
    rng = random.Random(20240331)
    all_cases = cases(rng)
    bad = 0
    for expr, zone, t in all_cases:
        line = expr if zone == "UTC" and rng.random() < 0.5 else "%s %s" % (expr, zone)
        p = subprocess.run([binary, "schedule-next", line, str(t), str(count)],
                           capture_output=True, text=True)
        got = [int(l.split()[0]) for l in p.stdout.splitlines() if l and l[0].isdigit()]
        o = Oracle(zone)
        want = []
        cur = t
        for _ in range(count):
            cur = o.next_after(expr, cur)
            want.append(cur)
        if p.returncode != 0 or got != want:
            bad += 1
            print("MISMATCH %r from %d (%s):" % (line, t, datetime.fromtimestamp(t, UTC)))
            print("   sluice: %s %s" % (got, p.stderr.strip()))
            print("   oracle: %s" % want)
            for w in want:
                print("           %d = %s" % (w, datetime.fromtimestamp(w, ZoneInfo(zone))))
        elif verbose:
            print("ok %r from %d: %s" % (line, t, got))
    print("%d cases (%d fire times each), %d mismatches" % (len(all_cases), count, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
