"""A message the checks read is stored once per form a recipient uses (issue 13): a small body stays in memory,
unstored, while the checks read it (by ``message.read`` and by its blob id, as the sender checks do in their own
thread), and the form each recipient gets is written once, with the checks' fields.  A refused message writes no
file at all; a body larger than storage.blobs.SPOOL_IN_MEMORY is streamed to a blob as before and its streamed
form deleted after the commit when no row names it.

Over real SMTP and IMAP, with real check stages plugged into the running server's pipeline; the count of files the
blob store wrote (``FileBlobStore.created``) is what "one blob" is measured by.
"""

from __future__ import annotations

import time

from twisted.internet import threads

from mailserver.delivery.stages import Verdict
from storage import blobs as blobs_mod
from tests.delivery.stages import RefuseFor, plugged
from tests.harness import running_server
from tests.test_blob_orphans import PW, Answer, _blob_files, _fetch_all, _send, _stored

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"


class Reader:
    """Reads the message as received twice, like the real checks: through ``message.read`` (a Deferred) and by its
    blob id in a pool thread (the sender checks' way); adds a field to each copy when ``fields``."""

    name = "test-reader"
    exact_mailbox = False

    def __init__(self, blobs, fields: bool = True):
        self.blobs = blobs
        self.fields = fields
        self.read: list[tuple[bytes, bytes]] = []

    async def check(self, message, target):
        if "reader" not in message.memo:
            via_read = await message.read(message.offset)
            via_id = await threads.deferToThread(self.blobs.read, message.blob_id, message.offset)
            message.memo["reader"] = True
            self.read.append((via_read, via_id))
        if self.fields:
            return Verdict.tag(add_headers=[("X-Test-Read", f"for {target.address}")])
        return None


def _message(n: int, size: int = 0) -> bytes:
    """A message; with ``size``, a body of 78-byte lines at least that long."""
    head = f"Subject: checked {n}\r\nMessage-ID: <c{n}@remote.test>\r\n\r\n".encode()
    if size:
        return head + (b"y" * 76 + b"\r\n") * (size // 78 + 1)
    return head + b"line of the body\r\n" * (40 + n)


def test_checked_copies_are_written_once_each(tmp_path):
    """Two recipients, a check that reads the message and adds a field per recipient: two files per message (one
    per copy), none for the streamed form; the checks read the message byte-exact before it was stored."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        for a in (ALICE, BOB):
            srv.add_user(a, PW)
        blobs = srv.store.blobs
        reader = Reader(blobs)
        files, created = _blob_files(srv), blobs.created
        with plugged(srv.server, reader):
            for n in range(3):
                assert _send(srv, [ALICE, BOB], _message(n))[0] == 250
        assert blobs.created - created == 6
        assert len(_blob_files(srv) - files) == 6
        assert [r for r, _ in reader.read] == [i for _, i in reader.read]
        assert [r for r, _ in reader.read] == [_message(n) for n in range(3)]
        for a in (ALICE, BOB):
            msgs = _fetch_all(srv, a)
            assert msgs == _stored(srv, a)
            assert [m.endswith(_message(n)) for n, m in enumerate(msgs)] == [True] * 3
            assert all(f"X-Test-Read: for {a}\r\n".encode() in m for m in msgs)
        assert blobs._held == {}  # nothing held once the messages are concluded


def test_unchanged_copy_is_written_once(tmp_path):
    """A check that reads and adds nothing (and no other check adds a field): the streamed form is the copy,
    written once after the checks."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user(BOB, PW)
        blobs = srv.store.blobs
        reader = Reader(blobs, fields=False)
        created = blobs.created
        with plugged(srv.server, reader):
            assert _send(srv, [BOB], _message(1))[0] == 250
        assert blobs.created - created == 1
        (msg,) = _fetch_all(srv, BOB)
        assert msg.endswith(_message(1)) and b"X-Test-Read" not in msg
        assert reader.read == [(_message(1), _message(1))]
        assert blobs._held == {}


def test_refused_after_reading_writes_no_file(tmp_path):
    """Refused (550) or deferred (451) at the end of DATA after a check read the message: no file was written (not
    one written and deleted), nothing is held."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user(BOB, PW)
        blobs = srv.store.blobs
        files, created = _blob_files(srv), blobs.created
        for defer_it, code in ((False, 550), (True, 451)):
            reader = Reader(blobs)
            with plugged(srv.server, reader, Answer(defer=defer_it)):
                assert _send(srv, [BOB], _message(7))[0] == code
            assert [r for r, _ in reader.read] == [_message(7)]
        assert blobs.created == created
        assert _blob_files(srv) == files
        assert blobs._held == {}
        assert _fetch_all(srv, BOB) == []


def test_body_larger_than_memory_is_streamed_and_its_unused_form_removed(tmp_path):
    """Over SPOOL_IN_MEMORY: streamed into a blob while it arrives (as before), copied with the check's field,
    the streamed form deleted after the commit: one file left, fetched byte-exact."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user(BOB, PW)
        blobs = srv.store.blobs
        reader = Reader(blobs)
        files = _blob_files(srv)
        raw = _message(2, size=blobs_mod.SPOOL_IN_MEMORY + 4096)
        with plugged(srv.server, reader):
            assert _send(srv, [BOB], raw)[0] == 250
        assert reader.read == [(raw, raw)]
        assert len(_blob_files(srv) - files) == 1
        (msg,) = _fetch_all(srv, BOB)
        assert msg.endswith(raw) and f"X-Test-Read: for {BOB}\r\n".encode() in msg
        assert [msg] == _stored(srv, BOB)


def test_failure_report_reads_the_held_body(tmp_path):
    """One recipient refused by a check after another was accepted: the sender's failure report quotes the header
    of the message, which was never stored as received (every copy got the check's field)."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        for a in (ALICE, BOB, CAROL):
            srv.add_user(a, PW)
        blobs = srv.store.blobs
        with plugged(srv.server, Reader(blobs), RefuseFor(CAROL)):
            import smtplib

            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
                c.ehlo("mx.remote.test")
                c.mail(ALICE)
                for r in (BOB, CAROL):
                    assert c.rcpt(r)[0] == 250
                assert c.data(_message(3))[0] == 250
        (copy,) = _fetch_all(srv, BOB)
        assert copy.endswith(_message(3))
        reports = _fetch_all(srv, ALICE)
        assert len(reports) == 1
        assert CAROL.encode() in reports[0] and b"Subject: checked 3" in reports[0]
        assert blobs._held == {}


def test_copy_refused_at_commit_leaves_no_file(tmp_path):
    """A checked copy the commit refuses (over quota: 452/552 after DATA) leaves no file; beside an accepted
    recipient, only that one's copy and the sender's failure report are stored (no orphan for a sweep)."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user(ALICE, PW)
        srv.add_user(BOB, PW, quota_bytes=100)
        blobs = srv.store.blobs
        files = _blob_files(srv)
        with plugged(srv.server, Reader(blobs)):
            code, _ = _send(srv, [BOB], _message(4))
            assert code in (452, 552)
            assert _blob_files(srv) == files
            assert _send(srv, [ALICE, BOB], _message(5))[0] == 250
        # Alice's copy and the failure report queued for the remote sender; none for Bob's refused copy.
        assert len(_blob_files(srv) - files) == 2
        assert srv.store.collect_orphan_blobs(3600.0, time.time() + 7200.0) == 0
        (msg,) = _fetch_all(srv, ALICE)
        assert msg.endswith(_message(5))
        assert blobs._held == {}
