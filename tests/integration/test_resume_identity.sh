#!/usr/bin/env bash
# A resume proves it reads the same input, or refuses (issue 7 #1): stdin,
# a file rewritten with the same size and mtime, a URL whose ETag or query
# changed. An input already delivered completely is not sent again unless
# --again (exit 0, "nothing to do").
source "$(dirname "$0")/lib.sh"

export BRAZE_API_KEY=identity-key-$RANDOM$RANDOM
start_fake_braze braze --reject-id u01000
REC=$FAKE_braze_RECORD
sent() { if [ -f "$REC" ]; then wc -l <"$REC" | tr -d ' '; else echo 0; fi; }

gen() { # file rows [marker]: a users CSV; marker changes row 2's name
    python3 - "$@" <<'PY'
import sys
path, rows = sys.argv[1], int(sys.argv[2])
mark = sys.argv[3] if len(sys.argv) > 3 else "Ann"
with open(path, "w") as f:
    f.write("external_id,first_name\n")
    for i in range(1, rows + 1):
        f.write("u%05d,%s\n" % (i, mark if i == 2 else "Bob"))
PY
}

# max_failed: 0 stops the run at row 1000 (the fake refuses u01000) with a
# checkpoint past it: a deterministic interrupted run.
cat >"$T_DIR/p.yml" <<YML
state: $T_DIR/state.db
pipelines:
  imp:
    source: {type: csv, path: "\${CSV}"}
    sink: {type: braze, url: "\${BRAZE_API_URL}", api_key: "\${BRAZE_API_KEY}"}
    concurrency: 1
    max_failed: \${MAX_FAILED:--1}
YML
run() { # label args...: sets RC, output in $T_DIR/label.out
    local label=$1
    shift
    set +e
    sluice run -c "$T_DIR/p.yml" "$@" >"$T_DIR/$label.out" 2>&1
    RC=$?
    set -e
}

# --- stdin: an interrupted run is never resumed from another stream
gen "$T_DIR/a.csv" 5000
gen "$T_DIR/b.csv" 5000 Zed
CSV=- MAX_FAILED=0 run stdin1 <"$T_DIR/a.csv"
expect_eq "stdin: the run stops at the refused row (exit 1)" 1 "$RC"
n1=$(sent)
check "stdin: about 1000 rows were sent before it stopped ($n1)" test "$n1" -ge 900 -a "$n1" -lt 1700
CSV=- run stdin2 <"$T_DIR/b.csv"
expect_eq "stdin: a resume on stdin is refused (exit 1)" 1 "$RC"
expect_match "stdin: the refusal says why and names --from-start" "$T_DIR/stdin2.out" \
    "stdin cannot be proven to carry the same input again; use --from-start"
expect_eq "stdin: nothing was sent by the refused run" "$n1" "$(sent)"
CSV=- run stdin3 --from-start <"$T_DIR/b.csv"
expect_eq "stdin: --from-start sends it (exit 2: u01000 is refused)" 2 "$RC"
expect_eq "stdin: --from-start sent all 5000 rows but the refused one" $((n1 + 4999)) "$(sent)"

# --- a file rewritten in place, same size and mtime
gen "$T_DIR/c.csv" 5000
touch -d @1700000000 "$T_DIR/c.csv"
n0=$(sent)
CSV=$T_DIR/c.csv MAX_FAILED=0 run file1
expect_eq "file: the run stops at the refused row (exit 1)" 1 "$RC"
n1=$(sent)
gen "$T_DIR/c.csv" 5000 Xyz # row 2 changed, same length
touch -d @1700000000 "$T_DIR/c.csv"
CSV=$T_DIR/c.csv run file2
expect_eq "file: a resume into the rewritten file is refused (exit 1)" 1 "$RC"
expect_match "file: the refusal names the change and --from-start" "$T_DIR/file2.out" \
    "the input changed since the interrupted run: its first [0-9]+ bytes differ \(same name, size and modification time\); use --from-start"
expect_eq "file: nothing was sent by the refused run" "$n1" "$(sent)"
gen "$T_DIR/c.csv" 5000 Ann # back to the original content: the resume proceeds
touch -d @1700000000 "$T_DIR/c.csv"
CSV=$T_DIR/c.csv run file3
expect_eq "file: the same content resumes (exit 0)" 0 "$RC"
expect_match "file: it resumed" "$T_DIR/file3.out" "resuming an interrupted run at line"
check "file: the resume sent only the rest ($(($(sent) - n1)) rows)" \
    test $(($(sent) - n1)) -le $((5000 - (n1 - n0) + 75))

# --- already delivered: refused before anything is sent, unless --again
n1=$(sent)
CSV=$T_DIR/c.csv run again1
expect_eq "delivered: a second run over the same file exits 0" 0 "$RC"
expect_match "delivered: it says so, when, and names --again" "$T_DIR/again1.out" \
    "already delivered completely by the run of [0-9-]+ [0-9:]+ UTC .*nothing to do. Pass --again to send it again"
expect_eq "delivered: nothing was sent" "$n1" "$(sent)"
cp "$T_DIR/c.csv" "$T_DIR/copy.csv"
CSV=$T_DIR/copy.csv run again2
expect_eq "delivered: a copy under another name is recognised (exit 0)" 0 "$RC"
expect_match "delivered: ... as the file delivered before" "$T_DIR/again2.out" "as '$T_DIR/c.csv'"
expect_eq "delivered: nothing was sent for the copy" "$n1" "$(sent)"
gen "$T_DIR/c2.csv" 5000 Xyz
CSV=$T_DIR/c2.csv run again3
expect_eq "delivered: other content with the same size is sent (exit 2: u01000)" 2 "$RC"
expect_eq "delivered: all 5000 rows of it (but u01000)" $((n1 + 4999)) "$(sent)"
n1=$(sent)
CSV=$T_DIR/c.csv run again4 --again
expect_eq "delivered: --again sends it again (exit 2: u01000)" 2 "$RC"
expect_eq "delivered: --again sent all 5000 rows (but u01000)" $((n1 + 4999)) "$(sent)"
# stdin: a short input read whole before sending is recognised; a long one
# that starts the same cannot be compared and is refused with an error
n1=$(sent)
gen "$T_DIR/small.csv" 100
CSV=- run small1 <"$T_DIR/small.csv"
expect_eq "delivered: a small stdin input is sent" $((n1 + 100)) "$(sent)"
CSV=- run small2 <"$T_DIR/small.csv"
expect_eq "delivered: the same small stdin input is refused (exit 0)" 0 "$RC"
expect_match "delivered: stdin says so" "$T_DIR/small2.out" "stdin: already delivered completely"
expect_eq "delivered: nothing sent for it" $((n1 + 100)) "$(sent)"
# (c.csv, 70 KB, was read whole by the source's first read: longer inputs)
gen "$T_DIR/big.csv" 40000
CSV=- run big1 <"$T_DIR/big.csv"
expect_eq "delivered: a long stdin input is sent (exit 2: u01000)" 2 "$RC"
n1=$(sent)
CSV=- run big2 <"$T_DIR/big.csv"
expect_eq "delivered: a long stdin input that starts like a delivered one: exit 1" 1 "$RC"
expect_match "delivered: ... and says why" "$T_DIR/big2.out" \
    "stdin cannot be compared whole before it is sent. Pass --again"
expect_eq "delivered: nothing sent for it" "$n1" "$(sent)"
CSV=$T_DIR/big.csv run big3
expect_eq "delivered: the same long input as a file is read once, compared, refused (exit 0)" 0 "$RC"
expect_match "delivered: ... it says so" "$T_DIR/big3.out" "reading it once to compare"
expect_match "delivered: ... as stdin before" "$T_DIR/big3.out" "already delivered completely .*as 'stdin'"
expect_eq "delivered: nothing sent for it" "$n1" "$(sent)"
printf 'u99999,Eve\n' >>"$T_DIR/big.csv"
CSV=$T_DIR/big.csv run big4
expect_eq "delivered: the long file with one more row is sent (exit 2: u01000)" 2 "$RC"
expect_eq "delivered: all of it" $((n1 + 40000)) "$(sent)"

# --- a URL: a changed ETag (or query) is another input
cat >"$T_DIR/srv.py" <<'PY'
import http.server, os, sys
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open(os.path.join(d, "u.csv"), "rb").read()
        etag = open(os.path.join(d, "etag")).read().strip()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(os.path.join(d, "srv.port"), "w").write(str(s.server_address[1]))
s.serve_forever()
PY
gen "$T_DIR/u.csv" 5000 Url
echo '"v1"' >"$T_DIR/etag"
python3 "$T_DIR/srv.py" "$T_DIR" &
T_PIDS+=($!)
port=$(wait_port_file "$T_DIR/srv.port")
URL="http://127.0.0.1:$port/u.csv?sig=one"
CSV=$URL MAX_FAILED=0 run url1
expect_eq "url: the run stops at the refused row (exit 1)" 1 "$RC"
n1=$(sent)
echo '"v2"' >"$T_DIR/etag"
CSV=$URL run url2
expect_eq "url: a resume with a changed ETag is refused (exit 1)" 1 "$RC"
expect_match "url: the refusal names the ETag and --from-start" "$T_DIR/url2.out" \
    "not the input of the interrupted run: the server's ETag changed; use --from-start"
echo '"v1"' >"$T_DIR/etag"
CSV="http://127.0.0.1:$port/u.csv?sig=two" run url3
expect_eq "url: a resume with another query string is refused (exit 1)" 1 "$RC"
expect_match "url: ... naming the URL" "$T_DIR/url3.out" "the URL differs \(path or query string\)"
expect_no_match "url: the query string is not printed" "$T_DIR/url3.out" "sig="
expect_eq "url: nothing was sent by the refused runs" "$n1" "$(sent)"
CSV=$URL run url4
expect_eq "url: the same URL and ETag resumes (exit 0)" 0 "$RC"
n1=$(sent)
CSV=$URL run url5
expect_eq "url: the delivered URL is refused next time (exit 0)" 0 "$RC"
expect_match "url: it says so" "$T_DIR/url5.out" "already delivered completely"
expect_eq "url: nothing sent" "$n1" "$(sent)"
stop_fake "$FAKE_braze_PID"
finish
