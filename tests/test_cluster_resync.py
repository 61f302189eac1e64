"""A RESYNC event (published when the PostgreSQL LISTEN connection is back) makes every subscriber catch up on
changes whose events it never got: an IDLE session reads changes_since its modseq, the webmail stream tells the page
to reload.  Here the "lost" changes are written straight through the blocking store, which publishes nothing."""

from __future__ import annotations

import http.client

from storage.models import FLAG_SEEN
from storage.store import Delivery
from tests import harness
from tests.imap.imap_client import Raw
from tests.webmail.test_http import Client

ALICE = "alice@example.test"
PW = "resync-pw"


def _raw(n: int) -> bytes:
    return f"From: bob@example.org\r\nTo: {ALICE}\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


def _lost_delivery(srv, account_id: int, n: int) -> None:
    store = srv.store
    store.deliver_batch([Delivery(account_id, store.blobs.put(_raw(n)), {"subject": f"m{n}"})])


def test_idle_session_catches_up_on_lost_exists_flags_and_expunge(tmp_path):
    """RFC 9051 6.3.13: the IDLE session is told, at once, of a delivery, a flag change and an expunge it missed."""
    with harness.running_server(tmp_path, listeners=("imap",)) as srv:
        acct = srv.add_user(ALICE, PW)
        for n in (1, 2):
            srv.deliver(ALICE, _raw(n))
        c = Raw(srv.port("imap"))
        assert c.cmd("L", f'LOGIN {ALICE} "{PW}"')[-1].startswith(b"L OK")
        assert c.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
        c.send(b"I IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        inbox = srv.store.get_mailbox(acct.id, "INBOX")
        _lost_delivery(srv, acct.id, 3)
        srv.store.set_flags(inbox.id, [1], "add", FLAG_SEEN)
        srv.store.delete_messages(inbox.id, [2])
        harness.call(srv.server.hub.publish_resync)  # what the LISTEN bridge does after a reconnect
        lines = {c.line() for _ in range(4)}
        # UIDs 1 and 2 became \Recent here at SELECT, 3 now.
        assert lines == {b"* 2 EXPUNGE\r\n", b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n",
                         b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"}
        c.send(b"DONE\r\n")
        assert c.until(b"I")[-1].startswith(b"I OK")
        fetched = c.cmd("F", "FETCH 1:* (UID FLAGS)")
        assert fetched[:2] == [b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))\r\n",
                               b"* 2 FETCH (UID 3 FLAGS (\\Recent))\r\n"]
        c.close()


def test_resync_between_commands_is_caught_up_at_the_next_command(tmp_path):
    """Outside IDLE the missed changes come before the next tagged reply (RFC 9051 7.4.1)."""
    with harness.running_server(tmp_path, listeners=("imap",)) as srv:
        acct = srv.add_user(ALICE, PW)
        srv.deliver(ALICE, _raw(1))
        c = Raw(srv.port("imap"))
        c.cmd("L", f'LOGIN {ALICE} "{PW}"')
        c.cmd("S", "SELECT INBOX")
        _lost_delivery(srv, acct.id, 2)
        harness.call(srv.server.hub.publish_resync)  # what the LISTEN bridge does after a reconnect
        assert c.cmd("N", "NOOP")[:2] == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
        c.close()


def test_webmail_stream_passes_resync_on(tmp_path):
    """The page reloads what it shows on any change event; RESYNC reaches the stream as one."""
    with harness.running_server(tmp_path, listeners=("http",)) as srv:
        srv.add_user(ALICE, PW)
        web = Client(srv, scheme="http")
        r, _ = web.login(ALICE, PW)
        assert r.status == 303
        conn = http.client.HTTPConnection("127.0.0.1", srv.port("http"), timeout=30)
        conn.request("GET", "/events", headers={"Cookie": "; ".join(f"{k}={v}" for k, v in web.cookies.items()),
                                                "Host": f"127.0.0.1:{srv.port('http')}"})
        resp = conn.getresponse()
        assert resp.status == 200
        harness.call(srv.server.hub.publish_resync)  # what the LISTEN bridge does after a reconnect
        lines = []
        while b"event: change\n" not in lines:
            assert len(lines) < 20, lines
            lines.append(resp.readline())  # retry: and comment lines come first
        assert resp.readline() == b'data: [{"kind": "resync", "mailbox": 0, "uid": 0}]\n'

        conn.close()
