#!/usr/bin/env python3
"""Check a warehouse table against the exports that were loaded into it.

  table_check.py --db URL --table NAME [--key id] OP:FILE [OP:FILE ...]

OP is replace (the table becomes exactly FILE's rows), append (FILE's rows
are added) or upsert (rows replace those with the same key, others are
added). FILE may be .bz2. URL is postgres://... (read with psql) or a SQLite
path (read with Python's sqlite3). Every column is compared as text; a
column the table has but a row's export lacked must be NULL. Prints the
problems and exits 1 if any.
"""
import argparse
import bz2
import csv
import io
import json
import sqlite3
import subprocess
import sys


def parse_csv(text):
    """RFC 4180 rows, with None for an empty unquoted cell (PostgreSQL's NULL)
    and '' for a quoted empty one."""
    rows, row, field, quoted, i, n = [], [], [], False, 0, len(text)
    in_q = False
    while i < n:
        c = text[i]
        if in_q:
            if c == '"':
                if i + 1 < n and text[i + 1] == '"':
                    field.append('"')
                    i += 1
                else:
                    in_q = False
            else:
                field.append(c)
        elif c == '"':
            in_q = quoted = True
        elif c == ",":
            row.append("".join(field) if (field or quoted) else None)
            field, quoted = [], False
        elif c == "\n" or c == "\r":
            if c == "\r" and i + 1 < n and text[i + 1] == "\n":
                i += 1
            row.append("".join(field) if (field or quoted) else None)
            rows.append(row)
            row, field, quoted = [], [], False
        else:
            field.append(c)
        i += 1
    if field or quoted or row:
        row.append("".join(field) if (field or quoted) else None)
        rows.append(row)
    return rows


def read_csv(path):
    raw = bz2.open(path, "rb").read() if path.endswith(".bz2") else open(path, "rb").read()
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    rows = parse_csv(text)
    header = rows[0]
    return [dict(zip(header, r)) for r in rows[1:]]


def dump(db, table):
    if db.startswith("postgres"):
        ident = '"' + table.replace('"', '""') + '"'
        q = "select coalesce(json_agg(row_to_json(t)), '[]') from %s t" % ident
        out = subprocess.run(["psql", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", q],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    ident = '"' + table.replace('"', '""') + '"'
    return [dict(r) for r in con.execute("select * from %s" % ident)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--key", default="id")
    ap.add_argument("ops", nargs="+")
    a = ap.parse_args()
    expected = {}
    order = []
    for op in a.ops:
        kind, path = op.split(":", 1)
        rows = read_csv(path)
        if kind == "replace":
            expected, order = {}, []
        for i, r in enumerate(rows):
            k = r[a.key] if kind != "append" else "%s#%d#%d" % (r[a.key], len(order), i)
            if k not in expected:
                order.append(k)
            expected[k] = r
    got = dump(a.db, a.table)
    problems = []
    if len(got) != len(expected):
        problems.append("row count: expected %d, table has %d" % (len(expected), len(got)))
    by_key = {}
    for r in got:
        by_key.setdefault(str(r.get(a.key)), []).append(r)
    for k in order:
        e = expected[k]
        kk = e[a.key]
        rows = by_key.get(kk)
        if not rows:
            problems.append("%s=%s: missing" % (a.key, kk))
            continue
        r = rows.pop(0)
        for col, v in e.items():
            if col not in r:
                problems.append("column %s missing from the table" % col)
                break
            dv = r[col]
            if dv is None:
                dv = None
            elif not isinstance(dv, str):
                dv = str(dv)
            if dv != v:
                problems.append("%s=%s column %s: expected %r, table has %r" % (a.key, kk, col, v, dv))
        for col in r:
            if col not in e and r[col] is not None:
                problems.append("%s=%s column %s: expected NULL (not in the export), got %r"
                                % (a.key, kk, col, r[col]))
    for p in problems[:15]:
        print(p)
    print("%s: %d rows expected, %d in the table, %d problems"
          % (a.table, len(expected), len(got), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
