#!/usr/bin/env python3
"""Test messages for the email source: an ActionKit-style export (a zip holding
one CSV attached to a MIME message) and the ways one goes wrong.

usage: gen_eml.py KIND OUT [options]

KIND:
  valid          the export: From the allowed sender, a zip holding one CSV
  wrong_sender   as valid, From someone not on the allow-list
  no_attachment  a text-only message
  two_csvs       the zip holds two CSV files
  not_zip        the attachment is a bare CSV (named .zip)
  zip_bomb       the zip's CSV expands to --bomb-mb MB (about 1028:1)
  encrypted      the zip is password-protected (zip -P when the zip tool is
                 there, else the encryption flag set by hand)
  invalid_mime   multipart/mixed without a boundary parameter
A forged message is `valid` with a wrong --ar (or none): see --ar.

options:
  --from ADDR           From address (default exports@actionkit.example)
  --subject TEXT        default "ActionKit export: members"
  --date RFC2822        Date header (default now)
  --message-id ID       default: a fresh one
  --csv FILE            CSV to attach (default: a small members export)
  --csv-name NAME       its name in the zip (default members.csv)
  --ar VALUE            an Authentication-Results header, topmost first; repeat
                        for several (default none)
  --bomb-mb N           size of the zip_bomb's CSV (default 80)
"""
import argparse
import email.utils
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from email.message import EmailMessage

DEFAULT_CSV = (
    "email,first_name,last_name,zip,phone\n"
    "ada@example.org,Ada,Lovelace,2134,555-0100\n"
    "grace@example.org,Grace,Hopper,10001,\n"
    "alan@example.org,Alan,Turing,94110,555 0102\n"
)


def make_zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            z.writestr(name, data)
    return buf.getvalue()


def set_encrypted_flag(data):
    """Set bit 0 (encrypted) of the general purpose flags of every local and
    central directory header: what an encrypted zip announces."""
    b = bytearray(data)
    i = 0
    while True:
        i = b.find(b"PK\x03\x04", i)
        if i < 0:
            break
        flags = struct.unpack_from("<H", b, i + 6)[0]
        struct.pack_into("<H", b, i + 6, flags | 1)
        i += 4
    i = 0
    while True:
        i = b.find(b"PK\x01\x02", i)
        if i < 0:
            break
        flags = struct.unpack_from("<H", b, i + 8)[0]
        struct.pack_into("<H", b, i + 8, flags | 1)
        i += 4
    return bytes(b)


def encrypted_zip(name, data):
    if shutil.which("zip"):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, name)
            with open(p, "wb") as f:
                f.write(data)
            out = os.path.join(d, "out.zip")
            subprocess.run(["zip", "-q", "-j", "-P", "secret", out, p], check=True)
            with open(out, "rb") as f:
                return f.read()
    return set_encrypted_flag(make_zip([(name, data)]))


def bomb_csv(mb):
    # a header, then blank lines: deflate packs these about 1028:1, the most it can
    return b"email,first_name,last_name,zip,phone\n" + b"\n" * (mb * 1024 * 1024)


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("kind")
    ap.add_argument("out")
    ap.add_argument("--from", dest="sender", default="exports@actionkit.example")
    ap.add_argument("--subject", default="ActionKit export: members")
    ap.add_argument("--date")
    ap.add_argument("--message-id")
    ap.add_argument("--csv")
    ap.add_argument("--csv-name", default="members.csv")
    ap.add_argument("--ar", action="append", default=[])
    ap.add_argument("--bomb-mb", type=int, default=80)
    a = ap.parse_args()

    csv = DEFAULT_CSV.encode()
    if a.csv:
        with open(a.csv, "rb") as f:
            csv = f.read()

    m = EmailMessage()
    m["From"] = (
        "ActionKit <%s>" % a.sender if a.kind != "wrong_sender" else "Mallory <mallory@evil.example>"
    )
    m["To"] = "imports@org.example"
    m["Subject"] = a.subject
    m["Date"] = a.date or email.utils.formatdate(localtime=False)
    m["Message-ID"] = a.message_id or email.utils.make_msgid(domain="actionkit.example")
    m.set_content("Your export is attached.\n")

    kind = a.kind
    attach = None
    if kind in ("valid", "wrong_sender"):
        attach = make_zip([(a.csv_name, csv)])
    elif kind == "two_csvs":
        attach = make_zip([(a.csv_name, csv), ("other.CSV", csv)])
    elif kind == "not_zip":
        attach = csv
    elif kind == "zip_bomb":
        attach = make_zip([(a.csv_name, bomb_csv(a.bomb_mb))])
    elif kind == "encrypted":
        attach = encrypted_zip(a.csv_name, csv)
    elif kind in ("no_attachment", "invalid_mime"):
        pass
    else:
        sys.exit("gen_eml.py: unknown kind %r" % kind)
    if attach is not None:
        m.add_attachment(attach, maintype="application", subtype="zip", filename="export.zip")

    text = m.as_bytes()
    if kind == "invalid_mime":
        # a multipart whose boundary parameter is missing: parts cannot be found
        m.add_attachment(make_zip([(a.csv_name, csv)]), maintype="application",
                         subtype="zip", filename="export.zip")
        text = m.as_bytes()
        head, sep, body = text.partition(b"\n\n")
        lines = []
        dropping = False
        for line in head.split(b"\n"):
            if dropping and line[:1] in (b" ", b"\t"):
                continue  # the folded rest of that Content-Type
            dropping = line.lower().startswith(b"content-type: multipart/mixed")
            if dropping:
                line = b"Content-Type: multipart/mixed"
            lines.append(line)
        text = b"\n".join(lines) + sep + body
    # the receiving servers put theirs on top, the last hop topmost
    prefix = b"".join(b"Authentication-Results: " + v.encode() + b"\n" for v in a.ar)
    with open(a.out, "wb") as f:
        f.write(prefix + text)


if __name__ == "__main__":
    main()
