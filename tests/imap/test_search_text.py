"""SEARCH TEXT / BODY inside bounces and forwarded mail: the fields of a message/delivery-status part and the header
of an attached message/rfc822 are searchable (RFC 9051 6.4.4: they are in the body), sans-IO over the stored parse
and through a real IMAP listener with imaplib."""

from __future__ import annotations

import json

import pytest

from mailserver.delivery.dsn import FAILURE, ReportRecipient, build_report
from mailserver.imap import searchkeys as k
from mailserver.imap.search import message_text, search
from mailserver.mime import extract_text, parse_message
from storage.store import MessageMeta
from tests.imap.imap_client import imap_server, login, new_user

ORIGINAL = (b"From: Alice <alice@example.test>\r\nTo: <gone-away@remote.example>\r\n"
            b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_zum_Geburtstag?=\r\nMessage-ID: <orig-7f3a@example.test>\r\n"
            b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nSee you on Friday.\r\n")


def bounce() -> bytes:
    """A failure report our own queue runner would write: the alias the sender used is only in the
    delivery-status part (Original-Recipient), the original's Message-ID only in the attached header."""
    rcpt = ReportRecipient(recipient="gone-away@remote.example", action="failed", status="5.1.1",
                           diagnostic="550 5.1.1 mailbox unavailable", remote_mta="mx.remote.example",
                           orcpt="rfc822;old-alias-2019@example.test", last_attempt=1772445600.0)
    return build_report(kind=FAILURE, reporting_mta="mail.example.test", sender="alice@example.test",
                        recipients=[rcpt], original=ORIGINAL, original_is_full=True, now=1772445600.0)


def forward() -> bytes:
    """A message forwarded as an attachment (message/rfc822), with a folded header field inside."""
    return (b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: Fwd: minutes\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
            b"--b1\r\nContent-Type: text/plain\r\n\r\nForwarding the minutes.\r\n"
            b"--b1\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: Carol <carol@committee.example>\r\nSubject: Board minutes\r\n  of the spring meeting\r\n"
            b"X-Ticket: QX-40417\r\n\r\nThe board met.\r\n"
            b"--b1--\r\n")


def _only_in_part(raw: bytes, needle: bytes, part_type: bytes) -> None:
    """The test needles are where the test says, and nowhere else in the message."""
    assert raw.count(needle) == 1, needle
    before = raw[: raw.index(needle)]
    assert before.rfind(part_type) > before.rfind(b"Content-Type: text/plain"), needle


def test_the_needles_are_only_where_the_tests_expect_them():
    raw = bounce()
    _only_in_part(raw, b"old-alias-2019@example.test", b"message/delivery-status")
    _only_in_part(raw, b"orig-7f3a@example.test", b"message/rfc822")
    _only_in_part(forward(), b"QX-40417", b"message/rfc822")


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (bounce(), "old-alias-2019@example.test"),  # message/delivery-status field
        (bounce(), "Final-Recipient: rfc822; gone-away@remote.example"),
        (bounce(), "Reporting-MTA: dns; mail.example.test"),
        (bounce(), "orig-7f3a@example.test"),  # the attached original's header
        (bounce(), "Grüße zum Geburtstag"),  # ... RFC 2047-decoded
        (forward(), "QX-40417"),
        (forward(), "Board minutes of the spring meeting"),  # unfolded
        (forward(), "carol@committee.example"),
        (forward(), "The board met."),  # the attached message's body, as before
    ],
)
def test_extract_text_includes_report_fields_and_attached_headers(raw, needle):
    """The body text has the message/* leaves and the header of every attached message, from a fresh parse and
    from the bodystructure as stored (JSON): stored messages need no re-parse."""
    stored = json.loads(parse_message(raw).to_json()["bodystructure"])
    assert needle in extract_text(raw)
    assert needle in extract_text(raw, bodystructure=stored)


def test_attachments_of_other_types_stay_out():
    raw = (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/pdf\r\n\r\n"
           b"%PDF-secret\r\n--x\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"RnJvbTogaGlkZGVuQGV4YW1wbGUudGVzdA==\r\n--x--\r\n")
    text = extract_text(raw)
    assert "%PDF" not in text and "RnJvb" not in text


def _search(raw: bytes, key: k.SearchKey) -> list[int]:
    parsed = parse_message(raw).to_json()
    msg = MessageMeta(1, 1, 0, (), len(raw), 0.0)
    return search(key, [msg], max_uid=1, max_seq=1,
                  text_of=lambda m: message_text(raw, parsed["bodystructure"]))


@pytest.mark.parametrize("key_type", [k.TextKey, k.BodyKey])
@pytest.mark.parametrize(
    ("raw", "needle", "found"),
    [
        (bounce(), "OLD-ALIAS-2019@example.test", True),  # case-insensitive
        (bounce(), "orig-7f3a@example.test", True),
        (forward(), "qx-40417", True),
        (forward(), "not-in-there", False),
    ],
)
def test_search_keys_find_bounced_addresses_and_attached_headers(key_type, raw, needle, found):
    assert _search(raw, key_type(needle)) == ([1] if found else [])


# -- through a real IMAP listener ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-search-text"), listeners=("imap",)) as s:
        yield s


def test_imap_search_finds_text_in_a_bounce_and_a_forwarded_message(srv):
    """imaplib: SEARCH TEXT/BODY find the bounced alias and the original's Message-ID in our own DSN, and a field
    of a forwarded message's header; a plain message matches none of them."""
    from tests.imap.imap_client import message

    user = new_user(srv)
    srv.deliver(user, message("plain", "nothing to see"))
    srv.deliver(user, bounce())
    srv.deliver(user, forward())
    c = login(srv, user, select="INBOX")
    try:
        for key in ("TEXT", "BODY"):
            assert c.search(None, key, '"old-alias-2019@example.test"') == ("OK", [b"2"])
            assert c.search(None, key, '"orig-7f3a@example.test"') == ("OK", [b"2"])
            assert c.uid("SEARCH", key, "QX-40417") == ("OK", [b"3"])
            assert c.search(None, key, '"Board minutes of the spring"') == ("OK", [b"3"])
            assert c.search(None, key, "mailbox-never-named") == ("OK", [b""])
        # ESEARCH goes through the same engine.
        typ, data = c._simple_command("SEARCH", "RETURN", "(COUNT)", "TEXT", '"Reporting-MTA"')
        assert typ == "OK"
        assert c.untagged_responses.pop("ESEARCH")[-1].endswith(b"COUNT 1")
    finally:
        c.logout()
