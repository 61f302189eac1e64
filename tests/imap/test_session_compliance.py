"""IMAP behaviour found missing by a compliance run (RFC 3501 / RFC 9051 / RFC 5258 rules), each over real sockets."""

from __future__ import annotations

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-compliance")) as s:
        yield s


def _raw(srv, user) -> Raw:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    return raw


def _append(raw: Raw, mailbox: str, data: bytes) -> None:
    raw.send(b"ap APPEND " + mailbox.encode() + b" {%d+}\r\n" % len(data) + data + b"\r\n")
    out = raw.until(b"ap")
    assert out[-1].startswith(b"ap OK"), out


def test_recreated_mailbox_messages_are_recent_again(srv):
    """A mailbox deleted and created again (new UIDVALIDITY) has \\Recent messages, even if it reuses a row id."""
    user = new_user(srv)
    raw = _raw(srv, user)
    for round_ in range(2):
        assert raw.cmd("c", "CREATE again")[-1].startswith(b"c OK")
        _append(raw, "again", message("one"))
        _append(raw, "again", message("two"))
        out = b"".join(raw.cmd("e", "EXAMINE again"))
        assert b"* 2 EXISTS" in out and b"* 2 RECENT" in out, (round_, out)
        assert raw.cmd("x", "CLOSE")[-1].startswith(b"x OK")
        assert b"RECENT 2" in b"".join(raw.cmd("st", "STATUS again (RECENT)"))
        out = b"".join(raw.cmd("s", "SELECT again"))
        assert b"* 2 RECENT" in out, (round_, out)
        assert b"* SEARCH 1 2" in b"".join(raw.cmd("r", "SEARCH RECENT"))
        assert raw.cmd("x", "CLOSE")[-1].startswith(b"x OK")
        assert b"RECENT 0" in b"".join(raw.cmd("st", "STATUS again (RECENT)"))
        assert raw.cmd("d", "DELETE again")[-1].startswith(b"d OK")
    raw.close()
