"""Adding our Authentication-Results to a local copy: the copy takes the parse of the form it was made from,
moved, and that is exactly what a fresh parse gives (every MIME sample, odd header ends, one byte changed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailserver.delivery.body import parse
from mailserver.mime.parse import with_inserted_fields

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "data" / "mime").glob("*.eml"))
ODD = [
    b"\r\nbody after an empty header\r\n",
    b"\nbare LF empty header\r\n",
    b"Subject: no body",
    b"Subject: no blank line\r\nFrom: a@b\r\n",
    b"Subject: bare LF end\n\nbody\n",
    b"",
]
BASE = b"Return-Path: <a@sender.test>\r\nDelivered-To: bob@example.test\r\n"
FIELDS = [
    b"Authentication-Results: mail.example.test;\r\n\tspf=pass smtp.mailfrom=a@sender.test;\r\n\tdkim=none\r\n",
    b"Received: from x by y; Mon, 01 Jan 2024 00:00:00 +0000\r\n",
]


@pytest.mark.parametrize("raw", [p.read_bytes() for p in SAMPLES] + ODD, ids=[p.name for p in SAMPLES] + [
    f"odd{i}" for i in range(len(ODD))])
@pytest.mark.parametrize("fields", FIELDS, ids=["authentication-results", "received"])
def test_moved_parse_equals_a_fresh_parse(raw, fields):
    for base in (b"", BASE):
        assert with_inserted_fields(parse(base + raw), fields) == parse(base + fields + raw)


@pytest.mark.parametrize("fields", [
    b"Subject: a field the parse reads\r\n",
    b"content-type : text/html\r\n",
    b"Authentication-Results: x\r\n\r\n",  # an empty line would end the header
    b"Authentication-Results: no line end",
    b" continuation first\r\n",
    b"",
])
def test_fields_the_parse_would_see_are_parsed_again(fields):
    assert with_inserted_fields(parse(b"Subject: s\r\n\r\nbody\r\n"), fields) is None
