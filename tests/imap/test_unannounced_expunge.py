"""A message that arrives and is expunged between two updates of a session is never announced to it (RFC 9051
7.5.1, RFC 3501 7.4.1: an EXPUNGE names a message sequence number the client has; RFC 7162 3.2.10: VANISHED names
messages the client knows). Two real sessions on a real listener: one changes the mailbox, the other one looks.

imaptest's stress mode with one shared user found it: ``* 4 EXPUNGE`` sent to a session that had been told of 3
messages ("seq too high")."""

from __future__ import annotations

import pytest

from tests.imap.imap_client import Raw, imap_server, login, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-unannounced")) as s:
        yield s


def _user_with(srv, n: int) -> str:
    user = new_user(srv)
    for i in range(n):
        srv.deliver(user, message(f"m{i}"))
    return user


def _forget_untagged(c) -> None:
    """Drop what imaplib kept of earlier untagged responses (SELECT's EXISTS), so the next command's are seen."""
    c.untagged_responses.clear()


def _append_and_expunge(srv, user: str, deleted: str) -> None:
    """Session B: APPEND one message, mark ``deleted`` \\Deleted, EXPUNGE; B itself must see a consistent view."""
    b = login(srv, user, select="INBOX")
    try:
        typ, _ = b.append("INBOX", None, None, message("arrives and leaves"))
        assert typ == "OK"
        typ, _ = b.store(deleted, "+FLAGS.SILENT", "(\\Deleted)")
        assert typ == "OK"
        typ, data = b.expunge()
        assert typ == "OK"
    finally:
        b.logout()


def test_message_appended_and_expunged_meanwhile_is_never_announced(srv):
    """A (3 messages) gets only ``* 1 EXPUNGE`` for B's APPEND + STORE 1,4 \\Deleted + EXPUNGE, as Dovecot sends."""
    user = _user_with(srv, 3)
    a = login(srv, user, select="INBOX")
    try:
        _forget_untagged(a)
        _append_and_expunge(srv, user, "1,4")
        typ, _ = a.noop()
        assert typ == "OK"
        assert a.response("EXPUNGE") == ("EXPUNGE", [b"1"])
        # 3 - 1 = 2 messages: nothing new to announce, so no EXISTS (and certainly no "* 4 EXPUNGE").
        assert a.response("EXISTS") == ("EXISTS", [None])
        typ, data = a.fetch("1:*", "(UID)")
        assert typ == "OK" and data == [b"1 (UID 2)", b"2 (UID 3)"]
    finally:
        a.logout()


def test_only_the_new_message_leaves(srv):
    """When only the appended message is expunged, the other session hears nothing at all."""
    user = _user_with(srv, 2)
    a = login(srv, user, select="INBOX")
    try:
        _forget_untagged(a)
        _append_and_expunge(srv, user, "3")
        typ, _ = a.noop()
        assert typ == "OK"
        assert a.response("EXPUNGE") == ("EXPUNGE", [None])
        assert a.response("EXISTS") == ("EXISTS", [None])
        typ, data = a.search(None, "ALL")
        assert data == [b"1 2"]
    finally:
        a.logout()


def test_qresync_vanished_names_only_known_messages(srv):
    """With QRESYNC the same sequence gives ``* VANISHED 1``: the UID of the unannounced message is not in it."""
    user = _user_with(srv, 3)
    raw = Raw(srv.port("imap"))
    try:
        raw.login(user)
        assert raw.cmd("e", "ENABLE QRESYNC")[-1].startswith(b"e OK")
        assert raw.cmd("s", "SELECT INBOX")[-1].startswith(b"s OK")
        _append_and_expunge(srv, user, "1,4")
        out = raw.cmd("n", "NOOP")
        assert out[0] == b"* VANISHED 1\r\n", out
        assert not any(b"EXISTS" in line or b"EXPUNGE" in line for line in out), out
    finally:
        raw.close()


def test_idle_session_sees_each_step(srv):
    """In IDLE the session is told at once, so the new message is announced and later expunged by number."""
    user = _user_with(srv, 3)
    raw = Raw(srv.port("imap"))
    try:
        raw.login(user)
        raw.cmd("s", "SELECT INBOX")
        raw.send(b"I IDLE\r\n")
        assert raw.line() == b"+ idling\r\n"
        b = login(srv, user, select="INBOX")
        try:
            b.append("INBOX", None, None, message("arrives"))
            assert raw.line() == b"* 4 EXISTS\r\n"
            assert raw.line().endswith(b" RECENT\r\n")
            b.store("1,4", "+FLAGS.SILENT", "(\\Deleted)")
            assert raw.line().startswith(b"* 1 FETCH (FLAGS (\\Deleted")
            assert raw.line().startswith(b"* 4 FETCH (FLAGS (\\Deleted")
            b.expunge()
            assert raw.line() == b"* 4 EXPUNGE\r\n"
            assert raw.line() == b"* 1 EXPUNGE\r\n"
        finally:
            b.logout()
        raw.send(b"DONE\r\n")
        assert raw.until(b"I")[-1].startswith(b"I OK")
    finally:
        raw.close()


def test_fetch_meanwhile_defers_known_and_drops_unknown(srv):
    """A FETCH answered while the mailbox changes may announce new messages (EXISTS) but no EXPUNGE (RFC 9051
    7.4.1); the expunge of a message it never announced is dropped, the known one is told at the next NOOP."""
    user = _user_with(srv, 3)
    a = login(srv, user, select="INBOX")
    try:
        _forget_untagged(a)
        _append_and_expunge(srv, user, "1,4")
        typ, data = a.fetch("1:3", "(FLAGS)")
        assert typ == "OK"
        assert a.response("EXPUNGE") == ("EXPUNGE", [None])
        assert a.response("EXISTS") == ("EXISTS", [None])
        typ, _ = a.noop()
        assert a.response("EXPUNGE") == ("EXPUNGE", [b"1"])
        assert a.response("EXISTS") == ("EXISTS", [None])
    finally:
        a.logout()

