"""Where MODSEQ goes in FETCH responses (RFC 7162 3.1, 3.1.3, 3.1.4.1, 3.1.4.2): when asked for, with CHANGEDSINCE,
and, once CONDSTORE is enabled, in the untagged FETCHes that tell flag changes (STORE, another session, a FETCH that
set \\Seen). Not in a FETCH that asked for neither MODSEQ nor a \\Seen change (e.g. BODY.PEEK[] only): imaptest's
message tracking takes such a FETCH as its own and is confused by the extra item."""

from __future__ import annotations

import re

import pytest

from mailserver.imap.commands import FetchAtt, Section
from mailserver.imap.fetch import fetch_response, plan_fetch
from storage.models import FLAG_SEEN
from tests.imap.imap_client import Raw, imap_server, message, new_user

# ------------------------------------------------------------------------------------------------ sans-IO rules

class _Msg:
    uid = 5
    modseq = 77
    size = 10
    internal_date = 0.0
    header_size = 2


def _names(items):
    return [a.name for a in items]


@pytest.mark.parametrize(
    "items, uid_command, changed_since, expected",
    [
        ([FetchAtt(name="FLAGS")], False, None, ["FLAGS"]),
        ([FetchAtt(name="BODY", section=Section(), peek=True)], True, None, ["UID", "BODY"]),
        ([FetchAtt(name="FLAGS")], False, 4, ["FLAGS", "MODSEQ"]),  # RFC 7162 3.1.4.1
        ([FetchAtt(name="MODSEQ"), FetchAtt(name="FLAGS")], False, None, ["MODSEQ", "FLAGS"]),
    ],
)
def test_plan_adds_modseq_only_for_changedsince(items, uid_command, changed_since, expected):
    """CONDSTORE enabled adds nothing to the items of a FETCH; CHANGEDSINCE adds MODSEQ."""
    plan = plan_fetch(items, uid_command=uid_command, condstore=True, changed_since=changed_since)
    assert _names(plan.items) == expected


def test_fetch_that_set_seen_carries_flags_and_modseq_with_condstore():
    """RFC 7162 3.1: the untagged FETCH of a FETCH that set \\Seen has MODSEQ once CONDSTORE is enabled."""
    items = [FetchAtt(name="BODY", section=Section(text="HEADER"))]
    out = fetch_response(3, _Msg(), items, body=b"\r\nbody", flags=FLAG_SEEN, keywords=(), recent=False,
                         uid_command=False, condstore=True, include_flags=True)
    assert out == b'* 3 FETCH (BODY[HEADER] {2}\r\n\r\n FLAGS (\\Seen) MODSEQ (77))\r\n'
    out = fetch_response(3, _Msg(), items, body=b"\r\nbody", flags=FLAG_SEEN, keywords=(), recent=False,
                         uid_command=False, condstore=False, include_flags=True)
    assert out == b'* 3 FETCH (BODY[HEADER] {2}\r\n\r\n FLAGS (\\Seen))\r\n'
    out = fetch_response(3, _Msg(), items, body=b"\r\nbody", flags=FLAG_SEEN, keywords=(), recent=False,
                         uid_command=False, condstore=True, include_flags=False)
    assert out == b'* 3 FETCH (BODY[HEADER] {2}\r\n\r\n)\r\n'


# ------------------------------------------------------------------------------------------ over a real socket

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-condstore")) as s:
        yield s


def _session(srv, user, *, condstore: bool) -> Raw:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    if condstore:
        assert raw.cmd("e", "ENABLE CONDSTORE")[-1].startswith(b"e OK")
    assert raw.cmd("s", "SELECT INBOX")[-1].startswith(b"s OK")
    return raw


def _user(srv, n=2) -> str:
    user = new_user(srv)
    for i in range(n):
        srv.deliver(user, message(f"m{i}"))
    return user


def _fetch_lines(out: list[bytes]) -> list[bytes]:
    return [line for line in out if re.match(rb"\* \d+ FETCH ", line)]


def test_fetch_without_modseq_item_has_no_modseq(srv):
    """ENABLE CONDSTORE, then FETCH BODY.PEEK[] / FLAGS / UID FETCH: no MODSEQ item in the answers."""
    raw = _session(srv, _user(srv), condstore=True)
    try:
        for cmd in ("FETCH 1 (BODY.PEEK[])", "FETCH 1:2 (FLAGS)", "UID FETCH 1:* (FLAGS)", "FETCH 1 (RFC822.SIZE)"):
            out = raw.cmd("f", cmd)
            assert out[-1].startswith(b"f OK"), out
            lines = _fetch_lines(out)
            assert lines and not any(b"MODSEQ" in line for line in lines), (cmd, out)
    finally:
        raw.close()


def test_fetch_modseq_item_and_changedsince(srv):
    """Asked for (RFC 7162 3.1.4.2), and implied by CHANGEDSINCE (RFC 7162 3.1.4.1)."""
    raw = _session(srv, _user(srv), condstore=True)
    try:
        out = raw.cmd("a", "FETCH 1 (FLAGS MODSEQ)")
        assert re.match(rb"\* 1 FETCH \(FLAGS \([^)]*\) MODSEQ \(\d+\)\)\r\n", out[0]), out
        out = raw.cmd("b", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
        lines = _fetch_lines(out)
        assert len(lines) == 2 and all(b"MODSEQ (" in line for line in lines), out
    finally:
        raw.close()


def test_store_results_carry_modseq_once_condstore_is_enabled(srv):
    """RFC 7162 3.1: STORE's untagged FETCH has MODSEQ with CONDSTORE enabled, not without."""
    user = _user(srv)
    plain = _session(srv, user, condstore=False)
    cond = _session(srv, user, condstore=True)
    try:
        out = plain.cmd("a", "STORE 1 +FLAGS (\\Flagged)")
        assert re.match(rb"\* 1 FETCH \(FLAGS \([^)]*\\Flagged[^)]*\)\)\r\n", out[0]), out
        out = cond.cmd("b", "STORE 2 +FLAGS (\\Flagged)")
        lines = _fetch_lines(out)
        assert any(line.startswith(b"* 2 FETCH") and b"MODSEQ (" in line for line in lines), out
        # The flag change made by the other session reaches this one with MODSEQ ...
        assert any(line.startswith(b"* 1 FETCH") and b"MODSEQ (" in line for line in lines), out
        # ... and the plain session hears of session two's change without it.
        out = plain.cmd("c", "NOOP")
        lines = _fetch_lines(out)
        assert lines and lines[0].startswith(b"* 2 FETCH (FLAGS (") and b"MODSEQ" not in lines[0], out
    finally:
        plain.close()
        cond.close()


def test_store_unchangedsince_enables_condstore_and_reports_modseq(srv):
    """RFC 7162 3.1.3: STORE (UNCHANGEDSINCE) answers with MODSEQ, even .SILENT (then MODSEQ alone, as Dovecot)."""
    raw = _session(srv, _user(srv), condstore=False)
    try:
        out = raw.cmd("a", "STORE 1 (UNCHANGEDSINCE 1000000) +FLAGS.SILENT (\\Answered)")
        lines = _fetch_lines(out)
        assert len(lines) == 1 and re.fullmatch(rb"\* 1 FETCH \(MODSEQ \(\d+\)\)\r\n", lines[0]), out
        out = raw.cmd("b", "UID STORE 2 (UNCHANGEDSINCE 1000000) +FLAGS.SILENT (\\Answered)")
        lines = _fetch_lines(out)
        assert len(lines) == 1 and re.fullmatch(rb"\* 2 FETCH \(UID 2 MODSEQ \(\d+\)\)\r\n", lines[0]), out
    finally:
        raw.close()


def test_silent_store_with_condstore_reports_modseq_only(srv):
    """A plain STORE .SILENT says nothing; with CONDSTORE enabled it answers ``* n FETCH (MODSEQ (m))``."""
    user = _user(srv)
    plain = _session(srv, user, condstore=False)
    cond = _session(srv, user, condstore=True)
    try:
        out = plain.cmd("a", "STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert not _fetch_lines(out), out
        out = cond.cmd("b", "STORE 2 +FLAGS.SILENT (\\Flagged)")
        own = [line for line in _fetch_lines(out) if line.startswith(b"* 2 FETCH")]
        assert len(own) == 1 and re.fullmatch(rb"\* 2 FETCH \(MODSEQ \(\d+\)\)\r\n", own[0]), out
    finally:
        plain.close()
        cond.close()


def test_fetch_that_sets_seen_reports_flags_and_modseq(srv):
    """A non-PEEK BODY[] sets \\Seen: its answer has FLAGS and MODSEQ (CONDSTORE on); fetched again, neither."""
    raw = _session(srv, _user(srv), condstore=True)
    try:
        out = raw.cmd("a", "FETCH 1 (BODY[])")
        lines = _fetch_lines(out)
        assert len(lines) == 1, out
        assert re.search(rb" FLAGS \(\\Seen[^)]*\) MODSEQ \(\d+\)\)\r\n\Z", lines[0]), lines[0]
        out = raw.cmd("b", "FETCH 1 (BODY[])")
        lines = _fetch_lines(out)
        assert len(lines) == 1 and b"MODSEQ" not in lines[0] and b"FLAGS" not in lines[0], out
    finally:
        raw.close()
