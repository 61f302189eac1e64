"""FETCH engine: plans, byte ranges and the exact bytes of every FETCH item (mailserver.imap.fetch).

Messages are parsed through mailserver.mime.parse_message as delivery does and turned into MessageInfo rows from
ParsedMessage.to_json(); FETCH items come from the real command parser.
"""

from __future__ import annotations

import pytest

from mailserver.imap.commands import FetchAtt, Section
from mailserver.imap.fetch import (
    FetchError,
    RangeReader,
    UnknownCteError,
    decode_binary,
    fetch_response,
    plan_fetch,
)
from mailserver.imap.parser import parse_command
from mailserver.imap.wire import CommandReady, ImapReader, LiteralAnnounced
from mailserver.mime import parse_message, render_bodystructure, render_envelope
from storage.models import FLAG_FLAGGED, FLAG_SEEN
from storage.store import MessageInfo

# 2 Jun 2025 08:00:00 UTC
INTERNAL = 1748851200.0


def crlf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


SIMPLE = crlf(
    b"From: Alice Example <alice@example.org>\n"
    b"To: bob@example.com\n"
    b"Subject: Lunch\n"
    b"Date: Mon, 2 Jun 2025 10:00:00 +0200\n"
    b"Message-ID: <lunch-1@example.org>\n"
    b"\n"
    b"Noon at the usual place?\n"
    b"-- \n"
    b"Alice\n"
)

# Parts: 1 text/plain quoted-printable, 2 application/octet-stream base64 (00 01 02 03 ff), 3 message/rfc822
# (3.1 text/plain, 3.2 text/html), 4 text/plain x-uuencode. Folded and duplicate header fields at the top.
MIXED = crlf(
    b"From: Alice <alice@example.org>\n"
    b"To: Bob <bob@example.com>\n"
    b"X-Tag: one\n"
    b"Received: from a.example.org\n"
    b"\tby b.example.com; Mon, 2 Jun 2025 10:00:00 +0200\n"
    b"Subject: Report\n"
    b"x-tag: two\n"
    b"Date: Mon, 2 Jun 2025 10:00:00 +0200\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"b1\"\n"
    b"\n"
    b"preamble\n"
    b"--b1\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"caf=C3=A9 with a soft =\n"
    b"break, padding   \n"
    b"end=3D\n"
    b"--b1\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"AAEC\n"
    b" A/8=\n"
    b"--b1\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Description: forwarded\n"
    b"\n"
    b"From: Carol <carol@example.net>\n"
    b"Subject: inner\n"
    b"Content-Type: multipart/alternative; boundary=\"b2\"\n"
    b"\n"
    b"--b2\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"inner text\n"
    b"--b2\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"<p>inner</p>\n"
    b"--b2--\n"
    b"--b1\n"
    b"Content-Type: text/plain\n"
    b"Content-Transfer-Encoding: x-uuencode\n"
    b"\n"
    b"begin 644 x\n"
    b"--b1--\n"
    b"epilogue\n"
)

MIXED_HEADER = crlf(
    b"From: Alice <alice@example.org>\n"
    b"To: Bob <bob@example.com>\n"
    b"X-Tag: one\n"
    b"Received: from a.example.org\n"
    b"\tby b.example.com; Mon, 2 Jun 2025 10:00:00 +0200\n"
    b"Subject: Report\n"
    b"x-tag: two\n"
    b"Date: Mon, 2 Jun 2025 10:00:00 +0200\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/mixed; boundary=\"b1\"\n"
    b"\n"
)
INNER = crlf(
    b"From: Carol <carol@example.net>\n"
    b"Subject: inner\n"
    b"Content-Type: multipart/alternative; boundary=\"b2\"\n"
    b"\n"
    b"--b2\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"inner text\n"
    b"--b2\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"<p>inner</p>\n"
    b"--b2--"
)


def info(raw: bytes, uid: int = 1, **over) -> MessageInfo:
    cols = parse_message(raw).to_json()
    size = cols.pop("size")
    values = dict(id=uid, mailbox_id=1, uid=uid, modseq=7, flags=0, keywords=(), internal_date=INTERNAL, size=size,
                  blob_id="blob", thread_id=0)
    values.update(cols)
    values.update(over)
    return MessageInfo(**values)


def atts(text: str) -> tuple[FetchAtt, ...]:
    """The items of ``FETCH 1 <text>`` as the command parser produces them."""
    reader = ImapReader(stream_commands=())
    frames = []
    for event in reader.feed(b"t FETCH 1 " + text.encode() + b"\r\n"):
        assert not isinstance(event, LiteralAnnounced)
        if isinstance(event, CommandReady):
            frames.append(event.frame)
    return parse_command(frames[0]).items


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def fetch(raw: bytes, text: str, *, msg=None, flags=0, keywords=(), recent=False, uid_command=False,
          condstore=False, rev2=False, **kw) -> bytes:
    msg = msg or info(raw)
    return fetch_response(1, msg, atts(text), body=raw, flags=flags, keywords=keywords, recent=recent,
                          uid_command=uid_command, condstore=condstore, utf8=False, rev2=rev2, **kw)


def item(value: bytes) -> bytes:
    return b"* 1 FETCH (" + value + b")\r\n"


# ----------------------------------------------------------------------------------------------------- simple items

def test_flags_list_system_flags_recent_and_keywords():
    """FLAGS lists system flags, \\Recent for a rev1 session, then keywords."""
    out = fetch(SIMPLE, "FLAGS", flags=FLAG_SEEN | FLAG_FLAGGED, keywords=("$Label1", "Work"), recent=True)
    assert out == item(b"FLAGS (\\Seen \\Flagged \\Recent $Label1 Work)")


def test_flags_without_recent_for_imap4rev2():
    """RFC 9051 removed \\Recent: a rev2 session never sees it."""
    assert fetch(SIMPLE, "FLAGS", recent=True, rev2=True) == item(b"FLAGS ()")


@pytest.mark.parametrize(
    "text, value",
    [
        ("UID", b"UID 1"),
        ("RFC822.SIZE", b"RFC822.SIZE %d" % len(SIMPLE)),
        ("INTERNALDATE", b'INTERNALDATE " 2-Jun-2025 08:00:00 +0000"'),
        ("MODSEQ", b"MODSEQ (7)"),
        (
            "ENVELOPE",
            b'ENVELOPE ("Mon, 2 Jun 2025 10:00:00 +0200" "Lunch" (("Alice Example" NIL "alice" "example.org"))'
            b' (("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice" "example.org"))'
            b' ((NIL NIL "bob" "example.com")) NIL NIL NIL "<lunch-1@example.org>")',
        ),
        ("BODY", b'BODY ("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 38 3)'),
        ("BODYSTRUCTURE", b'BODYSTRUCTURE ("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 38 3 NIL NIL NIL NIL)'),
    ],
)
def test_simple_items_exact(text, value):
    assert fetch(SIMPLE, text) == item(value)


def test_macros_keep_item_order():
    """FAST/ALL/FULL expand in RFC 3501 order and responses keep the requested order."""
    out = fetch(SIMPLE, "FAST")
    assert out == item(b'FLAGS () INTERNALDATE " 2-Jun-2025 08:00:00 +0000" RFC822.SIZE %d' % len(SIMPLE))
    out = fetch(SIMPLE, "(RFC822.SIZE UID FLAGS)")
    assert out == item(b"RFC822.SIZE %d UID 1 FLAGS ()" % len(SIMPLE))


def test_envelope_and_bodystructure_come_from_stored_json():
    """ENVELOPE/BODYSTRUCTURE render the stored JSON: the body is not needed (and not read)."""
    msg = info(MIXED)
    plan = plan_fetch(atts("(ENVELOPE BODYSTRUCTURE BODY)"), uid_command=False, condstore=False)
    assert plan.needs_info and not plan.needs_body and plan.ranges(msg) == []
    out = fetch_response(1, msg, plan.items, flags=0, keywords=(), recent=False, uid_command=False,
                         condstore=False, utf8=False, rev2=False)
    parsed = parse_message(MIXED)
    assert out == item(
        b"ENVELOPE " + render_envelope(parsed.envelope)
        + b" BODYSTRUCTURE " + render_bodystructure(parsed.bodystructure, True)
        + b" BODY " + render_bodystructure(parsed.bodystructure, False)
    )


def test_uid_fetch_puts_uid_first_and_condstore_alone_adds_no_modseq():
    """RFC 3501 6.4.8: UID FETCH answers carry UID; RFC 7162 3.1: CONDSTORE enabled adds no MODSEQ to a FETCH that
    asked for neither MODSEQ nor a \\Seen change (tests/imap/test_condstore_modseq.py has the other cases)."""
    msg = info(SIMPLE, uid=42, modseq=99)
    out = fetch(SIMPLE, "FLAGS", msg=msg, uid_command=True, condstore=True)
    assert out == item(b"UID 42 FLAGS ()")
    out = fetch(SIMPLE, "(MODSEQ UID)", msg=msg, uid_command=True, condstore=True)
    assert out == item(b"MODSEQ (99) UID 42")


def test_include_flags_appends_flags_after_seen_was_set():
    out = fetch(SIMPLE, "BODY[TEXT]", flags=FLAG_SEEN, include_flags=True)
    assert out == item(b"BODY[TEXT] " + lit(b"Noon at the usual place?\r\n-- \r\nAlice\r\n") + b" FLAGS (\\Seen)")


# ----------------------------------------------------------------------------------------------- body sections

SIMPLE_HEADER = SIMPLE[: SIMPLE.index(b"\r\n\r\n") + 4]
SIMPLE_TEXT = SIMPLE[len(SIMPLE_HEADER):]


@pytest.mark.parametrize(
    "text, value",
    [
        ("BODY[]", b"BODY[] " + lit(SIMPLE)),
        ("BODY.PEEK[]", b"BODY[] " + lit(SIMPLE)),
        ("BODY[HEADER]", b"BODY[HEADER] " + lit(SIMPLE_HEADER)),
        ("BODY[TEXT]", b"BODY[TEXT] " + lit(SIMPLE_TEXT)),
        ("BODY[1]", b"BODY[1] " + lit(SIMPLE_TEXT)),  # a single-part message's part 1 is its body
        ("RFC822", b"RFC822 " + lit(SIMPLE)),
        ("RFC822.HEADER", b"RFC822.HEADER " + lit(SIMPLE_HEADER)),
        ("RFC822.TEXT", b"RFC822.TEXT " + lit(SIMPLE_TEXT)),
        # partial fetches: the response names only the origin octet (RFC 3501 7.4.2)
        ("BODY[]<0.4>", b'BODY[]<0> {4}\r\nFrom'),
        ("BODY.PEEK[TEXT]<5.2>", b"BODY[TEXT]<5> {2}\r\nat"),
        ("BODY[TEXT]<%d.10>" % (len(SIMPLE_TEXT) - 2), b"BODY[TEXT]<%d> {2}\r\n\r\n" % (len(SIMPLE_TEXT) - 2)),
        ("BODY[TEXT]<%d.1>" % len(SIMPLE_TEXT), b'BODY[TEXT]<%d> ""' % len(SIMPLE_TEXT)),
        ("BODY[TEXT]<4000000000.1>", b'BODY[TEXT]<4000000000> ""'),
        ("BODY[]<0.%d>" % len(SIMPLE), b"BODY[]<0> " + lit(SIMPLE)),
        ("BODY[]<0.%d>" % (len(SIMPLE) - 1), b"BODY[]<0> " + lit(SIMPLE[:-1])),
        ("BODY[HEADER.FIELDS (SUBJECT)]", b"BODY[HEADER.FIELDS (SUBJECT)] " + lit(b"Subject: Lunch\r\n\r\n")),
        ("BODY[HEADER.FIELDS (X-NONE)]", b"BODY[HEADER.FIELDS (X-NONE)] {2}\r\n\r\n"),
    ],
)
def test_simple_sections_exact(text, value):
    assert fetch(SIMPLE, text) == item(value)


@pytest.mark.parametrize(
    "text, value",
    [
        ("BODY[HEADER]", b"BODY[HEADER] " + lit(MIXED_HEADER)),
        (
            "BODY[TEXT]<0.12>",
            b"BODY[TEXT]<0> " + lit(b"preamble\r\n--"),
        ),
        (
            "BODY[1]",
            b"BODY[1] " + lit(b"caf=C3=A9 with a soft =\r\nbreak, padding   \r\nend=3D"),
        ),
        (
            "BODY[1.MIME]",
            b"BODY[1.MIME] "
            + lit(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"),
        ),
        ("BODY[2]", b"BODY[2] " + lit(b"AAEC\r\n A/8=")),
        ("BODY[3]", b"BODY[3] " + lit(INNER)),
        (
            "BODY[3.MIME]",
            b"BODY[3.MIME] " + lit(b"Content-Type: message/rfc822\r\nContent-Description: forwarded\r\n\r\n"),
        ),
        ("BODY[3.HEADER]", b"BODY[3.HEADER] " + lit(INNER[: INNER.index(b"\r\n\r\n") + 4])),
        ("BODY[3.TEXT]", b"BODY[3.TEXT] " + lit(INNER[INNER.index(b"\r\n\r\n") + 4 :])),
        ("BODY[3.1]", b"BODY[3.1] {10}\r\ninner text"),
        ("BODY[3.2]", b"BODY[3.2] {12}\r\n<p>inner</p>"),
        ("BODY[3.2.MIME]", b"BODY[3.2.MIME] " + lit(b"Content-Type: text/html\r\n\r\n")),
        (
            "BODY[3.HEADER.FIELDS (SUBJECT FROM)]",
            b"BODY[3.HEADER.FIELDS (SUBJECT FROM)] " + lit(b"From: Carol <carol@example.net>\r\nSubject: inner\r\n\r\n"),
        ),
        ("BODY[3.1]<6.100>", b"BODY[3.1]<6> {4}\r\ntext"),
        # sections that do not exist are empty
        ("BODY[9]", b'BODY[9] ""'),
        ("BODY[1.HEADER]", b'BODY[1.HEADER] ""'),
        ("BODY[3.3]", b'BODY[3.3] ""'),
        ("BODY[1.1]", b'BODY[1.1] ""'),
    ],
)
def test_multipart_and_nested_message_sections_exact(text, value):
    assert fetch(MIXED, text) == item(value)


@pytest.mark.parametrize(
    "text, value",
    [
        # duplicates and folded lines kept byte for byte, in message order, names matched case-insensitively
        (
            "BODY[HEADER.FIELDS (X-TAG RECEIVED)]",
            b"BODY[HEADER.FIELDS (X-TAG RECEIVED)] "
            + lit(b"X-Tag: one\r\nReceived: from a.example.org\r\n\tby b.example.com; Mon, 2 Jun 2025 10:00:00 +0200"
                  b"\r\nx-tag: two\r\n\r\n"),
        ),
        (
            "BODY.PEEK[HEADER.FIELDS.NOT (X-TAG RECEIVED CONTENT-TYPE MIME-VERSION DATE)]",
            b"BODY[HEADER.FIELDS.NOT (X-TAG RECEIVED CONTENT-TYPE MIME-VERSION DATE)] "
            + lit(b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: Report\r\n\r\n"),
        ),
        # a partial of HEADER.FIELDS applies to the filtered text
        ("BODY[HEADER.FIELDS (x-tag)]<5.8>", b"BODY[HEADER.FIELDS (X-TAG)]<5> {8}\r\n: one\r\nx"),
        ("BODY[HEADER.FIELDS (DATE)]",
         b"BODY[HEADER.FIELDS (DATE)] " + lit(b"Date: Mon, 2 Jun 2025 10:00:00 +0200\r\n\r\n")),
    ],
)
def test_header_fields_exact(text, value):
    assert fetch(MIXED, text) == item(value)


def test_header_field_names_that_are_not_atoms_are_echoed_as_strings():
    att = FetchAtt(name="BODY", section=Section(text="HEADER.FIELDS", fields=("X TAG", "SUBJECT")), peek=True)
    out = fetch_response(1, info(MIXED), (att,), body=MIXED, flags=0, keywords=(), recent=False,
                         uid_command=False, condstore=False, utf8=False, rev2=False)
    assert out == item(b'BODY[HEADER.FIELDS ("X TAG" SUBJECT)] ' + lit(b"Subject: Report\r\n\r\n"))


def test_nul_in_body_is_sent_as_0x80_in_body_items():
    """RFC 3501 9: a literal cannot carry NUL; BODY keeps the size and substitutes 0x80."""
    raw = b"Subject: n\r\n\r\na\x00b\r\n"
    assert fetch(raw, "BODY[TEXT]") == item(b"BODY[TEXT] {5}\r\na\x80b\r\n")


# ----------------------------------------------------------------------------------------------------- BINARY

@pytest.mark.parametrize(
    "att, value",
    [
        # RFC 2045 6.7: soft line breaks joined, trailing padding dropped, =3D decoded
        (FetchAtt(name="BINARY", section=Section(part=(1,))),
         b"BINARY[1] " + lit("café with a soft break, padding\r\nend=".encode())),
        (FetchAtt(name="BINARY.SIZE", section=Section(part=(1,))), b"BINARY.SIZE[1] %d" % len("café with a soft break, padding\r\nend=".encode())),
        # base64 with NUL: literal8
        (FetchAtt(name="BINARY", section=Section(part=(2,))), b"BINARY[2] ~{5}\r\n\x00\x01\x02\x03\xff"),
        (FetchAtt(name="BINARY.SIZE", section=Section(part=(2,))), b"BINARY.SIZE[2] 5"),
        (FetchAtt(name="BINARY", section=Section(part=(2,)), partial=(1, 2)), b"BINARY[2]<1> {2}\r\n\x01\x02"),
        (FetchAtt(name="BINARY", section=Section(part=(2,)), partial=(0, 1)), b"BINARY[2]<0> ~{1}\r\n\x00"),
        (FetchAtt(name="BINARY", section=Section(part=(2,)), partial=(5, 1)), b'BINARY[2]<5> ""'),
        (FetchAtt(name="BINARY", section=Section(part=(2,)), partial=(4, 9)), b"BINARY[2]<4> {1}\r\n\xff"),
        # identity encodings and containers pass through
        (FetchAtt(name="BINARY", section=Section(part=(3,))), b"BINARY[3] " + lit(INNER)),
        (FetchAtt(name="BINARY.SIZE", section=Section(part=(3,))), b"BINARY.SIZE[3] %d" % len(INNER)),
        (FetchAtt(name="BINARY", section=Section(part=(3, 1)), peek=True), b"BINARY[3.1] {10}\r\ninner text"),
        (FetchAtt(name="BINARY", section=Section()), b"BINARY[] " + lit(MIXED)),
        (FetchAtt(name="BINARY.SIZE", section=Section()), b"BINARY.SIZE[] %d" % len(MIXED)),
        # Dovecot-style section texts under BINARY are not decoded
        (FetchAtt(name="BINARY", section=Section(part=(1,), text="MIME")),
         b"BINARY[1.MIME] "
         + lit(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")),
        (FetchAtt(name="BINARY.SIZE", section=Section(text="HEADER.FIELDS", fields=("SUBJECT",))),
         b"BINARY.SIZE[HEADER.FIELDS (SUBJECT)] %d" % len(b"Subject: Report\r\n\r\n")),
        (FetchAtt(name="BINARY", section=Section(part=(9,))), b'BINARY[9] ""'),
        (FetchAtt(name="BINARY.SIZE", section=Section(part=(9,))), b"BINARY.SIZE[9] 0"),
    ],
)
def test_binary_exact(att, value):
    msg = info(MIXED)
    out = fetch_response(1, msg, (att,), body=MIXED, flags=0, keywords=(), recent=False, uid_command=False,
                         condstore=False, utf8=False, rev2=False)
    assert out == item(value)


@pytest.mark.parametrize("name", ["BINARY", "BINARY.SIZE"])
def test_binary_of_unknown_encoding_raises_unknown_cte(name):
    """RFC 3516 4.3: the session answers NO [UNKNOWN-CTE]."""
    with pytest.raises(UnknownCteError) as err:
        fetch_response(1, info(MIXED), (FetchAtt(name=name, section=Section(part=(4,))),), body=MIXED, flags=0,
                       keywords=(), recent=False, uid_command=False, condstore=False, utf8=False, rev2=False)
    assert err.value.code == "UNKNOWN-CTE"
    assert isinstance(err.value, FetchError)


def test_binary_parsed_from_command():
    assert fetch(MIXED, "(BINARY.PEEK[2] BINARY.SIZE[2])") == item(
        b"BINARY[2] ~{5}\r\n\x00\x01\x02\x03\xff BINARY.SIZE[2] 5"
    )


@pytest.mark.parametrize(
    "data, encoding, decoded",
    [
        (b"a=\r\nb", "quoted-printable", b"ab"),
        (b"a = \t\r\nb", "quoted-printable", b"a b"),  # padding is removed first, then the soft break
        (b"x  \r\ny\t\r\n", "quoted-printable", b"x\r\ny\r\n"),
        (b"=41=4a=zz", "Quoted-Printable", b"AJ=zz"),
        (b"a=\nb\nc", "quoted-printable", b"ab\r\nc"),
        (b" aGVs\r\n bG8=\r\n", "BASE64", b"hello"),
        (b"aGVsbG8=junk-after-padding", "base64", b"hello"),
        (b"aGVsbG8", "base64", b"hello"),  # missing padding
        (b"a", "base64", b""),
        (b"as is\r\n", "7bit", b"as is\r\n"),
        (b"\x00\xff", "binary", b"\x00\xff"),
        (b"x", None, b"x"),
    ],
)
def test_decode_binary(data, encoding, decoded):
    assert decode_binary(data, encoding) == decoded


def test_decode_binary_unknown():
    with pytest.raises(UnknownCteError):
        decode_binary(b"x", "x-uuencode")


# ------------------------------------------------------------------------------------------------ plans and ranges

@pytest.mark.parametrize(
    "text, needs_info, needs_body, header_only, sets_seen",
    [
        ("(UID FLAGS)", False, False, False, False),
        ("FAST", False, False, False, False),
        ("(FLAGS MODSEQ)", False, False, False, False),
        ("ENVELOPE", True, False, False, False),
        ("BODYSTRUCTURE", True, False, False, False),
        ("BODY", True, False, False, False),
        ("BODY[]", True, True, False, True),
        ("BODY.PEEK[]", True, True, False, False),
        ("BODY.PEEK[HEADER]", True, True, True, False),
        ("BODY[HEADER]", True, True, True, True),
        ("(FLAGS BODY.PEEK[HEADER.FIELDS (FROM DATE)])", True, True, True, False),
        ("BODY.PEEK[HEADER.FIELDS.NOT (FROM)]", True, True, True, False),
        ("RFC822.HEADER", True, True, True, False),
        ("RFC822", True, True, False, True),
        ("RFC822.TEXT", True, True, False, True),
        ("RFC822.SIZE", False, False, False, False),
        ("BODY.PEEK[1.HEADER]", True, True, False, False),
        ("(BODY.PEEK[HEADER] BODY.PEEK[TEXT])", True, True, False, False),
        ("BINARY[1]", True, True, False, True),
        ("BINARY.PEEK[1]", True, True, False, False),
        ("BINARY.SIZE[1]", True, True, False, False),
    ],
)
def test_plan_flags(text, needs_info, needs_body, header_only, sets_seen):
    plan = plan_fetch(atts(text), uid_command=False, condstore=False)
    assert (plan.needs_info, plan.needs_body, plan.header_only, plan.sets_seen) == (
        needs_info, needs_body, header_only, sets_seen)


def test_plan_adds_uid_and_modseq():
    plan = plan_fetch(atts("FLAGS"), uid_command=True, condstore=False)
    assert [a.name for a in plan.items] == ["UID", "FLAGS"]
    plan = plan_fetch(atts("FLAGS"), uid_command=False, condstore=False, changed_since=5)
    assert [a.name for a in plan.items] == ["FLAGS", "MODSEQ"]  # RFC 7162 3.1.4.1
    plan = plan_fetch(atts("(UID MODSEQ)"), uid_command=True, condstore=True)
    assert [a.name for a in plan.items] == ["UID", "MODSEQ"]


def test_ranges_read_only_what_is_asked():
    msg = info(MIXED)
    hs = len(MIXED_HEADER)
    body1 = MIXED.index(b"caf=C3")

    def ranges(text):
        return plan_fetch(atts(text), uid_command=False, condstore=False).ranges(msg)

    assert ranges("FLAGS") == []
    assert ranges("BODY.PEEK[HEADER.FIELDS (FROM)]") == [(0, hs)]
    assert ranges("RFC822.HEADER") == [(0, hs)]
    assert ranges("BODY[]<0.100>") == [(0, 100)]
    assert ranges("BODY[]<%d.100>" % (len(MIXED) - 10)) == [(len(MIXED) - 10, len(MIXED))]
    assert ranges("BODY[]<%d.100>" % (len(MIXED) + 10)) == []
    assert ranges("BODY[TEXT]<2.3>") == [(hs + 2, hs + 5)]
    assert ranges("BODY[1]<0.4>") == [(body1, body1 + 4)]
    # BINARY of an encoded part needs the whole part; BINARY.SIZE of an identity part needs nothing
    assert ranges("BINARY.PEEK[1]<0.4>") == [(body1, MIXED.index(b"\r\n--b1", body1))]
    assert ranges("BINARY.SIZE[3]") == []
    # overlapping ranges are merged
    assert ranges("(BODY[HEADER] BODY[]<0.10> BODY[]<5.10>)") == [(0, hs)]


@pytest.mark.parametrize(
    "text",
    [
        "(FLAGS BODY.PEEK[HEADER.FIELDS (X-TAG)] BODY.PEEK[3.HEADER] BODY[2]<1.3> RFC822.SIZE)",
        "(BINARY.PEEK[1]<3.4> BINARY.SIZE[2] BODY[3.1.MIME] BODY[]<100.50>)",
        "(RFC822.HEADER RFC822.TEXT)",
        "(ENVELOPE BODY[TEXT]<0.1> BODY.PEEK[HEADER.FIELDS.NOT (DATE)]<3.30>)",
    ],
)
def test_range_reader_gives_the_same_bytes_as_the_whole_body(text):
    """A session that reads only FetchPlan.ranges() gets byte-identical responses."""
    msg = info(MIXED)
    plan = plan_fetch(atts(text), uid_command=True, condstore=False)
    whole = fetch_response(3, msg, plan.items, body=MIXED, flags=0, keywords=(), recent=False, uid_command=True,
                           condstore=False, utf8=False, rev2=False)
    reader = RangeReader({r: MIXED[r[0]:r[1]] for r in plan.ranges(msg)})
    ranged = fetch_response(3, msg, plan.items, body_reader=reader, flags=0, keywords=(), recent=False,
                            uid_command=True, condstore=False, utf8=False, rev2=False)
    assert ranged == whole


def test_range_reader_refuses_unread_ranges():
    reader = RangeReader({(0, 10): b"0123456789"})
    assert reader(2, 5) == b"234"
    assert reader(5, 5) == b""
    with pytest.raises(FetchError):
        reader(8, 12)


def test_missing_body_is_an_error_not_a_crash():
    with pytest.raises(FetchError):
        fetch_response(1, info(SIMPLE), atts("BODY[]"), flags=0, keywords=(), recent=False, uid_command=False,
                       condstore=False, utf8=False, rev2=False)
