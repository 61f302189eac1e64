"""Message bodies that end up referenced by nothing are deleted, and nothing referenced ever is.

Over real SMTP: a check that adds fields to every copy (each copy gets its own form, so the streamed one is
named by no row), a 550 and a 4xx at the end of DATA, a client that disconnects mid-DATA.  The pipeline discards
such bodies right after its commit; the collector's orphan sweep (run here with an injected clock) removes any
file no row names once it is older than the grace period, and leaves fresh files and referenced ones alone.
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import socket
import time

from mailserver.delivery.stages import Verdict
from tests import harness
from tests.delivery.stages import plugged
from tests.harness import running_server

PW = "correct horse battery"
HOUR = 3600.0


class AddFields:
    """Adds an Authentication-Results-like field to every copy, like the sender checks and rspamd do."""

    name = "test-add-fields"
    exact_mailbox = False

    def check(self, message, target):
        return Verdict.tag(add_headers=[("X-Test-Check", f"checked for {target.address}")])


class Answer:
    """Refuses (5xx) or defers (4xx) every recipient at the end of DATA."""

    name = "test-answer"
    exact_mailbox = False

    def __init__(self, defer: bool):
        self.defer = defer

    def check(self, message, target):
        if self.defer:
            return Verdict.defer("4.7.0", "Try again later (test)")
        return Verdict.refuse("5.7.1", "Refused by the test stage")


def _blob_files(srv) -> set[str]:
    root = srv.store.blobs.root
    out = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        if os.path.abspath(dirpath).startswith(os.path.abspath(srv.store.blobs.tmp_dir)):
            continue
        out |= {f for f in filenames if len(f) == 64}
    return out


def _message(n: int) -> bytes:
    return (f"Subject: message {n}\r\nMessage-ID: <m{n}@remote.test>\r\n\r\n".encode()
            + b"line of the body\r\n" * (50 + n))


def _send(srv, rcpts, raw: bytes):
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.ehlo("mx.remote.test")
        c.mail("someone@remote.test")
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        return c.data(raw)


def _fetch_all(srv, address: str) -> list[bytes]:
    im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        im.login(address, PW)
        im.select("INBOX", readonly=True)
        typ, data = im.status("INBOX", "(MESSAGES)")
        n = int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))
        out = []
        if n:
            data = im.fetch("1:*", "(BODY.PEEK[])")[1]
            out = [part[1] for part in data if isinstance(part, tuple)]
        im.logout()
    except BaseException:
        im.shutdown()
        raise
    return out


def _stored(srv, address: str) -> list[bytes]:
    store = srv.store
    acct = store.get_account(address)
    mbox = store.get_mailbox(acct.id, "INBOX")
    msgs = store.get_messages(mbox.id, list(range(1, 50)))
    return [store.read_blob(m.blob_id) for m in msgs]


def _sweep(srv, now: float) -> int:
    return srv.store.collect_orphan_blobs(HOUR, now)


def test_per_copy_forms_leave_no_unreferenced_body(tmp_path):
    """Every copy gets a check's field: the streamed form is deleted after the commit; what is stored is fetched
    byte-exact, and a sweep an hour later removes nothing."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        for a in ("alice@example.test", "bob@example.test"):
            srv.add_user(a, PW)
        with plugged(srv.server, AddFields()):
            for n in range(3):
                code, _ = _send(srv, ["alice@example.test", "bob@example.test"], _message(n))
                assert code == 250
        files = _blob_files(srv)
        assert len(files) == 6  # one per copy (3 messages x 2 recipients), none for the streamed forms
        fetched = {a: _fetch_all(srv, a) for a in ("alice@example.test", "bob@example.test")}
        for a, msgs in fetched.items():
            assert len(msgs) == 3
            assert msgs == _stored(srv, a)
            assert all(f"X-Test-Check: checked for {a}".encode() in m for m in msgs)
        assert _sweep(srv, time.time() + 2 * HOUR) == 0
        assert _blob_files(srv) == files
        assert {a: _fetch_all(srv, a) for a in fetched} == fetched


def test_refused_and_deferred_at_data_leave_no_body(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("bob@example.test", PW)
        before = _blob_files(srv)
        with plugged(srv.server, Answer(defer=False)):
            assert _send(srv, ["bob@example.test"], _message(1))[0] == 550
        with plugged(srv.server, Answer(defer=True)):
            assert _send(srv, ["bob@example.test"], _message(2))[0] == 451
        assert _blob_files(srv) == before
        assert _fetch_all(srv, "bob@example.test") == []


def test_disconnect_mid_data_leaves_no_body(tmp_path):
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        srv.add_user("bob@example.test", PW)
        before = _blob_files(srv)
        s = socket.create_connection(("127.0.0.1", srv.port("smtp")))
        f = s.makefile("rb")
        try:
            assert f.readline().startswith(b"220")
            for line in (b"EHLO mx.remote.test", b"MAIL FROM:<someone@remote.test>", b"RCPT TO:<bob@example.test>",
                         b"DATA"):
                s.sendall(line + b"\r\n")
                reply = f.readline()
                while reply[3:4] == b"-":
                    reply = f.readline()
                assert reply[:1] in (b"2", b"3"), reply
            s.sendall(b"Subject: cut\r\n\r\n" + b"x" * 200_000 + b"\r\n")
        finally:
            f.close()  # the socket's descriptor is closed only once its file is too
            s.close()
        srv.wait_for(lambda: srv.server_sessions("smtp") == 0)
        assert _blob_files(srv) == before
        assert _sweep(srv, time.time() + 2 * HOUR) == 0


def test_orphan_sweep_keeps_fresh_and_referenced_files(tmp_path):
    """A body no row names (as a crash between storing and committing leaves) is removed once older than the grace
    period, never before; a body identical to a delivered one is the delivered one and stays."""
    with running_server(tmp_path, listeners=("smtp", "imap")) as srv:
        srv.add_user("alice@example.test", PW)
        assert _send(srv, ["alice@example.test"], _message(7))[0] == 250
        (delivered,) = _stored(srv, "alice@example.test")
        blobs = srv.store.blobs
        orphan = blobs.put(b"Subject: nobody\r\n\r\nnamed by no row\r\n")
        again = blobs.put(delivered)  # the same content as the delivered copy: one file, named by its row
        blobs.sync_pending()
        kept = _blob_files(srv)
        assert orphan.id in kept and again.id in kept and len(kept) == 2
        now = time.time()
        assert _sweep(srv, now + 60) == 0  # within the grace period: an in-flight delivery's file is safe
        assert _blob_files(srv) == kept
        assert _sweep(srv, now + 2 * HOUR) == 1
        assert _blob_files(srv) == kept - {orphan.id}
        assert _fetch_all(srv, "alice@example.test") == [delivered]


def test_orphan_sweep_never_takes_a_body_younger_than_its_floor(tmp_path):
    """However short the grace asked for (``[store] gc_grace = 0``), the sweep leaves a body no row names yet alone
    until it is ORPHAN_MIN_AGE old: it may be a delivery's, stored and not yet committed (on any worker)."""
    from storage.store import ORPHAN_MIN_AGE

    with running_server(tmp_path, listeners=()) as srv:
        blobs = srv.store.blobs
        in_flight = blobs.put(b"Subject: in flight\r\n\r\nstored, its row not committed yet\r\n")
        blobs.sync_pending()
        now = time.time()
        assert srv.store.collect_orphan_blobs(0.0, now + ORPHAN_MIN_AGE - 60) == 0
        assert in_flight.id in _blob_files(srv)
        assert srv.store.collect_orphan_blobs(0.0, now + ORPHAN_MIN_AGE + 60) == 1
        assert in_flight.id not in _blob_files(srv)


def test_orphan_sweep_is_bounded(tmp_path):
    """One run looks at no more than its limit of files; the next run goes on."""
    with running_server(tmp_path, listeners=()) as srv:
        blobs = srv.store.blobs
        ids = {blobs.put(f"orphan {n}\r\n".encode()).id for n in range(7)}
        blobs.sync_pending()
        later = time.time() + 2 * HOUR
        assert srv.store.collect_orphan_blobs(HOUR, later, batch=2, limit=3) == 3
        assert srv.store.collect_orphan_blobs(HOUR, later, batch=2, limit=3) == 3
        assert srv.store.collect_orphan_blobs(HOUR, later, batch=2, limit=3) == 1
        assert not (_blob_files(srv) & ids)


def test_discard_keeps_content_stored_again(tmp_path):
    """A body another writer stored again (de-duplication) after this one created it is not discarded."""
    with running_server(tmp_path, listeners=()) as srv:
        blobs = srv.store.blobs
        ref = blobs.put(b"shared content\r\n")
        blobs.put(b"shared content\r\n")  # stored again: shared, so no longer this delivery's alone
        assert srv.store.discard_blobs([ref.id]) == 0
        assert ref.id in _blob_files(srv)
        fresh = blobs.put(b"only mine\r\n")
        assert srv.store.discard_blobs([fresh.id]) == 1
        assert fresh.id not in _blob_files(srv)


def test_the_collector_runs_the_sweep(tmp_path):
    """The periodic collector's run includes the orphan sweep; at the real time a fresh orphan is kept."""
    with running_server(tmp_path, listeners=()) as srv:
        fresh = srv.store.blobs.put(b"fresh orphan\r\n")
        srv.store.blobs.sync_pending()
        harness.call(srv.server._collect_blobs)
        assert fresh.id in _blob_files(srv)
