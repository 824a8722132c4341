#!/usr/bin/env bash
# The email source end to end (sluice run -> fake_hook): a valid export's CSV
# rows arrive exactly as the csv source makes them; every bad message is
# rejected with its reason, recorded in state, and sends nothing; a message
# is delivered once (a second run sends nothing, --again sends it again); a
# failed run leaves its message to the next run; require_auth trusts only
# the receiving server's Authentication-Results; in a Maildir the newest
# valid export is read and the older ones are superseded.
source "$(dirname "$0")/lib.sh"

GEN="python3 $TOOLS/gen_eml.py"
cd "$T_DIR"

start_fake_hook hook
HOOK=$FAKE_hook_PORT
requests() { json_get "$(fake_stats "$HOOK")" requests; }
# state KEY-PREFIX: the outcomes recorded by the pipeline, one per line
outcomes() {
    python3 - "$1" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect(".sluice/state.db")
for k, v in db.execute("select key, value from kv where pipeline=? and key like '%/msg.%' order by key", (sys.argv[1],)):
    j = json.loads(v)
    print(j["outcome"], j["file"].split("/")[-1], j.get("reason", ""))
PY
}

# pipeline NAME PATH [EXTRA YAML LINES]: a pipeline config NAME.yml
pipeline() {
    local name=$1 path=$2
    shift 2
    {
        echo "pipelines:"
        echo "  $name:"
        echo "    source:"
        echo "      type: email"
        echo "      path: $path"
        echo "      from: [exports@actionkit.example]"
        echo "      subject: \"ActionKit export*\""
        for l in "$@"; do echo "      $l"; done
        echo "    sink:"
        echo "      type: http"
        echo "      url: http://127.0.0.1:$HOOK/hook"
    } >"$name.yml"
}

# --- a valid export: the rows arrive as the csv source would make them
$GEN valid valid.eml
pipeline one valid.eml
rc=0
"$SLUICE_BIN" run -c one.yml >one.out 2>&1 || rc=$?
expect_eq "valid export: exit 0" 0 "$rc"
expect_eq "the three rows, fields named by the CSV header" \
    '[{"email":"ada@example.org","first_name":"Ada","last_name":"Lovelace","zip":"2134","phone":"555-0100"},{"email":"grace@example.org","first_name":"Grace","last_name":"Hopper","zip":"10001","phone":""},{"email":"alan@example.org","first_name":"Alan","last_name":"Turing","zip":"94110","phone":"555 0102"}]' \
    "$(cat "$FAKE_hook_RECORD")"
cat >direct.yml <<YML
pipelines:
  direct:
    source: {type: csv, path: members.csv}
    sink: {type: http, url: "http://127.0.0.1:$HOOK/hook"}
YML
python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import gen_eml; open("members.csv","w").write(gen_eml.DEFAULT_CSV)' "$TOOLS"
"$SLUICE_BIN" run -c direct.yml >direct.out 2>&1
expect_eq "the csv source makes the same records of the same CSV" \
    "$(sed -n 1p "$FAKE_hook_RECORD")" "$(sed -n 2p "$FAKE_hook_RECORD")"
expect_match "the summary names the message and the CSV in it" one.out 'valid\.eml!members\.csv'
expect_eq "recorded as delivered" "delivered valid.eml " "$(outcomes one)"

n=$(requests)
rc=0
"$SLUICE_BIN" run -c one.yml >one2.out 2>&1 || rc=$?
expect_eq "second run of the same message: exit 0, skipped (nothing new)" 0 "$rc"
expect_match "recorded as skipped" one2.out '^[a-z_-]+: skipped'

expect_match "and says why" one2.out 'no new message \(1 looked at by earlier runs; --again'
expect_eq "second run sends nothing" "$n" "$(requests)"
rc=0
"$SLUICE_BIN" run --again -c one.yml >one3.out 2>&1 || rc=$?
expect_eq "--again delivers it again" "0 $((n + 1))" "$rc $(requests)"

# --- CSV options pass through (delimiter, trim)
printf 'email;first_name\n a@example.org ;A\n' >semi.csv
$GEN valid semi.eml --csv semi.csv
pipeline semi semi.eml 'delimiter: ";"' 'trim: true'
"$SLUICE_BIN" run -c semi.yml >semi.out 2>&1
expect_eq "delimiter and trim apply to the attached CSV" \
    '[{"email":"a@example.org","first_name":"A"}]' "$(tail -n 1 "$FAKE_hook_RECORD")"

# --- every bad message is rejected with its reason, recorded, nothing sent
$GEN zip_bomb zip_bomb.eml
declare -A WHY=(
    [wrong_sender]='sender mallory@evil\.example is not on the from allow-list'
    [no_attachment]='no attachment \(expected a zip holding one CSV\)'
    [two_csvs]="the zip holds 2 CSV files \('members\.csv', 'other\.CSV'\); expected exactly one"
    [not_zip]="no zip attachment: 'export\.zip' \(application/zip\) is not a zip"
    [encrypted]="encrypted zip: entry 'members\.csv' is password-protected"
    [invalid_mime]='invalid MIME: a multipart without a boundary parameter'
    [zip_bomb]='zip bomb\? members\.csv expanded to [0-9]+ bytes from a [0-9]+-byte zip: more than 1000 times'
)
for k in wrong_sender no_attachment two_csvs not_zip encrypted invalid_mime zip_bomb; do
    [ -f "$k.eml" ] || $GEN "$k" "$k.eml"
    pipeline "bad_$k" "$k.eml"
    n=$(requests)
    rc=0
    "$SLUICE_BIN" run -c "bad_$k.yml" >"bad_$k.out" 2>&1 || rc=$?
    expect_eq "$k: exit 1" 1 "$rc"
    expect_match "$k: the reason, naming the message" "bad_$k.out" \
        "message .*$k\.eml rejected \(Message-ID [^ ]+@actionkit\.example, From [^ ]+, Subject \"ActionKit export: members\"\): ${WHY[$k]}"
    expect_match "$k: the run's error says nothing valid was found" "bad_$k.out" \
        "no valid export: 1 new message, 1 rejected"
    expect_eq "$k: nothing sent" "$n" "$(requests)"
    expect_match "$k: recorded as rejected" <(outcomes "bad_$k") "^rejected $k\.eml ${WHY[$k]}"
done
# a smaller cap on the unzipped size
pipeline capped valid.eml 'max_decompressed: 100'
rc=0
"$SLUICE_BIN" run --again -c capped.yml >capped.out 2>&1 || rc=$?
expect_eq "max_decompressed: exit 1" 1 "$rc"
expect_match "max_decompressed: the reason" capped.out \
    'members\.csv is larger than max_decompressed \(100 bytes\) after unzipping'

# --- require_auth: only the receiving server's verdict counts
AUTH=('require_auth: dkim' 'authserv_id: mx.org.example')
$GEN valid dkim_ok.eml --ar "mx.org.example; dkim=pass header.d=actionkit.example; spf=fail"
$GEN valid forged_none.eml
$GEN valid forged_other.eml --ar "mx.evil.example; dkim=pass header.d=actionkit.example"
$GEN valid forged_below.eml --ar "mx.org.example; dkim=fail header.d=actionkit.example" \
    --ar "mx.org.example; dkim=pass header.d=actionkit.example"
$GEN valid spf_ok.eml --ar "mx.org.example; spf=pass smtp.mailfrom=bounce@actionkit.example"
pipeline auth_ok dkim_ok.eml "${AUTH[@]}"
rc=0
"$SLUICE_BIN" run -c auth_ok.yml >auth_ok.out 2>&1 || rc=$?
expect_eq "dkim=pass for the From domain from our server: exit 0" 0 "$rc"
for k in forged_none forged_other forged_below; do
    pipeline "auth_$k" "$k.eml" "${AUTH[@]}"
    n=$(requests)
    rc=0
    "$SLUICE_BIN" run -c "auth_$k.yml" >"auth_$k.out" 2>&1 || rc=$?
    expect_eq "$k: exit 1, nothing sent" "1 $n" "$rc $(requests)"
done
expect_match "no Authentication-Results: the reason" auth_forged_none.out \
    'authentication failed: no Authentication-Results header \(expected one from mx\.org\.example\)'
expect_match "another server's pass is not trusted" auth_forged_other.out \
    "no Authentication-Results header from authserv_id mx\.org\.example \(only from 'mx\.evil\.example'"
expect_match "a forged pass below ours is not trusted" auth_forged_below.out \
    'hold no dkim=pass header\.d=actionkit\.example \(found: dkim=fail header\.d=actionkit\.example\)'
pipeline auth_spf spf_ok.eml 'require_auth: spf' 'authserv_id: mx.org.example'
rc=0
"$SLUICE_BIN" run -c auth_spf.yml >auth_spf.out 2>&1 || rc=$?
expect_eq "spf=pass smtp.mailfrom=<From domain>: exit 0" 0 "$rc"
cat >noid.yml <<YML
pipelines:
  noid:
    source: {type: email, path: x.eml, from: [a@b.example], require_auth: dkim}
    sink: {type: http, url: "http://127.0.0.1:$HOOK/hook"}
YML
rc=0
"$SLUICE_BIN" check -c noid.yml >noid.out 2>&1 || rc=$?
expect_eq "require_auth without authserv_id: config error" 78 "$rc"
expect_match "naming authserv_id" noid.out 'authserv_id.*required with require_auth: dkim'

# --- Maildir: the newest valid export per run, each message once
mkdir -p md/new md/cur md/tmp
mkcsv() { printf 'email,week\n%s@example.org,%s\n' "$1" "$1" >"$1.csv"; }
for w in w1 w2 w3; do mkcsv $w; done
$GEN valid md/cur/1.host:2,S --csv w1.csv --date "Mon, 03 Jun 2024 06:00:00 +0000"
$GEN valid md/new/3.host --csv w3.csv --date "Mon, 17 Jun 2024 06:00:00 +0000"
$GEN valid md/new/2.host --csv w2.csv --date "Mon, 10 Jun 2024 06:00:00 +0000"
$GEN wrong_sender md/new/4.host --date "Tue, 18 Jun 2024 06:00:00 +0000"
pipeline md "maildir:$T_DIR/md"
n=$(requests)
rc=0
"$SLUICE_BIN" run -c md.yml >md1.out 2>&1 || rc=$?
expect_eq "maildir: exit 0, one request" "0 $((n + 1))" "$rc $(requests)"
expect_eq "maildir: the newest valid export only" '[{"email":"w3@example.org","week":"w3"}]' \
    "$(tail -n 1 "$FAKE_hook_RECORD")"
expect_match "maildir: older exports logged as superseded" md1.out \
    'message .*/1\.host:2,S .* is superseded by the newer export .*/new/3\.host'
outcomes md >md1.state
expect_match "maildir: recorded delivered" md1.state '^delivered 3\.host $'
expect_match "maildir: recorded superseded" md1.state '^superseded 2\.host superseded by the newer export'
expect_match "maildir: recorded superseded (cur/)" md1.state '^superseded 1\.host:2,S '
expect_match "maildir: recorded rejected" md1.state '^rejected 4\.host sender mallory@evil\.example'
n=$(requests)
rc=0
"$SLUICE_BIN" run -c md.yml >md2.out 2>&1 || rc=$?
expect_eq "maildir second run: skipped (exit 0), nothing re-sent" "0 $n" "$rc $(requests)"
expect_match "maildir second run: says so" md2.out 'no new message \(4 looked at by earlier runs'
# a mail client moving the delivered message to cur/ does not make it new
mv md/new/3.host "md/cur/3.host:2,S"
rc=0
"$SLUICE_BIN" run -c md.yml >md3.out 2>&1 || rc=$?
expect_eq "moved to cur/: still not re-sent (skipped)" "0 $n" "$rc $(requests)"

# a run that fails leaves its message for the next run
mkcsv w4
$GEN valid md/new/5.host --csv w4.csv --date "Mon, 24 Jun 2024 06:00:00 +0000"
start_fake_hook deny --status 401
sed "s/127.0.0.1:$HOOK/127.0.0.1:$FAKE_deny_PORT/" md.yml >md_deny.yml
rc=0
"$SLUICE_BIN" run -c md_deny.yml >md4.out 2>&1 || rc=$?
expect_eq "the sink refuses (401): exit 1" 1 "$rc"
expect_eq "not recorded" "" "$(outcomes md | grep '5\.host' || true)"
rc=0
"$SLUICE_BIN" run -c md.yml >md5.out 2>&1 || rc=$?
expect_eq "the next run delivers that message" 0 "$rc"
expect_eq "its rows" '[{"email":"w4@example.org","week":"w4"}]' "$(tail -n 1 "$FAKE_hook_RECORD")"
expect_match "now recorded" <(outcomes md) '^delivered 5\.host $'

# --- dry run: counts, nothing sent, nothing recorded
$GEN valid dry.eml
pipeline dry dry.eml
n=$(requests)
rc=0
"$SLUICE_BIN" run --dry-run -c dry.yml >dry.out 2>&1 || rc=$?
expect_eq "dry run: exit 0, nothing sent" "0 $n" "$rc $(requests)"
expect_match "dry run: the counts" dry.out 'dry run of dry: 3 read, 3 would be sent'
expect_eq "dry run: nothing recorded" "" "$(outcomes dry)"


# --- a plain CSV path: read directly, same records, no sender needed, nothing recorded
python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import gen_eml; open("plain.csv","w").write(gen_eml.DEFAULT_CSV)' "$TOOLS"
gzip -c plain.csv >plain.csv.gz
cat >plain.yml <<YML
pipelines:
  plain:
    source: {type: email, path: "\${EXPORT}"}
    sink: {type: http, url: "http://127.0.0.1:$HOOK/hook"}
YML
for f in plain.csv plain.csv.gz; do
    rc=0
    EXPORT=$f "$SLUICE_BIN" run -c plain.yml >plain.out 2>&1 || rc=$?
    expect_eq "plain CSV ($f): exit 0" 0 "$rc"
    expect_eq "plain CSV ($f): the rows of the mailed export, exactly" "$(head -n 1 "$FAKE_hook_RECORD")" \
        "$(tail -n 1 "$FAKE_hook_RECORD")"
done
expect_eq "plain CSV: nothing recorded in state" "" "$(outcomes plain)"
printf 'email,email\nx@example.org,y\n' >dupcol.csv
rc=0
EXPORT=dupcol.csv "$SLUICE_BIN" run -c plain.yml >dupcol.out 2>&1 || rc=$?
expect_eq "plain CSV with a bad header: exit 1" 1 "$rc"
expect_match "names the file, line and column" dupcol.out "dupcol\.csv:1: duplicate column 'email'"
rc=0
EXPORT=https://example.org/members.csv "$SLUICE_BIN" check -c plain.yml >url.out 2>&1 || rc=$?
expect_eq "a URL: config error" 78 "$rc"
expect_match "says to use the csv source" url.out "is a URL.*use the csv source"
rc=0
EXPORT=x.eml "$SLUICE_BIN" check -c plain.yml >nofrom.out 2>&1 || rc=$?
expect_eq "a .eml without from: config error" 78 "$rc"
expect_match "from is required for .eml" nofrom.out "from: required for a \.eml or maildir: path"

finish
