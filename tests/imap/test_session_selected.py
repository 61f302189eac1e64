"""IMAP selected-state commands over real sockets: SELECT/EXAMINE responses, FETCH items, STORE (+ UNCHANGEDSINCE),
COPY/MOVE with COPYUID, EXPUNGE / UID EXPUNGE, CLOSE, UNSELECT, SEARCH/ESEARCH, SORT, CONDSTORE/QRESYNC, IDLE."""

from __future__ import annotations

import re

import pytest

from tests.imap.imap_client import Raw, imap_server, login, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-sel")) as s:
        yield s


def _mailbox(srv, n=3, **kw):
    user = new_user(srv, **kw)
    for i in range(n):
        srv.deliver(user, message(f"subject {i}", body=f"body number {i}", sender=f"s{i}@example.org"))
    return user


def _raw(srv, user, select="INBOX"):
    raw = Raw(srv.port("imap"))
    raw.login(user)
    if select:
        out = raw.cmd("S", f"SELECT {select}")
        assert out[-1].startswith(b"S OK"), out
    return raw


def test_select_responses(srv):
    """SELECT sends FLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS with \\*, HIGHESTMODSEQ."""
    user = _mailbox(srv, 3)
    raw = _raw(srv, user, select=None)
    out = b"".join(raw.cmd("a", "SELECT INBOX"))
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in out
    assert b"* 3 EXISTS" in out and b"* 3 RECENT" in out
    assert b"[UNSEEN 1]" in out and b"[UIDVALIDITY " in out and b"[UIDNEXT 4]" in out
    assert b"PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)" in out
    assert b"[HIGHESTMODSEQ " in out and b"a OK [READ-WRITE]" in out
    # \Recent goes to one session only (RFC 3501 2.3.2).
    raw2 = _raw(srv, user, select=None)
    out = b"".join(raw2.cmd("b", "EXAMINE INBOX"))
    assert b"* 0 RECENT" in out and b"b OK [READ-ONLY]" in out
    assert b"PERMANENTFLAGS ()" in out
    raw.close()
    raw2.close()


def test_select_missing_and_reselect_closed(srv):
    user = _mailbox(srv, 1)
    raw = _raw(srv, user)
    out = raw.cmd("a", "SELECT Nope")
    assert out[-1].startswith(b"a NO [NONEXISTENT]")
    assert out[0].startswith(b"* OK [CLOSED]")
    assert raw.cmd("b", "FETCH 1 FLAGS")[-1].startswith(b"b BAD")  # back in authenticated state
    raw.close()


def test_reselect_closed_leaves_with_the_answer(srv):
    # The [CLOSED] line is held until the new mailbox's answer is ready and leaves in the same write (one
    # segment on loopback): the bytes and their order are what they were.
    user = _mailbox(srv, 2)
    raw = _raw(srv, user)
    for readonly in (False, True):
        assert raw.buf == b""
        raw.send(b"a EXAMINE INBOX\r\n" if readonly else b"a SELECT INBOX\r\n")
        first = raw.sock.recv(65536)
        assert first.startswith(b"* OK [CLOSED] previous mailbox closed\r\n"), first
        assert re.search(rb"\r\na OK \[READ-(WRITE|ONLY)\] (SELECT|EXAMINE) completed\r\n$", first), first
    raw.send(b"b SELECT Nope\r\n")
    first = raw.sock.recv(65536)
    assert first.startswith(b"* OK [CLOSED]") and b"\r\nb NO [NONEXISTENT]" in first, first
    raw.close()


def test_rev2_select_has_no_recent(srv):
    user = _mailbox(srv, 1)
    raw = _raw(srv, user, select=None)
    raw.cmd("e", "ENABLE IMAP4rev2")
    out = b"".join(raw.cmd("a", "SELECT INBOX"))
    assert b"RECENT" not in out and b"[UNSEEN" not in out and b'* LIST () "/" "INBOX"' in out
    raw.close()


def test_fetch_items(srv):
    user = _mailbox(srv, 2)
    c = login(srv, user, select="INBOX")
    typ, data = c.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)")
    head = data[0] if isinstance(data[0], bytes) else data[0][0]
    assert b"UID 1" in head and b"ENVELOPE (" in head and b'"subject 0"' in head and b'BODYSTRUCTURE ("text" "plain"' in head
    typ, data = c.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.4>)")
    assert data[0][1] == b"Subject: subject 1\r\n\r\n"
    assert data[1][1] == b"body"
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0]  # PEEK did not set \Seen
    typ, data = c.fetch("1", "(BODY[TEXT])")
    assert b"\\Seen" in data[0][0] or b"\\Seen" in data[1]  # RFC 3501 6.4.5: FLAGS comes along
    typ, data = c.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
    assert len([d for d in data if d]) == 2 and b"UID" in data[0]
    typ, data = c.fetch("1", "(BINARY.SIZE[1] RFC822.HEADER)")
    assert typ == "OK"
    c.logout()


def test_fetch_bad_sequence_numbers(srv):
    user = _mailbox(srv, 2)
    raw = _raw(srv, user)
    assert raw.cmd("a", "FETCH 5 FLAGS")[-1].startswith(b"a BAD")
    out = raw.cmd("b", "UID FETCH 100:200 FLAGS")
    assert out == [b"b OK UID FETCH completed\r\n"]
    out = raw.cmd("c", "UID FETCH 100:* FLAGS")
    assert out[0].startswith(b"* 2 FETCH (UID 2")  # RFC 9051 6.4.8: n:* includes the highest UID
    raw.close()


def test_store_variants_and_keywords(srv):
    user = _mailbox(srv, 3)
    raw = _raw(srv, user)
    out = raw.cmd("a", "STORE 1 +FLAGS (\\Flagged $Work)")
    text = b"".join(out)
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)" in text  # new keyword announced
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Recent $Work))" in text
    out = raw.cmd("b", "STORE 1:2 FLAGS.SILENT (\\Seen)")
    assert out == [b"b OK STORE completed\r\n"]
    out = raw.cmd("c", "UID STORE 2 -FLAGS (\\Seen)")
    assert out[0] == b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n"
    assert raw.cmd("d", "STORE 1 +FLAGS (\\Bogus)")[-1].startswith(b"d BAD")
    raw.close()


def test_store_unchangedsince_modified(srv):
    """RFC 7162 3.1.3: a message changed after UNCHANGEDSINCE is left alone and reported in MODIFIED."""
    user = _mailbox(srv, 2)
    raw = _raw(srv, user)
    out = raw.cmd("a", "FETCH 1:2 (MODSEQ)")
    assert out[0].startswith(b"* OK [HIGHESTMODSEQ ")  # RFC 7162 3.1: CONDSTORE enabled while selected
    m1 = int(re.search(rb"MODSEQ \((\d+)\)", out[1]).group(1))
    raw.cmd("b", "STORE 2 +FLAGS.SILENT (\\Answered)")
    out = raw.cmd("c", f"STORE 1:2 (UNCHANGEDSINCE {m1}) +FLAGS (\\Flagged)")
    assert out[-1].startswith(b"c OK [MODIFIED 2]")
    assert any(ln.startswith(b"* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (") for ln in out)
    raw.close()


def test_copy_and_move_copyuid(srv):
    user = _mailbox(srv, 3)
    raw = _raw(srv, user)
    out = raw.cmd("a", "COPY 1:2 Archive")
    assert re.match(rb"a OK \[COPYUID \d+ 1:2 1:2\]", out[-1])
    assert raw.cmd("b", "COPY 1 Nope")[-1].startswith(b"b NO [TRYCREATE]")
    out = raw.cmd("c", "MOVE 2 Trash")
    assert re.match(rb"\* OK \[COPYUID \d+ 2 1\]", out[0])
    assert out[1] == b"* 2 EXPUNGE\r\n" and out[-1].startswith(b"c OK")
    out = raw.cmd("d", "UID MOVE 3 Trash")
    assert out[1] == b"* 2 EXPUNGE\r\n"
    assert b"MESSAGES 2" in raw.cmd("e", "STATUS Archive (MESSAGES)")[0]
    raw.close()


def test_expunge_uid_expunge_close_unselect(srv):
    user = _mailbox(srv, 4)
    raw = _raw(srv, user)
    raw.cmd("a", "STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    out = raw.cmd("b", "UID EXPUNGE 2")
    assert out[0] == b"* 2 EXPUNGE\r\n" and out[-1].startswith(b"b OK")
    out = raw.cmd("c", "EXPUNGE")
    assert sorted(out[:-1]) == [b"* 1 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"] or out[:-1] == [b"* 2 EXPUNGE\r\n",
                                                                                       b"* 1 EXPUNGE\r\n"]
    raw.cmd("d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert raw.cmd("e", "UNSELECT")[-1].startswith(b"e OK")
    assert b"MESSAGES 1" in raw.cmd("f", "STATUS INBOX (MESSAGES)")[0]  # UNSELECT does not expunge
    raw.cmd("g", "SELECT INBOX")
    out = raw.cmd("h", "CLOSE")
    assert out == [b"h OK CLOSE completed\r\n"]  # CLOSE expunges silently
    assert b"MESSAGES 0" in raw.cmd("i", "STATUS INBOX (MESSAGES)")[0]
    raw.close()


def test_examine_is_read_only(srv):
    user = _mailbox(srv, 1)
    raw = _raw(srv, user, select=None)
    raw.cmd("a", "EXAMINE INBOX")
    assert raw.cmd("b", "STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"b NO")
    assert raw.cmd("c", "EXPUNGE")[-1].startswith(b"c NO")
    raw.cmd("d", "FETCH 1 BODY[]")
    assert b"\\Seen" not in raw.cmd("e", "FETCH 1 FLAGS")[0]  # no implicit \Seen in EXAMINE
    raw.close()


def test_search_and_esearch(srv):
    user = _mailbox(srv, 5)
    raw = _raw(srv, user)
    raw.cmd("a", "STORE 2,4 +FLAGS.SILENT (\\Flagged)")
    assert raw.cmd("b", "SEARCH FLAGGED")[0] == b"* SEARCH 2 4\r\n"
    assert raw.cmd("c", "UID SEARCH UNFLAGGED")[0] == b"* SEARCH 1 3 5\r\n"
    assert raw.cmd("d", 'SEARCH SUBJECT "subject 3"')[0] == b"* SEARCH 4\r\n"
    assert raw.cmd("e", 'SEARCH BODY "number 1"')[0] == b"* SEARCH 2\r\n"
    assert raw.cmd("f", 'SEARCH FROM "s0@"')[0] == b"* SEARCH 1\r\n"
    assert raw.cmd("g", "SEARCH RETURN (MIN MAX COUNT) FLAGGED")[0] == b'* ESEARCH (TAG "g") MIN 2 MAX 4 COUNT 2\r\n'
    assert raw.cmd("h", "UID SEARCH RETURN () 2:4")[0] == b'* ESEARCH (TAG "h") UID ALL 2:4\r\n'
    assert raw.cmd("i", "SEARCH CHARSET UTF-8 TEXT world")[0].startswith(b"* SEARCH")
    assert raw.cmd("j", "SEARCH CHARSET KOI8-R ALL")[-1].startswith(b"j NO [BADCHARSET")
    out = raw.cmd("k", "SEARCH MODSEQ 1")
    assert out[0].startswith(b"* OK [HIGHESTMODSEQ ")  # RFC 7162 3.1: CONDSTORE enabled while selected
    assert re.match(rb"\* SEARCH 1 2 3 4 5 \(MODSEQ \d+\)", out[1])
    raw.close()


def test_sort(srv):
    user = new_user(srv)
    for subj, size in (("b", 10), ("a", 300), ("c", 100)):
        srv.deliver(user, message(subj, body="x" * size))
    raw = _raw(srv, user)
    assert raw.cmd("a", "SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 2 1 3\r\n"
    assert raw.cmd("b", "SORT (REVERSE SIZE) UTF-8 ALL")[0] == b"* SORT 2 3 1\r\n"
    assert raw.cmd("c", "UID SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 2 1 3\r\n"
    raw.close()


def test_condstore_fetch_changedsince_and_qresync_select(srv):
    """RFC 7162: CHANGEDSINCE; SELECT (QRESYNC ...) sends VANISHED (EARLIER) and the changed flags."""
    user = _mailbox(srv, 4)
    raw = _raw(srv, user, select=None)
    raw.cmd("a", "ENABLE QRESYNC")
    out = b"".join(raw.cmd("b", "SELECT INBOX"))
    uv = int(re.search(rb"UIDVALIDITY (\d+)", out).group(1))
    hm = int(re.search(rb"HIGHESTMODSEQ (\d+)", out).group(1))
    raw.cmd("c", "STORE 1 +FLAGS.SILENT (\\Seen)")
    raw.cmd("d", "STORE 3 +FLAGS.SILENT (\\Deleted)")
    out = raw.cmd("e", "EXPUNGE")
    assert out[0] == b"* VANISHED 3\r\n"  # QRESYNC: VANISHED instead of EXPUNGE
    out = raw.cmd("f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hm} VANISHED)")
    assert out[0] == b"* VANISHED (EARLIER) 3\r\n"
    assert out[1].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen") and b"MODSEQ" in out[1]
    raw.cmd("g", "UNSELECT")
    out = raw.cmd("h", f"SELECT INBOX (QRESYNC ({uv} {hm} 1:4))")
    text = b"".join(out)
    assert b"* VANISHED (EARLIER) 3" in text and b"* 1 FETCH (UID 1 FLAGS (\\Seen" in text
    raw.close()


def test_idle_done(srv):
    user = _mailbox(srv, 1)
    raw = _raw(srv, user)
    raw.send(b"a IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    raw.send(b"DONE\r\n")
    assert raw.until(b"a")[-1].startswith(b"a OK")
    raw.close()


def test_check_noop(srv):
    user = _mailbox(srv, 1)
    raw = _raw(srv, user)
    assert raw.cmd("a", "CHECK")[-1].startswith(b"a OK")
    assert raw.cmd("b", "NOOP")[-1].startswith(b"b OK")
    raw.close()


def test_thread(srv):
    """RFC 5256 THREAD=REFERENCES and ORDEREDSUBJECT."""
    user = new_user(srv)
    srv.deliver(user, message("topic", extra="Message-ID: <root@x>\r\n").replace(b"Message-ID: <", b"X-Old: <", 1))
    srv.deliver(user, message("Re: topic", extra="In-Reply-To: <root@x>\r\nReferences: <root@x>\r\n"))
    srv.deliver(user, message("other"))
    raw = _raw(srv, user)
    assert raw.cmd("a", "THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3)\r\n"
    assert raw.cmd("b", "THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (1 2)(3)\r\n"
    assert raw.cmd("c", "UID THREAD REFERENCES UTF-8 SUBJECT other")[0] == b"* THREAD (3)\r\n"
    raw.close()
