#!/usr/bin/env python3
"""Baseline: the original Braze Lambda importer's approach, reimplemented
plainly (csv module, per-row dict + json, 75 rows per request, one request
at a time on a keep-alive connection). Same CSV, same fake Braze.

  baseline_braze.py CSV URL KEY [MAX_ROWS]
"""
import csv
import http.client
import json
import sys
import urllib.parse


def infer(v):
    if v == "":
        return None, False
    if v.lower() in ("true", "false"):
        return v.lower() == "true", True
    try:
        if not (len(v) > 1 and v[0] == "0" and v[1] != "."):
            return (float(v) if "." in v else int(v)), True
    except ValueError:
        pass
    return v, True


def main():
    path, url, key = sys.argv[1:4]
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json",
               "X-Braze-Bulk": "true"}
    batch, sent = [], 0

    def flush():
        conn.request("POST", "/users/track", json.dumps({"attributes": batch}), headers)
        r = conn.getresponse()
        r.read()
        if r.status != 201:
            raise SystemExit("HTTP %d" % r.status)

    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if limit and i >= limit:
                break
            obj = {"external_id": row.pop("external_id")}
            for k, v in row.items():
                val, send = infer(v)
                if send:
                    obj[k] = val
            batch.append(obj)
            if len(batch) == 75:
                flush()
                sent += len(batch)
                batch = []
    if batch:
        flush()
        sent += len(batch)
    print(sent)


main()
