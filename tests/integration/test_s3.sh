#!/usr/bin/env bash
# The S3 client (src/net/s3.c, driven by build/s3_tool) against fake_s3, which
# verifies every SigV4 signature and the multipart rules as S3 does.
source "$(dirname "$0")/lib.sh"

TOOL=$FAKES_DIR/s3_tool
AK=AKIDSLUICETEST0001
SK=fake-s3-SECRET-key-0001
WRONG_SK=wrong-s3-SECRET-key-9999
TOKEN=fake-session-TOKEN-0001

# start_s3 NAME ARGS...: sets S3_<NAME>_PORT, S3_<NAME>_PID, S3_<NAME>_DIR
start_s3() {
    local name=$1
    shift
    local pf=$T_DIR/$name.port
    rm -f "$pf"
    "$FAKES_DIR/fake_s3" --port 0 --port-file "$pf" --dir "$T_DIR/$name-data" --bucket bkt \
        --bucket other --access-key "$AK" --secret-key "$SK" --region eu-west-1 "$@" \
        >"$T_DIR/$name.out" 2>"$T_DIR/$name.err" &
    local pid=$!
    T_PIDS+=("$pid")
    local port
    port=$(wait_port_file "$pf")
    eval "S3_${name}_PORT=$port S3_${name}_PID=$pid S3_${name}_DIR=$T_DIR/$name-data"
}
# stat_of PORT KEY [SUBKEY]
stat_of() {
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=d[sys.argv[2]]
print(v[sys.argv[3]] if len(sys.argv) > 3 else v)' "$(fake_stats "$1")" "${@:2}"
}
# obj_file DIR BUCKET KEY: where fake_s3 keeps an object
obj_file() {
    python3 -c 'import sys
k = "".join(c if (c.isascii() and (c.isalnum() or c in "_-")) else "".join("%%%02X" % b for b in c.encode()) for c in sys.argv[3])
print(sys.argv[1] + "/" + sys.argv[2] + "/" + k)' "$@"
}

export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=eu-west-1
export SLUICE_S3_BACKOFF_MS=20
unset AWS_SESSION_TOKEN AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI

# --- a 30 MB gzip stream in 1 MiB parts ------------------------------------
start_s3 a --min-part 1048576
export SLUICE_S3_ENDPOINT=http://127.0.0.1:$S3_a_PORT
head -c 23000000 /dev/urandom | base64 -w 76 >"$T_DIR/in30"
check "input is about 30 MB" test "$(stat -c %s "$T_DIR/in30")" -gt 30000000
"$TOOL" gzip s3://bkt/stage/part-0001.csv.gz 1048576 <"$T_DIR/in30" >"$T_DIR/gz.out" 2>"$T_DIR/gz.err" && RC=0 || RC=$?
check "gzip stream uploaded" test $RC = 0
read -r raw gz < <(sed 's/raw=\([0-9]*\) gz=\([0-9]*\)/\1 \2/' "$T_DIR/gz.out")
expect_eq "raw byte count is the input's" "$(stat -c %s "$T_DIR/in30")" "$raw"
OBJ=$(obj_file "$S3_a_DIR" bkt stage/part-0001.csv.gz)
expect_eq "gz byte count is the object's" "$(stat -c %s "$OBJ")" "$gz"
expect_eq "uploaded as ceil(gz / 1 MiB) parts" "$(((gz + 1048575) / 1048576))" "$(stat_of "$S3_a_PORT" requests part)"
check "object decompresses byte for byte to the input" cmp <(gunzip -c "$OBJ") "$T_DIR/in30"
check "gzip -t accepts the object" gzip -t "$OBJ"
expect_eq "no upload left in progress" 0 "$(stat_of "$S3_a_PORT" uploads_in_progress)"

# --- put, list, delete; keys that need encoding -----------------------------
KEY='dir/a b+c~ü&x=1?.txt'
printf 'hello\n' | "$TOOL" put "s3://bkt/$KEY" text/plain && RC=0 || RC=$?
check "put of a key with space, +, ~, ü, &, =, ?" test $RC = 0
check "object stored under that exact key" cmp <(printf 'hello\n') "$(obj_file "$S3_a_DIR" bkt "$KEY")"
"$TOOL" list s3://bkt/dir/ >"$T_DIR/list1"
expect_eq "list gives the key back decoded, with its size" "$KEY	6" "$(cat "$T_DIR/list1")"
"$TOOL" delete "s3://bkt/$KEY" || true
check "delete removes it" test ! -e "$(obj_file "$S3_a_DIR" bkt "$KEY")"
"$TOOL" delete s3://bkt/never/there && RC=0 || RC=$?
check "deleting a missing object is not an error" test $RC = 0
printf '' | "$TOOL" put s3://bkt/empty
check "empty object" test -e "$(obj_file "$S3_a_DIR" bkt empty)" -a ! -s "$(obj_file "$S3_a_DIR" bkt empty)"

# --- list pages past 1000 keys ----------------------------------------------
for i in $(seq -w 0 1499); do : >"$S3_a_DIR/bkt/many%2Fk-$i"; done
before=$(stat_of "$S3_a_PORT" requests list)
"$TOOL" list s3://bkt/many/ >"$T_DIR/list2"
expect_eq "1500 keys listed" 1500 "$(wc -l <"$T_DIR/list2")"
expect_eq "in order, none twice" "$(sort -u "$T_DIR/list2" | md5sum)" "$(md5sum <"$T_DIR/list2")"
expect_eq "in two pages (continuation token followed)" $((before + 2)) "$(stat_of "$S3_a_PORT" requests list)"

# --- errors: wrong keys, region, bucket; parts too small ---------------------
AWS_SECRET_ACCESS_KEY=$WRONG_SK "$TOOL" put s3://bkt/x </dev/null 2>"$T_DIR/e1" && RC=0 || RC=$?
check "wrong secret key: refused" test $RC = 1
expect_match "names method, URL and S3's code" "$T_DIR/e1" "S3 PUT s3://bkt/x: HTTP 403 SignatureDoesNotMatch: The request signature"
expect_no_match "message holds neither secret key" "$T_DIR/e1" "$WRONG_SK|$SK"
AWS_ACCESS_KEY_ID=AKIDUNKNOWN00000 "$TOOL" list s3://bkt/ 2>"$T_DIR/e2" && RC=0 || RC=$?
expect_match "unknown access key: InvalidAccessKeyId" "$T_DIR/e2" "S3 GET s3://bkt/: HTTP 403 InvalidAccessKeyId"
AWS_REGION=us-east-2 "$TOOL" list s3://bkt/ 2>"$T_DIR/e3" && RC=0 || RC=$?
expect_match "wrong region: refused naming it" "$T_DIR/e3" "AuthorizationHeaderMalformed.*'us-east-2' is wrong; expecting 'eu-west-1'"
"$TOOL" list s3://nobucket/ 2>"$T_DIR/e4" && RC=0 || RC=$?
expect_match "unknown bucket: NoSuchBucket" "$T_DIR/e4" "S3 GET s3://nobucket/: HTTP 404 NoSuchBucket"
head -c 3000 /dev/zero | "$TOOL" upload s3://bkt/small 1000 2>"$T_DIR/e5" && RC=0 || RC=$?
expect_match "parts under --min-part: EntityTooSmall" "$T_DIR/e5" "S3 POST s3://bkt/small: HTTP 400 EntityTooSmall"
expect_eq "the failed upload was aborted" 0 "$(stat_of "$S3_a_PORT" uploads_in_progress)"
head -c 3000000 /dev/zero | "$TOOL" abort s3://bkt/aborted 1048576 || true
expect_eq "abort leaves no upload" 0 "$(stat_of "$S3_a_PORT" uploads_in_progress)"
check "abort leaves no object" test ! -e "$(obj_file "$S3_a_DIR" bkt aborted)"
expect_eq "aborted uploads counted" 2 "$(stat_of "$S3_a_PORT" aborted_uploads)"
expect_no_match "no request had a chunked or bad-hash body" "$T_DIR/a.err" "MissingContentLength|XAmzContentSHA256Mismatch"

# --- the fake is as strict as S3 -----------------------------------------------
U=http://127.0.0.1:$S3_a_PORT/bkt/viacurl
SIG=(--aws-sigv4 aws:amz:eu-west-1:s3 --user "$AK:$SK")
expect_eq "fake: no x-amz-content-sha256: 400" 400 "$(curl -s -o /dev/null -w '%{http_code}' "${SIG[@]}" -T "$T_DIR/list1" "$U")"
expect_eq "fake: chunked body: 411" 411 "$(curl -s -o /dev/null -w '%{http_code}' "${SIG[@]}" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -T - "$U" <"$T_DIR/list1")"
expect_eq "fake: hash not the body's: 400" 400 "$(curl -s -o /dev/null -w '%{http_code}' "${SIG[@]}" -H "x-amz-content-sha256: $(printf x | sha256sum | cut -c1-64)" -T "$T_DIR/list1" "$U")"
expect_eq "fake: unsigned payload, signed: 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "${SIG[@]}" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -T "$T_DIR/list1" "$U")"
expect_eq "fake: no Authorization: 403" 403 "$(curl -s -o /dev/null -w '%{http_code}' "$U")"
stop_fake "$S3_a_PID"

# --- faults: a part failing once is retried; 200 carrying <Error> on complete ---
start_s3 f --min-part 1048576 --fail-part 2 --fail-complete-200-error 1
export SLUICE_S3_ENDPOINT=http://127.0.0.1:$S3_f_PORT
head -c 5000000 "$T_DIR/in30" >"$T_DIR/in5"
"$TOOL" gzip s3://bkt/retried.gz 1048576 <"$T_DIR/in5" >/dev/null 2>"$T_DIR/f.err" && RC=0 || RC=$?
check "upload succeeds through a 500 on part 2 and a 200-with-Error on complete" test $RC = 0
expect_eq "the part failure was injected" 1 "$(stat_of "$S3_f_PORT" injected_part_failures)"
expect_eq "the complete error was injected" 1 "$(stat_of "$S3_f_PORT" injected_complete_errors)"
expect_match "the retries were logged" "$T_DIR/f.err" "S3 PUT s3://bkt/retried.gz \\(part 2\\): HTTP 500 InternalError.*attempt 1"
check "object is whole" cmp <(gunzip -c "$(obj_file "$S3_f_DIR" bkt retried.gz)") "$T_DIR/in5"
stop_fake "$S3_f_PID"

start_s3 g --min-part 1048576 --fail-complete-200-error 1000
export SLUICE_S3_ENDPOINT=http://127.0.0.1:$S3_g_PORT
SLUICE_S3_MAX_ATTEMPTS=3 "$TOOL" gzip s3://bkt/never.gz 1048576 <"$T_DIR/in5" >/dev/null 2>"$T_DIR/g.err" && RC=0 || RC=$?
check "a 200 carrying <Error> on every complete is an error" test $RC = 1
expect_match "named as such" "$T_DIR/g.err" "after 3 attempts: S3 POST s3://bkt/never.gz: HTTP 200 carrying an error: InternalError"
check "no object" test ! -e "$(obj_file "$S3_g_DIR" bkt never.gz)"
expect_eq "the upload was aborted" 0 "$(stat_of "$S3_g_PORT" uploads_in_progress)"
stop_fake "$S3_g_PID"

# --- credentials: session token, container URL, IMDSv2 -------------------------
start_s3 t --min-part 1048576 --session-token "$TOKEN" --creds-auth "Bearer creds-auth-SECRET"
export SLUICE_S3_ENDPOINT=http://127.0.0.1:$S3_t_PORT
printf 'x\n' | "$TOOL" put s3://bkt/no-token 2>"$T_DIR/t1" && RC=0 || RC=$?
expect_match "missing session token: InvalidToken" "$T_DIR/t1" "HTTP 403 InvalidToken"
printf 'x\n' | AWS_SESSION_TOKEN=$TOKEN "$TOOL" put s3://bkt/env-token && RC=0 || RC=$?
check "env credentials with a session token" test $RC = 0
T_FAIL0=$T_FAIL
(
    unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:$S3_t_PORT/_creds
    AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer creds-auth-SECRET" "$TOOL" gzip s3://bkt/container.gz <"$T_DIR/in5" >/dev/null && RC=0 || RC=$?
    check "container credentials URL (with its authorization token)" test $RC = 0
    AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer wrong" "$TOOL" list s3://bkt/ 2>"$T_DIR/t2" && RC=0 || RC=$?
    expect_match "container endpoint refusing: clear error" "$T_DIR/t2" "container credentials endpoint .*FULL_URI.* failed: HTTP 401"
    expect_no_match "without the token" "$T_DIR/t2" "creds-auth-SECRET|$SK|$TOKEN"
    unset AWS_CONTAINER_CREDENTIALS_FULL_URI
    AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:$S3_t_PORT "$TOOL" list s3://bkt/ >"$T_DIR/t3" && RC=0 || RC=$?
    check "IMDSv2 credentials (token, role, credentials)" test $RC = 0
    expect_match "IMDS client lists what the container client staged" "$T_DIR/t3" "^container.gz	"
    AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1 "$TOOL" list s3://bkt/ 2>"$T_DIR/t4" && RC=0 || RC=$?
    expect_match "no credentials anywhere: says where it looked" "$T_DIR/t4" "no AWS credentials.*instance metadata service at http://127.0.0.1:1"
    exit $((T_FAIL - T_FAIL0))
) || T_FAIL=$((T_FAIL + 1))
check "container object whole" cmp <(gunzip -c "$(obj_file "$S3_t_DIR" bkt container.gz)") "$T_DIR/in5"
stop_fake "$S3_t_PID"

finish
