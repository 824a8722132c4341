#!/usr/bin/env python3
"""Run a command and print wall time, CPU seconds and peak RSS as JSON.

  measure.py -- CMD ARGS...
"""
import json
import resource
import subprocess
import sys
import time

cmd = sys.argv[sys.argv.index("--") + 1:]
e0 = time.time()
t0 = time.monotonic()
p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wall = time.monotonic() - t0
e1 = time.time()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "wall_s": round(wall, 3),
                  "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
                  "peak_rss_mb": round(ru.ru_maxrss / 1024.0, 1),
                  "start_epoch": e0, "end_epoch": e1,
                  "stdout": p.stdout[-2000:], "stderr": p.stderr[-2000:]}))
