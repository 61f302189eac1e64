"""Response encoding: strings, literals, mailbox names in modified UTF-7 and UTF-8, status lines."""

from datetime import datetime, timedelta, timezone

import pytest

from mailserver.imap import response as r


@pytest.mark.parametrize(
    "name, wire",
    [
        ("INBOX", b"INBOX"),
        ("Entwürfe", b"Entw&APw-rfe"),
        ("&", b"&-"),
        ("A&B", b"A&-B"),
        ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Gesendete Objekte", b"Gesendete Objekte"),
        ("😀", b"&2D3eAA-"),
        ("ü&ü", b"&APw-&-&APw-"),
        ("\t", b"&AAk-"),
        ("", b""),
    ],
)
def test_mutf7_round_trip(name, wire):
    assert r.mutf7_encode(name) == wire
    assert r.mutf7_decode(wire) == name


@pytest.mark.parametrize(
    "wire",
    [
        b"&",  # unterminated
        b"&APw",  # unterminated
        b"&AGE-",  # encodes printable "a"
        b"&APx-",  # left-over bits
        b"&A-",  # one base64 char
        b"&AP/-",  # "/" instead of ","
        b"&2D0-",  # unpaired surrogate
        b"caf\xc3\xa9",  # 8-bit
        b"a\x01b",  # control
        b"&AP w-",
    ],
)
def test_mutf7_rejects_bad_input(wire):
    with pytest.raises(ValueError):
        r.mutf7_decode(wire)


def test_decode_mailbox_modes():
    assert r.decode_mailbox(b"Entw&APw-rfe") == "Entwürfe"
    # RFC 6855 3: after UTF8=ACCEPT names are UTF-8 and "&" is an ordinary character.
    assert r.decode_mailbox("Entwürfe".encode(), utf8=True) == "Entwürfe"
    assert r.decode_mailbox(b"A&B", utf8=True) == "A&B"
    with pytest.raises(ValueError):
        r.decode_mailbox(b"\xff", utf8=True)
    assert r.encode_mailbox("Entwürfe", utf8=True) == "Entwürfe".encode()
    assert r.encode_mailbox("Entwürfe") == b"Entw&APw-rfe"


def test_inbox_is_case_insensitive():
    assert r.decode_mailbox(b"inbox") == "INBOX"
    assert r.decode_mailbox(b"InBoX/Sub") == "INBOX/Sub"
    assert r.decode_mailbox(b"inboxes") == "inboxes"
    assert r.normalize_inbox("Inbox") == "INBOX"


def test_quoted_and_literal():
    assert r.quoted('a"b\\c') == b'"a\\"b\\\\c"'
    with pytest.raises(ValueError):
        r.quoted("a\r\nb")
    assert r.literal(b"abc") == b"{3}\r\nabc"
    assert r.literal(b"a\x00c", binary=True) == b"~{3}\r\na\x00c"


def test_string_picks_form():
    assert r.string("hello") == b'"hello"'
    assert r.string("a\r\nb") == b"{4}\r\na\r\nb"
    assert r.string("Grüße") == b"{7}\r\n" + "Grüße".encode()
    assert r.string("Grüße", utf8=True) == '"Grüße"'.encode()
    assert r.string(b"\xff", utf8=True) == b"{1}\r\n\xff"
    assert r.string("x" * 2000).startswith(b"{2000}\r\n")


def test_astring_nstring_mailbox():
    assert r.astring("INBOX") == b"INBOX"
    assert r.astring("a b") == b'"a b"'
    assert r.astring("") == b'""'
    assert r.nstring(None) == b"NIL"
    assert r.nstring("x") == b'"x"'
    assert r.mailbox("Entwürfe") == b'"Entw&APw-rfe"'
    assert r.mailbox("Entwürfe", utf8=True) == '"Entwürfe"'.encode()


def test_lists_and_flags():
    assert r.paren([b"a", b"b"]) == b"(a b)"
    assert r.flag_list(["\\Seen", "$Forwarded"]) == b"(\\Seen $Forwarded)"
    assert r.flag_list([]) == b"()"


def test_date_time():
    dt = datetime(2024, 3, 5, 7, 8, 9, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    assert r.date_time(dt) == b'" 5-Mar-2024 07:08:09 -0530"'
    assert r.date_time(datetime(2024, 12, 25, 0, 0, 0)) == b'"25-Dec-2024 00:00:00 +0000"'


def test_lines():
    assert r.tagged("a1", "OK", "done", "READ-WRITE") == b"a1 OK [READ-WRITE] done\r\n"
    assert r.tagged("a1", "NO", "bad\r\nthing") == b"a1 NO bad  thing\r\n"
    assert r.status_line("OK", "hi", "UIDNEXT 5") == b"* OK [UIDNEXT 5] hi\r\n"
    assert r.untagged("3 EXISTS") == b"* 3 EXISTS\r\n"
    assert r.continuation() == b"+ Ready\r\n"
    assert r.continuation("idling") == b"+ idling\r\n"
