#!/usr/bin/env python3
"""Generate a users CSV full of the awkward cases of the Braze importer, and
the exact attribute objects Braze must receive for it (one JSON per line).

The expectations are computed here, independently of sluice's C code, from
the rules in shared/contracts.md, so the end-to-end test checks one
implementation against another.

  gen_users.py --rows N [--seed S] --csv out.csv [--expect out.jsonl]
               [--bad] [--plain COLUMNS]

--plain writes a simple, fast file of N rows and COLUMNS columns (benchmarks).
--bad adds rows that must be dead-lettered (ragged rows); their line numbers
are written to <expect>.bad.
"""
import argparse
import ast
import json
import random
import re

INT_RE = re.compile(r"^-?(0|[1-9][0-9]*)$")
# Python's float() on what passes the leading-zero rule: "5." and ".5" too
DEC_RE = re.compile(r"^-?((0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)$")
WS = " \t\r\n\v\f"


def py_plain(x):
    """A Python literal of the subset sluice reads (lists, str, int64, float, bool, None)."""
    if isinstance(x, list):
        return all(py_plain(i) for i in x)
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return True
    if isinstance(x, int):
        return -(2**63) <= x < 2**63
    return isinstance(x, float) and x == x and abs(x) != float("inf")


def infer(v):
    """The Braze importer's inference (contracts.md): the type is decided on
    the text stripped of surrounding whitespace; text stays as written.
    Returns (send, value)."""
    s = v.strip(WS)
    if s == "":
        return False, None
    if s.lower() == "null":
        return True, None
    if INT_RE.match(s):
        n = int(s)
        if -(2**63) <= n < 2**63:
            return True, n
        return True, v
    if DEC_RE.match(s) and len(s) <= 64:
        return True, float(s)
    if s.lower() in ("true", "false"):
        return True, s.lower() == "true"
    if len(s) > 1 and s.startswith("[") and s.endswith("]"):
        try:
            parsed = json.loads(s)
            if isinstance(parsed, list):
                return True, parsed
        except ValueError:
            pass
        try:
            parsed = ast.literal_eval(s)
            if isinstance(parsed, list) and py_plain(parsed):
                return True, parsed
        except (ValueError, SyntaxError):
            pass
    return True, v


def as_string(v):
    """cast: string. Empty and null keep their meaning (not sent / unset)."""
    if v.strip() == "":
        return False, None
    if v.strip().lower() == "null":
        return True, None
    return True, v


NAMES = ["Ana", "José", "Zoë", "O'Brien", 'Say "hi"', "Smith, Jr.", "line\nbreak",
         "  padded  ", "日本", "emoji 🎉", "", "NULL", "tab\there"]
SCORES = ["0.5", "1e5", "1,000", "NaN", "-3", "0123", "3.14", "+7", "", "0", "-0.25",
          "99999999999999999999", "12", ".5", "5.", " 12", "7 ", " 0.25 "]
BOOLS = ["true", "FALSE", "True", "false", "", "yes", "null", " true "]
TAGS = ['["a","b"]', "[1,2]", "[bad", "[]", "", '["x", {"k": 1}]', "plain",
        "['a', 'b']", "[True, False, None]", " [1, 'x'] ", "['it\\'s', \"Zo\u00eb\"]"]
ZIPS = ["02134", "12345", "00501", "", "9021", "null"]
PHONES = ["972-000-0000", "+7", "5551234", "", "(555) 123-4567", "0044 20 1234"]
DATES = ["11/11/2011", "2024-01-02", ""]
COLUMNS = ["external_id", "first_name", "email", "age", "zip", "phone", "score", "is_vip",
           "tags", "signup_date", "nickname"]


def csv_cell(v):
    if any(c in v for c in ',"\n\r') or v != v.strip():
        return '"' + v.replace('"', '""') + '"'
    return v


def awkward(args):
    rnd = random.Random(args.seed)
    out = open(args.csv, "w", encoding="utf-8", newline="")
    exp = open(args.expect, "w", encoding="utf-8") if args.expect else None
    bad = open(args.expect + ".bad", "w") if (args.expect and args.bad) else None
    out.write("\ufeff")  # a BOM, as Excel writes it
    out.write(",".join(COLUMNS) + "\r\n")
    line = 2
    for i in range(args.rows):
        ext = str(i + 1) if i % 3 else "u%06d" % (i + 1)  # numeric ids must stay strings
        if i % 97 == 0:
            row = [ext] + [""] * (len(COLUMNS) - 1)  # nothing to send: skipped
        else:
            row = [ext, rnd.choice(NAMES), "user%d@example.org" % (i + 1),
                   rnd.choice(["34", "", "0", "007", "abc", "null"]), rnd.choice(ZIPS),
                   rnd.choice(PHONES), rnd.choice(SCORES), rnd.choice(BOOLS), rnd.choice(TAGS),
                   rnd.choice(DATES), rnd.choice(["", "   ", "Null", "Bobby"])]
        if args.bad and i % 1000 == 500:
            # a ragged row: one field short -> dead letter with its line number
            out.write(",".join(csv_cell(v) for v in row[:-1]) + "\r\n")
            bad.write("%d\n" % line)
            line += 1
            continue
        text = ",".join(csv_cell(v) for v in row) + "\r\n"
        out.write(text)
        start = line
        line += text.count("\n")
        if exp is None:
            continue
        obj = {"external_id": ext}
        for name, v in zip(COLUMNS[1:], row[1:]):
            send, val = as_string(v) if name in ("zip", "phone") else infer(v)
            if send:
                obj[name] = val
        if len(obj) > 1:
            exp.write(json.dumps(obj, ensure_ascii=False) + "\n")
        _ = start
    out.close()
    if exp:
        exp.close()
    if bad:
        bad.close()


def plain(args):
    cols = args.plain
    with open(args.csv, "w", newline="") as out:
        out.write(",".join(["external_id"] + ["attr%d" % k for k in range(1, cols)]) + "\n")
        buf = []
        for i in range(args.rows):
            buf.append("user-%d,%d,name%d,%d.5,true,city%d,x%d,%d,FALSE,tag%d\n"
                       % (i, i % 97, i, i % 1000, i % 50, i, i * 7, i % 13)
                       if cols == 10 else
                       ",".join(["user-%d" % i] + [str((i * k) % 1000) for k in range(1, cols)])
                       + "\n")
            if len(buf) >= 10000:
                out.write("".join(buf))
                buf = []
        out.write("".join(buf))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--expect")
    ap.add_argument("--bad", action="store_true")
    ap.add_argument("--plain", type=int)
    args = ap.parse_args()
    if args.plain:
        plain(args)
    else:
        awkward(args)


if __name__ == "__main__":
    main()
