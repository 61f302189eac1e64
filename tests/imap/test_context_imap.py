"""RFC 5267 CONTEXT=SEARCH / CONTEXT=SORT through a real IMAP listener: PARTIAL results, UPDATE contexts told by
ADDTO/REMOVEFROM as this and other sessions change the mailbox (in the RFC 9051 7.4.1 order: REMOVEFROM before the
EXPUNGE, ADDTO after the EXISTS), in IDLE, CANCELUPDATE, NOUPDATE and the end of the selection; with imaplib and
with a raw line client that shows the exact bytes."""

from __future__ import annotations

import imaplib
import re

import pytest

from mailserver.imap.context import MAX_UPDATE_CONTEXTS
from tests.imap.imap_client import Raw, imap_server, login, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-context"), listeners=("imap",)) as s:
        yield s


def _mailbox(srv, subjects):
    user = new_user(srv)
    for i, subject in enumerate(subjects):
        srv.deliver(user, message(subject, f"body number {i + 1}"))
    return user


def _session(srv, user) -> Raw:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    assert raw.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
    return raw


def _untagged(lines, prefix=b"* ESEARCH"):
    return [ln for ln in lines if ln.startswith(prefix)]


def _append(raw: Raw, msg: bytes, flags: str = "") -> None:
    raw.send(b"A APPEND INBOX %s{%d+}\r\n" % ((f"({flags}) " if flags else "").encode(), len(msg)) + msg + b"\r\n")
    assert raw.until(b"A")[-1].startswith(b"A OK")


def test_capabilities_are_advertised(srv):
    c = login(srv, new_user(srv))
    try:
        typ, data = c.capability()  # after LOGIN (imaplib keeps the greeting's list)
        caps = set(data[0].decode().split())
        assert {"ESEARCH", "ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT", "SORT", "SORT=DISPLAY"} <= caps
    finally:
        c.logout()


def test_partial_with_imaplib(srv):
    """RFC 5267 4.4: PARTIAL ranges count from 1 in the (mailbox- or sort-ordered) result; beyond the end is NIL."""
    user = _mailbox(srv, ["c", "a", "d", "b", "e"])
    c = login(srv, user, select="INBOX")
    try:
        def esearch(*args):
            typ, _ = c._simple_command(*args)
            assert typ == "OK"
            return c.untagged_responses.pop("ESEARCH")[-1]

        tag = rb'\(TAG "[A-Z0-9]+"\)'

        assert re.fullmatch(tag + rb" PARTIAL \(2:4 2:4\)", esearch("SEARCH", "RETURN", "(PARTIAL 4:2)", "ALL"))
        assert re.fullmatch(tag + rb" COUNT 5 PARTIAL \(4:9 4:5\)",
                            esearch("SEARCH", "RETURN", "(COUNT PARTIAL 4:9)", "ALL"))
        assert re.fullmatch(tag + rb" PARTIAL \(6:6 NIL\)", esearch("SEARCH", "RETURN", "(PARTIAL 6:6)", "ALL"))
        # SORT: the window is taken from the sorted result (subjects a b c d e are messages 2 4 1 3 5, UIDs too).
        assert re.fullmatch(tag + rb" PARTIAL \(2:4 4,1,3\)",
                            esearch("SORT", "RETURN", "(PARTIAL 2:4)", "(SUBJECT)", "UTF-8", "ALL"))
        assert re.fullmatch(tag + rb" UID PARTIAL \(4:5 3,5\)",
                            esearch("UID", "SORT", "RETURN", "(PARTIAL 5:4)", "(SUBJECT)", "UTF-8", "ALL"))
        with pytest.raises(imaplib.IMAP4.error):
            c._simple_command("SEARCH", "RETURN", "(PARTIAL 1:*)", "ALL")
        with pytest.raises(imaplib.IMAP4.error):
            c._simple_command("SEARCH", "RETURN", "(ALL PARTIAL 1:2)", "ALL")
    finally:
        c.logout()


def test_updates_from_own_store_expunge_and_append(srv):
    """The steps of imaptest's search-context-update, with the exact bytes: ADDTO/REMOVEFROM come with the STORE's
    FETCHes, the REMOVEFROM of an expunged message before its EXPUNGE (sequence numbers still valid), the ADDTO of
    an appended message after its EXISTS; after CANCELUPDATE nothing more."""
    user = _mailbox(srv, ["m1", "m2", "m3", "m4", "m5"])
    a = _session(srv, user)
    try:
        out = a.cmd("B01", "SEARCH RETURN (UPDATE) BODY body SEEN")
        assert out == [b'* ESEARCH (TAG "B01")\r\n', b"B01 OK SEARCH completed\r\n"]
        out = a.cmd("x", "STORE 1,2,4 +FLAGS (\\Seen)")
        assert out[3:] == [b'* ESEARCH (TAG "B01") ADDTO (0 1:2,4)\r\n', b"x OK STORE completed\r\n"]
        out = a.cmd("x", "STORE 1,2 -FLAGS.SILENT (\\Seen)")
        assert out == [b'* ESEARCH (TAG "B01") REMOVEFROM (0 1:2)\r\n', b"x OK STORE completed\r\n"]
        a.cmd("x", "STORE 3:5 +FLAGS.SILENT (\\Deleted)")
        out = a.cmd("x", "EXPUNGE")
        assert out == [b'* ESEARCH (TAG "B01") REMOVEFROM (0 4)\r\n', b"* 5 EXPUNGE\r\n", b"* 4 EXPUNGE\r\n",
                       b"* 3 EXPUNGE\r\n", b"x OK EXPUNGE completed\r\n"]
        msg = message("appended", "a body too")
        a.send(b"x APPEND INBOX (\\Seen) {%d+}\r\n" % len(msg) + msg + b"\r\n")
        out = a.until(b"x")
        assert out[0] == b"* 3 EXISTS\r\n"
        assert out.index(b'* ESEARCH (TAG "B01") ADDTO (0 3)\r\n') > 0
        assert a.cmd("c", 'CANCELUPDATE "B01"') == [b"c OK no further updates\r\n"]
        assert _untagged(a.cmd("x", "STORE 1 +FLAGS (\\Seen)")) == []
        assert a.cmd("c", 'CANCELUPDATE "B01"')[-1].startswith(b"c NO ")
    finally:
        a.close()


def test_changes_by_another_session_reach_uid_and_sequence_contexts(srv):
    """Another session's flag changes, APPEND and EXPUNGE reach both kinds of context at the next command; the
    sequence-number context is told in the numbering the client has at that point in the stream."""
    user = _mailbox(srv, ["m1", "m2", "m3", "m4"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        uids = [int(ln.split(b"UID ")[1].split(b")")[0]) for ln in a.cmd("f", "FETCH 1:* (UID)")[:-1]]
        a.cmd("S1", "SEARCH RETURN (UPDATE ALL) UNSEEN")
        a.cmd("U1", "UID SEARCH RETURN (UPDATE) UNSEEN")
        b.cmd("x", "STORE 2 +FLAGS.SILENT (\\Seen)")
        out = _untagged(a.cmd("n", "NOOP"))
        assert out == [b'* ESEARCH (TAG "S1") REMOVEFROM (0 2)\r\n',
                       b'* ESEARCH (TAG "U1") UID REMOVEFROM (0 %d)\r\n' % uids[1]]
        b.cmd("x", "STORE 3 +FLAGS.SILENT (\\Deleted)")
        b.cmd("x", "EXPUNGE")
        _append(b, message("new"))
        out = a.cmd("n", "NOOP")
        assert out[:2] == [b'* ESEARCH (TAG "S1") REMOVEFROM (0 3)\r\n',
                           b'* ESEARCH (TAG "U1") UID REMOVEFROM (0 %d)\r\n' % uids[2]]
        assert out[2] == b"* 3 EXPUNGE\r\n" and out[3] == b"* 4 EXISTS\r\n"
        new_uid = int(a.cmd("f", "FETCH 4 (UID)")[0].split(b"UID ")[1].split(b")")[0])
        assert b'* ESEARCH (TAG "S1") ADDTO (0 4)\r\n' in out and \
            b'* ESEARCH (TAG "U1") UID ADDTO (0 %d)\r\n' % new_uid in out
        assert out.index(b'* ESEARCH (TAG "S1") ADDTO (0 4)\r\n') > out.index(b"* 4 EXISTS\r\n")
    finally:
        a.close()
        b.close()


def test_no_expunge_while_searching_so_removefrom_waits_too(srv):
    """RFC 9051 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH; the REMOVEFROM of a sequence-number
    context waits with it, and both come at the next command that may carry them."""
    user = _mailbox(srv, ["m1", "m2", "m3"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        a.cmd("S1", "SEARCH RETURN (UPDATE) ALL")
        b.cmd("x", "STORE 2 +FLAGS.SILENT (\\Deleted)")
        b.cmd("x", "EXPUNGE")
        out = a.cmd("f", "FETCH 1:3 (FLAGS)")
        assert _untagged(out) == [] and not any(ln.endswith(b" EXPUNGE\r\n") for ln in out)
        assert b"[EXPUNGEISSUED]" in out[-1]  # RFC 9051 7.1: an expunge is waiting to be told
        out = a.cmd("n", "NOOP")
        assert out[:2] == [b'* ESEARCH (TAG "S1") REMOVEFROM (0 2)\r\n', b"* 2 EXPUNGE\r\n"]
    finally:
        a.close()
        b.close()


def test_sort_context_positions(srv):
    """CONTEXT=SORT: messages join and leave a sorted result at their place in the requested order."""
    user = _mailbox(srv, ["delta", "bravo", "foxtrot"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        out = a.cmd("R1", "SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) UTF-8 UNDELETED")
        assert out[0] == b'* ESEARCH (TAG "R1") ALL 3,1:2\r\n'  # foxtrot delta bravo
        _append(b, message("echo"))
        _append(b, message("alpha"))
        _append(b, message("charlie"))
        out = a.cmd("n", "NOOP")
        # foxtrot echo(4) delta charlie(6) bravo alpha(5)
        assert _untagged(out) == [b'* ESEARCH (TAG "R1") ADDTO (2 4 4 6 6 5)\r\n']
        b.cmd("x", "STORE 4,1 +FLAGS.SILENT (\\Deleted)")
        out = a.cmd("n", "NOOP")
        assert _untagged(out) == [b'* ESEARCH (TAG "R1") REMOVEFROM (2 4,1)\r\n']
        out = a.cmd("R2", "SORT RETURN (ALL) (REVERSE SUBJECT) UTF-8 UNDELETED")
        assert out[0] == b'* ESEARCH (TAG "R2") ALL 3,6,2,5\r\n'
    finally:
        a.close()
        b.close()


def test_content_search_context_sees_new_messages(srv):
    """A program that reads message text (BODY, HEADER) is evaluated on the new message's content."""
    user = _mailbox(srv, ["m1"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        a.cmd("B1", "UID SEARCH RETURN (UPDATE COUNT) BODY needle")
        a.cmd("B2", 'SEARCH RETURN (UPDATE) HEADER X-Tag "urgent"')
        _append(b, message("one", "there is a needle here"))
        _append(b, message("two", "nothing", extra="X-Tag: urgent\r\n"))
        out = _untagged(a.cmd("n", "NOOP"))
        assert len(out) == 2
        assert out[0].startswith(b'* ESEARCH (TAG "B1") UID ADDTO (0 ')
        assert out[1] == b'* ESEARCH (TAG "B2") ADDTO (0 3)\r\n'
    finally:
        a.close()
        b.close()


def test_sequence_numbers_in_the_program_are_fixed_when_it_runs(srv):
    """RFC 5267 4.3: "1:2" names the messages that were 1 and 2 when the command came, for as long as it lives."""
    user = _mailbox(srv, ["m1", "m2", "m3"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        assert a.cmd("S1", "SEARCH RETURN (UPDATE ALL) 2:3 FLAGGED")[0] == b'* ESEARCH (TAG "S1")\r\n'
        b.cmd("x", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        b.cmd("x", "EXPUNGE")
        a.cmd("n", "NOOP")  # old 2 and 3 are now 1 and 2
        b.cmd("x", "STORE 1:2 +FLAGS.SILENT (\\Flagged)")
        assert _untagged(a.cmd("n", "NOOP")) == [b'* ESEARCH (TAG "S1") ADDTO (0 1:2)\r\n']
        _append(b, message("new"), "\\Flagged")
        assert _untagged(a.cmd("n", "NOOP")) == []
    finally:
        a.close()
        b.close()


def test_updates_arrive_in_idle(srv):
    user = _mailbox(srv, ["m1", "m2"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        a.cmd("F1", "UID SEARCH RETURN (UPDATE) FLAGGED")
        a.send(b"I IDLE\r\n")
        assert a.line() == b"+ idling\r\n"
        b.cmd("x", "STORE 2 +FLAGS (\\Flagged)")
        assert a.line().startswith(b"* 2 FETCH (FLAGS (\\Flagged")
        assert a.line().startswith(b'* ESEARCH (TAG "F1") UID ADDTO (0 ')
        a.send(b"DONE\r\n")
        assert a.until(b"I")[-1].startswith(b"I OK")
    finally:
        a.close()
        b.close()


def test_tag_reuse_noupdate_and_end_of_selection(srv):
    """RFC 5267 4.3: a live updating tag cannot be reused (BAD); 4.3.1: past the limit, * NO [NOUPDATE "tag"] and
    the other return options still answered; updates end with the selection."""
    user = _mailbox(srv, ["m1", "m2"])
    a, b = _session(srv, user), _session(srv, user)
    try:
        a.cmd("B01", "UID SEARCH RETURN (UPDATE) SEEN")
        assert a.cmd("B01", "SORT RETURN (UPDATE) (ARRIVAL) UTF-8 FLAGGED") == [
            b"B01 BAD tag already names an updating search (RFC 5267 4.3)\r\n"]
        for i in range(MAX_UPDATE_CONTEXTS - 1):
            assert _untagged(a.cmd(f"U{i}", "SEARCH RETURN (UPDATE) SEEN"), b"* NO") == []
        out = a.cmd("Z", "SEARCH RETURN (UPDATE COUNT) SEEN")
        assert out == [b'* ESEARCH (TAG "Z") COUNT 0\r\n', b'* NO [NOUPDATE "Z"] too many updating searches\r\n',
                       b"Z OK SEARCH completed\r\n"]
        assert a.cmd("c", 'CANCELUPDATE "U0" "U1"')[-1] == b"c OK no further updates\r\n"
        assert _untagged(a.cmd("Z2", "SEARCH RETURN (UPDATE) SEEN"), b"* NO") == []
        b.cmd("x", "STORE 1 +FLAGS.SILENT (\\Seen)")
        assert len(_untagged(a.cmd("n", "NOOP"))) == MAX_UPDATE_CONTEXTS - 1  # B01, U2..U8, Z2
        a.cmd("u", "UNSELECT")
        a.cmd("S", "SELECT INBOX")
        b.cmd("x", "STORE 2 +FLAGS.SILENT (\\Seen)")
        assert _untagged(a.cmd("n", "NOOP")) == []
        assert a.cmd("B01", "SEARCH RETURN (UPDATE) SEEN")[-1].startswith(b"B01 OK")  # the tag is free again
        assert a.cmd("c", 'CANCELUPDATE "U5"')[-1].startswith(b"c NO ")
    finally:
        a.close()
        b.close()


def test_cancelupdate_needs_a_selected_mailbox(srv):
    a = Raw(srv.port("imap"))
    try:
        a.login(new_user(srv))
        assert a.cmd("c", 'CANCELUPDATE "x"')[-1].startswith(b"c BAD ")
    finally:
        a.close()
