"""SEARCH engine (mailserver.imap.search): every search key over real parsed messages, lazy loading, speed over
100,000 messages, and the SEARCH / ESEARCH responses."""

from __future__ import annotations

import random

import pytest

from mailserver.imap import searchkeys as k
from mailserver.imap.parser import parse_command
from mailserver.imap.search import (
    SearchError,
    esearch_response,
    message_text,
    search,
    search_response,
    uses_modseq,
)
from mailserver.imap.seqset import SeqSet
from mailserver.imap.wire import CommandReady, ImapReader, LiteralAnnounced
from mailserver.mime import parse_message
from storage.models import FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_SEEN
from storage.store import MessageInfo, MessageMeta

DAY0 = 1748822400  # 2 Jun 2025 00:00:00 UTC
NOW = DAY0 + 3 * 86400  # 5 Jun 2025 00:00:00 UTC


def crlf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


RAW = {
    1: crlf(
        b'From: "Smith, John" <john.smith@example.com> (comment)\n'
        b"To: team@example.org\n"
        b"Cc: Ann <ann@example.net>\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\n"
        b"Date: Mon, 2 Jun 2025 23:30:00 -0500\n"
        b"X-Priority: 1\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: quoted-printable\n"
        b"\n"
        b"Das Caf=C3=A9 ist =\n"
        b"offen.\n"
    ),
    2: crlf(
        b"From: ann@example.net\n"
        b'To: "John" <john.smith@example.com>\n'
        b"Bcc: secret@example.com\n"
        b"Subject: Re: Quarterly\n"
        b"  numbers\n"
        b"Date: Tue, 3 Jun 2025 00:15:00 +0200\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/alternative; boundary=alt\n"
        b"\n"
        b"--alt\n"
        b"Content-Type: text/plain\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"YnVkZ2V0IHNwcmVhZHNoZWV0\n"
        b"--alt\n"
        b"Content-Type: text/html\n"
        b"\n"
        b"<b>Budget</b> <i>approved</i>\n"
        b"--alt--\n"
    ),
    5: crlf(
        b"From: <noreply@shop.example>\n"
        b"To: Undisclosed recipients:;\n"
        b"Subject: Your order\n"
        b"\n"
        b"Order 12345 shipped\n"
    ),
    7: crlf(
        b"From: team@example.org\n"
        b"Subject: Weekly\n"
        b"Date: not a date at all\n"
        b"X-Empty:\n"
        b"\n"
        b"nothing here\n"
    ),
}
STATE = {  # uid: (flags, keywords, internal date, modseq)
    1: (FLAG_SEEN, (), DAY0 + 86400 + 16200, 10),  # 3 Jun 04:30 UTC
    2: (FLAG_ANSWERED | FLAG_FLAGGED, ("$Important",), DAY0 + 86399, 20),  # 2 Jun 23:59:59 UTC
    5: (FLAG_DELETED | FLAG_DRAFT, (), DAY0 + 2 * 86400, 30),  # 4 Jun 00:00:00 UTC
    7: (0, ("Work", "$label1"), DAY0 - 3 * 86400 + 43200, 40),  # 30 May 12:00 UTC
}
RECENT = {5, 7}


def info(uid: int) -> MessageInfo:
    cols = parse_message(RAW[uid]).to_json()
    size = cols.pop("size")
    flags, keywords, internal, modseq = STATE[uid]
    return MessageInfo(id=uid, mailbox_id=1, uid=uid, modseq=modseq, flags=flags, keywords=keywords,
                       internal_date=float(internal), size=size, blob_id=str(uid), thread_id=0, **cols)


MSGS = [info(uid) for uid in sorted(RAW)]
SEQ = {m.uid: i + 1 for i, m in enumerate(MSGS)}


def keys(text: bytes | str) -> k.SearchKey:
    """The key tree of ``SEARCH <text>`` from the command parser (literals accepted)."""
    if isinstance(text, str):
        text = text.encode()
    reader = ImapReader(stream_commands=())
    frames = []
    pending = [b"t SEARCH " + text + b"\r\n"]
    while pending:
        for event in reader.feed(pending.pop()):
            if isinstance(event, LiteralAnnounced):
                reader.accept_literal()
                pending.append(b"")
            elif isinstance(event, CommandReady):
                frames.append(event.frame)
    return parse_command(frames[0]).keys


def text_of(msg):
    return message_text(RAW[msg.uid], getattr(msg, "bodystructure", None))


def run(text, messages=MSGS, **kw) -> list[int]:
    args = dict(seq_of=SEQ, max_uid=7, max_seq=4, recent_uids=RECENT, now=NOW, text_of=text_of)
    args.update(kw)
    return search(keys(text), messages, **args)


CASES = [
    ("ALL", [1, 2, 5, 7]),
    # flags (RFC 9051 6.4.4)
    ("SEEN", [1]),
    ("UNSEEN", [2, 5, 7]),
    ("ANSWERED", [2]),
    ("UNANSWERED", [1, 5, 7]),
    ("FLAGGED", [2]),
    ("UNFLAGGED", [1, 5, 7]),
    ("DELETED", [5]),
    ("UNDELETED", [1, 2, 7]),
    ("DRAFT", [5]),
    ("UNDRAFT", [1, 2, 7]),
    ("RECENT", [5, 7]),
    ("OLD", [1, 2]),
    ("NEW", [5, 7]),
    ("KEYWORD $important", [2]),
    ("KEYWORD $LABEL1", [7]),
    ("UNKEYWORD work", [1, 2, 5]),
    ("KEYWORD $nothing", []),
    ("UNKEYWORD $nothing", [1, 2, 5, 7]),
    ("SEEN UNSEEN", []),
    # UID and sequence sets; "*" is the largest UID / sequence number (RFC 3501 9)
    ("UID 2:5", [2, 5]),
    ("UID 5:*", [5, 7]),
    ("UID *", [7]),
    ("UID 8:*", [7]),
    ("UID 3:4", []),
    ("UID 1,7", [1, 7]),
    ("UID 7:1", [1, 2, 5, 7]),
    ("2:3", [2, 5]),
    ("*", [7]),
    ("3:*", [5, 7]),
    ("4:2", [2, 5, 7]),
    ("5:*", [7]),
    ("1,4", [1, 7]),
    # internal dates: calendar dates in UTC
    ("BEFORE 3-Jun-2025", [2, 7]),
    ("BEFORE 4-Jun-2025", [1, 2, 7]),
    ("ON 2-Jun-2025", [2]),
    ("ON 3-Jun-2025", [1]),
    ('ON "4-Jun-2025"', [5]),
    ("SINCE 3-Jun-2025", [1, 5]),
    ("SINCE 4-Jun-2025", [5]),
    ("SINCE 5-Jun-2025", []),
    # sent dates: the date as written, in the message's own zone; no/bad Date: the internal date
    ("SENTON 2-Jun-2025", [1]),
    ("SENTON 3-Jun-2025", [2]),
    ("SENTON 4-Jun-2025", [5]),
    ("SENTON 30-May-2025", [7]),
    ("SENTBEFORE 3-Jun-2025", [1, 7]),
    ("SENTSINCE 3-Jun-2025", [2, 5]),
    ("NOT SENTON 3-Jun-2025", [1, 5, 7]),
    # sizes: strictly larger / smaller
    ("LARGER 0", [1, 2, 5, 7]),
    ("SMALLER 1", []),
    # address headers: name, address, comments, groups
    ("FROM john", [1]),
    ('FROM "smith, john"', [1]),
    ("FROM JOHN.SMITH@EXAMPLE.COM", [1]),
    ("FROM comment", [1]),
    ("FROM example.net", [2]),
    ("FROM noreply@shop", [5]),
    ("TO john", [2]),
    ("TO team", [1]),
    ("TO undisclosed", [5]),
    ("CC ann", [1]),
    ("CC ANN@EXAMPLE.NET", [1]),
    ("BCC secret", [2]),
    ('BCC ""', [2]),
    ('CC ""', [1]),
    # subject: RFC 2047 decoded and raw, unfolded
    (b"CHARSET UTF-8 SUBJECT {7}\r\ngr\xc3\xbc\xc3\x9fe", [1]),
    (b"CHARSET UTF-8 SUBJECT {5}\r\nk\xc3\xb6ln", [1]),
    ('SUBJECT "=?utf-8?q?"', [1]),
    ("SUBJECT quarterly", [2]),
    ('SUBJECT "Quarterly numbers"', [2]),  # folding white space counts as one space
    ('SUBJECT "quarterly   numbers"', [2]),
    ('SUBJECT "re:"', [2]),
    ("SUBJECT order", [5]),
    # HEADER: any field; "" means the field exists
    ("HEADER X-Priority 1", [1]),
    ('HEADER X-PRIORITY ""', [1]),
    ('HEADER x-empty ""', [7]),
    ('HEADER x-missing ""', []),
    ('NOT HEADER date ""', [5]),
    ("HEADER Date 2025", [1, 2]),
    # BODY: decoded text of the text parts; TEXT: header or body
    (b"CHARSET UTF-8 BODY {5}\r\ncaf\xc3\xa9", [1]),
    ("BODY offen", [1]),
    ('BODY "ist offen"', [1]),  # across a soft line break
    ("BODY budget", [2]),
    ("BODY SPREADSHEET", [2]),
    ("BODY approved", [2]),
    ("BODY 12345", [5]),
    ("BODY john", []),
    ("TEXT john", [1, 2]),
    ("TEXT x-priority", [1]),
    ("TEXT budget", [2]),
    ("TEXT nothing", [7]),
    # boolean structure
    ("NOT SEEN", [2, 5, 7]),
    ("OR SEEN DELETED", [1, 5]),
    ("OR FROM john BODY 12345", [1, 5]),
    ("NOT OR SEEN FLAGGED", [5, 7]),
    ("(SEEN) UID 1:2", [1]),
    ("OR (UID 1 SUBJECT weekly) NOT DRAFT", [1, 2, 7]),
    ("(OR UID 1 (UID 2 FLAGGED)) (NOT NOT SEEN)", [1]),
    ("NOT (UID 1:2 NOT ANSWERED)", [2, 5, 7]),
    # MODSEQ n: mod-sequence n or higher (RFC 7162 3.1.5)
    ("MODSEQ 20", [2, 5, 7]),
    ('MODSEQ "/flags/\\\\seen" all 30', [5, 7]),
    ("MODSEQ 41", []),
    # OLDER / YOUNGER (RFC 5032), now = 5 Jun 00:00 UTC
    ("OLDER 86400", [1, 2, 5, 7]),
    ("OLDER 86401", [1, 2, 7]),
    ("YOUNGER 86400", []),
    ("YOUNGER 86401", [5]),
    ("YOUNGER 450000", [1, 2, 5]),
    ("YOUNGER 500000", [1, 2, 5, 7]),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[str(c[0]) for c in CASES])
def test_search_key(text, expected):
    assert run(text) == expected


@pytest.mark.parametrize("uid", sorted(RAW))
def test_larger_and_smaller_are_strict(uid):
    size = next(m.size for m in MSGS if m.uid == uid)
    assert uid not in run(f"LARGER {size}") and uid in run(f"LARGER {size - 1}")
    assert uid not in run(f"SMALLER {size}") and uid in run(f"SMALLER {size + 1}")


def test_result_is_ascending_uids_whatever_the_input_order():
    assert run("ALL", messages=list(reversed(MSGS))) == [1, 2, 5, 7]


def test_seq_of_may_be_a_callable_or_absent():
    assert run("2:3", seq_of=SEQ.__getitem__) == [2, 5]
    assert run("2:3", seq_of=None) == [2, 5]  # messages in sequence order


def test_empty_mailbox():
    assert run("ALL", messages=[], max_uid=0, max_seq=0) == []
    assert run("*", messages=[], max_uid=0, max_seq=0) == []


# ------------------------------------------------------------------------------------------------- lazy loading

def test_body_text_is_loaded_only_for_candidates_the_cheap_keys_left():
    calls = []

    def counting(msg):
        calls.append(msg.uid)
        return text_of(msg)

    # BODY is written first but runs last (cheap-first evaluation)
    assert run("BODY offen UID 1:2 SEEN", text_of=counting) == [1]
    assert calls == [1]
    calls.clear()
    assert run("OR SEEN BODY 12345", text_of=counting) == [1, 5]
    assert sorted(calls) == [2, 5, 7]  # message 1 matched SEEN already
    calls.clear()
    assert run("NOT DELETED BODY zzz TEXT zzz", text_of=counting) == []
    assert calls == [1, 2, 7]  # once per message, though two keys need the text


def test_header_keys_use_header_of_when_given():
    headers = []

    def header_of(msg):
        headers.append(msg.uid)
        raw = RAW[msg.uid]
        return raw[: raw.index(b"\r\n\r\n") + 4]

    def no_text(msg):
        raise AssertionError("body loaded for a header search")

    assert run("FROM john", text_of=no_text, header_of=header_of) == [1]
    assert run("UNSEEN SUBJECT weekly", text_of=no_text, header_of=header_of) == [7]
    assert headers == [1, 2, 5, 7, 2, 5, 7]


def test_sent_dates_of_metadata_only_messages_come_from_the_header():
    metas = [MessageMeta(uid=m.uid, modseq=m.modseq, flags=m.flags, keywords=m.keywords, size=m.size,
                         internal_date=m.internal_date) for m in MSGS]
    assert run("SENTON 2-Jun-2025", messages=metas) == [1]
    assert run("SENTON 30-May-2025", messages=metas) == [7]


def test_missing_loaders_are_reported():
    with pytest.raises(SearchError):
        run("BODY x", text_of=None)
    with pytest.raises(SearchError):
        run("YOUNGER 5", now=None)
    # the cheap keys need no loader
    assert run("UID 1 SEEN", text_of=None) == [1]


def test_uses_modseq():
    assert uses_modseq(keys("MODSEQ 5"))
    assert uses_modseq(keys("SEEN NOT (OR UID 1 MODSEQ 5)"))
    assert not uses_modseq(keys("SEEN NOT (OR UID 1 FLAGGED)"))


# ----------------------------------------------------------------------------------------------- speed at scale

def test_flag_and_uid_searches_over_100000_messages():
    """Metadata keys over 100,000 MessageMeta run without loading anything and give sorted UIDs (their speed is
    measured by scripts/bench/parsers.py, not here: a timing assertion fails on a loaded machine)."""
    metas, programs = search_scale_fixture()
    n = len(metas)
    max_uid = metas[-1].uid
    for program in programs.values():
        found = search(program, metas, max_uid=max_uid, max_seq=n, recent_uids=set(), now=NOW)
        assert found == sorted(found)
    assert len(search(k.UidKey(SeqSet.parse("1:*")), metas, max_uid=max_uid, max_seq=n)) == n
    assert search(k.UidKey(SeqSet.parse("5000:5004")), metas, max_uid=max_uid, max_seq=n) == [5001, 5003]


def search_scale_fixture(n: int = 100_000):
    """100,000 MessageMeta and the metadata-only search programs (shared with scripts/bench/parsers.py)."""
    rnd = random.Random(5)
    metas = [MessageMeta(uid=i * 2 + 1, modseq=i + 1, flags=rnd.randrange(32), keywords=("$x",) if i % 9 == 0 else (),
                         size=1000 + i, internal_date=float(DAY0 + i)) for i in range(n)]
    programs = {
        "UNSEEN": k.FlagKey("\\Seen", False),
        "SEEN FLAGGED": k.And((k.FlagKey("\\Seen"), k.FlagKey("\\Flagged"))),
        "UID 1:*": k.UidKey(SeqSet.parse("1:*")),
        "UID 5000:6000,90000:*": k.UidKey(SeqSet.parse("5000:6000,90000:*")),
        "NOT DELETED": k.Not(k.FlagKey("\\Deleted")),
        "KEYWORD $X": k.FlagKey("$X"),
        "OR SEEN 1:100": k.Or(k.FlagKey("\\Seen"), k.SeqKey(SeqSet.parse("1:100"))),
    }
    return metas, programs


# --------------------------------------------------------------------------------------------------- responses

def test_search_response():
    assert search_response([]) == b"* SEARCH\r\n"
    assert search_response([1, 5, 9]) == b"* SEARCH 1 5 9\r\n"
    assert search_response([1, 5], highest_modseq=40) == b"* SEARCH 1 5 (MODSEQ 40)\r\n"  # RFC 7162 3.1.5
    assert search_response([], highest_modseq=40) == b"* SEARCH\r\n"


MODSEQS = {2: 20, 5: 50, 7: 30}


@pytest.mark.parametrize(
    "uid, options, kw, expected",
    [
        (False, (), {}, b'* ESEARCH (TAG "A1") ALL 2:4'),
        (True, (), {}, b'* ESEARCH (TAG "A1") UID ALL 2,5,7'),
        (False, ("MIN", "MAX", "COUNT"), {}, b'* ESEARCH (TAG "A1") MIN 2 MAX 4 COUNT 3'),
        (True, ("COUNT", "MIN"), {}, b'* ESEARCH (TAG "A1") UID COUNT 3 MIN 2'),
        (True, ("ALL", "ALL"), {}, b'* ESEARCH (TAG "A1") UID ALL 2,5,7'),
        # RFC 7162 3.1.5: MODSEQ of the reported messages: MIN/MAX only, or all of them
        (True, ("MIN",), {"modseq_of": MODSEQS.__getitem__}, b'* ESEARCH (TAG "A1") UID MIN 2 MODSEQ 20'),
        (True, ("MAX",), {"modseq_of": MODSEQS.__getitem__}, b'* ESEARCH (TAG "A1") UID MAX 7 MODSEQ 30'),
        (False, ("MIN", "MAX"), {"modseq_of": MODSEQS.__getitem__}, b'* ESEARCH (TAG "A1") MIN 2 MAX 4 MODSEQ 30'),
        (False, ("COUNT",), {"modseq_of": MODSEQS.__getitem__}, b'* ESEARCH (TAG "A1") COUNT 3 MODSEQ 50'),
        (True, (), {"modseq_of": MODSEQS.__getitem__}, b'* ESEARCH (TAG "A1") UID ALL 2,5,7 MODSEQ 50'),
        # RFC 5267 PARTIAL: positions in the result
        (False, ("COUNT",), {"partial": (1, 2)}, b'* ESEARCH (TAG "A1") COUNT 3 PARTIAL (1:2 2:3)'),
        (True, ("COUNT",), {"partial": (3, 2)}, b'* ESEARCH (TAG "A1") UID COUNT 3 PARTIAL (2:3 5,7)'),
        (True, ("COUNT",), {"partial": (4, 9)}, b'* ESEARCH (TAG "A1") UID COUNT 3 PARTIAL (4:9 NIL)'),
    ],
)
def test_esearch_response(uid, options, kw, expected):
    out = esearch_response("A1", uid, [7, 2, 5], options, seq_numbers=[2, 3, 4], **kw)
    assert out == expected + b"\r\n"


@pytest.mark.parametrize(
    "uid, options, expected",
    [
        (False, (), b'* ESEARCH (TAG "A1")'),
        (False, ("MIN", "MAX"), b'* ESEARCH (TAG "A1")'),
        (False, ("COUNT",), b'* ESEARCH (TAG "A1") COUNT 0'),  # RFC 4731 3.1
        (True, ("ALL",), b'* ESEARCH (TAG "A1") UID'),
        (True, ("COUNT", "MAX"), b'* ESEARCH (TAG "A1") UID COUNT 0'),
    ],
)
def test_esearch_response_without_matches(uid, options, expected):
    out = esearch_response("A1", uid, [], options, seq_numbers=[], modseq_of=MODSEQS.__getitem__)
    assert out == expected + b"\r\n"


def test_esearch_needs_sequence_numbers_for_plain_search():
    with pytest.raises(ValueError):
        esearch_response("A1", False, [1], ())


def test_esearch_tag_is_quoted():
    assert esearch_response('a"b', True, [1], ("MIN",)) == b'* ESEARCH (TAG "a\\"b") UID MIN 1\r\n'
