"""SORT=DISPLAY (RFC 5957): DISPLAYFROM and DISPLAYTO sort by the first address's decoded display name, or its
addr-spec when it has none (a group by its name, a missing field as the empty string), compared with
i;ascii-casemap; sans-IO and through a real IMAP listener with imaplib."""

from __future__ import annotations

import pytest

from mailserver.imap.commands import SortCriterion
from mailserver.imap.sort import sort_key_values, sort_messages
from mailserver.mime import parse_message
from storage.store import MessageInfo
from tests.imap.imap_client import imap_server, login, new_user


def info(uid: int, header: str) -> MessageInfo:
    raw = (header + "\r\nSubject: x\r\n\r\nbody\r\n").encode()
    cols = parse_message(raw).to_json()
    size = cols.pop("size")
    return MessageInfo(id=uid, mailbox_id=1, uid=uid, modseq=1, flags=0, keywords=(), internal_date=float(uid),
                       size=size, blob_id=str(uid), thread_id=0, **cols)


@pytest.mark.parametrize(
    ("key", "header", "value"),
    [
        ("DISPLAYFROM", 'From: "Alice Liddell" <zed@example.org>', "ALICE LIDDELL"),  # the name, not the address
        ("DISPLAYFROM", "From: =?utf-8?q?=C3=89mile?= <a@example.org>", "ÉMILE"),  # RFC 2047-decoded; é not folded
        ("DISPLAYFROM", 'From: "" <Bare@Example.org>', "BARE@EXAMPLE.ORG"),  # an empty name: the addr-spec
        ("DISPLAYFROM", "From: bare@example.org", "BARE@EXAMPLE.ORG"),
        ("DISPLAYFROM", "From: x@example.org (Old Style)", "OLD STYLE"),  # the comment names the person
        ("DISPLAYFROM", "From: First <f@example.org>, Second <s@example.org>", "FIRST"),  # the first address
        ("DISPLAYFROM", "To: someone@example.org", ""),  # no From: the empty string
        ("DISPLAYTO", "To: Team: a@example.org, b@example.org;", "TEAM"),  # a group: its name
        ("DISPLAYTO", "To: undisclosed-recipients:;", "UNDISCLOSED-RECIPIENTS"),
        ("DISPLAYTO", "To: <only@example.org>", "ONLY@EXAMPLE.ORG"),
    ],
)
def test_display_sort_value(key, header, value):
    assert sort_key_values(key, info(1, header)) == value


HEADERS = [
    "From: Zoe <a@example.org>\r\nTo: bob@example.org",
    'From: "adam" <z@example.org>\r\nTo: "Carl" <a@example.org>',
    "From: mike@example.org\r\nTo: Alpha: x@example.org;",
    "To: Bob <b@example.org>",
    "From: Adam <y@example.org>\r\nTo: =?utf-8?q?=C3=84rger?= <ae@example.org>",
]
SORTED = [info(i, h) for i, h in enumerate(HEADERS, 1)]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        # "" < ADAM = ADAM (ties in sequence order, also under REVERSE) < MIKE@... < ZOE
        ([SortCriterion(key="DISPLAYFROM")], [4, 2, 5, 3, 1]),
        ([SortCriterion(key="DISPLAYFROM", reverse=True)], [1, 3, 2, 5, 4]),
        # ALPHA < BOB < BOB@... < CARL < Ärger (non-ASCII after ASCII: octet order)
        ([SortCriterion(key="DISPLAYTO")], [3, 4, 1, 2, 5]),
        ([SortCriterion(key="DISPLAYTO", reverse=True), SortCriterion(key="ARRIVAL")], [5, 2, 1, 4, 3]),
    ],
)
def test_sort_display(criteria, expected):
    assert sort_messages(criteria, SORTED) == expected


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-sort-display"), listeners=("imap",)) as s:
        yield s


def test_sort_display_through_imaplib(srv):
    """imaplib: SORT=DISPLAY is advertised and (REVERSE) DISPLAYFROM / DISPLAYTO sort as above, also as ESORT."""
    user = new_user(srv)
    for h in HEADERS:
        srv.deliver(user, (h + "\r\nSubject: x\r\n\r\nbody\r\n").encode())
    c = login(srv, user, select="INBOX")
    try:
        assert "SORT=DISPLAY" in c.capability()[1][0].decode().split()
        assert c.sort("(DISPLAYFROM)", "UTF-8", "ALL") == ("OK", [b"4 2 5 3 1"])
        assert c.sort("(REVERSE DISPLAYFROM)", "US-ASCII", "ALL") == ("OK", [b"1 3 2 5 4"])
        assert c.sort("(DISPLAYTO)", "UTF-8", "ALL") == ("OK", [b"3 4 1 2 5"])
        assert c.uid("SORT", "(DISPLAYTO)", "UTF-8", "NOT", "FROM", "mike") == ("OK", [b"4 1 2 5"])
        typ, _ = c._simple_command("SORT", "RETURN", "(ALL)", "(REVERSE DISPLAYTO)", "UTF-8", "ALL")
        assert typ == "OK" and c.untagged_responses.pop("ESEARCH")[-1].endswith(b"ALL 5,2,1,4,3")
    finally:
        c.logout()
