"""A FETCH, STORE or SEARCH answered while another session's expunge waits to be told ends in ``OK
[EXPUNGEISSUED]`` (RFC 9051 7.1, RFC 2180 4.1): its answer comes from the store, which no longer has the message the
client still sees, and the client must not take the message's absence from a SEARCH result as a mismatch (imaptest
stress with one shared user reported "SEARCH result missing seq" without it)."""

from __future__ import annotations

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-expungeissued")) as s:
        yield s


def _pair(srv):
    user = new_user(srv)
    for i in range(3):
        srv.deliver(user, message(f"m{i}", body=f"needle {i}"))
    a, b = Raw(srv.port("imap")), Raw(srv.port("imap"))
    for raw in (a, b):
        raw.login(user)
        assert raw.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
    return a, b


def _expunge_2(b):
    assert b.cmd("d", "STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"d OK")
    assert b.cmd("x", "EXPUNGE")[-1].startswith(b"x OK")


def test_search_while_an_expunge_waits_says_expungeissued(srv):
    a, b = _pair(srv)
    try:
        _expunge_2(b)
        out = a.cmd("s", "SEARCH BODY needle")
        assert out[0] == b"* SEARCH 1 3\r\n", out  # the store no longer has message 2
        assert out[-1].startswith(b"s OK [EXPUNGEISSUED]"), out
        out = a.cmd("n", "NOOP")
        assert out == [b"* 2 EXPUNGE\r\n", b"n OK NOOP completed\r\n"], out
        out = a.cmd("t", "SEARCH BODY needle")
        assert out == [b"* SEARCH 1 2\r\n", b"t OK SEARCH completed\r\n"], out
    finally:
        a.close()
        b.close()


def test_fetch_and_store_while_an_expunge_waits_say_expungeissued(srv):
    a, b = _pair(srv)
    try:
        _expunge_2(b)
        out = a.cmd("f", "FETCH 1:3 (FLAGS)")
        assert out[-1].startswith(b"f OK [EXPUNGEISSUED]"), out
        out = a.cmd("s", "STORE 1 +FLAGS (\\Seen)")
        assert out[-1].startswith(b"s OK [EXPUNGEISSUED]"), out
    finally:
        a.close()
        b.close()


def test_uid_commands_tell_the_expunge_instead(srv):
    """UID FETCH may send EXPUNGE (RFC 9051 7.4.1), so nothing waits and the OK is plain."""
    a, b = _pair(srv)
    try:
        _expunge_2(b)
        out = a.cmd("u", "UID FETCH 1:* (FLAGS)")
        assert b"* 2 EXPUNGE\r\n" in out and out[-1] == b"u OK UID FETCH completed\r\n", out
    finally:
        a.close()
        b.close()
