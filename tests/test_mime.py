"""mailserver.mime: parse once at delivery, render IMAP structures, text helpers.

Sample messages live in tests/data/mime/ with LF line ends; ``load`` turns them into the
CRLF form SMTP delivery stores. Expected IMAP renderings are spelled out byte for byte.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from mailserver.mime import (
    ParsedMessage,
    address_list,
    base_subject,
    decode_header_text,
    extract_text,
    header_fields,
    param_value,
    parse_message,
    part_filename,
    render_bodystructure,
    render_envelope,
    section_range,
)
from mailserver.mime.imapformat import render_string, resolve_part
from mailserver.mime.parse import (
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELD,
    MAX_NESTING,
    MAX_PARTS,
    iter_parts,
)
from mailserver.mime.text import decoded_body, part_text

DATA = Path(__file__).parent / "data" / "mime"


def load(name: str) -> bytes:
    data = (DATA / name).read_bytes()
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def lf_only(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


# ----------------------------------------------------------------------------- exact renderings

BODYSTRUCTURES = {
    "simple.eml": (
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 48 5 NIL NIL NIL NIL)',
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 48 5)',
    ),
    "alternative_in_mixed.eml": (
        b'((("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "quoted-printable" 54 2'
        b' NIL NIL NIL NIL)("text" "html" ("charset" "UTF-8") NIL NIL "quoted-printable" 90 0'
        b' NIL NIL NIL NIL) "alternative" ("boundary" "alt-Boundary") NIL NIL NIL)'
        b'("application" "pdf" ("name*" "UTF-8\'\'Quartalsbericht%20f%C3%BCr%20%C3%9Cbersicht.pdf")'
        b' "<pdf-1@example.de>" "Bericht" "base64" 16 NIL ("attachment" ("filename*"'
        b' "UTF-8\'\'Quartalsbericht%20f%C3%BCr%20%C3%9Cbersicht.pdf" "size" "12")) ("de" "en")'
        b' "https://example.de/Bericht.pdf") "mixed" ("boundary" "----=_Part_0_Mixed.BoUnDaRy")'
        b" NIL NIL NIL)",
        b'((("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "quoted-printable" 54 2)'
        b'("text" "html" ("charset" "UTF-8") NIL NIL "quoted-printable" 90 0) "alternative")'
        b'("application" "pdf" ("name*" "UTF-8\'\'Quartalsbericht%20f%C3%BCr%20%C3%9Cbersicht.pdf")'
        b' "<pdf-1@example.de>" "Bericht" "base64" 16) "mixed")',
    ),
    "nested_rfc822.eml": (
        b'(("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 26 0 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 440 ("Tue, 3 Jun 2025 12:00:00 +0000" "Invoice 42"'
        b' (("Billing" NIL "billing" "example.com")) (("Billing" NIL "billing" "example.com"))'
        b' (("Billing" NIL "billing" "example.com")) ((NIL NIL "carol" "example.net")) NIL NIL NIL'
        b' "<inv-42@example.com>") (("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 18 0'
        b' NIL NIL NIL NIL)("text" "csv" ("CHARSET" "US-ASCII" "name" "invoice.csv") NIL NIL "7BIT"'
        b' 21 1 NIL ("attachment" ("filename" "invoice.csv")) NIL NIL) "mixed" ("boundary" "inner")'
        b' NIL NIL NIL) 18 NIL ("inline" NIL) NIL NIL) "mixed" ("boundary" "outer") NIL NIL NIL)',
        b'(("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 26 0)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 440 ("Tue, 3 Jun 2025 12:00:00 +0000" "Invoice 42"'
        b' (("Billing" NIL "billing" "example.com")) (("Billing" NIL "billing" "example.com"))'
        b' (("Billing" NIL "billing" "example.com")) ((NIL NIL "carol" "example.net")) NIL NIL NIL'
        b' "<inv-42@example.com>") (("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 18 0)'
        b'("text" "csv" ("CHARSET" "US-ASCII" "name" "invoice.csv") NIL NIL "7BIT" 21 1) "mixed") 18)'
        b' "mixed")',
    ),
    "broken_boundary.eml": (
        b'(("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 61 2 NIL NIL NIL NIL)'
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 27 1 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "b1") NIL NIL NIL)',
        b'(("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 61 2)'
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 27 1) "mixed")',
    ),
    "dsn_report.eml": (
        b'(("text" "plain" ("charset" "us-ascii") NIL "Notification" "7BIT" 100 1 NIL NIL NIL NIL)'
        b'("message" "delivery-status" NIL NIL "Delivery report" "7BIT" 112 NIL NIL NIL NIL)'
        b'("text" "rfc822-headers" ("CHARSET" "US-ASCII") NIL "Undelivered Message Headers" "7BIT" 63 2'
        b' NIL NIL NIL NIL) "report" ("report-type" "delivery-status" "boundary" "DSN.4711/mx.example.com")'
        b" NIL NIL NIL)",
        b'(("text" "plain" ("charset" "us-ascii") NIL "Notification" "7BIT" 100 1)'
        b'("message" "delivery-status" NIL NIL "Delivery report" "7BIT" 112)'
        b'("text" "rfc822-headers" ("CHARSET" "US-ASCII") NIL "Undelivered Message Headers" "7BIT" 63 2)'
        b' "report")',
    ),
    "signed.eml": (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 7 0 NIL NIL NIL NIL)'
        b'("application" "pkcs7-signature" ("name" "smime.p7s") NIL NIL "base64" 28 NIL'
        b' ("attachment" ("filename" "smime.p7s")) NIL NIL) "signed" ("protocol"'
        b' "application/pkcs7-signature" "micalg" "sha-256" "boundary" "sig") NIL NIL NIL)',
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 7 0)'
        b'("application" "pkcs7-signature" ("name" "smime.p7s") NIL NIL "base64" 28) "signed")',
    ),
    "no_blank_line.eml": (
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)',
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0)',
    ),
    "global.eml": (
        b'("message" "global" NIL NIL NIL "7BIT" 132 (NIL {4}\r\nOl\xc3\xa1'
        b' (("=?utf-8?q?x?=" NIL {5}\r\npel\xc3\xa9 "exemplo.br"))'
        b' (("=?utf-8?q?x?=" NIL {5}\r\npel\xc3\xa9 "exemplo.br"))'
        b' (("=?utf-8?q?x?=" NIL {5}\r\npel\xc3\xa9 "exemplo.br"))'
        b' ((NIL NIL "rcpt" "example.org")) NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" 12 1 NIL NIL NIL NIL) 6 NIL NIL NIL NIL)',
        b'("message" "global" NIL NIL NIL "7BIT" 132 (NIL {4}\r\nOl\xc3\xa1'
        b' (("=?utf-8?q?x?=" NIL {5}\r\npel\xc3\xa9 "exemplo.br"))'
        b' (("=?utf-8?q?x?=" NIL {5}\r\npel\xc3\xa9 "exemplo.br"))'
        b' (("=?utf-8?q?x?=" NIL {5}\r\npel\xc3\xa9 "exemplo.br"))'
        b' ((NIL NIL "rcpt" "example.org")) NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" 12 1) 6)',
    ),
}


@pytest.mark.parametrize("name", sorted(BODYSTRUCTURES))
def test_sample_bodystructure_renders_exactly(name):
    """BODYSTRUCTURE and BODY of each sample match the expected wire bytes."""
    pm = parse_message(load(name))
    extended, basic = BODYSTRUCTURES[name]
    assert render_bodystructure(pm.bodystructure, True) == extended
    assert render_bodystructure(pm.bodystructure, False) == basic


ENVELOPES = {
    "simple.eml": b'("Mon, 2 Jun 2025 11:59:58 +0200" "Lunch tomorrow?"'
    b' (("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice" "example.org"))'
    b' (("Alice Example" NIL "alice" "example.org")) ((NIL NIL "bob" "example.com")) NIL NIL NIL'
    b' "<lunch-1@example.org>")',
    "alternative_in_mixed.eml": b'("Tue, 3 Jun 2025 08:15:00 +0200"'
    b' "=?UTF-8?B?UmU6IFtwcm9qZWN0XSBRdWFydGFsc2JlcmljaHQ=?="'
    b' (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))'
    b' (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))'
    b' (("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.de"))'
    b' (("Doe, Jane" NIL "jane" "example.com")(NIL NIL "team" NIL)(NIL NIL "ann" "example.com")'
    b'(NIL NIL "bo" "example.com")(NIL NIL NIL NIL)) ((NIL NIL "carl" "example.net")) NIL'
    b' "<report-6@example.com>" "<report-7@example.de>")',
    "no_blank_line.eml": b'(NIL "no body at all" ((NIL NIL "x" "example.com"))'
    b' ((NIL NIL "x" "example.com")) ((NIL NIL "x" "example.com")) NIL NIL NIL NIL NIL)',
}


@pytest.mark.parametrize("name", sorted(ENVELOPES))
def test_sample_envelope_renders_exactly(name):
    """ENVELOPE keeps raw (RFC 2047) text, defaults Sender/Reply-To to From, renders groups."""
    assert render_envelope(parse_message(load(name)).envelope) == ENVELOPES[name]


def test_summary_fields_of_a_real_world_shaped_message():
    """Subject, addresses, ids and preview are decoded for display, SORT and THREAD."""
    raw = load("alternative_in_mixed.eml")
    pm = parse_message(raw)
    assert pm.size == len(raw)
    assert raw[pm.header_size - 4 : pm.header_size] == b"\r\n\r\n"
    assert pm.subject == "Re: [project] Quartalsbericht"
    assert pm.from_addr == "Jörg Müller <joerg@example.de>"
    assert pm.to_addr == '"Doe, Jane" <jane@example.com>, ann@example.com, bo@example.com'
    assert pm.cc_addr == "carl@example.net"
    assert pm.date_sent == 1748931300.0
    assert pm.message_id == "<report-7@example.de>"
    assert pm.in_reply_to == "<report-6@example.com>"
    assert pm.references == "<report-5@example.de> <report-6@example.com>"
    assert pm.preview == "Hallo Jane, anbei der Bericht für das Quartal."
    assert pm.has_attachment
    pdf = resolve_part(pm.bodystructure, (2,))
    assert part_filename(pdf) == "Quartalsbericht für Übersicht.pdf"
    assert param_value(pdf["params"], "name") == "Quartalsbericht für Übersicht.pdf"


def test_simple_message_summary():
    """A plain message: folded subject unfolded, no attachment, preview whitespace folded."""
    pm = parse_message(load("simple.eml"))
    assert pm.subject == "Lunch tomorrow?"
    assert pm.from_addr == "Alice Example <alice@example.org>"
    assert pm.preview == "Hi Bob, lunch tomorrow at noon? -- Alice"
    assert not pm.has_attachment
    assert pm.date_sent == 1748858398.0


# ----------------------------------------------------------------------------- section ranges

NESTED_HEADER = (
    b"From: Billing <billing@example.com>\r\nTo: carol@example.net\r\nSubject: Invoice 42\r\n"
    b"Date: Tue, 3 Jun 2025 12:00:00 +0000\r\nMessage-ID: <inv-42@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n"
)

SECTIONS = [
    ("simple.eml", (), "TEXT", b"Hi Bob,\r\n\r\nlunch tomorrow at noon?\r\n-- \r\nAlice\r\n"),
    ("simple.eml", (1,), "", b"Hi Bob,\r\n\r\nlunch tomorrow at noon?\r\n-- \r\nAlice\r\n"),
    ("simple.eml", (2,), "", None),
    ("simple.eml", (1, 1), "", None),
    ("simple.eml", (), "MIME", None),
    ("simple.eml", (1,), "HEADER", None),
    ("simple.eml", (1,), "MIME", load("simple.eml")[:357]),  # part 1's MIME header: the message header
    ("simple.eml", (), "HEADER.FIELDS", load("simple.eml")[:357]),
    ("nested_rfc822.eml", (2,), "header.fields.not", NESTED_HEADER),
    ("nested_rfc822.eml", (1,), "", b"See the forwarded message."),
    ("nested_rfc822.eml", (1,), "MIME", b"Content-Type: text/plain\r\n\r\n"),
    (
        "nested_rfc822.eml",
        (2,),
        "MIME",
        b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n",
    ),
    ("nested_rfc822.eml", (2,), "HEADER", NESTED_HEADER),
    ("nested_rfc822.eml", (2, 1), "", b"Amount due: 42 EUR"),
    ("nested_rfc822.eml", (2, 2), "", b"item,price\r\nwidget,42"),
    (
        "nested_rfc822.eml",
        (2, 2),
        "MIME",
        b'Content-Type: text/csv; name="invoice.csv"\r\n'
        b'Content-Disposition: attachment; filename="invoice.csv"\r\n\r\n',
    ),
    ("nested_rfc822.eml", (2, 3), "", None),
    ("nested_rfc822.eml", (2, 1), "HEADER", None),  # HEADER needs a message/rfc822 part
    ("nested_rfc822.eml", (1,), "TEXT", None),
    (
        "alternative_in_mixed.eml",
        (1,),
        "MIME",
        b'Content-Type: multipart/alternative; boundary="alt-Boundary"\r\n\r\n',
    ),
    ("alternative_in_mixed.eml", (1, 3), "", None),
    ("nested_rfc822.eml", (2, 1, 1), "", None),
    ("nested_rfc822.eml", (3,), "", None),
    ("nested_rfc822.eml", (0,), "", None),
    # Part 1 of a non-multipart message is its body, here a message/global: 1.HEADER is
    # the encapsulated header.
    (
        "global.eml",
        (1,),
        "HEADER",
        "From: =?utf-8?q?x?= <pelé@exemplo.br>\r\nTo: rcpt@example.org\r\nSubject: Olá\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n".encode(),
    ),
    ("global.eml", (), "TEXT", load("global.eml")[105:]),
    ("global.eml", (1, 1), "", "Olá mundo\r\n".encode()),
    ("broken_boundary.eml", (2,), "", b"second part, never closed\r\n"),
    ("no_blank_line.eml", (), "HEADER", load("no_blank_line.eml")),
    ("no_blank_line.eml", (), "TEXT", b""),
]


@pytest.mark.parametrize(("name", "part", "which", "expected"), SECTIONS)
def test_section_range_slices_the_raw_message(name, part, which, expected):
    """section_range follows RFC 9051 6.4.5 part numbering; None for parts that do not exist."""
    raw = load(name)
    rng = section_range(parse_message(raw).bodystructure, part, which)
    if expected is None:
        assert rng is None
    else:
        assert rng is not None and raw[rng[0] : rng[1]] == expected


def test_top_level_message_rfc822_header_of_part_1():
    """For a message whose body is message/rfc822, BODY[1.HEADER] is the encapsulated header."""
    raw = b"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n"
    bs = parse_message(raw).bodystructure
    start, end = section_range(bs, (1,), "HEADER")
    assert raw[start:end] == b"Subject: inner\r\n\r\n"
    start, end = section_range(bs, (1,), "TEXT")
    assert raw[start:end] == b"body\r\n"
    start, end = section_range(bs, (1, 1), "")
    assert raw[start:end] == b"body\r\n"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
def test_offsets_are_consistent_for_every_part(name):
    """Every node's offsets nest inside its parent and size equals body_end - body_start."""
    raw = load(name)
    bs = parse_message(raw).bodystructure
    for node in iter_parts(bs):
        assert 0 <= node["header_start"] <= node["body_start"] <= node["body_end"] <= len(raw)
        assert node["size"] == node["body_end"] - node["body_start"]
        for child in node.get("children", ()):
            assert node["body_start"] <= child["header_start"] and child["body_end"] <= node["body_end"]
        if "body" in node:
            assert node["body"]["header_start"] == node["body_start"]
            assert node["body"]["body_end"] == node["body_end"]


# ----------------------------------------------------------------------------- MIME edge cases


def _bs(raw: bytes, extended: bool = True) -> bytes:
    return render_bodystructure(parse_message(raw).bodystructure, extended)


EDGE_CASES = [
    (
        "no content-type: text/plain us-ascii, 7BIT",
        b"Subject: x\r\n\r\nhello\r\n",
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)',
    ),
    (
        "Content-Type without subtype is text/plain (RFC 2045 5.2), params kept",
        b"Content-Type: text; charset=utf-8\r\n\r\nx",
        b'("text" "plain" ("charset" "utf-8") NIL NIL "7BIT" 1 0 NIL NIL NIL NIL)',
    ),
    (
        "type case and boundary case kept, duplicate parameter: first wins",
        b'Content-Type: Multipart/Mixed; Boundary="AbC"; boundary=zzz\r\n\r\n--AbC\r\n\r\nx\r\n--AbC--\r\n',
        b'(("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 0 NIL NIL NIL NIL) "Mixed"'
        b' ("Boundary" "AbC") NIL NIL NIL)',
    ),
    (
        "quoted-specials escaped on output, comments skipped",
        b'Content-Type: application/octet-stream (binary); name="a \\"q\\" \\\\ b"\r\n\r\nxy',
        b'("application" "octet-stream" ("name" "a \\"q\\" \\\\ b") NIL NIL "7BIT" 2 NIL NIL NIL NIL)',
    ),
    (
        "8-bit parameter value rendered as a literal",
        'Content-Type: image/png; name="bild-ä.png"\r\n\r\n'.encode(),
        b'("image" "png" ("name" {11}\r\nbild-\xc3\xa4.png) NIL NIL "7BIT" 0 NIL NIL NIL NIL)',
    ),
    (
        "RFC 2231 plain continuations joined",
        b'Content-Type: text/plain; name*0="long "; name*1="name.txt"; charset=us-ascii\r\n\r\n',
        b'("text" "plain" ("name" "long name.txt" "charset" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)',
    ),
    (
        "RFC 2231 continuation with an extended later segment",
        b'Content-Type: application/x; name*0="a b"; name*1*=%C3%A4\r\n\r\n',
        b'("application" "x" ("name*" "\'\'a%20b%C3%A4") NIL NIL "7BIT" 0 NIL NIL NIL NIL)',
    ),
    (
        "message/rfc822 in base64 cannot be parsed: application/octet-stream",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQo=\r\n",
        b'("application" "octet-stream" NIL NIL NIL "base64" 22 NIL NIL NIL NIL)',
    ),
    (
        "multipart without boundary parameter degrades to text/plain",
        b"Content-Type: multipart/mixed\r\n\r\nno parts\r\n",
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)',
    ),
    (
        "multipart whose boundary never appears degrades to text/plain, params kept",
        b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--notq\r\n",
        b'("text" "plain" ("CHARSET" "US-ASCII" "boundary" "q") NIL NIL "7BIT" 8 1 NIL NIL NIL NIL)',
    ),
    (
        "multipart/digest parts default to message/rfc822 (RFC 2046 5.1.5)",
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: a\r\n\r\nA\r\n--d--\r\n",
        b'(("message" "rfc822" NIL NIL NIL "7BIT" 15 (NIL "a" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 0 NIL NIL NIL NIL) 2'
        b' NIL NIL NIL NIL) "digest" ("boundary" "d") NIL NIL NIL)',
    ),
    (
        "part with no header at all, and an empty part",
        b"Content-Type: multipart/mixed; boundary=e\r\n\r\n--e\r\n\r\nbody\r\n--e\r\n--e--\r\n",
        b'(("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 4 0 NIL NIL NIL NIL)'
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "e") NIL NIL NIL)',
    ),
    (
        "outer boundary that is a prefix of the inner one does not split it",
        b"Content-Type: multipart/mixed; boundary=ab\r\n\r\n--ab\r\n"
        b"Content-Type: multipart/alternative; boundary=abcd\r\n\r\n--abcd\r\n\r\none\r\n--abcd\r\n\r\ntwo\r\n"
        b"--abcd--\r\n--ab--\r\n",
        b'((("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 0 NIL NIL NIL NIL)'
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "abcd") NIL NIL NIL) "mixed" ("boundary" "ab") NIL NIL NIL)',
    ),
    (
        "inner multipart missing its close delimiter ends at the outer delimiter",
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
        b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nin\r\n--o\r\n\r\nafter\r\n--o--\r\n",
        b'((("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 2 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "i") NIL NIL NIL)'
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 5 0 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "o") NIL NIL NIL)',
    ),
    (
        "disposition, language, location and md5 in the extension data",
        b"Content-Type: text/plain\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
        b"Content-Disposition: INLINE; filename=a.txt\r\nContent-Language: en (English)\r\n"
        b"Content-Location: a.txt\r\n\r\nx\r\n",
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 1 "Q2hlY2sgSW50ZWdyaXR5IQ=="'
        b' ("INLINE" ("filename" "a.txt")) ("en") "a.txt")',
    ),
    (
        "Content-Transfer-Encoding case kept; header names matched case-insensitively",
        b"content-type: TEXT/HTML;CHARSET=ISO-8859-1\r\nCONTENT-TRANSFER-ENCODING: Quoted-Printable\r\n\r\n=E4\r\n",
        b'("TEXT" "HTML" ("CHARSET" "ISO-8859-1") NIL NIL "Quoted-Printable" 5 1 NIL NIL NIL NIL)',
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in EDGE_CASES], ids=[c[0] for c in EDGE_CASES])
def test_bodystructure_edge_cases(raw, expected):
    """Common BODYSTRUCTURE compliance failures render per RFC 9051 7.5.2."""
    assert _bs(raw) == expected


def test_lf_only_input_gives_the_same_structure():
    """LF-only messages split the same way; sizes are counted in the octets as given."""
    for name in ("alternative_in_mixed.eml", "nested_rfc822.eml", "broken_boundary.eml"):
        crlf = parse_message(load(name)).bodystructure
        lf_raw = lf_only(load(name))
        lf = parse_message(lf_raw).bodystructure
        shape = [(n["type"], n["subtype"], n.get("lines")) for n in iter_parts(crlf)]
        assert [(n["type"], n["subtype"], n.get("lines")) for n in iter_parts(lf)] == shape
        for node in iter_parts(lf):
            assert b"\r" not in lf_raw[node["header_start"] : node["body_end"]]
    raw = lf_only(load("nested_rfc822.eml"))
    start, end = section_range(parse_message(raw).bodystructure, (2, 2), "")
    assert raw[start:end] == b"item,price\nwidget,42"


def test_line_count_does_not_count_a_final_line_without_line_break():
    """lines = number of LF in the body (Dovecot's count): "a\\r\\nb" has 1 line."""
    assert parse_message(b"\r\na\r\nb").bodystructure["lines"] == 1
    assert parse_message(b"\r\na\r\nb\r\n").bodystructure["lines"] == 2
    assert parse_message(b"\r\n").bodystructure == {
        **parse_message(b"\r\n").bodystructure,
        "size": 0,
        "lines": 0,
        "body_start": 2,
    }


def test_preamble_epilogue_and_transport_padding():
    """Preamble and epilogue belong to no part; padding after the boundary is allowed."""
    raw = load("broken_boundary.eml")
    bs = parse_message(raw).bodystructure
    first = bs["children"][0]
    assert raw[first["header_start"] : first["body_start"]] == b"Content-Type: text/plain\r\n\r\n"
    raw = (
        b"Content-Type: multipart/mixed; boundary=z\r\n\r\npre\r\n--z \t \r\n\r\nx\r\n--z--  \r\nepilogue\r\n"
    )
    bs = parse_message(raw).bodystructure
    assert len(bs["children"]) == 1
    assert raw[bs["children"][0]["body_start"] : bs["children"][0]["body_end"]] == b"x"


def test_has_attachment_rules():
    """Attachment: disposition attachment, or a named part not inline and not in multipart/related."""
    related = (
        b"Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n<img>\r\n"
        b"--r\r\nContent-Type: image/png; name=logo.png\r\nContent-ID: <logo>\r\n\r\nx\r\n--r--\r\n"
    )
    assert not parse_message(related).has_attachment
    named = related.replace(b"multipart/related", b"multipart/mixed")
    assert parse_message(named).has_attachment
    inline = named.replace(b"Content-ID: <logo>", b"Content-Disposition: inline")
    assert not parse_message(inline).has_attachment
    assert parse_message(load("alternative_in_mixed.eml")).has_attachment
    single = b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nx"
    assert parse_message(single).has_attachment
    assert not parse_message(load("nested_rfc822.eml")).has_attachment  # inline forward
    assert not parse_message(load("signed.eml")).has_attachment  # the signature part
    assert not parse_message(load("dsn_report.eml")).has_attachment


def test_html_only_preview_is_stripped_text():
    """Without text/plain the preview is the HTML's text, scripts and styles removed."""
    raw = b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + __import__(
        "base64"
    ).encodebytes(
        "<html><head><style>p{}</style><title>T</title></head><body><p>Gr&uuml;&szlig;e"
        "</p><script>x()</script><div>aus Köln</div></body></html>".encode()
    ).replace(b"\n", b"\r\n")
    assert parse_message(raw).preview == "Grüße aus Köln"


def test_preview_is_at_most_200_characters():
    raw = b"\r\n" + b"word " * 1000
    assert len(parse_message(raw).preview) == 200


def test_unparseable_date_is_zero():
    assert parse_message(b"Date: yesterday-ish\r\n\r\n").date_sent == 0.0
    assert parse_message(b"Date: Mon, 2 Jun 99999 10:00:00 +0000\r\n\r\n").date_sent == 0.0


def test_to_json_round_trip_matches_message_columns():
    """to_json gives the messages-table columns; from_json restores the same value."""
    pm = parse_message(load("nested_rfc822.eml"))
    stored = pm.to_json()
    assert isinstance(stored["envelope"], str) and isinstance(stored["bodystructure"], str)
    again = ParsedMessage.from_json(json.loads(json.dumps(stored)))
    assert again == pm
    from storage.models import Message

    columns = set(Message.__table__.columns.keys())
    assert set(stored) <= columns


# ----------------------------------------------------------------------------- limits


def _nested_multipart(levels: int) -> bytes:
    head = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i) for i in range(1, levels)
    )
    tail = b"".join(b"\r\n--b%d--" % i for i in range(levels - 1, -1, -1))
    return (
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + head
        + b"--b%d\r\n\r\nleaf" % (levels - 1)
        + tail
    )


def _depth_of_leaf(bs: dict) -> tuple[int, dict]:
    depth = 0
    while "children" in bs:
        bs = bs["children"][0]
        depth += 1
    return depth, bs


def test_nesting_at_the_limit_is_parsed():
    """MAX_NESTING (32) nested multiparts: the text leaf sits 32 levels deep."""
    raw = _nested_multipart(MAX_NESTING)
    depth, leaf = _depth_of_leaf(parse_message(raw).bodystructure)
    assert depth == MAX_NESTING and leaf["type"] == "text"
    assert raw[leaf["body_start"] : leaf["body_end"]] == b"leaf"


def test_nesting_one_past_the_limit_becomes_a_leaf():
    """33 nested multiparts: the innermost container is an application/octet-stream leaf."""
    pm = parse_message(_nested_multipart(MAX_NESTING + 1))
    depth, leaf = _depth_of_leaf(pm.bodystructure)
    assert depth == MAX_NESTING
    assert (leaf["type"], leaf["subtype"]) == ("application", "octet-stream")
    assert render_bodystructure(pm.bodystructure, True).count(b"(") > MAX_NESTING


def _many_parts(children: int) -> bytes:
    return (
        b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"--p\r\n\r\nx\r\n" * children + b"--p--\r\n"
    )


def test_parts_limit():
    """MAX_PARTS nodes are kept (root + 9,999 children); one more child is left out."""
    at = parse_message(_many_parts(MAX_PARTS - 1)).bodystructure
    assert len(at["children"]) == MAX_PARTS - 1
    over = parse_message(_many_parts(MAX_PARTS)).bodystructure
    assert len(over["children"]) == MAX_PARTS - 1


def _header_with_subject_ending_at(offset: int) -> bytes:
    """A header whose "Subject: abc" has its last value byte at ``offset``."""
    field = b"Subject: abc"
    pad_len = offset + 1 - len(field)
    filler = b"X-Filler: " + b"a" * 70 + b"\r\n"
    pad = filler * ((pad_len - 100) // len(filler))
    pad += b"X-Pad: " + b"b" * (pad_len - len(pad) - 9) + b"\r\n"
    assert len(pad) == pad_len
    return pad + field + b"\r\n"


def test_header_parse_limit_keeps_offsets_exact():
    """Bytes past MAX_HEADER_BYTES are not parsed into fields, but header_size stays exact."""
    inside = _header_with_subject_ending_at(MAX_HEADER_BYTES - 1)
    pm = parse_message(inside + b"\r\nbody")
    assert pm.subject == "abc" and pm.header_size == len(inside) + 2
    past = _header_with_subject_ending_at(MAX_HEADER_BYTES)
    raw = past + b"\r\nbody"
    pm = parse_message(raw)
    assert pm.subject == "ab" and pm.header_size == len(past) + 2
    assert raw[pm.header_size :] == b"body"


def test_header_field_length_limit():
    """A field value of MAX_HEADER_FIELD bytes is kept whole; one byte more is cut."""
    value = b"s" * MAX_HEADER_FIELD
    assert len(parse_message(b"Subject: " + value + b"\r\n\r\n").subject) == MAX_HEADER_FIELD
    longer = parse_message(b"Subject: " + value + b"t\r\n\r\n").subject
    assert len(longer) == MAX_HEADER_FIELD


def test_huge_header_is_fast_and_exact():
    """A 20 MB header (no blank line until the end) parses quickly with exact offsets."""
    raw = (
        b"Subject: big\r\n"
        + b"X: "
        + b"y" * 77
        + b"\r\n"
        + (b"X: " + b"y" * 77 + b"\r\n") * 250_000
        + b"\r\nbody"
    )
    t = time.perf_counter()
    pm = parse_message(raw)
    assert time.perf_counter() - t < 2.0
    assert pm.subject == "big" and raw[pm.header_size :] == b"body"


# ----------------------------------------------------------------------------- robustness


def test_random_bytes_never_raise():
    """Random and mutated input never raises; renderings and ranges stay well-formed."""
    rng = random.Random(4711)
    samples = [load(p.name) for p in DATA.glob("*.eml")]
    alphabet = b"\r\n-\t :;=\"'()<>@,./\\?*%Bboundary0123456789abcdefxyzCONTENT-TYPE/multipart\x00\xff\xc3"
    for i in range(1500):
        if i % 3 == 0:
            raw = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))
        elif i % 3 == 1:
            raw = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 600)))
        else:
            raw = bytearray(rng.choice(samples))
            for _ in range(rng.randrange(1, 12)):
                pos = rng.randrange(0, len(raw) + 1)
                op = rng.randrange(3)
                if op == 0:
                    raw[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 8)))
                elif op == 1:
                    del raw[pos : pos + rng.randrange(1, 40)]
                else:
                    raw[pos:pos] = raw[rng.randrange(0, len(raw) + 1) :][: rng.randrange(1, 80)]
            raw = bytes(raw)
        pm = parse_message(raw)
        assert pm.size == len(raw) and 0 <= pm.header_size <= len(raw)
        json.dumps(pm.to_json())
        render_envelope(pm.envelope)
        render_bodystructure(pm.bodystructure, True)
        render_bodystructure(pm.bodystructure, False)
        for node in iter_parts(pm.bodystructure):
            assert 0 <= node["header_start"] <= node["body_start"] <= node["body_end"] <= len(raw)
        for part in ((), (1,), (1, 1), (2,), (2, 1)):
            for which in ("", "HEADER", "TEXT", "MIME"):
                rng_ = section_range(pm.bodystructure, part, which)
                assert rng_ is None or 0 <= rng_[0] <= rng_[1] <= len(raw)
        extract_text(raw)


HOSTILE = {
    "unclosed encoded words": b"Subject: " + b"=?a?q?" * 10_000 + b"\r\n\r\n",
    "colons after an angle address": b"To: <a@b> " + b": " * 30_000 + b"\r\n\r\n",
    "unclosed comments": b"To: " + b"(" * 60_000 + b"\r\nContent-Language: " + b"(" * 60_000 + b"\r\n\r\n",
    "stray close parens": b"To: " + b")" * 60_000 + b"\r\n\r\n",
    "many semicolons": b"Content-Type: text/plain" + b";" * 60_000 + b"\r\n\r\n",
    "subject blob chain": b"Subject: " + b"[a]" * 20_000 + b"x\r\n\r\n",
    "subject re chain": b"Subject: " + b"Re: " * 15_000 + b"\r\n\r\n",
    "subject fwd trailers": b"Subject: x" + b"(fwd)" * 12_000 + b"\r\n\r\n",
    "unclosed html scripts": b"Content-Type: text/html\r\n\r\n" + b"<script>" * 8_000,
    "html without tag ends": b"Content-Type: text/html\r\n\r\n" + b"<" * 60_000,
    "boundary prefixes": b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--bx\r\n" * 12_000,
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_costs_linear_time(raw):
    """Inputs that make naive regexes or loops quadratic finish quickly (quadratic = tens of s)."""
    t = time.perf_counter()
    pm = parse_message(raw)
    render_bodystructure(pm.bodystructure, True)
    render_envelope(pm.envelope)
    extract_text(raw)
    base_subject(pm.subject)
    assert time.perf_counter() - t < 2.0


def big_attachment_message() -> bytes:
    """25 MB of base64 attachment behind a short text part (shared with scripts/bench/parsers.py)."""
    line = b"QUJD" * 19 + b"\r\n"
    return (
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: text/plain\r\n\r\nsee attachment\r\n--x\r\nContent-Type: application/zip\r\n"
        b"Content-Disposition: attachment; filename=big.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + line * (25 * 1024 * 1024 // len(line))
        + b"--x--\r\n"
    )


def test_big_attachment_is_scanned_not_decoded():
    """A 25 MB base64 attachment is scanned, not decoded or copied (its speed: scripts/bench/parsers.py)."""
    line = b"QUJD" * 19 + b"\r\n"
    pm = parse_message(big_attachment_message())
    assert pm.has_attachment and pm.preview == "see attachment"
    zip_part = pm.bodystructure["children"][1]
    assert zip_part["size"] == len(line) * (25 * 1024 * 1024 // len(line)) - 2


def typical_5kb_message() -> bytes:
    """A 5 KB message with Received/DKIM headers and text+HTML (shared with scripts/bench/parsers.py)."""
    hdr = b"".join(
        b"Received: from relay%d.example.net (relay%d.example.net [192.0.2.%d])\r\n"
        b"\tby mx.example.com with ESMTPS id abc%d\r\n\tfor <bob@example.com>; Mon, 2 Jun 2025 10:00:00 +0000\r\n"
        % (i, i, i, i)
        for i in range(4)
    )
    hdr += b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;\r\n\tb=" + b"A" * 340 + b"\r\n"
    hdr += (
        b'From: "Alice Example" <alice@example.org>\r\nTo: Bob <bob@example.com>, carol@example.com\r\n'
        b"Subject: =?utf-8?q?Quartalsbericht_f=C3=BCr_Q2?=\r\nDate: Mon, 2 Jun 2025 11:59:58 +0200\r\n"
        b'Message-ID: <abc@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="bnd"\r\n\r\n'
    )
    text = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n" * 20
    raw = hdr + (
        b"--bnd\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n--bnd\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>" + text + b"</p>\r\n--bnd--\r\n"
    )
    return raw


def test_typical_5kb_message_parses():
    """The benchmark's typical message is about 5 KB and parses to its two alternatives (its speed, well under
    1 ms a message, is measured by scripts/bench/parsers.py)."""
    raw = typical_5kb_message()
    assert 4500 < len(raw) < 6000
    pm = parse_message(raw)
    assert [c["subtype"] for c in pm.bodystructure["children"]] == ["plain", "html"]


# ----------------------------------------------------------------------------- imapformat


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("plain", b'"plain"'),
        ("", b'""'),
        ('a "b" \\c', b'"a \\"b\\" \\\\c"'),
        ("tab\there", b'"tab\there"'),
        ("Jörg", b"{5}\r\nJ\xc3\xb6rg"),
        ("two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        ("nul\x00dropped", b'"nuldropped"'),
    ],
)
def test_string_rendering(value, wire):
    """Quoted when possible (quoted-specials escaped), a literal for 8-bit, CR or LF."""
    assert render_string(value) == wire


def test_envelope_rendering_of_nil_and_missing_members():
    assert render_envelope([None] * 10) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert render_envelope([]) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_envelope_with_8bit_latin1_header_and_source_route():
    """Invalid UTF-8 header bytes are read as Latin-1; obs-route goes to the adl member."""
    raw = b"Subject: caf\xe9\r\nFrom: <@relay.example,@b.example:joe@example.com>\r\n\r\n"
    pm = parse_message(raw)
    assert pm.subject == "café"
    assert pm.envelope[2] == [[None, "@relay.example,@b.example", "joe", "example.com"]]
    assert render_envelope(pm.envelope).startswith(
        b'(NIL {5}\r\ncaf\xc3\xa9 ((NIL "@relay.example,@b.example"'
    )


HEADER = (
    b"Received: from a\r\n\tby b\r\nSubject: one\r\nX-Tag: 1\r\nsubject: two\r\n  folded\r\n"
    b"not a field line\r\nX-TAG: 2\r\n\r\n"
)


@pytest.mark.parametrize(
    ("names", "not_", "expected"),
    [
        (["SUBJECT"], False, b"Subject: one\r\nsubject: two\r\n  folded\r\n\r\n"),
        (["x-tag", "received"], False, b"Received: from a\r\n\tby b\r\nX-Tag: 1\r\nX-TAG: 2\r\n\r\n"),
        (["Subject", "X-Tag"], True, b"Received: from a\r\n\tby b\r\n\r\n"),
        (["nothing"], False, b"\r\n"),
        (
            [],
            True,
            b"Received: from a\r\n\tby b\r\nSubject: one\r\nX-Tag: 1\r\nsubject: two\r\n  folded\r\nX-TAG: 2\r\n\r\n",
        ),
    ],
)
def test_header_fields_filtering(names, not_, expected):
    """HEADER.FIELDS[.NOT]: case-insensitive, duplicates and folding kept, blank line at the end."""
    assert header_fields(HEADER, names, not_) == expected


def test_header_fields_without_blank_line_or_final_crlf():
    assert header_fields(b"A: 1\r\nB: 2", ["b"], False) == b"B: 2\r\n\r\n"


# ----------------------------------------------------------------------------- text helpers


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("plain text", "plain text"),
        ("=?utf-8?q?J=C3=B6rg?=", "Jörg"),
        ("=?UTF-8?B?SsO2cmc=?=", "Jörg"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 6.2: space between words dropped
        ("=?utf-8?q?a?=\r\n =?utf-8?q?_b?=", "a b"),
        ("x =?utf-8?q?a?= y", "x a y"),
        ("=?utf-8?B?w6Q=?==?utf-8?B?w7Y=?=", "äö"),
        ("=?utf-8?q?=C3?= =?utf-8?q?=A4?=", "ä"),  # one character split across two words
        ("=?utf-8?b?w6Q?=", "ä"),  # missing padding
        ("=?iso-8859-1?q?caf=E9?=", "café"),
        ("=?utf-8*de?q?=C3=A4?=", "ä"),  # RFC 2231 language suffix
        ("=?x-no-such-charset?q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8 fallback
        ("=?x-no-such-charset?q?caf=E9?=", "café"),  # ... then Latin-1
        ('"=?utf-8?q?Doe=2C_J?=" <j@x>', '"Doe, J" <j@x>'),  # inside quotes (real-world)
        ("=?utf-8?q?hello world?=", "hello world"),  # space inside Q text
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),
        ("=?unicode_escape?q?\\u0041?=", "\\u0041"),  # not a charset
        ("=?gb2312?b?xOO6ww==?=", "你好"),
        ("", ""),
    ],
)
def test_decode_header_text(value, decoded):
    assert decode_header_text(value) == decoded


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("Re: hello", "hello"),
        ("RE: Re: re: hello", "hello"),
        ("Fwd: hello", "hello"),
        ("Fw: Re: hello", "hello"),
        ("[list] Re: hello", "hello"),
        ("Re [list]: hello", "hello"),
        ("Re: [list] hello", "hello"),
        ("hello (fwd)", "hello"),
        ("hello (fwd) (FWD)  ", "hello"),
        ("[Fwd: Re: hello]", "hello"),
        ("[tag]", "[tag]"),
        ("  many   spaces\there ", "many spaces here"),
        ("=?utf-8?q?Re=3A_gr=C3=BC=C3=9Fe?=", "grüße"),
        ("Re:", ""),
        ("Rebecca: hello", "Rebecca: hello"),
        ("", ""),
    ],
)
def test_base_subject(subject, base):
    """RFC 5256 2.1 base subject extraction."""
    assert base_subject(subject) == base


@pytest.mark.parametrize(
    ("value", "pairs"),
    [
        ("a@example.com", [("", "a@example.com")]),
        ("Alice <a@example.com>, b@example.com", [("Alice", "a@example.com"), ("", "b@example.com")]),
        ('"Doe, Jane" <j@example.com>', [("Doe, Jane", "j@example.com")]),
        ("=?utf-8?q?J=C3=B6rg?= <j@example.de>", [("Jörg", "j@example.de")]),
        ("team: a@x.org, b@x.org;, c@x.org", [("", "a@x.org"), ("", "b@x.org"), ("", "c@x.org")]),
        ("undisclosed-recipients:;", []),
        ("j@example.com (Joe Bloggs)", [("Joe Bloggs", "j@example.com")]),  # old form: the comment names the person
        ('"quoted local"@example.com', [("", '"quoted local"@example.com')]),
        ("<broken@example.com", [("", "broken@example.com")]),
        ("user", [("", "user")]),
        ("Alice <a@[192.0.2.1]>", [("Alice", "a@[192.0.2.1]")]),
        (",,, ;", []),
        ("", []),
    ],
)
def test_address_list(value, pairs):
    assert address_list(value) == pairs


def test_extract_text_decodes_every_text_part():
    """Quoted-printable, base64, charsets and HTML are decoded; attachments of other types skipped."""
    text = extract_text(load("alternative_in_mixed.eml"))
    assert text.count("anbei der Bericht für das Quartal.") == 2
    assert "<p>" not in text and "JVBER" not in text
    nested = extract_text(load("nested_rfc822.eml"))
    assert "See the forwarded message." in nested and "widget,42" in nested
    assert extract_text(b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9") == "café"
    assert extract_text(b"\r\n\xff\xfe undeclared") == "\xff\xfe undeclared"
    assert len(extract_text(b"\r\n" + b"x" * 5000, limit=100)) == 100


@pytest.mark.parametrize(
    ("header", "filename"),
    [
        (b'Content-Disposition: attachment; filename="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="', "Résumé.pdf"),
        (b"Content-Disposition: attachment; filename*=iso-8859-1'fr'R%E9sum%E9.pdf", "Résumé.pdf"),
        (
            b"Content-Disposition: attachment; filename*=''plain%20name.txt; filename=fallback.txt",
            "plain name.txt",
        ),
        (b'Content-Type: application/pdf; name="from-type.pdf"', "from-type.pdf"),
        (
            b"Content-Disposition: attachment; filename*0*=utf-8''%E2%82%AC; filename*3=lost; filename*1=.txt",
            "€.txt",
        ),
        (b"Content-Type: application/pdf", None),
    ],
)
def test_part_filename(header, filename):
    """File names: RFC 2231 (charset, continuations, a gap ends the value) and RFC 2047 in quotes."""
    assert part_filename(parse_message(header + b"\r\n\r\nx").bodystructure) == filename


def test_decoded_body_and_part_text():
    """Helpers for the webmail: a part's bytes with the transfer encoding undone, and its text."""
    raw = load("alternative_in_mixed.eml")
    bs = parse_message(raw).bodystructure
    assert decoded_body(raw, resolve_part(bs, (2,))) == b"%PDF-1.4\n%\xc7\xec"
    assert part_text(raw, resolve_part(bs, (1, 1))).endswith("Bericht für das Quartal.")


def test_extract_text_accepts_a_stored_bodystructure():
    raw = load("nested_rfc822.eml")
    bs = json.loads(parse_message(raw).to_json()["bodystructure"])
    assert extract_text(raw, bodystructure=bs) == extract_text(raw)


def test_envelope_takes_the_name_from_a_trailing_comment():
    """"From: user@domain (Real Name)" gives ENVELOPE name "Real Name" (as Dovecot does; imaptest fetch-envelope)."""
    from mailserver.mime import parse_message
    from mailserver.mime.imapformat import render_envelope

    raw = b"From: user@domain (Real Name)\r\nTo: a@b (x (nested) y), c@d\r\nSubject: s\r\n\r\nbody\r\n"
    env = render_envelope(parse_message(raw).envelope)
    assert b'(("Real Name" NIL "user" "domain"))' in env
    assert b'(("x (nested) y" NIL "a" "b")(NIL NIL "c" "d"))' in env
