#!/usr/bin/env python3
"""Compare what fake_braze received with what the generator expected.

  compare_braze.py EXPECTED.jsonl RECEIVED.jsonl [--exclude ID,...]
                   [--max-dups N] [--ids-only]

Checks, per external_id: it arrived (unless excluded), and (unless --ids-only)
the last object received equals the expected one exactly, JSON types
included (1 != 1.0 != "1", true != "true"). Prints the number of duplicates
(objects received more than once) and fails when it exceeds --max-dups.
"""
import argparse
import json
import sys


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("expected")
    ap.add_argument("received")
    ap.add_argument("--exclude", default="")
    ap.add_argument("--max-dups", type=int, default=0)
    ap.add_argument("--ids-only", action="store_true")
    a = ap.parse_args()
    exclude = set(x for x in a.exclude.split(",") if x)
    expected = {}
    with open(a.expected, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            expected[o["external_id"]] = o
    got = {}
    dups = 0
    with open(a.received, encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            eid = o.get("external_id")
            if not isinstance(eid, str):
                print("external_id is not a string: %r" % (eid,))
                return 1
            if eid in got:
                dups += 1
            got[eid] = o
    problems = 0
    for eid, o in expected.items():
        if eid in exclude:
            if eid in got:
                print("%s: should not have been accepted" % eid)
                problems += 1
            continue
        if eid not in got:
            problems += 1
            if problems <= 10:
                print("%s: never arrived" % eid)
            continue
        if not a.ids_only and not same(o, got[eid]):
            problems += 1
            if problems <= 10:
                print("%s: expected %s\n%s  received %s" % (eid, json.dumps(o, ensure_ascii=False),
                      " " * len(eid), json.dumps(got[eid], ensure_ascii=False)))
    extra = [k for k in got if k not in expected]
    if extra:
        problems += len(extra)
        print("%d unexpected ids, e.g. %s" % (len(extra), extra[:5]))
    print("expected %d, received %d distinct, %d duplicates, %d problems"
          % (len(expected) - len(exclude & expected.keys()), len(got), dups, problems))
    if dups > a.max_dups:
        print("duplicates %d exceed the bound %d" % (dups, a.max_dups))
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
