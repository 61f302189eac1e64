"""Every keyword a FETCH response shows was announced in a FLAGS response first (RFC 9051 7.3.5 / RFC 3501 7.2.6:
FLAGS lists the flags of the mailbox; imaptest: "Keyword used without being in FLAGS").

Found by imaptest's stress mode: another session adds a keyword; this session, before it has been told, STOREs
another flag on the same message (or a FETCH sets \\Seen on it); the answer carries the message's whole keyword list,
including the keyword this session never heard of."""

from __future__ import annotations

import re

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-keywords")) as s:
        yield s


def _pair(srv):
    user = new_user(srv)
    srv.deliver(user, message("one"))
    srv.deliver(user, message("two"))
    sessions = []
    for _ in range(2):
        raw = Raw(srv.port("imap"))
        raw.login(user)
        sessions.append((raw, raw.cmd("S", "SELECT INBOX")))
    return sessions


_FLAGS = re.compile(rb"^\* FLAGS \(([^)]*)\)")
_FETCH_FLAGS = re.compile(rb"^\* \d+ FETCH \(.*FLAGS \(([^)]*)\)", re.DOTALL)


def _unannounced(lines: list[bytes]) -> list[bytes]:
    """Keywords shown in FETCH responses before any FLAGS response of this stream listed them."""
    known: set[bytes] = set()
    bad = []
    for line in lines:
        m = _FLAGS.match(line)
        if m:
            known = {f.lower() for f in m.group(1).split()}
            continue
        m = _FETCH_FLAGS.match(line)
        if m:
            bad += [f for f in m.group(1).split() if not f.startswith(b"\\") and f.lower() not in known]
    return bad


def test_store_answer_announces_keywords_set_by_another_session(srv):
    (a, a_select), (b, _b_select) = _pair(srv)
    try:
        assert b.cmd("k", "STORE 1 +FLAGS ($Label1)")[-1].startswith(b"k OK")
        out = a.cmd("x", "STORE 1 +FLAGS (\\Answered)")
        assert out[-1].startswith(b"x OK"), out
        assert any(b"$Label1" in line for line in out if b"FETCH" in line), out
        assert _unannounced(a_select + out) == [], out
    finally:
        a.close()
        b.close()


def test_fetch_that_sets_seen_announces_keywords_set_by_another_session(srv):
    (a, a_select), (b, _b_select) = _pair(srv)
    try:
        assert b.cmd("k", "STORE 2 +FLAGS ($Work)")[-1].startswith(b"k OK")
        out = a.cmd("f", "FETCH 2 (BODY[TEXT])")
        assert out[-1].startswith(b"f OK"), out
        assert any(b"$Work" in line for line in out if b"FETCH" in line), out
        assert _unannounced(a_select + out) == [], out
    finally:
        a.close()
        b.close()
