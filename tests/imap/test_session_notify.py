"""Change notifications between sessions (RFC 9051 7.4.1, RFC 2177 IDLE, RFC 7162 VANISHED): a second session
sees deliveries, appends, copies, flag changes, expunges, moves and mailbox deletion, at the next command or at once
in IDLE, and never an EXPUNGE while answering FETCH, STORE or SEARCH."""

from __future__ import annotations

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-notify")) as s:
        yield s


def _pair(srv, n=2):
    user = new_user(srv)
    for i in range(n):
        srv.deliver(user, message(f"m{i}"))
    a, b = Raw(srv.port("imap")), Raw(srv.port("imap"))
    for raw in (a, b):
        raw.login(user)
        raw.cmd("S", "SELECT INBOX")
    return user, a, b


def _idle(raw):
    raw.send(b"I IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"


def _done(raw):
    raw.send(b"DONE\r\n")
    return raw.until(b"I")


def test_delivery_reaches_idle_session_at_once(srv):
    """A delivery by SMTP's path is pushed to an IDLE session as EXISTS without any command."""
    user, a, b = _pair(srv)
    _idle(b)
    srv.deliver(user, message("new"))
    assert b.line() == b"* 3 EXISTS\r\n"
    assert b.line().endswith(b" RECENT\r\n")
    assert _done(b)[-1].startswith(b"I OK")
    a.close()
    b.close()


def test_append_seen_at_next_command(srv):
    """An APPEND in one session shows up as EXISTS before the other session's next tagged reply."""
    user, a, b = _pair(srv)
    m = message("appended")
    a.send(b"x APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n")
    a.until(b"x")
    out = b.cmd("n", "NOOP")
    assert b"* 3 EXISTS\r\n" in out
    a.close()
    b.close()


def test_flag_change_reaches_other_session(srv):
    user, a, b = _pair(srv)
    a.cmd("s", "STORE 2 +FLAGS.SILENT (\\Flagged)")
    out = b.cmd("n", "NOOP")
    assert any(ln.startswith(b"* 2 FETCH (FLAGS (\\Flagged") for ln in out)
    _idle(b)
    a.cmd("t", "STORE 1 +FLAGS.SILENT (\\Seen)")
    assert b.line().startswith(b"* 1 FETCH (FLAGS (\\Seen")
    _done(b)
    a.close()
    b.close()


def test_expunge_reaches_other_session(srv):
    user, a, b = _pair(srv, 3)
    a.cmd("s", "STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd("e", "EXPUNGE")
    out = b.cmd("n", "NOOP")
    assert b"* 2 EXPUNGE\r\n" in out
    assert b.cmd("f", "FETCH 2 (UID)")[0] == b"* 2 FETCH (UID 3)\r\n"  # numbers stay consistent
    a.close()
    b.close()


def test_no_expunge_during_fetch_store_search(srv):
    """RFC 9051 7.4.1: an expunge by another session waits while FETCH/STORE/SEARCH run; NOOP then tells it."""
    user, a, b = _pair(srv, 3)
    a.cmd("s", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.cmd("e", "EXPUNGE")
    for tag, command in (("f", "FETCH 1:3 (UID)"), ("g", "STORE 3 +FLAGS (\\Answered)"), ("h", "SEARCH ALL")):
        out = b.cmd(tag, command)
        assert not any(ln.endswith(b" EXPUNGE\r\n") for ln in out), out
        assert out[-1].startswith(tag.encode() + b" OK [EXPUNGEISSUED]"), out  # RFC 9051 7.1
    out = b.cmd("f2", "FETCH 3 (UID)")
    assert out[0] == b"* 3 FETCH (UID 3)\r\n"  # still the numbering the client knows
    out = b.cmd("n", "NOOP")
    assert out[0] == b"* 1 EXPUNGE\r\n"
    a.close()
    b.close()


def test_uid_fetch_may_carry_expunge(srv):
    user, a, b = _pair(srv, 2)
    a.cmd("s", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    a.cmd("e", "EXPUNGE")
    out = b.cmd("u", "UID FETCH 1:* (FLAGS)")
    assert b"* 1 EXPUNGE\r\n" in out
    a.close()
    b.close()


def test_vanished_for_qresync_session(srv):
    user, a, b = _pair(srv, 2)
    b.cmd("q", "ENABLE QRESYNC")
    a.cmd("s", "STORE 2 +FLAGS.SILENT (\\Deleted)")
    a.cmd("e", "EXPUNGE")
    out = b.cmd("n", "NOOP")
    assert b"* VANISHED 2\r\n" in out
    a.close()
    b.close()


def test_move_and_copy_reach_other_sessions(srv):
    """MOVE: EXPUNGE in the source for one session; EXISTS in the target for a session that has it selected."""
    user, a, b = _pair(srv, 2)
    c = Raw(srv.port("imap"))
    c.login(user)
    c.cmd("S", "SELECT Archive")
    a.cmd("m", "MOVE 1 Archive")
    assert b"* 1 EXPUNGE\r\n" in b.cmd("n", "NOOP")
    assert b"* 1 EXISTS\r\n" in c.cmd("n", "NOOP")
    a.cmd("c", "COPY 1 Archive")
    assert b"* 2 EXISTS\r\n" in c.cmd("n2", "NOOP")
    for raw in (a, b, c):
        raw.close()


def test_deleting_selected_mailbox_ends_other_session(srv):
    user = new_user(srv)
    a, b = Raw(srv.port("imap")), Raw(srv.port("imap"))
    a.login(user)
    b.login(user)
    a.cmd("c", "CREATE Tmp")
    b.cmd("s", "SELECT Tmp")
    a.cmd("d", "DELETE Tmp")
    b.send(b"n NOOP\r\n")
    assert b.line().startswith(b"* BYE")
    assert b.closed()
    a.close()


def test_many_idle_sessions_see_one_delivery(srv):
    user = new_user(srv)
    sessions = []
    for _ in range(20):
        raw = Raw(srv.port("imap"))
        raw.login(user)
        raw.cmd("S", "SELECT INBOX")
        _idle(raw)
        sessions.append(raw)
    srv.deliver(user, message("broadcast"))
    for raw in sessions:
        assert raw.line() == b"* 1 EXISTS\r\n"
        raw.close()


def test_idle_sessions_all_see_exists_and_exactly_one_sees_recent(srv):
    """RFC 3501 2.3.2: five IMAP4rev1 sessions IDLE on one read-write mailbox; one delivery is told to each as
    "* 1 EXISTS", and exactly one of them has it as \\Recent (the others' RECENT stays 0, and so does a FETCH's)."""
    user = new_user(srv)
    sessions = []
    for _ in range(5):
        raw = Raw(srv.port("imap"))
        raw.login(user)
        raw.cmd("S", "SELECT INBOX")
        _idle(raw)
        sessions.append(raw)
    srv.deliver(user, message("broadcast"))
    recent = []
    for raw in sessions:
        assert raw.line() == b"* 1 EXISTS\r\n"
        line = raw.line()
        assert line in (b"* 0 RECENT\r\n", b"* 1 RECENT\r\n")
        recent.append(line == b"* 1 RECENT\r\n")
    assert recent.count(True) == 1
    for raw, has in zip(sessions, recent, strict=True):
        assert _done(raw)[-1].startswith(b"I OK")
        flags = b"".join(raw.cmd("F", "FETCH 1 FLAGS"))
        assert (b"\\Recent" in flags) == has
        raw.close()
